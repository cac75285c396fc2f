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

/* The topic's lag budget in log bytes (SIGHUP may change it): the setting,
 * or half the log, and never more than three quarters of it. */
static uint64_t lag_budget(const struct watch *w)
{
    uint64_t cap = ringlog_capacity(w->topic->log);
    int64_t set = atomic_load_explicit(&w->topic->max_lag_bytes, memory_order_relaxed);
    uint64_t budget = set > 0 ? (uint64_t)set : cap / 2;
    return budget > cap / 4 * 3 ? cap / 4 * 3 : budget;
}

/* The topic's lag budget in events (0: none; SIGHUP may change it). */
static uint64_t lag_budget_events(const struct watch *w)
{
    int64_t set = atomic_load_explicit(&w->topic->max_lag_events, memory_order_relaxed);
    return set > 0 ? (uint64_t)set : 0;
}

void watch_lag(const struct watch *w, uint64_t *events, uint64_t *bytes)
{
    ringlog_t *log = w->topic->log;
    uint64_t head = ringlog_head_seq(log);
    *events = head >= w->it.seq ? head - w->it.seq + 1 : 0;
    *bytes = ringlog_head_pos(log) - w->it.pos;
}

/* Over either budget: more log bytes or more events behind the head. */
static bool over_budget(const struct watch *w)
{
    uint64_t events, bytes, max_events = lag_budget_events(w);
    watch_lag(w, &events, &bytes);
    return bytes > lag_budget(w) || (max_events && events > max_events);
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
                 w->topic ? w->topic->name : "-", w->close_reason ? w->close_reason : "cancelled",
                 (unsigned long long)w->sent_data, (unsigned long long)w->dropped, sh->index);
    else
        log_info("msg=stream_closed id=%llu topic=%s reason=%s sent=%llu dropped=%llu shard=%zu "
                 "streams_live=%lld",
                 (unsigned long long)w->id, w->topic ? w->topic->name : "-",
                 w->close_reason ? w->close_reason : "cancelled", (unsigned long long)w->sent_data,
                 (unsigned long long)w->dropped, sh->index, (long long)live);
    watch_shard_remove(w);
    if (w->has_filter)
        filter_free(&w->filter);
    if (w->snapset) {
        keyset_free(w->snapset);
        free(w->snapset);
    }
    if (w->pending)
        grpc_byte_buffer_destroy(w->pending);
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
    if (w->pending) {
        grpc_byte_buffer_destroy(w->pending);
        w->pending = NULL;
    }
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
    if (!w->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        w->md_sent = true;
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
    return 3 * atomic_load_explicit(&w->topic->heartbeat_us, memory_order_relaxed);
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
    cursor_format((struct cursor){.epoch = ringlog_epoch(w->topic->log), .seq = c->done_seq}, text);
    snprintf(msg, sizeof(msg), "%s; resume from cursor %s",
             c->held_details ? c->held_details : "slow consumer", text);
    log_info("msg=stream_cancelled id=%llu topic=%s reason=held_status_not_read cursor=%s",
             (unsigned long long)w->id, w->topic->name, text);
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
        w->md_sent = true; /* its first delivery is out: see lapped_in_backlog */
        w->last_send_us = w->ws->sink->now_us(w->mux);
        w->ws->sink->emit_buffer(w->mux, w, bb);
        return;
    }
    struct watch_call *c = watch_call(w);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!w->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        w->md_sent = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].flags = flags;
    ops[n].data.send_message.send_message = bb;
    n++;
    c->send_bb = bb;
    w->send_busy = true;
    c->send_seq = w->it.seq - 1;
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

/* The subscriber is over its lag budget, or was lapped: apply its policy.
 * stalled: its send is held by flow control (the client does not read).
 * DISCONNECT then ends it at once: the status and its trailers go after
 * the held message, and if the client does not read them within the grace
 * period the call is cancelled with the status (cancel_held); DROP and CONFLATE
 * move it to the head now and queue the Gap, the first thing it gets when
 * it reads again. */
