/*
 * topics: name -> log registry. Append-only: adders hold add_mu, readers
 * take no lock (see topics.h).
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "topics.h"
#include "clock.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"

bool topics_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > TOPIC_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

void topics_init(struct topics *t)
{
    memset(t, 0, sizeof(*t));
    atomic_init(&t->count, 0);
    for (size_t i = 0; i < TOPICS_HASH; i++)
        atomic_init(&t->by_name[i], NULL);
    atomic_init(&t->auto_created, 0);
    atomic_init(&t->refused, 0);
    pthread_mutex_init(&t->add_mu, NULL);
    t->def_max_lag_bytes = 0;
    t->def_max_lag_events = 0;
    t->def_heartbeat_us = 5000000;
    t->def_overflow = 1;
    t->refused_rl = (struct log_ratelimit){.interval_us = 10000000, .burst = 5};
}

static uint32_t name_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return h;
}

struct topic *topics_find(const struct topics *t, const char *name, size_t len)
{
    uint32_t h = name_hash(name, len);
    /* TOPICS_HASH > TOPICS_MAX: a probe always ends at an empty slot */
    for (uint32_t i = 0;; i++) {
        struct topic *tp =
            atomic_load_explicit(&t->by_name[(h + i) & (TOPICS_HASH - 1)], memory_order_acquire);
        if (!tp)
            return NULL;
        if (tp->name_len == len && memcmp(tp->name, name, len) == 0)
            return tp;
    }
}

static int open_log(struct topic *tp, const struct topics_options *opts, char *err, size_t errlen)
{
    const char *name = tp->name;
    int rc;
    if (!opts->data_dir) {
        rc = ringlog_create(&tp->log, name, opts->log_size);
        if (rc)
            snprintf(err, errlen, "topic '%s': cannot create its log: %s", name, strerror(-rc));
        return rc;
    }
    char path[4096], why[512];
    snprintf(path, sizeof(path), "%s/%s.log", opts->data_dir, name);
    struct ringlog_options lo = {.capacity = opts->log_size, .sync_every = opts->sync_every};
    struct ringlog_recovery rep;
    rc = ringlog_open(&tp->log, path, name, &lo, &rep, why, sizeof(why));
    if (rc) {
        snprintf(err, errlen, "topic '%s': %s", name, why);
        return rc;
    }
    log_info("msg=log_opened topic=%s path=%s created=%s records=%llu first_seq=%llu "
             "head_seq=%llu cut_offset=%llu cut_bytes=%llu epoch=%016llx epoch_kept=%s%s%s%s",
             name, path, rep.created ? "true" : "false", (unsigned long long)rep.records,
             (unsigned long long)rep.first_seq, (unsigned long long)rep.head_seq,
             (unsigned long long)rep.cut_offset, (unsigned long long)rep.cut_bytes,
             (unsigned long long)ringlog_epoch(tp->log), rep.epoch_kept ? "true" : "false",
             rep.reason ? " reason=\"" : "", rep.reason ? rep.reason : "", rep.reason ? "\"" : "");
    if (rep.moved_to[0])
        log_warn("msg=log_damaged topic=%s path=%s moved_to=%s", name, path, rep.moved_to);
    return 0;
}

