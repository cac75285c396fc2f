/*
 * clock: the wall clock and the monotonic clock, in microseconds and
 * nanoseconds. Any thread; a vDSO call each, no system call.
 */
#ifndef TICKFAN_CLOCK_H
#define TICKFAN_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t clock_read_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wall clock (CLOCK_REALTIME): what cursors' times and logs carry. */
static inline int64_t clock_unix_ns(void)
{
    return clock_read_ns(CLOCK_REALTIME);
}

static inline int64_t clock_unix_us(void)
{
    return clock_unix_ns() / 1000;
}

/* Monotonic clock (CLOCK_MONOTONIC): cadences, deadlines, durations. */
static inline int64_t clock_mono_ns(void)
{
    return clock_read_ns(CLOCK_MONOTONIC);
}

static inline int64_t clock_mono_us(void)
{
    return clock_mono_ns() / 1000;
}

#endif
