/*
 * watch: the Watch server-stream state machine. Shard thread only.
 *
 * Life of a stream: accepted -> RECV_CLOSE_ON_SERVER started (refs=1) ->
 * request validated and positioned in the topic log -> pump: one send at a
 * time (pending Gap, then matching Data, EndOfBacklog once at the head,
 * heartbeats when idle) -> status (error, slow consumer, drain) or client
 * cancel -> freed when no operation is in flight any more.
 */
#include "watch_shard.h"
#include "clock.h"

#include <errno.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "wire.h"

void watch_lag(const struct watch *w, uint64_t *events, uint64_t *bytes)
{
    reader_lag(&w->rd, events, bytes);
}

static bool is_live(const struct watch *w)
{
    return !w->status_started && !w->closed;
}

static void release(struct watch *w)
{
    struct shard *sh = w->ws->shard;
    struct server *srv = sh->srv;
    int64_t live =
        w->counted ? atomic_fetch_sub(&srv->streams_live, 1) - 1 : atomic_load(&srv->streams_live);
    if (w->mux)
        log_info("msg=subscription_closed id=%llu stream=%llu sub=%u topic=%s reason=%s sent=%llu "
                 "dropped=%llu shard=%zu",
                 (unsigned long long)w->id, (unsigned long long)w->ws->sink->id(w->mux), w->sub_id,
                 w->rd.topic ? w->rd.topic->name : "-",
                 w->close_reason ? w->close_reason : "cancelled", (unsigned long long)w->sent_data,
                 (unsigned long long)w->rd.dropped, sh->index);
    else
        log_info("msg=stream_closed id=%llu topic=%s reason=%s sent=%llu dropped=%llu shard=%zu "
                 "streams_live=%lld",
                 (unsigned long long)w->id, w->rd.topic ? w->rd.topic->name : "-",
                 w->close_reason ? w->close_reason : "cancelled", (unsigned long long)w->sent_data,
                 (unsigned long long)w->rd.dropped, sh->index, (long long)live);
    watch_shard_remove(w);
    reader_free(&w->rd);
    if (!w->mux) {
        free(watch_call(w)->end_details);
        free(watch_call(w)->held_details);
    }
    free(w);
}

/* A Watch stream's last reference went (its call is released). */
static void release_call(struct call *c)
{
    release(watch_of_call(c));
}

/* The client cancelled, or the status went out. */
static void call_closed(struct call *c)
{
    struct watch *w = watch_of_call(c);
    w->closed = true;
    if (!w->status_started)
        w->close_reason = "cancelled";
    watch_unlist(w);
}

static const struct call_ops call_ops = {.closed = call_closed, .release = release_call};

/* Drops a reference of a Watch stream's call. */
static void unref(struct watch *w)
{
    call_unref(&watch_call(w)->base);
}

void watch_sub_release(struct watch *w)
{
    release(w);
}

/* Starts the status batch now. With a send in flight (a batch of another
 * kind) HTTP/2 writes the trailers after that message's data. */
static void send_status(struct watch *w, grpc_status_code code, const char *details,
                        const char *md_key, const char *md_value)
{
    watch_unlist(w);
    w->rd.gap_pending = false;
    if (w->mux) { /* a subscription: its SubscriptionEnd, after its last delivery */
        w->status_started = true;
        w->close_reason = wire_status_name(code);
        if ((unsigned)code < 17)
            counter_add(&w->ws->shard->ctr.sub_ends[code], 1);
        w->ws->sink->end(w->mux, w, code, details, md_key, md_value);
        return;
    }
    struct watch_call *c = watch_call(w);
    c->status_details = grpc_slice_from_copied_string(details);
    c->trailing_count = 0;
    if (md_key) {
        c->trailing[0].key = grpc_slice_from_static_string(md_key);
        c->trailing[0].value = grpc_slice_from_copied_string(md_value);
        c->trailing_count = 1;
    }
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!w->rd.sent_first) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        w->rd.sent_first = true;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    ops[n].data.send_status_from_server.trailing_metadata_count = c->trailing_count;
    ops[n].data.send_status_from_server.trailing_metadata = c->trailing;
    n++;
    w->status_started = true;
    w->close_reason = wire_status_name(code);
    if ((unsigned)code < 17)
        counter_add(&w->ws->shard->ctr.status[code], 1);
    grpc_call_error e = call_start_batch(&c->base, ops, n, &c->t_status);
    if (e != GRPC_CALL_OK)
        log_error("msg=start_batch_failed op=status id=%llu error=%d", (unsigned long long)w->id,
                  e);
}