static void overflow(struct watch *w, bool stalled)
{
    ringlog_t *log = w->topic->log;
    struct cursor from = watch_cursor(w);
    char text[CURSOR_TEXT_MAX];
    if (w->overflow == EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT) {
        char msg[384];
        uint64_t lag_events, lag_bytes, max_events = lag_budget_events(w),
                                        max_bytes = lag_budget(w);
        watch_lag(w, &lag_events, &lag_bytes);
        cursor_format(from, text);
        /* name the budget crossed; neither: lapped while replaying */
        if (max_events && lag_events > max_events)
            snprintf(msg, sizeof(msg),
                     "slow consumer: %llu events behind the head of topic '%s', over its lag "
                     "budget of %llu events; resume from cursor %s",
                     (unsigned long long)lag_events, w->topic->name, (unsigned long long)max_events,
                     text);
        else if (lag_bytes > max_bytes)
            snprintf(msg, sizeof(msg),
                     "slow consumer: %llu bytes of log behind the head of topic '%s', over its "
                     "lag budget of %llu bytes; resume from cursor %s",
                     (unsigned long long)lag_bytes, w->topic->name, (unsigned long long)max_bytes,
                     text);
        else
            snprintf(msg, sizeof(msg),
                     "slow consumer: the log of topic '%s' overwrote events before they were "
                     "read (retention); resume from cursor %s",
                     w->topic->name, text);
        log_info("msg=slow_consumer id=%llu topic=%s policy=disconnect cursor=%s stalled=%d",
                 (unsigned long long)w->id, w->topic->name, text, stalled);
        counter_add(&w->ws->shard->ctr.slow[EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT], 1);
        if (stalled && !w->mux) {
            /* the trailers follow the held message if the client reads
             * within the grace period; else cancel_held() */
            send_status(w, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, "tickfan-cursor", text);
            struct watch_call *c = watch_call(w);
            c->held_code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            size_t keep = strcspn(msg, ";"); /* the message without its cursor */
            free(c->held_details);
            c->held_details = strndup(msg, keep);
            c->held_deadline_us = clock_mono_us() + held_status_grace_us(w);
        } else {
            finish(w, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, "tickfan-cursor", text);
        }
        return;
    }
    /* OVERFLOW_DROP / CONFLATE: skip to the head, counting the matching
     * events skipped (and, to conflate, noting which (kind, key) changed).
     * Records overwritten before they could be read are counted whole (they
     * are lost either way) and make conflation fall back to every key. */
    bool conflate = w->overflow == EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_CONFLATE;
    bool keys_lost = false; /* records overwritten before their keys were noted */
    if (conflate && !w->snapset)
        w->snapset = calloc(1, sizeof(*w->snapset));
    if (conflate && !w->snapset)
        keys_lost = true;
    struct ringlog_iter target;
    ringlog_seek_head(log, &target);
    uint64_t missed = 0;
    if (w->slow_gap_pending) { /* not sent yet: one Gap for both */
        from = w->slow_gap_from;
        missed = w->slow_gap_missed;
        grpc_byte_buffer_destroy(w->pending);
        w->pending = NULL;
    }
    uint64_t missed_before = missed;
    while (w->it.seq < target.seq) {
        struct ringlog_view v;
        int rc = ringlog_peek(log, &w->it, &v);
        if (rc == -ESTALE) {
            uint64_t first = ringlog_first_seq(log);
            if (first > target.seq)
                first = target.seq;
            missed += first > w->it.seq ? first - w->it.seq : 0;
            keys_lost = conflate;
            if (ringlog_seek(log, first, &w->it) != 0)
                w->it = target;
            continue;
        }
        if (rc != 0)
            break;
        bool match = watch_matches(w, &v);
        bool noted = !conflate || !match || keys_lost || v.type != RINGLOG_DATA ||
                     keyset_put(w->snapset, v.kind, v.kind_len, v.key, v.key_len, v.seq);
        if (!ringlog_view_valid(log, &w->it))
            continue; /* lapped under us: handled by the next peek */
        if (!noted)
            keys_lost = true; /* out of memory */
        missed += match;
        ringlog_advance(&w->it, &v);
    }
    w->it = target;
    w->dropped += missed - missed_before;
    counter_add(&w->ws->shard->ctr.dropped_events, missed - missed_before);
    /* a Gap widened before it could be sent is the same loss, told once */
    if (!w->slow_gap_pending) {
        counter_add(&w->ws->shard->ctr.slow[w->overflow], 1);
        counter_add(&w->ws->shard->ctr.gaps, 1);
        log_info("msg=slow_consumer id=%llu topic=%s policy=%s missed=%llu conflated_keys=%zu "
                 "stalled=%d",
                 (unsigned long long)w->id, w->topic->name, conflate ? "conflate" : "drop",
                 (unsigned long long)(missed - missed_before),
                 conflate && w->snapset ? w->snapset->count : (size_t)0, stalled);
    }
    w->pending = wire_gap(watch_cursor(w), missed, EVENTS__V1__GAP_REASON__GAP_SLOW_CONSUMER, from);
    if (!w->slow_gap_pending)
        w->slow_gap_stalled = stalled;
    w->slow_gap_pending = w->pending != NULL;
    w->slow_gap_from = from;
    w->slow_gap_missed = missed;
    if (conflate && missed) {
        /* then the latest value of each pair that changed in the skipped
         * range, read back from the log (the lag budget is below the log
         * size, so it still holds them); if some keys are unknown (lapped),
         * every matching pair's last value before the head from the cache */
        if (keys_lost && w->snapset)
            watch_snapset_add_cache(w, w->snapset, target.seq, false);
        w->snap_active = w->snapset != NULL;
        w->snap_index = 0;
    }
}

