/*
 * subcore: see subcore.h.
 */
#include "subcore.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int subcore_store_cursor(char **cursor, size_t *cursor_len, size_t *cursor_cap,
                         pthread_mutex_t *lock, const char *text, size_t len)
{
    char *old = NULL;
    char *buf = *cursor;
    if (len + 1 > *cursor_cap) {
        size_t cap = *cursor_cap ? *cursor_cap : 64;
        while (cap < len + 1)
            cap *= 2;
        buf = malloc(cap);
        if (buf == NULL)
            return -ENOMEM;
        old = *cursor;
        *cursor_cap = cap;
    }
    pthread_mutex_lock(lock);
    memcpy(buf, text, len);
    buf[len] = '\0';
    *cursor = buf;
    *cursor_len = len;
    pthread_mutex_unlock(lock);
    free(old);
    return 0;
}

const char *subcore_check_times(int64_t backoff_initial_ms, int64_t backoff_max_ms,
                                int64_t healthy_ms, int64_t heartbeat_timeout_ms,
                                int64_t commit_interval_ms, int64_t *value)
{
    const struct {
        const char *name;
        int64_t v, min, max;
    } t[] = {
        {"backoff_initial_ms", backoff_initial_ms, 1, SUBCORE_MAX_MS},
        {"backoff_max_ms", backoff_max_ms, backoff_initial_ms, SUBCORE_MAX_MS},
        {"healthy_ms", healthy_ms, 0, SUBCORE_MAX_MS},
        {"heartbeat_timeout_ms", heartbeat_timeout_ms, 0, SUBCORE_MAX_MS},
        {"commit_interval_ms", commit_interval_ms, 0, SUBCORE_MAX_MS},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (t[i].v < t[i].min || t[i].v > t[i].max) {
            *value = t[i].v;
            return t[i].name;
        }
    return NULL;
}

int subcore_copy_request(const Events__V1__WatchRequest *req, Events__V1__WatchRequest **out)
{
    size_t len = events__v1__watch_request__get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return -ENOMEM;
    events__v1__watch_request__pack(req, buf);
    *out = events__v1__watch_request__unpack(NULL, len, buf);
    free(buf);
    return *out ? 0 : -ENOMEM;
}

bool subcore_is_snapshot(const Events__V1__WatchEvent *ev)
{
    return ev->payload_case == EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA && ev->data != NULL &&
           ev->data->snapshot;
}