/* Ends the stream with a status. If a send is in flight, the status follows
 * its completion (one batch of each kind at a time, and in order). */
static void finish(struct watch *w, grpc_status_code code, const char *details, const char *md_key,
                   const char *md_value)
{
    if (!is_live(w))
        return;
    if (w->send_busy) { /* a Watch stream's: a subscription's sends are its stream's */
        if (!w->end_pending) {
            struct watch_call *c = watch_call(w);
            w->end_pending = true;
            c->end_code = code;
            c->end_details = strdup(details); /* NULL: finish() says "stream ended" */
            c->end_md_key = md_key;
            snprintf(c->end_md_value, sizeof(c->end_md_value), "%s", md_value ? md_value : "");
        }
        return;
    }
    send_status(w, code, details, md_key, md_value);
}

/* How long a stream ended while its send was held may keep the client's
 * trailers waiting behind that send: three heartbeat cadences, when a
 * client's own watchdog gives the stream up anyway. */
static int64_t held_status_grace_us(const struct watch *w)
{
    return 3 * atomic_load_explicit(&w->rd.topic->heartbeat_us, memory_order_relaxed);
}

/* The status of a stream ended while its send was held never left: the
 * client has not read for the grace period. Cancel the call with the status
 * instead: gRPC then writes it as a HEADERS frame, which flow control does
 * not hold, and RST_STREAM. That path carries the code and message only
 * (no trailing metadata), so the message names the cursor of the last
 * message the client surely holds whole; the one in flight is abandoned. */
static void cancel_held(struct watch *w)
{
    struct watch_call *c = watch_call(w);
    char text[CURSOR_TEXT_MAX], msg[384];
    c->held_deadline_us = 0;
    cursor_format((struct cursor){.epoch = ringlog_epoch(w->rd.topic->log), .seq = c->done_seq},
                  text);
    snprintf(msg, sizeof(msg), "%s; resume from cursor %s",
             c->held_details ? c->held_details : "slow consumer", text);
    log_info("msg=stream_cancelled id=%llu topic=%s reason=held_status_not_read cursor=%s",
             (unsigned long long)w->id, w->rd.topic->name, text);
    grpc_call_cancel_with_status(c->base.call, c->held_code, msg, NULL);
}

/* Starts the one send of the stream. flags: GRPC_WRITE_BUFFER_HINT when the
 * next message is already known to follow (a hinted send with nothing after
 * it would never be flushed). */
static void start_send_flags(struct watch *w, grpc_byte_buffer *bb, uint32_t flags)
{
    if (!bb) {
        finish(w, GRPC_STATUS_INTERNAL, "could not encode event", NULL, NULL);
        return;
    }
    if (w->mux) {
        w->rd.sent_first = true; /* its first delivery is out: see lapped_in_backlog in reader.c */
        w->last_send_us = w->ws->sink->now_us(w->mux);
        w->ws->sink->emit_buffer(w->mux, w, bb);
        return;
    }
    struct watch_call *c = watch_call(w);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!w->rd.sent_first) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        w->rd.sent_first = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].flags = flags;
    ops[n].data.send_message.send_message = bb;
    n++;
    c->send_bb = bb;
    w->send_busy = true;
    c->send_seq = w->rd.it.seq - 1;
    c->send_hinted = flags & GRPC_WRITE_BUFFER_HINT;
    counter_add(&w->ws->shard->ctr.sent, 1);
    grpc_call_error e = call_start_batch(&c->base, ops, n, &c->t_send);
    if (e != GRPC_CALL_OK) {
        log_error("msg=start_batch_failed op=send id=%llu error=%d", (unsigned long long)w->id, e);
        w->send_busy = false;
        c->send_bb = NULL;
        grpc_byte_buffer_destroy(bb);
    }
}

