/*
 * topics: the fixed set of topics this server serves, each with its log.
 *
 * Built on the main thread before any other thread starts and immutable
 * afterwards, so lookups from shard threads need no lock.
 */
#ifndef TICKFAN_TOPICS_H
#define TICKFAN_TOPICS_H

#include <stdbool.h>
#include <stddef.h>

#include "ringlog.h"

#define TOPICS_MAX 1024
#define TOPIC_NAME_MAX 128

struct topic {
    char *name;
    size_t index; /* 0 .. topics_count-1, stable for the process's life */
    ringlog_t *log;
};

struct topics {
    struct topic *items;
    size_t count;
};

/* True when `name` is a valid topic name: 1..128 of [A-Za-z0-9._-]. */
bool topics_name_valid(const char *name, size_t len);

/* Adds a topic with a log of `log_size` bytes; adding an existing name is a
 * no-op. Returns 0, -EINVAL (bad name), -ENOSPC (too many) or -ENOMEM. */
int topics_add(struct topics *t, const char *name, size_t log_size);
struct topic *topics_find(const struct topics *t, const char *name, size_t len);
void topics_destroy(struct topics *t);

#endif
