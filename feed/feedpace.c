/*
 * feedpace: monotonic deadlines. Any thread.
 */
#include "feedpace.h"

#include <errno.h>
#include <time.h>

int64_t feedpace_due_ns(int64_t start_ns, uint64_t rate, uint64_t i)
{
    if (rate == 0)
        return start_ns;
    return start_ns + (int64_t)((unsigned __int128)i * 1000000000u / rate);
}

int feedpace_sleep_until(int64_t due_ns)
{
    struct timespec ts = {.tv_sec = due_ns / 1000000000, .tv_nsec = due_ns % 1000000000};
    int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    return rc == EINTR ? -EINTR : 0;
}