/* Ends the stream with OUT_OF_RANGE: cursor `c` is older than the log
 * retains (`why` says how), naming the earliest cursor, where `w` is left. */
static void refuse_cursor(struct watch *w, struct cursor c, const char *why)
{
    char msg[400], text[CURSOR_TEXT_MAX], earliest_text[CURSOR_TEXT_MAX];
    watch_seek_oldest(w->topic->log, &w->it);
    cursor_format(watch_cursor(w), earliest_text);
    cursor_format(c, text);
    snprintf(msg, sizeof(msg), "cursor %s of topic '%s' %s; earliest available cursor is %s", text,
             w->topic->name, why, earliest_text);
    finish(w, GRPC_STATUS_OUT_OF_RANGE, msg, "tickfan-earliest-cursor", earliest_text);
}

/* Lapped while replaying the backlog: the records it had not read yet are
 * gone from the log (retention), not skipped for being slow. Tell it and go on
 * from the oldest record left; a DISCONNECT subscriber is ended instead.
 * Before its first message the request decides, as if it had come a moment
 * later: a cursor without allow_gap is refused (OUT_OF_RANGE), and a start
 * position starts again from the oldest record left, with nothing to tell.
 * Returns true in that last case: the stream may simply scan on. */
static bool lapped_in_backlog(struct watch *w)
{
    ringlog_t *log = w->topic->log;
    struct cursor from = watch_cursor(w);
    if (!w->md_sent && w->start == WATCH_START_CURSOR) {
        log_info("msg=lapped_before_first_event id=%llu topic=%s action=refused",
                 (unsigned long long)w->id, w->topic->name);
        refuse_cursor(w, from, "was overwritten before the stream could read on from it");
        return false;
    }
    if (!w->md_sent && w->start == WATCH_START_POSITION) {
        /* may repeat while the writer keeps overtaking it: debug only */
        log_debug("msg=lapped_before_first_event id=%llu topic=%s action=reseek",
                  (unsigned long long)w->id, w->topic->name);
        watch_seek_oldest(log, &w->it);
        return true;
    }
    if (w->overflow == EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT) {
        overflow(w, false);
        return false;
    }
    watch_seek_oldest(log, &w->it);
    uint64_t missed = w->it.seq > from.seq + 1 ? w->it.seq - from.seq - 1 : 0;
    w->dropped += missed;
    counter_add(&w->ws->shard->ctr.dropped_events, missed);
    counter_add(&w->ws->shard->ctr.gaps, 1);
    log_info("msg=lapped_in_backlog id=%llu topic=%s missed=%llu", (unsigned long long)w->id,
             w->topic->name, (unsigned long long)missed);
    w->pending = wire_gap(watch_cursor(w), missed, EVENTS__V1__GAP_REASON__GAP_RETENTION, from);
    return false;
}

/* Behind the writer: the lag budget (live phase) or a lap (any time).
 * Returns true when the stream was only moved and may scan on; false when
 * it has something to send (a Gap, a status) first. */
static bool fell_behind(struct watch *w)
{
    if (w->eob_sent) {
        overflow(w, false);
        return false;
    }
    return lapped_in_backlog(w);
}