static void start_send(struct watch *w, grpc_byte_buffer *bb)
{
    start_send_flags(w, bb, 0);
}

/* Ends the stream as its reader says. A DISCONNECT while the send is held
 * (the client does not read): the status and its trailers go after the held
 * message, and if the client does not read them within the grace period the
 * call is cancelled with the status (cancel_held). */
static void end_as(struct watch *w, const struct reader_end *e)
{
    const char *md_value = e->md_key ? e->md_value : NULL;
    if (e->stalled && !w->mux) {
        send_status(w, (grpc_status_code)e->code, e->message, e->md_key, md_value);
        struct watch_call *c = watch_call(w);
        c->held_code = (grpc_status_code)e->code;
        size_t keep = strcspn(e->message, ";"); /* the message without its cursor */
        free(c->held_details);
        c->held_details = strndup(e->message, keep);
        c->held_deadline_us = clock_mono_us() + held_status_grace_us(w);
        return;
    }
    finish(w, (grpc_status_code)e->code, e->message, e->md_key, md_value);
}

#define HINT_RUN 16 /* coalesced sends in a row before one is flushed */

/* The encoder the reader calls on a record to send: a byte buffer for a
 * Watch stream, a slice for a subscription's delivery. */
struct encoded {
    struct watch *w;
    grpc_byte_buffer *bb;
    grpc_slice slice;
    bool owned; /* slice: our reference, else the shard cache's, lent */
};

static bool encode(void *ctx, const struct ringlog_iter *it, const struct ringlog_view *v)
{
    struct encoded *e = ctx;
    if (e->w->mux)
        return watch_event_slice_borrow(e->w, it, v, &e->slice, &e->owned);
    return (e->bb = watch_event_buffer(e->w, it, v)) != NULL;
}

static void discard(void *ctx)
{
    struct encoded *e = ctx;
    if (e->w->mux) {
        if (e->owned)
            grpc_slice_unref(e->slice);
    } else {
        grpc_byte_buffer_destroy(e->bb);
        e->bb = NULL;
    }
}

/* Sends the next value of the snapshot (or conflation), or the Gap that
 * ends it. Returns true when a send started; false when the snapshot is
 * complete. */
static bool pump_snapshot(struct watch *w)
{
    grpc_byte_buffer *bb = watch_snapshot_next(w);
    if (!bb)
        return false;
    start_send(w, bb);
    return true;
}

/* One delivery of a subscription: the event at seq, shared with every
 * subscription of the stream that sends the same record next. */
static void deliver(struct watch *w, grpc_slice slice, bool owned, uint64_t seq)
{
    w->sent_data++;
    w->rd.sent_first = true;
    w->last_send_us = w->ws->sink->now_us(w->mux);
    w->ws->sink->emit_event(w->mux, w, slice, owned, w->rd.topic->index, seq);
}

/* A subscription's event step, kept for the others of the shard at the
 * same place (what they would read is the same record, encoded the same). */
static void remember(struct watch *w, const struct reader_step *st, grpc_slice slice)
{
    struct watch_hop *h = &w->ws->hops[st->from.seq & (WATCH_HOPS - 1)];
    const ringlog_t *log = w->rd.topic->log;
    if (h->set && h->hop.log == log && h->hop.from.pos == st->from.pos &&
        h->hop.from.seq == st->from.seq)
        return;
    if (h->set)
        grpc_slice_unref(h->slice);
    h->hop = (struct reader_hop){.log = log, .from = st->from, .to = w->rd.it, .seq = st->seq};
    h->slice = grpc_slice_ref(slice);
    h->set = true;
}

/* A subscription where another of the shard just was takes its step. */
static bool follow(struct watch *w, uint64_t limit)
{
    struct watch_hop *h = &w->ws->hops[w->rd.it.seq & (WATCH_HOPS - 1)];
    if (!h->set || !reader_follow(&w->rd, limit, &h->hop))
        return false;
    counter_add(&w->ws->shard->ctr.sub_followed, 1);
    counter_add(&w->ws->shard->ctr.slice_shares, 1); /* the other's slice, shared */
    deliver(w, h->slice, false, h->hop.seq);
    return true;
}

