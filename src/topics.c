/*
 * topics: name -> log registry. Built by main, then read-only.
 */
#include "topics.h"

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

int topics_add(struct topics *t, const char *name, const struct topics_options *opts, char *err,
               size_t errlen)
{
    size_t len = strlen(name);
    if (!topics_name_valid(name, len)) {
        snprintf(err, errlen, "invalid topic name '%s' (1-128 of A-Z a-z 0-9 . _ -)", name);
        return -EINVAL;
    }
    if (topics_find(t, name, len))
        return 0;
    if (t->count >= TOPICS_MAX) {
        snprintf(err, errlen, "too many topics (at most %d)", TOPICS_MAX);
        return -ENOSPC;
    }
    struct topic *grown = realloc(t->items, (t->count + 1) * sizeof(*grown));
    if (!grown)
        goto out_nomem;
    t->items = grown;
    struct topic *tp = &t->items[t->count];
    memset(tp, 0, sizeof(*tp));
    tp->name = strdup(name);
    if (!tp->name)
        goto out_nomem;
    int rc;
    if (!opts->data_dir) {
        rc = ringlog_create(&tp->log, name, opts->log_size);
        if (rc)
            snprintf(err, errlen, "topic '%s': cannot create its log: %s", name, strerror(-rc));
    } else {
        char path[4096], why[512];
        snprintf(path, sizeof(path), "%s/%s.log", opts->data_dir, name);
        struct ringlog_options lo = {.capacity = opts->log_size, .sync_every = opts->sync_every};
        struct ringlog_recovery rep;
        rc = ringlog_open(&tp->log, path, name, &lo, &rep, why, sizeof(why));
        if (rc) {
            snprintf(err, errlen, "topic '%s': %s", name, why);
        } else {
            log_info(
                "msg=log_opened topic=%s path=%s created=%s records=%llu first_seq=%llu "
                "head_seq=%llu cut_offset=%llu cut_bytes=%llu epoch=%016llx epoch_kept=%s%s%s%s",
                name, path, rep.created ? "true" : "false", (unsigned long long)rep.records,
                (unsigned long long)rep.first_seq, (unsigned long long)rep.head_seq,
                (unsigned long long)rep.cut_offset, (unsigned long long)rep.cut_bytes,
                (unsigned long long)ringlog_epoch(tp->log), rep.epoch_kept ? "true" : "false",
                rep.reason ? " reason=\"" : "", rep.reason ? rep.reason : "",
                rep.reason ? "\"" : "");
            if (rep.moved_to[0])
                log_warn("msg=log_damaged topic=%s path=%s moved_to=%s", name, path, rep.moved_to);
        }
    }
    if (rc) {
        free(tp->name);
        return rc;
    }
    tp->index = t->count++;
    return 0;

out_nomem:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

static void *syncer_main(void *p)
{
    struct topics *t = p;
    while (!atomic_load(&t->syncer_stop)) {
        /* sleep in short steps so a stop is not held up by a long interval */
        for (int64_t slept = 0; slept < t->sync_interval_ms && !atomic_load(&t->syncer_stop);
             slept += 20) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000};
            nanosleep(&ts, NULL);
        }
        for (size_t i = 0; i < t->count; i++) {
            int rc = ringlog_sync(t->items[i].log);
            if (rc)
                log_error("msg=sync_failed topic=%s error=\"%s\"", t->items[i].name, strerror(-rc));
        }
    }
    return NULL;
}

int topics_sync_start(struct topics *t, int64_t interval_ms)
{
    t->sync_interval_ms = interval_ms;
    atomic_init(&t->syncer_stop, false);
    int rc = pthread_create(&t->syncer, NULL, syncer_main, t);
    if (rc)
        return -rc;
    t->syncer_started = true;
    return 0;
}

struct topic *topics_find(const struct topics *t, const char *name, size_t len)
{
    for (size_t i = 0; i < t->count; i++)
        if (strlen(t->items[i].name) == len && memcmp(t->items[i].name, name, len) == 0)
            return &t->items[i];
    return NULL;
}

void topics_destroy(struct topics *t)
{
    if (t->syncer_started) {
        atomic_store(&t->syncer_stop, true);
        pthread_join(t->syncer, NULL);
        t->syncer_started = false;
    }
    for (size_t i = 0; i < t->count; i++) {
        ringlog_destroy(t->items[i].log);
        free(t->items[i].name);
    }
    free(t->items);
    t->items = NULL;
    t->count = 0;
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
    for (size_t i = 0; i < t->count; i++) {
        struct topic *tp = &t->items[i];
        const struct topic_conf *tc = section_of(cfg, tp->name);
        int64_t lag = tc && tc->max_lag_bytes >= 0 ? tc->max_lag_bytes : cfg->max_lag_bytes;
        int64_t hb = (tc && tc->heartbeat_ms >= 0 ? tc->heartbeat_ms : cfg->heartbeat_ms) * 1000;
        int ov = overflow_code(tc && tc->overflow ? tc->overflow : cfg->overflow);
        set_if_changed(&tp->max_lag_bytes, lag, tp->name, "max-lag-bytes", changed, len);
        set_if_changed(&tp->heartbeat_us, hb, tp->name, "heartbeat-ms", changed, len);
        if (atomic_exchange(&tp->overflow, ov) != ov) {
            size_t used = strlen(changed);
            snprintf(changed + used, len - used, "%stopic.%s.overflow", used ? "," : "", tp->name);
        }
    }
}
