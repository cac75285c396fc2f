/*
 * ingest: the feed thread and the single writer of the topic logs.
 *
 * Today its sources are built-in simulators, paced by the clock: each loop
 * produces what is due since the start, in bounded batches, then sleeps until
 * the next event is due.
 */
#include "ingest.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define MAX_BATCH 4096

struct feed_state {
    struct ingest_feed feed;
    uint64_t produced;
};

struct ingest {
    struct feed_state *feeds;
    size_t nfeeds;
    void (*notify)(void *);
    void *arg;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    _Atomic uint64_t appended;
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t ingest_append(struct topic *t, struct wire_data *d)
{
    ringlog_t *log = t->log;
    struct cursor c = {.epoch = ringlog_epoch(log), .seq = ringlog_head_seq(log) + 1};
    d->seq = c.seq;
    size_t n = wire_data_event_size(d, c);
    struct ringlog_slot slot;
    if (ringlog_reserve(log, RINGLOG_DATA, d->kind_len, d->key_len, n, d->ingested_us, &slot))
        return 0;
    memcpy(slot.kind, d->kind, d->kind_len);
    memcpy(slot.key, d->key, d->key_len);
    wire_data_event_pack(d, c, slot.event);
    ringlog_commit(log, &slot);
    return slot.seq;
}

static void *ingest_main(void *p)
{
    ingest_t *in = p;
    int64_t start = mono_ns();
    int64_t last_ingest_us = 0;
    while (!atomic_load_explicit(&in->stop, memory_order_relaxed)) {
        int64_t elapsed = mono_ns() - start;
        int64_t sleep_ns = 50 * 1000000;
        uint64_t batch_total = 0;
        for (size_t i = 0; i < in->nfeeds; i++) {
            struct feed_state *f = &in->feeds[i];
            uint64_t due = (uint64_t)((__int128)elapsed * f->feed.rate / 1000000000);
            uint64_t todo = due > f->produced ? due - f->produced : 0;
            if (todo > MAX_BATCH)
                todo = MAX_BATCH;
            for (uint64_t k = 0; k < todo; k++) {
                int64_t now = real_ns();
                int64_t now_us = now / 1000;
                /* ingest time never goes backwards within the process, so
                 * START_AT_TIME can binary-search it */
                if (now_us < last_ingest_us)
                    now_us = last_ingest_us;
                last_ingest_us = now_us;
                struct sim_tick tick;
                sim_next(f->feed.sim, now, &tick);
                struct wire_data d = {
                    .kind = tick.kind,
                    .kind_len = strlen(tick.kind),
                    .key = tick.symbol,
                    .key_len = strlen(tick.symbol),
                    .body = tick.body,
                    .body_len = tick.body_len,
                    .emitted_us = now / 1000,
                    .ingested_us = now_us,
                };
                if (ingest_append(f->feed.topic, &d))
                    atomic_fetch_add_explicit(&in->appended, 1, memory_order_relaxed);
                f->produced++;
            }
            batch_total += todo;
            int64_t next_due =
                (int64_t)((__int128)(f->produced + 1) * 1000000000 / f->feed.rate) - elapsed;
            if (next_due < sleep_ns)
                sleep_ns = next_due;
        }
        if (batch_total)
            in->notify(in->arg);
        if (sleep_ns > 0) {
            if (sleep_ns < 100000)
                sleep_ns = 100000; /* batch rather than spin at high rates */
            struct timespec ts = {.tv_sec = sleep_ns / 1000000000,
                                  .tv_nsec = sleep_ns % 1000000000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int ingest_create(ingest_t **out, const struct ingest_feed *feeds, size_t nfeeds,
                  void (*notify)(void *arg), void *arg)
{
    *out = NULL;
    ingest_t *in = calloc(1, sizeof(*in));
    if (!in)
        return -ENOMEM;
    in->feeds = calloc(nfeeds ? nfeeds : 1, sizeof(*in->feeds));
    if (!in->feeds) {
        free(in);
        return -ENOMEM;
    }
    for (size_t i = 0; i < nfeeds; i++)
        in->feeds[i].feed = feeds[i];
    in->nfeeds = nfeeds;
    in->notify = notify;
    in->arg = arg;
    atomic_init(&in->stop, false);
    atomic_init(&in->appended, 0);
    *out = in;
    return 0;
}

int ingest_start(ingest_t *in)
{
    if (in->nfeeds == 0)
        return 0;
    int rc = pthread_create(&in->thread, NULL, ingest_main, in);
    if (rc)
        return -rc;
    in->started = true;
    return 0;
}

void ingest_stop(ingest_t *in)
{
    if (!in || !in->started)
        return;
    atomic_store(&in->stop, true);
    pthread_join(in->thread, NULL);
    in->started = false;
}

void ingest_destroy(ingest_t *in)
{
    if (!in)
        return;
    ingest_stop(in);
    for (size_t i = 0; i < in->nfeeds; i++)
        sim_destroy(in->feeds[i].feed.sim);
    free(in->feeds);
    free(in);
}

uint64_t ingest_appended(const ingest_t *in)
{
    return atomic_load_explicit(&in->appended, memory_order_relaxed);
}