/* Sends what the reader says is next, if nothing is in flight. */
static void pump(struct watch *w)
{
    if (w->send_busy || !is_live(w))
        return;
    /* a subscription reads up to where its stream's flush began (reader.c) */
    uint64_t limit = w->mux ? w->ws->sink->horizon(w->mux, w->rd.topic) : UINT64_MAX;
    if (w->mux && follow(w, limit))
        return;
    struct encoded enc = {.w = w};
    const struct reader_encoder coder = {.encode = encode, .discard = discard, .ctx = &enc};
    for (;;) {
        struct reader_step st;
        reader_next(&w->rd, limit, &coder, &st);
        switch (st.action) {
        case READER_GAP:
            start_send(w, wire_gap(st.gap.at, st.gap.missed, (Events__V1__GapReason)st.gap.reason,
                                   st.gap.from));
            return;
        case READER_SNAPSHOT:
            if (pump_snapshot(w))
                return;
            continue; /* the phase is over: on with the log */
        case READER_EOB:
            start_send(w, wire_end_of_backlog(reader_cursor(&w->rd)));
            return;
        case READER_WAIT:
            watch_set_waiting(w);
            return;
        case READER_YIELD:
            watch_set_ready(w); /* more to scan: come back after others */
            return;
        case READER_END:
            end_as(w, &st.end);
            return;
        case READER_EVENT:
            break;
        }
        if (w->mux) {
            if (!w->rd.has_filter)
                remember(w, &st, enc.slice);
            deliver(w, enc.slice, enc.owned, st.seq);
            return;
        }
        w->sent_data++;
        /* Coalesce with the next message when it is already queued. Not on
         * the first message: a hinted batch that also carries the initial
         * metadata does not complete until a later write. And at most
         * HINT_RUN in a row: a subscriber that is always behind would
         * otherwise never see a flush. */
        struct watch_call *c = watch_call(w);
        bool hint = w->rd.sent_first && c->hinted < HINT_RUN &&
                    w->ws->shard->srv->write_coalescing && reader_next_is_queued(&w->rd);
        c->hinted = hint ? c->hinted + 1 : 0;
        start_send_flags(w, enc.bb, hint ? GRPC_WRITE_BUFFER_HINT : 0);
        return;
    }
}

void watch_pump(struct watch *w)
{
    if (w->mux) { /* its stream gathers what it has into its next message */
        if (is_live(w))
            w->ws->sink->wake(w->mux, w);
        return;
    }
    pump(w);
}

bool watch_sub_fill(struct watch *w)
{
    while (is_live(w) && w->ws->sink->room(w->mux)) {
        uint64_t before = w->ws->sink->emitted(w->mux);
        pump(w);
        if (w->ws->sink->emitted(w->mux) == before)
            return false; /* nothing more now: it waits (listed) or has ended */
    }
    return is_live(w) && w->list == WATCH_LIST_NONE;
}

/* A live stream whose send is held (the client does not read, so HTTP/2
 * flow control holds the send) is over its budget just the same: its policy
 * applies now, not when the client reads again (reader_check_stalled). */
static void check_stalled(struct watch *w)
{
    struct reader_end e;
    if (is_live(w) && !w->end_pending && reader_check_stalled(&w->rd, &e))
        end_as(w, &e);
}

