/*
 * shard: a worker thread and its completion queue. See shard.h.
 *
 * Loop: run the completions taken from the cache and the tags posted to the
 * inbox, run each service (service.h), run their ticks when due, arm the
 * doorbell, then block on the queue until an operation completes, the
 * doorbell rings, or the next tick.
 * Arming is a Dekker handshake with the ingest thread: we publish "armed",
 * fence, then look at the heads; ingest publishes the head, fences, then
 * looks at "armed". One of the two sees the other, so no append is missed.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "shard.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "server.h"
#include "topics.h"

/* ---- services ------------------------------------------------------------ */

void *shard_state(const struct shard *sh, const struct service *svc)
{
    const struct server *srv = sh->srv;
    for (size_t i = 0; i < srv->nservices; i++)
        if (srv->services[i] == svc)
            return sh->state[i];
    return NULL;
}

void shard_call_opened(struct shard *sh)
{
    sh->calls_live++;
}

void shard_call_closed(struct shard *sh)
{
    sh->calls_live--;
}

void shard_stream_opened(struct shard *sh)
{
    atomic_fetch_add_explicit(&sh->streams, 1, memory_order_relaxed);
}

void shard_stream_closed(struct shard *sh)
{
    atomic_fetch_sub_explicit(&sh->streams, 1, memory_order_relaxed);
}

