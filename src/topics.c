/*
 * topics: name -> log registry. Built by main, then read-only.
 */
#include "topics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
