/*
 * watch_service: the Watch service as the shards run it (service.h): the
 * method, the per-shard state, and the hooks that run the streams; and
 * what the admin view and the metrics read of them (watch.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "server.h"
#include "watch_shard.h"

static struct watch_shard *watch_shard_of(const struct shard *sh)
{
    return shard_state(sh, &watch_service);
}

/* ---- what the admin view and the metrics read ------------------------------ */

static void join(char *out, size_t len, const struct filter_set *s)
{
    out[0] = 0;
    size_t used = 0;
    for (size_t i = 0; i < s->count && used + 2 < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? "," : "", s->items[i]);
}

size_t watch_list(struct shard *sh, struct watch_info *rows, size_t cap)
{
    size_t n = 0;
    for (struct watch *w = watch_shard_of(sh)->all; w; w = w->next) {
        if (!w->rd.topic)
            continue; /* still being set up */
        if (n++ >= cap)
            continue;
        struct watch_info *r = &rows[n - 1];
        ringlog_t *log = w->rd.topic->log;
        r->id = w->id;
        snprintf(r->peer, sizeof(r->peer), "%s", w->peer);
        snprintf(r->topic, sizeof(r->topic), "%s", w->rd.topic->name);
        join(r->kinds, sizeof(r->kinds), &w->rd.filter.kinds);
        join(r->keys, sizeof(r->keys), &w->rd.filter.keys);
        watch_lag(w, &r->lag_events, &r->lag_bytes);
        r->sent = w->sent_data;
        r->dropped = w->rd.dropped;
        r->since_us = w->since_us;
        cursor_format((struct cursor){.epoch = ringlog_epoch(log), .seq = w->rd.it.seq - 1},
                      r->cursor);
        r->state = w->status_started || w->closed ? "ending"
                   : w->rd.eob_sent               ? "live"
                                                  : "replaying";
    }
    return n;
}

void watch_lag_totals(const struct shard *sh, uint64_t lag[WATCH_LAG_BUCKETS], uint64_t *sum)
{
    const struct watch_shard *ws = watch_shard_of(sh);
    for (size_t b = 0; b < WATCH_LAG_BUCKETS; b++)
        lag[b] = counter_get(&ws->lag[b]);
    *sum = counter_get(&ws->lag_sum);
}

/* ---- the service's hooks -------------------------------------------------- */

static int ws_init(struct shard *sh, void *st)
{
    struct watch_shard *ws = st;
    ws->shard = sh;
    /* per topic index, for every topic there may ever be */
    ws->waiting = calloc(TOPICS_MAX, sizeof(*ws->waiting));
    ws->seen_head = calloc(TOPICS_MAX, sizeof(*ws->seen_head));
    ws->slices = calloc(TOPICS_MAX, sizeof(*ws->slices));
    return ws->waiting && ws->seen_head && ws->slices ? 0 : -ENOMEM;
}

static void ws_fini(struct shard *sh, void *st)
{
    (void)sh;
    struct watch_shard *ws = st;
    for (size_t t = 0; ws->slices && t < TOPICS_MAX; t++) {
        struct slice_cache_entry *cache = ws->slices[t];
        for (size_t i = 0; cache && i < WATCH_SLICE_CACHE; i++)
            if (cache[i].seq)
                grpc_slice_unref(cache[i].slice);
        free(cache);
    }
    free(ws->slices);
    for (size_t i = 0; i < WATCH_HOPS; i++)
        if (ws->hops[i].set)
            grpc_slice_unref(ws->hops[i].slice);
    free(ws->waiting);
    free(ws->seen_head);
}

/* Pumps each stream of a list taken whole (a pump may put it back). */
static void pump_list(struct watch *w)
{
    for (struct watch *x = w; x; x = x->wnext)
        x->list = WATCH_LIST_NONE;
    while (w) {
        struct watch *next = w->wnext;
        w->wprev = w->wnext = NULL;
        watch_pump(w);
        w = next;
    }
}

/* Pumps the waiting streams of every topic whose head moved, then the
 * streams that yielded with more to scan. */
static void ws_run(struct shard *sh, void *st)
{
    struct watch_shard *ws = st;
    const struct topics *topics = sh->srv->topics;
    for (size_t i = 0, n = topics_count(topics); i < n; i++) {
        if (!ws->waiting[i])
            continue; /* nobody here waits for this topic: its appends are not ours */
        uint64_t head = ringlog_head_pos(topics->items[i]->log);
        if (head == ws->seen_head[i])
            continue;
        ws->seen_head[i] = head;
        struct watch *w = ws->waiting[i];
        ws->waiting[i] = NULL;
        pump_list(w);
    }
    struct watch *w = ws->ready;
    ws->ready = ws->ready_tail = NULL;
    pump_list(w);
}

/* Streams to run now: some yielded, or a topic they wait for moved. */
static bool ws_pending(const struct shard *sh, const void *st)
{
    const struct watch_shard *ws = st;
    if (ws->ready)
        return true;
    const struct topics *topics = sh->srv->topics;
    for (size_t i = 0, n = topics_count(topics); i < n; i++)
        if (ws->waiting[i] && ringlog_head_pos(topics->items[i]->log) != ws->seen_head[i])
            return true;
    return false;
}

static bool ws_wants_data(const struct shard *sh, const void *st)
{
    const struct watch_shard *ws = st;
    for (size_t i = 0, n = topics_count(sh->srv->topics); i < n; i++)
        if (ws->waiting[i])
            return true;
    return false;
}

/* Heartbeats and budgets of every stream, and the lag gauges. */
static void ws_tick(struct shard *sh, void *st, int64_t now_us)
{
    (void)sh;
    struct watch_shard *ws = st;
    uint64_t lag[WATCH_LAG_BUCKETS] = {0}, lag_sum = 0;
    for (struct watch *w = ws->all; w; w = w->next) {
        watch_tick(w, now_us);
        if (w->rd.topic && w->rd.eob_sent) {
            uint64_t events, behind;
            watch_lag(w, &events, &behind);
            size_t b = 0;
            while (behind > watch_lag_bounds[b])
                b++;
            lag[b]++;
            lag_sum += behind;
        }
    }
    for (size_t b = 0; b < WATCH_LAG_BUCKETS; b++)
        atomic_store_explicit(&ws->lag[b], lag[b], memory_order_relaxed);
    atomic_store_explicit(&ws->lag_sum, lag_sum, memory_order_relaxed);
}

static void ws_drain(struct shard *sh, void *st)
{
    (void)sh;
    struct watch_shard *ws = st;
    for (struct watch *w = ws->all, *next; w; w = next) {
        next = w->next;
        watch_drain(w);
    }
}

static const struct service_method methods[] = {
    {"/events.v1.Watcher/Watch", true, watch_accept, WATCH_REQUESTS, true},
};

const struct service watch_service = {
    .name = "watch",
    .methods = methods,
    .nmethods = sizeof(methods) / sizeof(methods[0]),
    .state_size = sizeof(struct watch_shard),
    .init = ws_init,
    .fini = ws_fini,
    .run = ws_run,
    .pending = ws_pending,
    .wants_data = ws_wants_data,
    .tick = ws_tick,
    .drain = ws_drain,
};