/* Adds name[0..len) if missing; add_mu held. *out: the topic (new or not). */
static int add_locked(struct topics *t, const char *name, size_t len,
                      const struct topics_options *opts, bool auto_created, struct topic **out,
                      char *err, size_t errlen)
{
    if (!topics_name_valid(name, len)) {
        snprintf(err, errlen, "invalid topic name '%.*s' (1-128 of A-Z a-z 0-9 . _ -)",
                 (int)(len > 200 ? 200 : len), name);
        return -EINVAL;
    }
    struct topic *tp = topics_find(t, name, len);
    if (tp) {
        if (out)
            *out = tp;
        return 0;
    }
    size_t n = atomic_load_explicit(&t->count, memory_order_relaxed);
    if (n >= TOPICS_MAX) {
        snprintf(err, errlen, "too many topics (at most %d)", TOPICS_MAX);
        return -ENOSPC;
    }
    tp = calloc(1, sizeof(*tp));
    if (!tp || !(tp->name = strndup(name, len))) {
        free(tp);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    tp->name_len = len;
    tp->index = n;
    tp->auto_created = auto_created;
    atomic_init(&tp->max_lag_bytes, t->def_max_lag_bytes);
    atomic_init(&tp->max_lag_events, t->def_max_lag_events);
    atomic_init(&tp->heartbeat_us, t->def_heartbeat_us);
    atomic_init(&tp->overflow, t->def_overflow);
    int rc = open_log(tp, opts, err, errlen);
    if (rc) {
        free(tp->name);
        free(tp);
        return rc;
    }
    /* publish: the slot and the index entry, then the count */
    t->items[n] = tp;
    uint32_t h = name_hash(name, len);
    for (uint32_t i = 0;; i++) {
        _Atomic(struct topic *) *slot = &t->by_name[(h + i) & (TOPICS_HASH - 1)];
        if (!atomic_load_explicit(slot, memory_order_relaxed)) {
            atomic_store_explicit(slot, tp, memory_order_release);
            break;
        }
    }
    atomic_store_explicit(&t->count, n + 1, memory_order_release);
    if (out)
        *out = tp;
    return 0;
}

int topics_add(struct topics *t, const char *name, const struct topics_options *opts, char *err,
               size_t errlen)
{
    pthread_mutex_lock(&t->add_mu);
    int rc = add_locked(t, name, strlen(name), opts, false, NULL, err, errlen);
    pthread_mutex_unlock(&t->add_mu);
    return rc;
}

int topics_auto_create_enable(struct topics *t, const struct topics_options *opts)
{
    t->auto_opts = *opts;
    if (opts->data_dir) {
        t->auto_data_dir = strdup(opts->data_dir);
        if (!t->auto_data_dir)
            return -ENOMEM;
        t->auto_opts.data_dir = t->auto_data_dir;
    }
    t->auto_create = true;
    return 0;
}

int topics_auto_reopen(struct topics *t, char *err, size_t errlen)
{
    if (!t->auto_create || !t->auto_opts.data_dir)
        return 0;
    DIR *d = opendir(t->auto_opts.data_dir);
    if (!d) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot list: %s", t->auto_opts.data_dir, strerror(e));
        return -e;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".log") != 0 ||
            !topics_name_valid(e->d_name, len - 4) || e->d_name[0] == '.')
            continue;
        pthread_mutex_lock(&t->add_mu);
        bool known = topics_find(t, e->d_name, len - 4) != NULL;
        if (!known) {
            rc = add_locked(t, e->d_name, len - 4, &t->auto_opts, true, NULL, err, errlen);
            if (rc == 0)
                log_info("msg=topic_reopened topic=%.*s reason=\"auto-create: log found in the "
                         "data directory\"",
                         (int)(len - 4), e->d_name);
        }
        pthread_mutex_unlock(&t->add_mu);
    }
    closedir(d);
    return rc;
}

struct topic *topics_find_or_create(struct topics *t, const char *name, size_t len, int *err)
{
    struct topic *tp = topics_find(t, name, len);
    *err = tp ? 0 : -ENOENT;
    if (tp || !t->auto_create)
        return tp;
    char why[600];
    pthread_mutex_lock(&t->add_mu);
    size_t before = atomic_load_explicit(&t->count, memory_order_relaxed);
    int rc = add_locked(t, name, len, &t->auto_opts, true, &tp, why, sizeof(why));
    if (rc) {
        atomic_fetch_add_explicit(&t->refused, 1, memory_order_relaxed);
        uint64_t suppressed;
        if (log_ratelimit_allow(&t->refused_rl, clock_mono_us(), &suppressed))
            log_warn("msg=topic_refused topic=%.*s error=\"%s\" suppressed=%llu",
                     (int)(len > 200 ? 200 : len), name, why, (unsigned long long)suppressed);
        *err = rc;
        tp = NULL;
    } else {
        *err = 0;
        if (atomic_load_explicit(&t->count, memory_order_relaxed) != before) {
            atomic_fetch_add_explicit(&t->auto_created, 1, memory_order_relaxed);
            log_info("msg=topic_created topic=%s reason=\"auto-create: named by a feed frame or a "
                     "Publish record\"",
                     tp->name);
        }
    }
    pthread_mutex_unlock(&t->add_mu);
    return tp;
}

const char *topics_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case -ENOENT:
        return "unknown topic";
    case -EINVAL:
        return "invalid topic name (1-128 of A-Z a-z 0-9 . _ -)";
    case -ENOSPC:
        return "too many topics (at most " TOPICS_MAX_TEXT ")";
    default:
        return "cannot open the topic's log (see the server log)";
    }
}

/* Syncs every log each interval, and once more when stopped. It sleeps the
 * whole interval in one wait (an idle server is not woken for nothing), and
 * a stop wakes it at once. */
static void *syncer_main(void *p)
{
    struct topics *t = p;
    pthread_mutex_lock(&t->syncer_mu);
    for (;;) {
        int64_t due_ns = clock_mono_ns() + t->sync_interval_ms * 1000000;
        struct timespec due = {.tv_sec = due_ns / 1000000000, .tv_nsec = due_ns % 1000000000};
        while (!t->syncer_stop &&
               pthread_cond_timedwait(&t->syncer_cv, &t->syncer_mu, &due) != ETIMEDOUT)
            ;
        bool stop = t->syncer_stop;
        pthread_mutex_unlock(&t->syncer_mu);
        for (size_t i = 0, n = topics_count(t); i < n; i++) {
            int rc = ringlog_sync(t->items[i]->log);
            if (rc)
                log_error("msg=sync_failed topic=%s error=\"%s\"", t->items[i]->name,
                          strerror(-rc));
        }
        if (stop)
            return NULL;
        pthread_mutex_lock(&t->syncer_mu);
    }
}

