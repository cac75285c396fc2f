/*
 * topics: the set of topics this server serves, each with its log.
 *
 * An append-only registry. The main thread adds the declared topics at
 * start; with auto-create on (--auto-create-topics), the ingest thread and
 * Publish calls on shard threads add topics a feed names while running.
 * Adders serialise on a mutex (a cold path: it opens a file). Readers take
 * no lock: a topic is fully built before topics_count() covers it and the
 * name index points at it, and no topic is ever removed or moved before
 * topics_destroy, so a `struct topic *` stays valid for the process's life.
 * Each topic's log is the file <data_dir>/<topic>.log. The syncer thread
 * (topics_sync_start) msyncs every log at a fixed interval.
 */
#ifndef TICKFAN_TOPICS_H
#define TICKFAN_TOPICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "ringlog.h"

#define TOPICS_MAX 1024
#define TOPICS_MAX_TEXT "1024"
#define TOPIC_NAME_MAX 128

struct topic {
    char *name;
    size_t name_len;
    size_t index; /* 0 .. topics_count()-1, stable for the process's life */
    bool auto_created;
    ringlog_t *log;
    /* settings SIGHUP may change; read by the shards where they are used */
    _Atomic int64_t max_lag_bytes;  /* 0: half the log */
    _Atomic int64_t max_lag_events; /* 0: no limit in events */
    _Atomic int64_t heartbeat_us;
    _Atomic int overflow; /* 1 drop, 2 conflate, 3 disconnect (OverflowPolicy) */
};

struct config;

#define TOPICS_HASH 2048 /* name index slots: a power of two above TOPICS_MAX */

/* How topics are opened. data_dir NULL: in-memory logs (tests). */
struct topics_options {
    const char *data_dir;
    size_t log_size;
    bool sync_every;
};

struct topics {
    struct topic *items[TOPICS_MAX]; /* [0, count): each set once, before count covers it */
    _Atomic size_t count;
    _Atomic(struct topic *) by_name[TOPICS_HASH]; /* open addressing, never removed */
    pthread_mutex_t add_mu;                       /* adders; topics_apply_settings */
    /* auto-create: set by topics_auto_create_enable before threads start */
    bool auto_create;
    char *auto_data_dir;
    struct topics_options auto_opts;
    /* settings for topics created later, as topics_apply_settings last set (add_mu) */
    int64_t def_max_lag_bytes, def_max_lag_events, def_heartbeat_us;
    int def_overflow;
    _Atomic uint64_t auto_created;   /* topics created because a feed named them */
    _Atomic uint64_t refused;        /* times a named topic could not be created */
    struct log_ratelimit refused_rl; /* add_mu */
    /* syncer: sleeps on syncer_cv (CLOCK_MONOTONIC) for the interval, or
     * until topics_destroy sets syncer_stop under syncer_mu */
    pthread_t syncer;
    bool syncer_started;
    bool syncer_stop;
    pthread_mutex_t syncer_mu;
    pthread_cond_t syncer_cv;
    int64_t sync_interval_ms;
};

/* Readies an empty registry (before any other call). */
void topics_init(struct topics *t);

/* How many topics there are now; items[0 .. n-1] are valid to read. Any thread. */
static inline size_t topics_count(const struct topics *t)
{
    return atomic_load_explicit(&t->count, memory_order_acquire);
}

/* True when `name` is a valid topic name: 1..128 of [A-Za-z0-9._-]. */
bool topics_name_valid(const char *name, size_t len);

/* Adds a topic and opens (recovering) its log; adding an existing name is a
 * no-op. Returns 0, or -errno with a message naming the topic and what is
 * wrong in err. Logs what recovery found. */
int topics_add(struct topics *t, const char *name, const struct topics_options *opts, char *err,
               size_t errlen);
/* The topic called name[0..len), or NULL. Any thread, no lock. */
struct topic *topics_find(const struct topics *t, const char *name, size_t len);

/* Turns on auto-create: topics_find_or_create then creates topics with
 * `opts` (data_dir is copied). Main thread, before other threads start.
 * 0 or -ENOMEM. */
int topics_auto_create_enable(struct topics *t, const struct topics_options *opts);
/* Opens, as auto-created topics, the logs found in opts->data_dir (files
 * <topic>.log with a valid topic name) that are not topics yet, so streams
 * can resume on them after a restart before the feed names them again.
 * Main thread, at start. 0, or -errno with the file and the reason in err. */
int topics_auto_reopen(struct topics *t, char *err, size_t errlen);
/* The topic called name[0..len); with auto-create on, creates it if
 * missing. NULL if it does not exist and cannot be created; then *err says
 * why: -ENOENT (auto-create is off), -EINVAL (invalid name), -ENOSPC
 * (TOPICS_MAX reached), or the log's error (logged, rate-limited). Any
 * thread; creation takes the adders' lock and opens the log file, so it is
 * slow the first time. */
struct topic *topics_find_or_create(struct topics *t, const char *name, size_t len, int *err);
/* Text for an *err of topics_find_or_create. */
const char *topics_strerror(int err);
/* Sets every topic's runtime settings from `cfg` (its [topic NAME] section,
 * else the global options), and the settings topics created later get.
 * Writes what changed into `changed` (a comma-separated list, empty if
 * nothing). Main thread; any time. */
void topics_apply_settings(struct topics *t, const struct config *cfg, char *changed, size_t len);
/* The log size `cfg` gives topic `name`. */
size_t topics_log_size(const struct config *cfg, const char *name);

/* Starts the thread that msyncs every log each `interval_ms`. 0 or -errno. */
int topics_sync_start(struct topics *t, int64_t interval_ms);
/* Stops the syncer (after a last sync) and closes every log cleanly. */
void topics_destroy(struct topics *t);

#endif