/* Runs each service's hook `name` that is set, in the server's order. */
#define EACH_SERVICE(sh, name, ...)                                                                \
    do {                                                                                           \
        const struct server *srv_ = (sh)->srv;                                                     \
        for (size_t i_ = 0; i_ < srv_->nservices; i_++)                                            \
            if (srv_->services[i_]->name)                                                          \
                srv_->services[i_]->name((sh), (sh)->state[i_], ##__VA_ARGS__);                    \
    } while (0)

/* Is work ready in some service (pending), or does some service wait for
 * appends (wants_data)? */
static bool any_pending(const struct shard *sh)
{
    const struct server *srv = sh->srv;
    for (size_t i = 0; i < srv->nservices; i++)
        if (srv->services[i]->pending && srv->services[i]->pending(sh, sh->state[i]))
            return true;
    return false;
}

static bool any_wants_data(const struct shard *sh)
{
    const struct server *srv = sh->srv;
    for (size_t i = 0; i < srv->nservices; i++)
        if (srv->services[i]->wants_data && srv->services[i]->wants_data(sh, sh->state[i]))
            return true;
    return false;
}

/* ---- completions run by the loop ----------------------------------------- */

static void done_append(struct shard *sh, struct tag *t, bool ok)
{
    t->done_ok = ok;
    t->next = NULL;
    if (sh->done_tail)
        sh->done_tail->next = t;
    else
        sh->done = t;
    sh->done_tail = t;
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
        done_append(sh, tag, ok); /* this batch's, or another of this queue's */
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

void shard_post(struct shard *sh, struct tag *t)
{
    mpsc_push(&sh->inbox, &t->node); /* rung below whatever this returns */
    /* Pairs with the shard's fence after arming its doorbell. */
    atomic_thread_fence(memory_order_seq_cst);
    shard_ring(sh);
}

/* Moves the posted tags, oldest first, to the completions to run. */
static void take_inbox(struct shard *sh)
{
    struct mpsc_node *n = mpsc_take_all(&sh->inbox);
    while (n) {
        struct tag *t = mpsc_entry(n, struct tag, node);
        n = n->next; /* before done_append reuses the link */
        done_append(sh, t, true);
    }
}

/* ---- incoming calls ------------------------------------------------------ */

struct other_call {
    struct tag tag;
    grpc_call *call;
    int cancelled;
    grpc_slice details;
};

bool shard_accepting(const struct shard *sh)
{
    return !atomic_load(&sh->srv->draining) && !atomic_load(&sh->srv->stopping);
}

static void on_new_call(struct shard *sh, void *obj, bool ok);
static void on_new_other(struct shard *sh, void *obj, bool ok);

static void arm_request(struct shard *sh, struct request_slot *slot)
{
    if (!shard_accepting(sh))
        return;
    const struct service_method *m = sh->srv->methods[slot->method];
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

static void arm_other_request(struct shard *sh)
{
    struct request_slot *slot = &sh->other_req;
    if (!shard_accepting(sh))
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
 * connections: a shard keeps requests of its balanced methods armed only
 * while it serves no more than BALANCE_SLACK streams above the least loaded
 * shard (the least loaded one always qualifies, so some shard is always
 * accepting), which spreads one connection's calls over every shard.
 *
 * Only the active shards take part: one per CPU at first, one more each
 * time every active shard serves --shard-fill streams. An idle shard
 * waiting in grpc_completion_queue_next is not free: with gRPC's epoll1
 * poller, whichever waiting thread holds the poll reads the sockets, so a
 * tick for streams of one shard wakes others to read their clients'
 * window updates and hand the work over (futex calls by the thousand a
 * second, perf/README.md). A shard that is not needed yet waits on the
 * server's park_cv instead, outside gRPC. Requests cannot be taken back,
 * so a shard never leaves the active set. */
#define BALANCE_SLACK 8

bool shard_active(const struct shard *sh)
{
    return sh->index < atomic_load_explicit(&sh->srv->shards_active, memory_order_acquire);
}

void shard_wake_parked(struct server *srv)
{
    pthread_mutex_lock(&srv->park_mu);
    pthread_cond_broadcast(&srv->park_cv);
    pthread_mutex_unlock(&srv->park_mu);
}

/* Lets shard `active` take calls, unless another thread just did. */
static void activate_next(struct server *srv, size_t active)
{
    if (active >= srv->nshards ||
        !atomic_compare_exchange_strong(&srv->shards_active, &active, active + 1))
        return;
    log_info("msg=shard_started shard=%zu shards_active=%zu shards=%zu shard_fill=%lld", active,
             active + 1, srv->nshards, (long long)srv->shard_fill);
    shard_wake_parked(srv);
}

/* Waits while this shard is not needed (and the server runs). */
static void wait_until_active(struct shard *sh)
{
    struct server *srv = sh->srv;
    if (shard_active(sh))
        return;
    pthread_mutex_lock(&srv->park_mu);
    while (!shard_active(sh) && !atomic_load(&srv->stopping))
        pthread_cond_wait(&srv->park_cv, &srv->park_mu);
    pthread_mutex_unlock(&srv->park_mu);
}

static bool below_share(const struct shard *sh)
{
    struct server *srv = sh->srv;
    if (!srv->balance_streams)
        return true;
    size_t active = atomic_load_explicit(&srv->shards_active, memory_order_acquire);
    int64_t mine = atomic_load_explicit(&sh->streams, memory_order_relaxed);
    int64_t least = mine;
    bool full = srv->shard_fill > 0;
    for (size_t i = 0; i < active; i++) {
        int64_t n = atomic_load_explicit(&srv->shards[i]->streams, memory_order_relaxed);
        if (n < least)
            least = n;
        if (n < srv->shard_fill)
            full = false;
    }
    if (full && active < srv->nshards) {
        activate_next(srv, active);
        return false; /* the new one, empty, takes the next calls */
    }
    return mine <= least + BALANCE_SLACK;
}

static bool balanced(const struct shard *sh, const struct request_slot *slot)
{
    return sh->srv->methods[slot->method]->balanced;
}

/* Arms every free request slot; those of balanced methods only while this
 * shard is below its share. */
static void top_up_requests(struct shard *sh)
{
    if (!shard_accepting(sh))
        return;
    bool below = below_share(sh);
    for (size_t i = 0; i < sh->nreq; i++)
        if (!sh->req[i].armed && (below || !balanced(sh, &sh->req[i])))
            arm_request(sh, &sh->req[i]);
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
    report_cancelled(sh, clock_mono_us());
    return true;
}

static void on_new_call(struct shard *sh, void *obj, bool ok)
{
    struct request_slot *slot = obj;
    slot->armed = false;
    grpc_metadata_array_destroy(&slot->md);
    const struct service_method *m = sh->srv->methods[slot->method];
    if (ok && slot->call) {
        if (!m->read_payload || !drop_if_cancelled(sh, slot->call, slot->payload))
            m->accept(sh, sh->state[sh->srv->method_service[slot->method]], slot->call,
                      slot->payload);
    } else if (slot->payload) {
        grpc_byte_buffer_destroy(slot->payload);
    }
    slot->call = NULL;
    slot->payload = NULL;
    if (!m->balanced || below_share(sh)) {
        arm_request(sh, slot);
    } else {
        /* over our share: let the others (idle ones sleep) take new calls */
        for (size_t i = 0; i < sh->srv->nshards; i++)
            if (sh->srv->shards[i] != sh)
                shard_ring(sh->srv->shards[i]);
    }
}

static void on_other_done(struct shard *sh, void *obj, bool ok)
{
    (void)ok;
    struct other_call *oc = obj;
    shard_call_closed(sh);
    grpc_call_unref(oc->call);
    grpc_slice_unref(oc->details);
    free(oc);
}

/* A method this server does not implement: answer UNIMPLEMENTED. */
static void on_new_other(struct shard *sh, void *obj, bool ok)
{
    struct request_slot *slot = obj;
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
            oc->tag = (struct tag){.fn = on_other_done, .obj = oc};
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
                shard_call_opened(sh);
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

static void on_bell(struct shard *sh, void *obj, bool ok)
{
    (void)obj;
    (void)ok;
    sh->bell_pending = false;
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

#define DONE_STREAK 64

/* Runs the completions taken from the cache and the tags posted to us. */
static void run_done(struct shard *sh)
{
    take_inbox(sh);
    struct tag *t = sh->done;
    sh->done = sh->done_tail = NULL;
    while (t) {
        struct tag *next = t->next;
        t->fn(sh, t->obj, t->done_ok);
        t = next;
    }
}

static bool requests_armed(const struct shard *sh)
{
    for (size_t i = 0; i < sh->nreq; i++)
        if (sh->req[i].armed)
            return true;
    return sh->other_req.armed;
}

static void *shard_main(void *p)
{
    struct shard *sh = p;
    struct server *srv = sh->srv;
    wait_until_active(sh);
    top_up_requests(sh);
    arm_other_request(sh);
    sh->next_tick_us = clock_mono_us() + sh->tick_us;

    for (;;) {
        if (!sh->drain_seen && atomic_load(&srv->draining)) {
            sh->drain_seen = true;
            EACH_SERVICE(sh, drain);
        }
        top_up_requests(sh);
        run_done(sh);
        EACH_SERVICE(sh, run);
        int64_t now = clock_mono_us();
        if (now >= sh->next_tick_us) {
            EACH_SERVICE(sh, tick, now);
            report_cancelled(sh, now);
            sh->tick_us = shard_tick_us(srv); /* SIGHUP may change a cadence */
            sh->next_tick_us = now + sh->tick_us;
        }
        if (atomic_load(&srv->stopping) && !requests_armed(sh) && !sh->calls_live)
            break;
        /* Completions taken from the thread-local cache are this thread's
         * own: go round again rather than poll a queue they are not in (an
         * empty queue costs a pollset pass). Every DONE_STREAK rounds the
         * queue is polled anyway, so new calls and the doorbell are seen. */
        if (sh->done && ++sh->done_streak < DONE_STREAK)
            continue;
        sh->done_streak = 0;

        /* Appends concern this shard only while a stream waits for data:
         * say so before arming, so the ingest thread rings only then. */
        atomic_store(&sh->wants_data, any_wants_data(sh));
        if (!sh->bell_pending) {
            sh->bell_pending = true;
            atomic_store(&sh->bell_armed, true);
        }
        atomic_thread_fence(memory_order_seq_cst);
        gpr_timespec deadline;
        if (sh->done || !mpsc_empty(&sh->inbox) || any_pending(sh) ||
            (!sh->drain_seen && atomic_load(&srv->draining)))
            deadline = gpr_time_0(GPR_CLOCK_MONOTONIC);
        else
            deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                    gpr_time_from_micros(sh->next_tick_us - now, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(sh->cq, deadline, NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            struct tag *t = ev.tag;
            t->fn(sh, t->obj, ev.success);
        } else if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
    }

    /* Take the doorbell back; if someone is ringing it, wait for that tag. */
    bool bell_in_flight = sh->bell_pending && !atomic_exchange(&sh->bell_armed, false);
    while (bell_in_flight) {
        grpc_event ev =
            grpc_completion_queue_next(sh->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        if (ev.tag == &sh->bell_tag)
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

static void free_states(struct shard *sh)
{
    const struct server *srv = sh->srv;
    for (size_t i = 0; i < srv->nservices; i++) {
        if (!sh->state[i])
            continue;
        if (srv->services[i]->fini)
            srv->services[i]->fini(sh, sh->state[i]);
        free(sh->state[i]);
        sh->state[i] = NULL;
    }
}

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
    for (size_t i = 0; i < srv->nservices; i++) {
        const struct service *svc = srv->services[i];
        sh->state[i] = calloc(1, svc->state_size ? svc->state_size : 1);
        if (!sh->state[i]) {
            snprintf(err, errlen, "shard %zu: out of memory", index);
            goto out_free;
        }
        if (svc->init && (rc = svc->init(sh, sh->state[i])) != 0) {
            free(sh->state[i]);
            sh->state[i] = NULL;
            snprintf(err, errlen, "shard %zu: service %s: %s", index, svc->name, strerror(-rc));
            goto out_free;
        }
    }
    rc = -EIO; /* from here on, gRPC refused */
    sh->cq = grpc_completion_queue_create_for_next(NULL);
    if (!sh->cq) {
        snprintf(err, errlen, "shard %zu: cannot create its gRPC completion queue", index);
        goto out_free;
    }

    /* The doorbell before the queue is the server's: a failure here leaves
     * nothing registered to undo. */
    sh->bell_tag = (struct tag){.fn = on_bell, .obj = sh};
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
    mpsc_init(&sh->inbox);
    atomic_init(&sh->streams, 0);
    /* the request slots: `ahead` of each method (at least one) */
    for (size_t m = 0; m < srv->nmethods; m++) {
        unsigned ahead = srv->methods[m]->ahead ? srv->methods[m]->ahead : 1;
        for (unsigned k = 0; k < ahead && sh->nreq < SHARD_MAX_REQUESTS; k++) {
            struct request_slot *slot = &sh->req[sh->nreq++];
            slot->tag = (struct tag){.fn = on_new_call, .obj = slot};
            slot->shard = sh;
            slot->method = m;
        }
    }
    sh->other_req.tag = (struct tag){.fn = on_new_other, .obj = &sh->other_req};
    sh->other_req.shard = sh;

    sh->tick_us = shard_tick_us(srv);
    *out = sh;
    return 0;

out_channel:
    grpc_channel_destroy(sh->bell_channel);
out_cq:
    shutdown_cq(sh);
    grpc_completion_queue_destroy(sh->cq);
out_free:
    free_states(sh);
    free(sh);
    return rc;
}

int shard_start(struct shard *sh)
{
    int rc = pthread_create(&sh->thread, NULL, shard_main, sh);
    if (rc)
        return -rc;
    char name[16]; /* the kernel's limit, NUL included */
    snprintf(name, sizeof(name), "tf-shard-%zu", sh->index % 100000);
    pthread_setname_np(sh->thread, name);
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
    free_states(sh);
    free(sh);
}