void watch_tick(struct watch *w, int64_t now_us)
{
    if (w->mux) {
        /* its stream's message is held: its own budget still applies */
        if (w->ws->sink->send_busy(w->mux))
            check_stalled(w);
        /* at most one heartbeat of it waits in its stream's next message */
        if (!is_live(w) || w->rd.gap_pending || w->ws->sink->holds(w->mux, w) ||
            now_us - w->last_send_us <
                atomic_load_explicit(&w->rd.topic->heartbeat_us, memory_order_relaxed))
            return;
        grpc_byte_buffer *hb = wire_heartbeat(reader_cursor(&w->rd), clock_unix_us());
        if (!hb)
            return;
        counter_add(&w->ws->shard->ctr.heartbeats, 1);
        w->rd.sent_first = true;
        w->last_send_us = now_us;
        w->ws->sink->emit_heartbeat(w->mux, w, hb);
        return;
    }
    int64_t held_deadline_us = watch_call(w)->held_deadline_us;
    if (held_deadline_us && !w->closed && now_us >= held_deadline_us) {
        cancel_held(w);
        return;
    }
    if (w->send_busy) {
        check_stalled(w);
        return;
    }
    if (!is_live(w) || w->rd.gap_pending)
        return;
    if (now_us - w->last_send_us <
        atomic_load_explicit(&w->rd.topic->heartbeat_us, memory_order_relaxed))
        return;
    counter_add(&w->ws->shard->ctr.heartbeats, 1);
    start_send(w, wire_heartbeat(reader_cursor(&w->rd), clock_unix_us()));
}

void watch_drain(struct watch *w)
{
    if (!is_live(w))
        return;
    char text[CURSOR_TEXT_MAX], msg[200];
    cursor_format(reader_cursor(&w->rd), text);
    snprintf(msg, sizeof(msg), "server shutting down; resume from cursor %s", text);
    finish(w, GRPC_STATUS_UNAVAILABLE, msg, "tickfan-cursor", text);
}

static void on_send(struct shard *sh, void *obj, bool ok)
{
    (void)sh;
    struct watch *w = obj;
    struct watch_call *c = watch_call(w);
    w->send_busy = false;
    grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    w->last_send_us = clock_mono_us();
    if (ok && !c->send_hinted)
        c->done_seq = c->send_seq;
    if (!ok && is_live(w)) {
        /* The transport refused the message: the stream cannot go on. End
         * the call so the client sees it (and resumes) instead of waiting. */
        log_warn("msg=send_failed id=%llu topic=%s", (unsigned long long)w->id,
                 w->rd.topic ? w->rd.topic->name : "-");
        grpc_call_cancel(c->base.call, NULL);
    }
    if (ok && is_live(w)) {
        if (w->end_pending) {
            w->end_pending = false;
            char *details = c->end_details;
            c->end_details = NULL;
            finish(w, c->end_code, details ? details : "stream ended", c->end_md_key,
                   c->end_md_value);
            free(details);
        } else if (atomic_load_explicit(&w->ws->shard->srv->draining, memory_order_relaxed)) {
            watch_drain(w);
        } else {
            watch_pump(w);
        }
    }
    unref(w);
}

static void on_status(struct shard *sh, void *obj, bool ok)
{
    (void)sh;
    (void)ok;
    struct watch *w = obj;
    struct watch_call *c = watch_call(w);
    grpc_slice_unref(c->status_details);
    for (size_t i = 0; i < c->trailing_count; i++) {
        grpc_slice_unref(c->trailing[i].key);
        grpc_slice_unref(c->trailing[i].value);
    }
    c->trailing_count = 0;
    unref(w);
}

/* ---- accepting a stream ------------------------------------------------ */

/* Validates the request (its strings already checked) and sets the
 * stream's reader up. false: a status was sent. */
static bool setup_request(struct watch *w, const Events__V1__WatchRequest *req)
{
    struct reader_end e;
    if (!reader_open(&w->rd, w->ws->shard->srv->topics, req, &w->ws->shard->ctr.rd, w->id, &e)) {
        finish(w, (grpc_status_code)e.code, e.message, e.md_key, e.md_key ? e.md_value : NULL);
        return false;
    }
    if (!w->mux)
        watch_call(w)->done_seq = w->rd.it.seq - 1;
    return true;
}

/* Reads the request and sets the stream up. false: a status was sent. */
static bool setup(struct watch *w, grpc_byte_buffer *payload)
{
    char msg[400];
    Events__V1__WatchRequest *req = NULL;
    if (!payload) { /* half-closed without one (a reset before it never gets here) */
        finish(w, GRPC_STATUS_INVALID_ARGUMENT, "no WatchRequest: the client sent none", NULL,
               NULL);
        return false;
    }
    if (wire_read_request(payload, &req, msg, sizeof(msg)) != 0) {
        finish(w, GRPC_STATUS_INVALID_ARGUMENT, msg, NULL, NULL);
        return false;
    }
    bool ok = setup_request(w, req);
    events__v1__watch_request__free_unpacked(req, NULL);
    return ok;
}