int topics_sync_start(struct topics *t, int64_t interval_ms)
{
    t->sync_interval_ms = interval_ms;
    t->syncer_stop = false;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc)
        return -rc;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&t->syncer_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc)
        return -rc;
    pthread_mutex_init(&t->syncer_mu, NULL);
    rc = pthread_create(&t->syncer, NULL, syncer_main, t);
    if (rc) {
        pthread_cond_destroy(&t->syncer_cv);
        pthread_mutex_destroy(&t->syncer_mu);
        return -rc;
    }
    pthread_setname_np(t->syncer, "tf-sync");
    t->syncer_started = true;
    return 0;
}

void topics_destroy(struct topics *t)
{
    if (t->syncer_started) {
        pthread_mutex_lock(&t->syncer_mu);
        t->syncer_stop = true;
        pthread_cond_signal(&t->syncer_cv);
        pthread_mutex_unlock(&t->syncer_mu);
        pthread_join(t->syncer, NULL);
        pthread_cond_destroy(&t->syncer_cv);
        pthread_mutex_destroy(&t->syncer_mu);
        t->syncer_started = false;
    }
    for (size_t i = 0, n = topics_count(t); i < n; i++) {
        ringlog_destroy(t->items[i]->log);
        free(t->items[i]->name);
        free(t->items[i]);
        t->items[i] = NULL;
    }
    for (size_t i = 0; i < TOPICS_HASH; i++)
        atomic_store_explicit(&t->by_name[i], NULL, memory_order_relaxed);
    atomic_store(&t->count, 0);
    free(t->auto_data_dir);
    t->auto_data_dir = NULL;
    t->auto_create = false;
    pthread_mutex_destroy(&t->add_mu);
}

static const struct topic_conf *section_of(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->ntopic_confs; i++)
        if (strcmp(cfg->topic_confs[i].name, name) == 0)
            return &cfg->topic_confs[i];
    return NULL;
}

size_t topics_log_size(const struct config *cfg, const char *name)
{
    const struct topic_conf *tc = section_of(cfg, name);
    return (size_t)(tc && tc->log_size >= 0 ? tc->log_size : cfg->log_size);
}

static int overflow_code(const char *s)
{
    return strcmp(s, "disconnect") == 0 ? 3 : strcmp(s, "conflate") == 0 ? 2 : 1;
}

static void set_if_changed(_Atomic int64_t *field, int64_t v, const char *topic, const char *what,
                           char *changed, size_t len)
{
    if (atomic_exchange(field, v) == v)
        return;
    size_t used = strlen(changed);
    snprintf(changed + used, len - used, "%stopic.%s.%s", used ? "," : "", topic, what);
}

void topics_apply_settings(struct topics *t, const struct config *cfg, char *changed, size_t len)
{
    changed[0] = 0;
    pthread_mutex_lock(&t->add_mu);
    t->def_max_lag_bytes = cfg->max_lag_bytes;
    t->def_max_lag_events = cfg->max_lag_events;
    t->def_heartbeat_us = cfg->heartbeat_ms * 1000;
    t->def_overflow = overflow_code(cfg->overflow);
    for (size_t i = 0, n = topics_count(t); i < n; i++) {
        struct topic *tp = t->items[i];
        const struct topic_conf *tc = section_of(cfg, tp->name);
        int64_t lag = tc && tc->max_lag_bytes >= 0 ? tc->max_lag_bytes : cfg->max_lag_bytes;
        int64_t lag_ev = tc && tc->max_lag_events >= 0 ? tc->max_lag_events : cfg->max_lag_events;
        int64_t hb = (tc && tc->heartbeat_ms >= 0 ? tc->heartbeat_ms : cfg->heartbeat_ms) * 1000;
        int ov = overflow_code(tc && tc->overflow ? tc->overflow : cfg->overflow);
        set_if_changed(&tp->max_lag_bytes, lag, tp->name, "max-lag-bytes", changed, len);
        set_if_changed(&tp->max_lag_events, lag_ev, tp->name, "max-lag-events", changed, len);
        set_if_changed(&tp->heartbeat_us, hb, tp->name, "heartbeat-ms", changed, len);
        if (atomic_exchange(&tp->overflow, ov) != ov) {
            size_t used = strlen(changed);
            snprintf(changed + used, len - used, "%stopic.%s.overflow", used ? "," : "", tp->name);
        }
    }
    pthread_mutex_unlock(&t->add_mu);
}