#define SCAN_BUDGET 512 /* filtered-out records scanned before yielding */
#define LOOKAHEAD 64    /* records scanned after a send for the next match */
#define HINT_RUN 16     /* coalesced sends in a row before one is flushed */

/* True when the stream's next record is already in the log and matches:
 * the send before it may then be coalesced with it. Skips the records that
 * do not match on the way (the cursor moves over them, as it would anyway). */
static bool next_is_queued(struct watch *w)
{
    ringlog_t *log = w->topic->log;
    for (int budget = LOOKAHEAD; budget > 0; budget--) {
        struct ringlog_view v;
        if (ringlog_peek(log, &w->it, &v) != 0)
            return false;
        bool match = watch_matches(w, &v);
        if (!ringlog_view_valid(log, &w->it))
            return false;
        if (match)
            return true;
        ringlog_advance(&w->it, &v);
    }
    return false;
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

static void pump(struct watch *w)
{
    if (w->send_busy || !is_live(w))
        return;
    /* A slow-consumer Gap queued while the send was held may be stale by
     * the time the send completes: the stream fell behind again since.
     * Widen it to the head now, so one Gap tells the whole episode. */
    if (w->pending && w->slow_gap_pending && w->eob_sent && over_budget(w))
        overflow(w, false);
    if (w->pending) {
        grpc_byte_buffer *bb = w->pending;
        w->pending = NULL;
        if (w->slow_gap_pending && w->slow_gap_stalled)
            /* the line at the crossing said what was skipped then; this one
             * the episode's total, the count in the Gap */
            log_info("msg=slow_consumer_told id=%llu topic=%s missed=%llu",
                     (unsigned long long)w->id, w->topic->name,
                     (unsigned long long)w->slow_gap_missed);
        w->slow_gap_pending = false;
        start_send(w, bb);
        return;
    }
    if (w->snap_active && pump_snapshot(w))
        return;
    ringlog_t *log = w->topic->log;
    for (int budget = SCAN_BUDGET; budget > 0; budget--) {
        /* The lag budget is for live subscribers: one replaying the backlog
         * is behind by design, and only being lapped stops it. */
        if (w->eob_sent && over_budget(w)) {
            overflow(w, false);
            pump(w);
            return;
        }
        if (!w->eob_sent && w->it.seq > w->backlog_end) {
            /* everything that was in the log when the stream started is out */
            w->eob_sent = true;
            start_send(w, wire_end_of_backlog(watch_cursor(w)));
            return;
        }
        struct ringlog_view v;
        /* a subscription reads up to where its stream's flush began, as
         * the others of the stream do: what came since goes into the next
         * message for all of them, shared, not into this one for some */
        int rc = w->mux && w->it.seq > w->ws->sink->horizon(w->mux, w->topic)
                     ? -EAGAIN
                     : ringlog_peek(log, &w->it, &v);
        if (rc == -EAGAIN) {
            if (!w->eob_sent) {
                w->eob_sent = true;
                start_send(w, wire_end_of_backlog(watch_cursor(w)));
                return;
            }
            watch_set_waiting(w);
            return;
        }
        if (rc == -ESTALE) {
            if (fell_behind(w))
                continue; /* re-seeked; the scan budget bounds the retries */
            pump(w);
            return;
        }
        grpc_byte_buffer *bb = NULL;
        grpc_slice slice;
        bool match = watch_matches(w, &v), got = false;
        if (match && w->mux)
            got = watch_event_slice(w, &w->it, &v, &slice);
        else if (match)
            got = (bb = watch_event_buffer(w, &w->it, &v)) != NULL;
        if ((match && !got) || !ringlog_view_valid(log, &w->it)) {
            /* what we read may be torn: discard it */
            if (bb)
                grpc_byte_buffer_destroy(bb);
            if (got && w->mux)
                grpc_slice_unref(slice);
            if (fell_behind(w))
                continue;
            pump(w);
            return;
        }
        ringlog_advance(&w->it, &v);
        if (match && w->mux) {
            /* one delivery, shared with every subscription of the stream
             * that sends the same record next */
            w->sent_data++;
            w->md_sent = true;
            w->last_send_us = w->ws->sink->now_us(w->mux);
            w->ws->sink->emit_event(w->mux, w, slice, w->topic->index, v.seq);
            return;
        }
        if (match) {
            w->sent_data++;
            /* Coalesce with the next message when it is already queued. Not
             * on the first message: a hinted batch that also carries the
             * initial metadata does not complete until a later write. */
            /* ...and at most HINT_RUN in a row: a subscriber that is always
             * behind would otherwise never see a flush. */
            bool hint = false;
            if (!w->mux) { /* a subscription's deliveries are batched by its stream */
                struct watch_call *c = watch_call(w);
                hint = w->md_sent && c->hinted < HINT_RUN && w->ws->shard->srv->write_coalescing &&
                       next_is_queued(w);
                c->hinted = hint ? c->hinted + 1 : 0;
            }
            start_send_flags(w, bb, hint ? GRPC_WRITE_BUFFER_HINT : 0);
            return;
        }
    }
    watch_set_ready(w); /* more to scan: come back after others */
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
 * applies now, not when the client reads again. Not once a conflation
 * replay has begun (bounded, and its pairs would be sent twice), nor with a
 * Gap of another kind still to send; a slow-consumer Gap not sent yet is
 * widened, its conflation set grown. */
static void check_stalled(struct watch *w)
{
    if (!is_live(w) || !w->eob_sent || w->end_pending || (w->snap_active && !w->slow_gap_pending) ||
        (w->pending && !w->slow_gap_pending) || !over_budget(w))
        return;
    overflow(w, true);
}

void watch_tick(struct watch *w, int64_t now_us)
{
    if (w->mux) {
        /* its stream's message is held: its own budget still applies */
        if (w->ws->sink->send_busy(w->mux))
            check_stalled(w);
        /* at most one heartbeat of it waits in its stream's next message */
        if (!is_live(w) || w->pending || w->ws->sink->holds(w->mux, w) ||
            now_us - w->last_send_us <
                atomic_load_explicit(&w->topic->heartbeat_us, memory_order_relaxed))
            return;
        grpc_byte_buffer *hb = wire_heartbeat(watch_cursor(w), clock_unix_us());
        if (!hb)
            return;
        counter_add(&w->ws->shard->ctr.heartbeats, 1);
        w->md_sent = true;
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
    if (!is_live(w) || w->pending)
        return;
    if (now_us - w->last_send_us <
        atomic_load_explicit(&w->topic->heartbeat_us, memory_order_relaxed))
        return;
    counter_add(&w->ws->shard->ctr.heartbeats, 1);
    start_send(w, wire_heartbeat(watch_cursor(w), clock_unix_us()));
}

void watch_drain(struct watch *w)
{
    if (!is_live(w))
        return;
    char text[CURSOR_TEXT_MAX], msg[200];
    cursor_format(watch_cursor(w), text);
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
                 w->topic ? w->topic->name : "-");
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

/* Positions the stream per request. Returns true when the stream may start;
 * otherwise a status has been sent. */
static bool position(struct watch *w, const Events__V1__WatchRequest *req)
{
    ringlog_t *log = w->topic->log;
    uint64_t epoch = ringlog_epoch(log);
    char msg[400];

    if (req->cursor && req->cursor[0]) {
        counter_add(&w->ws->shard->ctr.resumes, 1);
        w->start = req->allow_gap ? WATCH_START_CURSOR_GAP : WATCH_START_CURSOR;
        size_t len = strlen(req->cursor);
        struct cursor c;
        if (cursor_parse(req->cursor, len, &c) != 0) {
            snprintf(msg, sizeof(msg), "malformed cursor '%.64s'", req->cursor);
            finish(w, GRPC_STATUS_INVALID_ARGUMENT, msg, NULL, NULL);
            return false;
        }
        const char *why = NULL;
        if (c.epoch != epoch)
            why = "is from another epoch of the topic's log (the log was recreated)";
        else if (c.seq > ringlog_head_seq(log))
            why = "is ahead of the topic's log";
        else if (ringlog_seek(log, c.seq + 1, &w->it) != 0)
            why = "is older than what the topic retains";
        else
            return true;
        if (req->allow_gap && (c.epoch != epoch || c.seq <= ringlog_head_seq(log))) {
            watch_seek_oldest(log, &w->it);
            /* from the same epoch, exactly the records between; from another,
             * unknown (0) */
            uint64_t missed =
                c.epoch == epoch && w->it.seq > c.seq + 1 ? w->it.seq - (c.seq + 1) : 0;
            w->pending =
                wire_gap(watch_cursor(w), missed, EVENTS__V1__GAP_REASON__GAP_RETENTION, c);
            return true;
        }
        refuse_cursor(w, c, why);
        return false;
    }

    switch (req->start) {
    case EVENTS__V1__START_POSITION__START_EARLIEST:
        watch_seek_oldest(log, &w->it);
        return true;
    case EVENTS__V1__START_POSITION__START_LIVE:
        ringlog_seek_head(log, &w->it);
        return true;
    case EVENTS__V1__START_POSITION__START_AT_TIME:
        if (req->start_unix_micros <= 0) {
            finish(w, GRPC_STATUS_INVALID_ARGUMENT,
                   "start=START_AT_TIME needs start_unix_micros > 0", NULL, NULL);
            return false;
        }
        ringlog_seek_time(log, req->start_unix_micros, &w->it);
        return true;
    default:
        snprintf(msg, sizeof(msg), "unknown start position %d", (int)req->start);
        finish(w, GRPC_STATUS_INVALID_ARGUMENT, msg, NULL, NULL);
        return false;
    }
}

/* Validates the request (its strings already checked) and sets the
 * stream up. false: a status was sent. */
static bool setup_request(struct watch *w, const Events__V1__WatchRequest *req)
{
    struct server *srv = w->ws->shard->srv;
    char msg[400];
    bool ok = false;

    if (!req->topic || !req->topic[0]) {
        finish(w, GRPC_STATUS_INVALID_ARGUMENT, "topic is required", NULL, NULL);
        goto out;
    }
    w->topic = topics_find(srv->topics, req->topic, strlen(req->topic));
    if (!w->topic) {
        snprintf(msg, sizeof(msg), "unknown topic '%.128s'", req->topic);
        finish(w, GRPC_STATUS_NOT_FOUND, msg, NULL, NULL);
        goto out;
    }
    const char *why = NULL;
    int rc = filter_init(&w->filter, req->kinds, req->n_kinds, req->keys, req->n_keys, &why);
    if (rc) {
        snprintf(msg, sizeof(msg), "invalid filter: %s", rc == -EINVAL ? why : "out of memory");
        finish(w, rc == -EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED,
               msg, NULL, NULL);
        goto out;
    }
    w->has_filter = req->n_kinds || req->n_keys;

    switch (req->overflow) {
    case EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DEFAULT:
        w->overflow = atomic_load(&w->topic->overflow);
        break;
    case EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DROP:
    case EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_CONFLATE:
    case EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT:
        w->overflow = req->overflow;
        break;
    default:
        snprintf(msg, sizeof(msg), "unknown overflow policy %d", (int)req->overflow);
        finish(w, GRPC_STATUS_INVALID_ARGUMENT, msg, NULL, NULL);
        goto out;
    }
    ok = position(w, req);
    if (ok) {
        w->backlog_end = ringlog_head_seq(w->topic->log);
        if (!w->mux)
            watch_call(w)->done_seq = w->it.seq - 1;
    }
    if (ok && req->snapshot) {
        /* the state as of where the stream starts: every pair's last value
         * before it, then the events from it on */
        bool live = (!req->cursor || !req->cursor[0]) &&
                    req->start == EVENTS__V1__START_POSITION__START_LIVE;
        if (!watch_snapshot_prepare(w, live)) {
            finish(w, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the snapshot", NULL, NULL);
            ok = false;
        }
    }

out:
    return ok;
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
    cursor_format(watch_cursor(w), text);
    log_info("msg=stream_opened id=%llu topic=%s peer=%s shard=%zu cursor=%s streams_live=%lld",
             (unsigned long long)w->id, w->topic->name, peer ? peer : "-", sh->index, text,
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
    cursor_format(watch_cursor(w), text);
    log_info("msg=subscription_opened id=%llu stream=%llu sub=%u topic=%s shard=%zu cursor=%s",
             (unsigned long long)w->id, (unsigned long long)ops->id(m), sub_id, w->topic->name,
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
    if (w->pending) {
        grpc_byte_buffer_destroy(w->pending);
        w->pending = NULL;
    }
    w->status_started = true;
    w->close_reason = reason;
}
