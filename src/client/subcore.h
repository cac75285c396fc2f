/*
 * subcore: what the two client libraries share, the Watch subscriber
 * (subscriber.c) and the multiplexed one over Subscribe (muxsub.c).
 */
#ifndef TICKFAN_SUBCORE_H
#define TICKFAN_SUBCORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events/v1/watcher.pb-c.h"

/* Makes *cursor hold text (len bytes, NUL-terminated), growing the buffer
 * (*cap) as needed; the swap is made under lock, which is what other
 * threads copy the cursor under. 0, or -ENOMEM with the old cursor kept. */
int subcore_store_cursor(char **cursor, size_t *cursor_len, size_t *cursor_cap,
                         pthread_mutex_t *lock, const char *text, size_t len);

/* The retry and commit times of either library's options, in ms: NULL when
 * all are in range (times 0..SUBCORE_MAX_MS, 1 <= backoff_initial <=
 * backoff_max), else the name of the first out of range, its value in
 * *value. */
#define SUBCORE_MAX_MS (24LL * 3600 * 1000)
const char *subcore_check_times(int64_t backoff_initial_ms, int64_t backoff_max_ms,
                                int64_t healthy_ms, int64_t heartbeat_timeout_ms,
                                int64_t commit_interval_ms, int64_t *value);

/* A deep copy of req (packed and unpacked again by protobuf-c): 0, or
 * -ENOMEM. Free with events__v1__watch_request__free_unpacked. */
int subcore_copy_request(const Events__V1__WatchRequest *req, Events__V1__WatchRequest **out);

/* A Data event sent as part of a snapshot or conflation. */
bool subcore_is_snapshot(const Events__V1__WatchEvent *ev);

#endif
