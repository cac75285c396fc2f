/*
 * feedpace: clocks and steady schedules for the feed tools.
 *
 * A schedule of `rate` events per second gives event i the absolute
 * deadline start + i / rate: a sender that falls behind catches up in a
 * burst instead of drifting. Pure functions and a sleep; any thread. The
 * clocks are the core's (log.h).
 */
#ifndef TICKFAN_FEEDPACE_H
#define TICKFAN_FEEDPACE_H

#include <stdint.h>

#include "clock.h"

/* Deadline of event i (0-based) at `rate` per second from start_ns; with
 * rate 0 (as fast as possible) every event is due at start_ns. */
int64_t feedpace_due_ns(int64_t start_ns, uint64_t rate, uint64_t i);

/* Sleeps until the monotonic clock reads due_ns. Returns 0, or -EINTR when
 * a signal came first. */
int feedpace_sleep_until(int64_t due_ns);

#endif
