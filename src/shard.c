/*
 * shard: a worker thread and its completion queue. See shard.h.
 *
 * Loop: wake the streams of topics whose head moved, run streams that
 * yielded, send heartbeats when due, arm the doorbell, then block on the
 * queue until an operation completes, the doorbell rings, or the next tick.
 * Arming is a Dekker handshake with the ingest thread: we publish "armed",
 * fence, then look at the heads; ingest publishes the head, fences, then
 * looks at "armed". One of the two sees the other, so no append is missed.
 */
#include "shard.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "health.h"
#include "ingest.h"
#include "publish.h"
#include "log.h"
#include "ringlog.h"
#include "server.h"
#include "subscribe.h"
#include "topics.h"
#include "watch.h"

/* ---- lists --------------------------------------------------------------- */

void shard_add(struct shard *sh, struct watch *w)
{
    w->prev = NULL;
    w->next = sh->all;
    if (sh->all)
        sh->all->prev = w;
    sh->all = w;
    if (!w->mux) /* a Subscribe stream counts once, not per subscription */
        atomic_fetch_add_explicit(&sh->streams, 1, memory_order_relaxed);
}

void shard_remove(struct shard *sh, struct watch *w)
{
    shard_unlist(sh, w);
    if (w->prev)
        w->prev->next = w->next;
    else
        sh->all = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (!w->mux)
        atomic_fetch_sub_explicit(&sh->streams, 1, memory_order_relaxed);
}

void shard_unlist(struct shard *sh, struct watch *w)
{
    if (w->list == SHARD_LIST_NONE)
        return;
    struct watch **head =
        w->list == SHARD_LIST_WAITING ? &sh->waiting[w->topic->index] : &sh->ready;
    if (w->wprev)
        w->wprev->wnext = w->wnext;
    else
        *head = w->wnext;
    if (w->wnext)
        w->wnext->wprev = w->wprev;
    else if (w->list == SHARD_LIST_READY)
        sh->ready_tail = w->wprev;
    w->wprev = w->wnext = NULL;
    w->list = SHARD_LIST_NONE;
}

void shard_set_waiting(struct shard *sh, struct watch *w)
{
    shard_unlist(sh, w);
    struct watch **head = &sh->waiting[w->topic->index];
    w->wprev = NULL;
    w->wnext = *head;
    if (*head)
        (*head)->wprev = w;
    *head = w;
    w->list = SHARD_LIST_WAITING;
}

void shard_set_ready(struct shard *sh, struct watch *w)
{
    shard_unlist(sh, w);
    w->wnext = NULL;
    w->wprev = sh->ready_tail;
    if (sh->ready_tail)
        sh->ready_tail->wnext = w;
    else
        sh->ready = w;
    sh->ready_tail = w;
    w->list = SHARD_LIST_READY;
}

/* ---- shared event slices ------------------------------------------------- */

bool shard_event_slice(struct shard *sh, const struct topic *t, const struct ringlog_iter *it,
                       const struct ringlog_view *v, grpc_slice *out)
{
    struct slice_cache_entry *cache = sh->slices[t->index];
    if (!cache) {
        /* first send of this topic on this shard (topics may be created late) */
        cache = sh->slices[t->index] = calloc(SHARD_SLICE_CACHE, sizeof(*cache));
        if (!cache) { /* out of memory: an unshared copy */
            *out = grpc_slice_malloc(v->event_len);
            ringlog_copy_event(v, GRPC_SLICE_START_PTR(*out));
            return true; /* the caller checks the view is still valid */
        }
    }
    struct slice_cache_entry *e = &cache[v->seq & (SHARD_SLICE_CACHE - 1)];
    if (e->seq != v->seq) {
        grpc_slice s = grpc_slice_malloc(v->event_len);
        ringlog_copy_event(v, GRPC_SLICE_START_PTR(s));
        if (!ringlog_view_valid(t->log, it)) {
            grpc_slice_unref(s); /* torn: the writer lapped us while we copied */
            return false;
        }
        if (e->seq)
            grpc_slice_unref(e->slice);
        e->slice = s;
        e->seq = v->seq;
        counter_add(&sh->ctr.slice_copies, 1);
    } else {
        counter_add(&sh->ctr.slice_shares, 1);
    }
    *out = grpc_slice_ref(e->slice);
    return true;
}