void watch_accept(struct shard *sh, void *st, grpc_call *call, grpc_byte_buffer *payload)
{
    struct server *srv = sh->srv;
    struct watch_stream *ws = calloc(1, sizeof(*ws));
    struct watch *w = ws ? &ws->w : NULL;
    if (!w) {
        shard_refuse(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        if (payload)
            grpc_byte_buffer_destroy(payload);
        return;
    }
    struct watch_call *c = &ws->c;
    w->ws = st;
    w->peer = c->peer; /* filled once the request is read */
    w->id = atomic_fetch_add(&srv->next_stream_id, 1) + 1;
    c->t_send = (struct tag){.fn = on_send, .obj = w};
    c->t_status = (struct tag){.fn = on_status, .obj = w};
    w->last_send_us = clock_mono_us();
    call_open(&c->base, sh, call, &call_ops, NULL, false);
    watch_shard_add(w);
    if (!call_start_recv_close(&c->base, false)) {
        w->closed = true;
        if (payload)
            grpc_byte_buffer_destroy(payload);
        unref(w); /* the opener's: releases it */
        return;
    }

    w->counted = true;
    int64_t live = atomic_fetch_add(&srv->streams_live, 1) + 1;
    bool ok;
    if (live > srv->max_streams) {
        char msg[128];
        snprintf(msg, sizeof(msg), "too many streams (max %lld); retry later or elsewhere",
                 (long long)srv->max_streams);
        finish(w, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL, NULL);
        ok = false;
    } else {
        ok = setup(w, payload);
    }
    if (payload)
        grpc_byte_buffer_destroy(payload);
    if (!ok) {
        unref(w); /* the opener's */
        return;
    }

    counter_add(&sh->ctr.opened, 1);
    char *peer = grpc_call_get_peer(call);
    snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "-");
    w->since_us = clock_unix_us();
    char text[CURSOR_TEXT_MAX];
    cursor_format(reader_cursor(&w->rd), text);
    log_info("msg=stream_opened id=%llu topic=%s peer=%s shard=%zu cursor=%s streams_live=%lld",
             (unsigned long long)w->id, w->rd.topic->name, peer ? peer : "-", sh->index, text,
             (long long)live);
    gpr_free(peer);
    watch_pump(w);
    unref(w); /* the opener's */
}

struct watch *watch_sub_open(struct watch_shard *ws, const struct watch_sink_ops *ops,
                             struct mux *m, uint32_t sub_id, const Events__V1__WatchRequest *req,
                             const char *peer)
{
    struct shard *sh = ws->shard;
    struct watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->ws = ws;
    w->mux = m;
    w->sub_id = sub_id;
    w->id = atomic_fetch_add(&sh->srv->next_stream_id, 1) + 1;
    w->last_send_us = clock_mono_us();
    w->since_us = clock_unix_us();
    w->peer = peer ? peer : "-"; /* the stream's, which outlives its subscriptions */
    watch_shard_add(w);
    ws->sink = ops;
    ops->attach(m, w);
    if (!setup_request(w, req))
        return w; /* ended: its SubscriptionEnd is in the stream's next message */
    counter_add(&sh->ctr.subs_opened, 1);
    char text[CURSOR_TEXT_MAX];
    cursor_format(reader_cursor(&w->rd), text);
    log_info("msg=subscription_opened id=%llu stream=%llu sub=%u topic=%s shard=%zu cursor=%s",
             (unsigned long long)w->id, (unsigned long long)ops->id(m), sub_id, w->rd.topic->name,
             sh->index, text);
    watch_pump(w);
    return w;
}

void watch_sub_remove(struct watch *w)
{
    finish(w, GRPC_STATUS_OK, "removed", NULL, NULL);
}

void watch_sub_stop(struct watch *w, const char *reason)
{
    if (!is_live(w))
        return;
    watch_unlist(w);
    w->rd.gap_pending = false;
    w->status_started = true;
    w->close_reason = reason;
}
