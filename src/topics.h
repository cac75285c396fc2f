/*
 * topics: the fixed set of topics this server serves, each with its log.
 *
 * Built on the main thread before any other thread starts and immutable
 * afterwards, so lookups from shard threads need no lock. Each topic's log
 * is the file <data_dir>/<topic>.log. The syncer thread (topics_sync_start)
 * msyncs every log at a fixed interval; it only reads the topic set.
 */
#ifndef TICKFAN_TOPICS_H
#define TICKFAN_TOPICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringlog.h"

#define TOPICS_MAX 1024
#define TOPIC_NAME_MAX 128

struct topic {
    char *name;
    size_t index; /* 0 .. topics_count-1, stable for the process's life */
    ringlog_t *log;
    /* settings SIGHUP may change; read by the shards where they are used */
    _Atomic int64_t max_lag_bytes; /* 0: half the log */
    _Atomic int64_t heartbeat_us;
    _Atomic int overflow; /* 1 drop, 2 conflate, 3 disconnect (OverflowPolicy) */
};

struct config;

struct topics {
    struct topic *items;
    size_t count;
    /* syncer */
    pthread_t syncer;
    bool syncer_started;
    atomic_bool syncer_stop;
    int64_t sync_interval_ms;
};

/* How topics are opened. data_dir NULL: in-memory logs (tests). */
struct topics_options {
    const char *data_dir;
    size_t log_size;
    bool sync_every;
};

/* True when `name` is a valid topic name: 1..128 of [A-Za-z0-9._-]. */
bool topics_name_valid(const char *name, size_t len);

/* Adds a topic and opens (recovering) its log; adding an existing name is a
 * no-op. Returns 0, or -errno with a message naming the topic and what is
 * wrong in err. Logs what recovery found. */
int topics_add(struct topics *t, const char *name, const struct topics_options *opts, char *err,
               size_t errlen);
struct topic *topics_find(const struct topics *t, const char *name, size_t len);
/* Sets every topic's runtime settings from `cfg` (its [topic NAME] section,
 * else the global options). Writes what changed into `changed` (a
 * comma-separated list, empty if nothing). Main thread; any time. */
void topics_apply_settings(struct topics *t, const struct config *cfg, char *changed, size_t len);
/* The log size `cfg` gives topic `name`. */
size_t topics_log_size(const struct config *cfg, const char *name);

/* Starts the thread that msyncs every log each `interval_ms`. 0 or -errno. */
int topics_sync_start(struct topics *t, int64_t interval_ms);
/* Stops the syncer (after a last sync) and closes every log cleanly. */
void topics_destroy(struct topics *t);

#endif