grpc_byte_buffer *shard_event_buffer(struct shard *sh, const struct topic *t,
                                     const struct ringlog_iter *it, const struct ringlog_view *v)
{
    grpc_slice s;
    if (!shard_event_slice(sh, t, it, v, &s))
        return NULL;
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

grpc_call_error shard_start_batch(struct shard *sh, grpc_call *call, const grpc_op *ops,
                                  size_t nops, struct tag *t)
{
    if (!sh->srv->cq_thread_cache)
        return grpc_call_start_batch(call, ops, nops, t, NULL);
    grpc_completion_queue_thread_local_cache_init(sh->cq);
    grpc_call_error e = grpc_call_start_batch(call, ops, nops, t, NULL);
    void *tag;
    int ok;
    if (grpc_completion_queue_thread_local_cache_flush(sh->cq, &tag, &ok)) {
        struct tag *done = tag; /* this batch's, or another of this queue's */
        done->done_ok = ok;
        done->done_next = NULL;
        if (sh->done_tail)
            sh->done_tail->done_next = done;
        else
            sh->done = done;
        sh->done_tail = done;
        counter_add(&sh->ctr.cq_cached, 1);
    }
    return e;
}

void shard_refuse(grpc_call *call, grpc_status_code code, const char *msg)
{
    grpc_call_cancel_with_status(call, code, msg, NULL);
    grpc_call_unref(call);
}

/* ---- doorbell ------------------------------------------------------------ */

void shard_ring(struct shard *sh)
{
    if (atomic_load_explicit(&sh->bell_armed, memory_order_relaxed) &&
        atomic_exchange(&sh->bell_armed, false))
        grpc_call_start_batch(sh->bell_call, NULL, 0, &sh->bell_tag, NULL);
}

void shard_post(struct shard *sh, struct ingest_job *job)
{
    struct ingest_job *head = atomic_load_explicit(&sh->inbox, memory_order_relaxed);
    do
        job->next = head;
    while (!atomic_compare_exchange_weak(&sh->inbox, &head, job));
    /* Pairs with the shard's fence after arming its doorbell. */
    atomic_thread_fence(memory_order_seq_cst);
    shard_ring(sh);
}

static bool run_inbox(struct shard *sh)
{
    struct ingest_job *list = atomic_exchange(&sh->inbox, NULL);
    if (!list)
        return false;
    struct ingest_job *fifo = NULL;
    while (list) {
        struct ingest_job *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        struct ingest_job *job = fifo;
        fifo = job->next;
        publish_on_ack(sh, job);
    }
    return true;
}

/* ---- incoming calls ------------------------------------------------------ */

struct other_call {
    struct tag tag;
    grpc_call *call;
    int cancelled;
    grpc_slice details;
};

static bool accepting(const struct shard *sh)
{
    return !atomic_load(&sh->srv->draining) && !atomic_load(&sh->srv->stopping);
}

static void arm_watch_request(struct shard *sh, struct request_slot *slot)
{
    if (!accepting(sh))
        return;
    grpc_metadata_array_init(&slot->md);
    slot->payload = NULL;
    slot->call = NULL;
    grpc_call_error e = grpc_server_request_registered_call(
        sh->srv->grpc, sh->srv->watch_method, &slot->call, &slot->deadline, &slot->md,
        &slot->payload, sh->cq, sh->cq, &slot->tag);
    if (e != GRPC_CALL_OK) {
        log_error("msg=request_call_failed shard=%zu error=%d", sh->index, e);
        grpc_metadata_array_destroy(&slot->md);
        return;
    }
    slot->armed = true;
}

static void arm_other_request(struct shard *sh)
{
    struct request_slot *slot = &sh->other_req;
    if (!accepting(sh))
        return;
    grpc_metadata_array_init(&slot->md);
    grpc_call_details_init(&slot->details);
    slot->call = NULL;
    grpc_call_error e = grpc_server_request_call(sh->srv->grpc, &slot->call, &slot->details,
                                                 &slot->md, sh->cq, sh->cq, &slot->tag);
    if (e != GRPC_CALL_OK) {
        log_error("msg=request_call_failed shard=%zu error=%d", sh->index, e);
        grpc_metadata_array_destroy(&slot->md);
        grpc_call_details_destroy(&slot->details);
        return;
    }
    slot->armed = true;
}

/* gRPC gives each connection a completion queue round-robin when it is
 * accepted and binds a new call to that queue if it has a matching request
 * armed, else to another queue that has one; a call never moves.
 * --shard-balance=connection keeps requests armed on every shard, so a
 * connection's calls stay on the shard of its queue (its completions never
 * cross threads) and gRPC's round-robin balances connections. =stream
 * balances streams instead, for clients that put many streams on few
 * connections: a shard keeps requests armed only while it serves no more
 * than BALANCE_SLACK streams above the least loaded shard (the least loaded
 * one always qualifies, so some shard is always accepting), which spreads
 * one connection's calls over every shard. */
#define BALANCE_SLACK 8

static bool below_share(const struct shard *sh)
{
    if (!sh->srv->balance_streams)
        return true;
    int64_t mine = atomic_load_explicit(&sh->streams, memory_order_relaxed);
    int64_t least = mine;
    for (size_t i = 0; i < sh->srv->nshards; i++) {
        int64_t n = atomic_load_explicit(&sh->srv->shards[i]->streams, memory_order_relaxed);
        if (n < least)
            least = n;
    }
    return mine <= least + BALANCE_SLACK;
}

/* Arms every free Watch request slot, if this shard is below its share. */
static void top_up_requests(struct shard *sh)
{
    if (!accepting(sh) || !below_share(sh))
        return;
    for (size_t i = 0; i < SHARD_WATCH_REQUESTS; i++)
        if (!sh->watch_req[i].armed)
            arm_watch_request(sh, &sh->watch_req[i]);
}

#define CANCEL_LOG_INTERVAL_US 1000000

/* At most one line a second for the whole server, whichever shard writes
 * it, with the count since the line before: an attacker resetting streams
 * by the thousand must not turn them into a log flood. Runs on each such
 * call and at every shard tick, so the end of a burst is reported too. */
static void report_cancelled(struct shard *sh, int64_t now_us)
{
    struct server *srv = sh->srv;
    int64_t last = atomic_load_explicit(&srv->cancel_log_us, memory_order_relaxed);
    if (last && now_us - last < CANCEL_LOG_INTERVAL_US)
        return;
    uint64_t total = 0;
    for (size_t i = 0; i < srv->nshards; i++)
        total += counter_get(&srv->shards[i]->ctr.cancelled_before_request);
    uint64_t reported = atomic_load(&srv->cancel_logged);
    if (total <= reported || !atomic_compare_exchange_strong(&srv->cancel_log_us, &last, now_us))
        return; /* nothing new, or another shard reports it */
    atomic_store(&srv->cancel_logged, total);
    log_info("msg=calls_cancelled_before_request count=%llu total=%llu "
             "detail=\"calls their clients reset before sending the request (at most one line "
             "a second)\"",
             (unsigned long long)(total - reported), (unsigned long long)total);
}

/* A call of a method that reads its request, handed to us without one. If
 * the client reset the stream first (a rapid reset does that), it is a
 * cancel, not a malformed request: count it and let the call go, nothing of
 * ours allocated, no status, no line of its own. A client that half-closed
 * without a message is a graceful end of stream: the method answers that.
 * Takes the call's reference when it returns true. */
static bool drop_if_cancelled(struct shard *sh, grpc_call *call, grpc_byte_buffer *payload)
{
    if (payload || !grpc_call_failed_before_recv_message(call))
        return false;
    counter_add(&sh->ctr.cancelled_before_request, 1);
    grpc_call_cancel(call, NULL);
    grpc_call_unref(call);
    report_cancelled(sh, log_now_mono_us());
    return true;
}

static void on_new_watch(struct shard *sh, struct request_slot *slot, bool ok)
{
    slot->armed = false;
    grpc_metadata_array_destroy(&slot->md);
    if (ok && slot->call) {
        if (!drop_if_cancelled(sh, slot->call, slot->payload))
            watch_accept(sh, slot->call, slot->payload);
    } else if (slot->payload) {
        grpc_byte_buffer_destroy(slot->payload);
    }
    slot->call = NULL;
    slot->payload = NULL;
    if (below_share(sh)) {
        arm_watch_request(sh, slot);
    } else {
        /* over our share: let the others (idle ones sleep) take new calls */
        for (size_t i = 0; i < sh->srv->nshards; i++)
            if (sh->srv->shards[i] != sh)
                shard_ring(sh->srv->shards[i]);
    }
}

/* A method this server does not implement: answer UNIMPLEMENTED. */
static void on_new_other(struct shard *sh, bool ok)
{
    struct request_slot *slot = &sh->other_req;
    slot->armed = false;
    if (ok && slot->call) {
        struct other_call *oc = calloc(1, sizeof(*oc));
        if (!oc) {
            grpc_call_cancel(slot->call, NULL);
            grpc_call_unref(slot->call);
        } else {
            char msg[300];
            char *method = grpc_slice_to_c_string(slot->details.method);
            snprintf(msg, sizeof(msg), "unknown method %.256s", method);
            gpr_free(method);
            oc->tag = (struct tag){.kind = TAG_OTHER_DONE, .obj = oc};
            oc->call = slot->call;
            oc->details = grpc_slice_from_copied_string(msg);
            grpc_op ops[3];
            memset(ops, 0, sizeof(ops));
            ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
            ops[1].data.send_status_from_server.status_details = &oc->details;
            ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
            ops[2].data.recv_close_on_server.cancelled = &oc->cancelled;
            if (grpc_call_start_batch(oc->call, ops, 3, &oc->tag, NULL) == GRPC_CALL_OK) {
                sh->calls_live++;
            } else {
                grpc_call_unref(oc->call);
                grpc_slice_unref(oc->details);
                free(oc);
            }
        }
    }
    grpc_metadata_array_destroy(&slot->md);
    grpc_call_details_destroy(&slot->details);
    slot->call = NULL;
    arm_other_request(sh);
}

static void arm_method_request(struct shard *sh, struct request_slot *slot)
{
    if (!accepting(sh))
        return;
    const struct service_method *m = &sh->srv->methods[slot->method];
    grpc_metadata_array_init(&slot->md);
    slot->payload = NULL;
    slot->call = NULL;
    grpc_call_error e = grpc_server_request_registered_call(
        sh->srv->grpc, sh->srv->method_handles[slot->method], &slot->call, &slot->deadline,
        &slot->md, m->read_payload ? &slot->payload : NULL, sh->cq, sh->cq, &slot->tag);
    if (e != GRPC_CALL_OK) {
        log_error("msg=request_call_failed shard=%zu method=%s error=%d", sh->index, m->path, e);
        grpc_metadata_array_destroy(&slot->md);
        return;
    }
    slot->armed = true;
}

static void on_new_method(struct shard *sh, struct request_slot *slot, bool ok)
{
    slot->armed = false;
    grpc_metadata_array_destroy(&slot->md);
    const struct service_method *m = &sh->srv->methods[slot->method];
    if (ok && slot->call) {
        if (!m->read_payload || !drop_if_cancelled(sh, slot->call, slot->payload))
            m->accept(sh, slot->call, slot->payload);
    } else if (slot->payload) {
        grpc_byte_buffer_destroy(slot->payload);
    }
    slot->call = NULL;
    slot->payload = NULL;
    arm_method_request(sh, slot);
}

static void on_other_done(struct shard *sh, struct other_call *oc)
{
    sh->calls_live--;
    grpc_call_unref(oc->call);
    grpc_slice_unref(oc->details);
    free(oc);
}

static void dispatch(struct shard *sh, struct tag *t, bool ok)
{
    switch (t->kind) {
    case TAG_BELL:
        sh->bell_pending = false;
        break;
    case TAG_NEW_WATCH:
        on_new_watch(sh, t->obj, ok);
        break;
    case TAG_NEW_OTHER:
        on_new_other(sh, ok);
        break;
    case TAG_OTHER_DONE:
        on_other_done(sh, t->obj);
        break;
    case TAG_SEND:
        watch_on_send(t->obj, ok);
        break;
    case TAG_RECV_CLOSE:
        watch_on_close(t->obj);
        break;
    case TAG_STATUS:
        watch_on_status(t->obj);
        break;
    case TAG_NEW_METHOD:
        on_new_method(sh, t->obj, ok);
        break;
    case TAG_CALLBACK:
        t->fn(sh, t->obj, ok);
        break;
    }
}

/* ---- the loop ------------------------------------------------------------ */

/* A quarter of the shortest heartbeat cadence, within 5..250 ms. */
static int64_t shard_tick_us(const struct server *srv)
{
    int64_t tick = 250000;
    for (size_t i = 0, n = topics_count(srv->topics); i < n; i++) {
        int64_t hb =
            atomic_load_explicit(&srv->topics->items[i]->heartbeat_us, memory_order_relaxed) / 4;
        if (hb < tick)
            tick = hb;
    }
    return tick < 5000 ? 5000 : tick;
}

static void shutdown_cq(struct shard *sh)
{
    grpc_completion_queue_shutdown(sh->cq);
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(sh->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    sh->cq_shut = true;
}

/* Pumps the waiting streams of every topic whose head moved. Returns true if
 * any head had moved. */
static bool wake_topics(struct shard *sh)
{
    const struct topics *topics = sh->srv->topics;
    bool moved = false;
    for (size_t i = 0, n = topics_count(topics); i < n; i++) {
        if (!sh->waiting[i])
            continue; /* nobody here waits for this topic: its appends are not ours */
        uint64_t head = ringlog_head_pos(topics->items[i]->log);
        if (head == sh->seen_head[i])
            continue;
        sh->seen_head[i] = head;
        moved = true;
        struct watch *w = sh->waiting[i];
        sh->waiting[i] = NULL;
        for (struct watch *x = w; x; x = x->wnext)
            x->list = SHARD_LIST_NONE;
        while (w) {
            struct watch *next = w->wnext;
            w->wprev = w->wnext = NULL;
            watch_pump(w);
            w = next;
        }
    }
    return moved;
}

/* Did a topic that some stream here waits for move? */
static bool heads_moved(const struct shard *sh)
{
    const struct topics *topics = sh->srv->topics;
    for (size_t i = 0, n = topics_count(topics); i < n; i++) {
        if (!sh->waiting[i])
            continue;
        if (ringlog_head_pos(topics->items[i]->log) != sh->seen_head[i])
            return true;
    }
    return false;
}

#define DONE_STREAK 64

/* Dispatches the completions shard_start_batch took from the cache. */
static void run_done(struct shard *sh)
{
    struct tag *t = sh->done;
    sh->done = sh->done_tail = NULL;
    while (t) {
        struct tag *next = t->done_next;
        dispatch(sh, t, t->done_ok);
        t = next;
    }
}

static void run_ready(struct shard *sh)
{
    struct watch *w = sh->ready;
    sh->ready = sh->ready_tail = NULL;
    for (struct watch *x = w; x; x = x->wnext)
        x->list = SHARD_LIST_NONE;
    while (w) {
        struct watch *next = w->wnext;
        w->wprev = w->wnext = NULL;
        watch_pump(w);
        w = next;
    }
}

static bool requests_armed(const struct shard *sh)
{
    for (size_t i = 0; i < SHARD_WATCH_REQUESTS; i++)
        if (sh->watch_req[i].armed)
            return true;
    for (size_t i = 0; i < sh->srv->nmethods; i++)
        if (sh->method_req[i].armed)
            return true;
    return sh->other_req.armed;
}

static void *shard_main(void *p)
{
    struct shard *sh = p;
    struct server *srv = sh->srv;
    top_up_requests(sh);
    arm_other_request(sh);
    for (size_t i = 0; i < srv->nmethods; i++)
        arm_method_request(sh, &sh->method_req[i]);
    sh->next_tick_us = log_now_mono_us() + sh->tick_us;

    for (;;) {
        if (!sh->drain_seen && atomic_load(&srv->draining)) {
            sh->drain_seen = true;
            for (struct watch *w = sh->all, *next; w; w = next) {
                next = w->next;
                watch_drain(w);
            }
            subscribe_drain(sh);
            health_drain(sh);
            publish_drain(sh);
        }
        top_up_requests(sh);
        run_inbox(sh);
        wake_topics(sh);
        run_ready(sh);
        run_done(sh);
        subscribe_run(sh);
        int64_t now = log_now_mono_us();
        if (now >= sh->next_tick_us) {
            uint64_t lag[SHARD_LAG_BUCKETS] = {0}, lag_sum = 0;
            for (struct watch *w = sh->all; w; w = w->next) {
                watch_tick(w, now);
                if (w->topic && w->eob_sent) {
                    uint64_t behind = ringlog_head_pos(w->topic->log) - w->it.pos;
                    size_t b = 0;
                    while (behind > shard_lag_bounds[b])
                        b++;
                    lag[b]++;
                    lag_sum += behind;
                }
            }
            for (size_t b = 0; b < SHARD_LAG_BUCKETS; b++)
                atomic_store_explicit(&sh->ctr.lag[b], lag[b], memory_order_relaxed);
            atomic_store_explicit(&sh->ctr.lag_sum, lag_sum, memory_order_relaxed);
            admin_tick(sh, now);
            report_cancelled(sh, now);
            sh->tick_us = shard_tick_us(srv); /* SIGHUP may change a cadence */
            sh->next_tick_us = now + sh->tick_us;
        }
        if (atomic_load(&srv->stopping) && !sh->all && !requests_armed(sh) && !sh->calls_live)
            break;
        if (atomic_load(&srv->stopping) && sh->calls_live)
            health_drain(sh); /* health streams opened while draining */
        /* Completions taken from the thread-local cache are this thread's
         * own: go round again rather than poll a queue they are not in (an
         * empty queue costs a pollset pass). Every DONE_STREAK rounds the
         * queue is polled anyway, so new calls and the doorbell are seen. */
        if (sh->done && ++sh->done_streak < DONE_STREAK)
            continue;
        sh->done_streak = 0;

        /* Appends concern this shard only while a stream waits for data:
         * say so before arming, so the ingest thread rings only then. */
        bool waiting = false;
        for (size_t i = 0, n = topics_count(srv->topics); i < n && !waiting; i++)
            waiting = sh->waiting[i] != NULL;
        atomic_store(&sh->wants_data, waiting);
        if (!sh->bell_pending) {
            sh->bell_pending = true;
            atomic_store(&sh->bell_armed, true);
        }
        atomic_thread_fence(memory_order_seq_cst);
        gpr_timespec deadline;
        if (sh->ready || sh->done || sh->mux_dirty || heads_moved(sh) || atomic_load(&sh->inbox) ||
            (!sh->drain_seen && atomic_load(&srv->draining)))
            deadline = gpr_time_0(GPR_CLOCK_MONOTONIC);
        else
            deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                    gpr_time_from_micros(sh->next_tick_us - now, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(sh->cq, deadline, NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            dispatch(sh, ev.tag, ev.success);
        else if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }

    /* Take the doorbell back; if someone is ringing it, wait for that tag. */
    bool bell_in_flight = sh->bell_pending && !atomic_exchange(&sh->bell_armed, false);
    while (bell_in_flight) {
        grpc_event ev =
            grpc_completion_queue_next(sh->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        if (((struct tag *)ev.tag)->kind == TAG_BELL)
            bell_in_flight = false;
    }
    /* bell_call itself stays as it is: shard_ring reads it from other
     * threads, ordered after our take-back only through gRPC's queue. */
    grpc_call_unref(sh->bell_call);
    sh->bell_released = true;
    shutdown_cq(sh);
    return NULL;
}

/* ---- life cycle ---------------------------------------------------------- */

int shard_create(struct shard **out, struct server *srv, size_t index, char *err, size_t errlen)
{
    *out = NULL;
    struct shard *sh = calloc(1, sizeof(*sh));
    if (!sh) {
        snprintf(err, errlen, "shard %zu: out of memory", index);
        return -ENOMEM;
    }
    int rc = -ENOMEM;
    sh->srv = srv;
    sh->index = index;
    /* per topic index, for every topic there may ever be */
    sh->waiting = calloc(TOPICS_MAX, sizeof(*sh->waiting));
    sh->seen_head = calloc(TOPICS_MAX, sizeof(*sh->seen_head));
    sh->slices = calloc(TOPICS_MAX, sizeof(*sh->slices));
    sh->horizon_seq = calloc(TOPICS_MAX, sizeof(*sh->horizon_seq));
    sh->horizon_of = calloc(TOPICS_MAX, sizeof(*sh->horizon_of));
    sh->horizon_gen = 1;
    if (!sh->waiting || !sh->seen_head || !sh->slices || !sh->horizon_seq || !sh->horizon_of) {
        snprintf(err, errlen, "shard %zu: out of memory", index);
        goto out_free;
    }
    rc = -EIO; /* from here on, gRPC refused */
    sh->cq = grpc_completion_queue_create_for_next(NULL);
    if (!sh->cq) {
        snprintf(err, errlen, "shard %zu: cannot create its gRPC completion queue", index);
        goto out_free;
    }

    /* The doorbell before the queue is the server's: a failure here leaves
     * nothing registered to undo. */
    sh->bell_tag = (struct tag){.kind = TAG_BELL, .obj = sh};
    sh->bell_channel = grpc_lame_client_channel_create(NULL, GRPC_STATUS_UNAVAILABLE, "doorbell");
    if (!sh->bell_channel) {
        snprintf(err, errlen, "shard %zu: cannot create its doorbell (a lame gRPC channel)", index);
        goto out_cq;
    }
    sh->bell_call = grpc_channel_create_call(sh->bell_channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                             sh->cq, grpc_slice_from_static_string("/doorbell"),
                                             NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!sh->bell_call) {
        snprintf(err, errlen,
                 "shard %zu: cannot create its doorbell (a call on a lame gRPC "
                 "channel)",
                 index);
        goto out_channel;
    }
    grpc_server_register_completion_queue(srv->grpc, sh->cq, NULL);
    atomic_init(&sh->bell_armed, false);
    atomic_init(&sh->wants_data, false);
    atomic_init(&sh->inbox, NULL);
    atomic_init(&sh->snap_at_us, 0);
    pthread_mutex_init(&sh->snap_mu, NULL);
    atomic_init(&sh->streams, 0);
    for (size_t i = 0; i < SHARD_WATCH_REQUESTS; i++) {
        sh->watch_req[i].tag = (struct tag){.kind = TAG_NEW_WATCH, .obj = &sh->watch_req[i]};
        sh->watch_req[i].shard = sh;
    }
    sh->other_req.tag = (struct tag){.kind = TAG_NEW_OTHER, .obj = &sh->other_req};
    sh->other_req.shard = sh;
    for (size_t i = 0; i < SHARD_MAX_METHODS; i++) {
        sh->method_req[i].tag = (struct tag){.kind = TAG_NEW_METHOD, .obj = &sh->method_req[i]};
        sh->method_req[i].shard = sh;
        sh->method_req[i].method = i;
    }

    sh->tick_us = shard_tick_us(srv);
    *out = sh;
    return 0;

out_channel:
    grpc_channel_destroy(sh->bell_channel);
out_cq:
    shutdown_cq(sh);
    grpc_completion_queue_destroy(sh->cq);
out_free:
    free(sh->waiting);
    free(sh->seen_head);
    free(sh->slices);
    free(sh->horizon_seq);
    free(sh->horizon_of);
    free(sh);
    return rc;
}

int shard_start(struct shard *sh)
{
    int rc = pthread_create(&sh->thread, NULL, shard_main, sh);
    if (rc)
        return -rc;
    sh->started = true;
    return 0;
}

void shard_join(struct shard *sh)
{
    if (sh->started) {
        pthread_join(sh->thread, NULL);
        sh->started = false;
    }
}

void shard_destroy(struct shard *sh)
{
    if (!sh)
        return;
    shard_join(sh);
    if (sh->bell_call && !sh->bell_released)
        grpc_call_unref(sh->bell_call);
    if (sh->bell_channel)
        grpc_channel_destroy(sh->bell_channel);
    if (sh->cq) {
        if (!sh->cq_shut)
            shutdown_cq(sh); /* never started */
        grpc_completion_queue_destroy(sh->cq);
    }
    for (size_t t = 0; t < TOPICS_MAX; t++) {
        struct slice_cache_entry *cache = sh->slices[t];
        for (size_t i = 0; cache && i < SHARD_SLICE_CACHE; i++)
            if (cache[i].seq)
                grpc_slice_unref(cache[i].slice);
        free(cache);
    }
    free(sh->slices);
    free(sh->snap);
    pthread_mutex_destroy(&sh->snap_mu);
    free(sh->waiting);
    free(sh->seen_head);
    free(sh->horizon_seq);
    free(sh->horizon_of);
    free(sh);
}
