/*
 * benchrun: Watch load generator and checker. See benchrun.h.
 *
 * Main thread: creates the channels and the encoded requests, starts the
 * workers, then paces the run through atomics (phase, resume, connect
 * deadline), starts and stops the feed sender, and joins them. Workers:
 * open their streams, run their completion queue, check every message, and
 * on STOP cancel what is still running and wait until gRPC has handed back
 * every operation. Per-stream results are read by main only after the join.
 */
#include "benchrun.h"
#include "clock.h"

#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "events/v1/watcher.pb-c.h"
#include "evparse.h"
#include "subparse.h"

#ifdef TICKFAN_BENCH_H2
#include <sys/epoll.h>

#include "h2conn.h"
/* --client h2 windows: a normal stream's is the most gRPC's own BDP probing
 * grows one to (4 MiB); a stalled connection keeps HTTP/2's initial 64 KiB,
 * as the gRPC client does with BDP probing off */
#define H2_STREAM_WINDOW (4u << 20)
#define H2_CONNECTION_WINDOW (64u << 20)
#define H2_STALLED_WINDOW 65535u
#define H2_STOP_WAIT_NS 2000000000LL
#endif

#define WATCH_METHOD "/events.v1.Watcher/Watch"
#define SUBSCRIBE_METHOD "/events.v1.Watcher/Subscribe"
#define POLL_MS 50 /* longest a worker blocks before looking at the phase */
#define STALL_DRAIN_NS 2000000000LL

/* DRAIN: the window is over and the feed stopped; the streams still read,
 * and ticks of the feed are still measured, until all have arrived */
enum phase { PHASE_CONNECT, PHASE_RUN, PHASE_DRAIN, PHASE_STOP };

/* Operation kinds, kept in the low bits of a completion tag (of a struct
 * stream in Watch mode, of a struct subcall in Subscribe mode). */
enum { OP_START = 0, OP_RECV = 1, OP_STATUS = 2, OP_SEND = 3, OP_MASK = 3 };
#define PENDING(op) (1u << (op))

struct stream {
    grpc_call *call;     /* Watch only */
    struct h2stream *h2; /* Watch with --client h2, instead of call */
    char h2_cursor[96];  /* its tickfan-cursor trailer */
    struct worker *w;
    struct subcall *sc; /* Subscribe only: the stream carrying it, and its id there */
    uint32_t id;
    grpc_byte_buffer *request; /* until the start batch is back */
    grpc_byte_buffer *recv;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_slice details;
    grpc_status_code status;
    uint32_t index;
    uint32_t conn;
    int overflow;
    uint8_t pending; /* PENDING(op) bits of the batches in flight */
    bool opened;
    bool stalled;
    bool filtered;
    bool connected;
    bool status_done;
    bool cancelled; /* by us: stop, connect deadline or --messages reached */
    bool done;      /* --messages reached */
    bool settled;   /* counted in worker.settled */
    bool live;      /* EndOfBacklog seen */
    bool resumed;
    bool gap_pending; /* a Gap came; the next Data may jump by its count */
    bool jump_seen;
    uint64_t gap_pending_missed;

    uint64_t msgs, bytes; /* Watch: messages received, their bytes */
    uint64_t data, snapshots, heartbeats, eobs, gaps, gap_missed, bad;
    uint64_t fed; /* ticks of this run's feed received live */
    uint64_t first_seq, last_seq;
    uint64_t v_gap, v_repeat, v_reorder, v_mismatch;
    uint64_t data_before_resume, data_before_gap, first_gap_missed, first_gap_jump;
    uint32_t first_gap_reason;
};

/* Subscribe mode: one Subscribe stream and the subscriptions it carries
 * (subs[id - 1]). Touched only by its worker. */
struct subcall {
    grpc_call *call;
    struct h2stream *h2; /* with --client h2, instead of call */
    struct worker *w;
    uint32_t index;
    uint32_t conn;
    struct stream **subs;
    uint32_t n_subs;
    /* requests not yet sent: an id to add, or SENDQ_REMOVE | id to remove;
     * at most one add and one remove per subscription */
    uint32_t *sendq;
    uint32_t q_head, q_tail, q_cap;
    grpc_byte_buffer *send; /* in flight */
    grpc_byte_buffer *recv;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_slice details;
    grpc_status_code status;
    uint8_t pending; /* PENDING(op) bits of the batches in flight */
    bool opened;
    bool status_done;
    bool cancelled;
    bool got_message;
    uint64_t msgs, bytes, records, deliveries, ends, bad, unknown_ids, after_end;
    uint32_t max_ids;
};
#define SENDQ_REMOVE 0x80000000u

struct worker {
    struct run *run;
    uint32_t id;
    pthread_t thread;
    bool started;
    grpc_completion_queue *cq;
    struct stream **streams;
    uint32_t n;
    uint32_t opened;
    struct subcall **calls; /* Subscribe mode */
    uint32_t n_calls;
    uint32_t *ids; /* Subscribe mode: one delivery's ids */
    size_t ids_cap;
    uint64_t pending_ops;
    /* --client h2: this worker's connections (conn % threads), polled */
    int ep;
    uint32_t *conns; /* indexes into run.h2conns */
    uint32_t n_conns;
    bool *conn_out;  /* EPOLLOUT armed */
    bool *conn_dead; /* out of the poll set */
    hist_t *hist;
    hist_t *hist_ingest;
    uint64_t latency_negative;
    uint64_t latency_ingest_negative;
    bool cancelled_all;
    bool resumed_all;
    bool deadline_done;
    char first_violation[320];
    /* read by main while the worker runs; single writer */
    _Atomic uint64_t data_seen;
    _Atomic uint64_t msgs_seen; /* gRPC messages of normal streams */
    _Atomic uint64_t fed_seen;  /* ticks of the feed, on unfiltered normal streams */
    _Atomic uint32_t connected;
    _Atomic uint32_t failed;
    _Atomic uint32_t settled; /* normal streams done or ended */
};

struct run {
    const struct benchrun_config *cfg;
    grpc_channel **channels;
    struct h2conn **h2conns; /* --client h2, instead of channels */
    uint32_t n_channels;
    grpc_slice *requests; /* encoded WatchRequest per overflow policy 0..3 */
    struct stream *streams;
    struct subcall *calls; /* Subscribe mode */
    uint32_t n_calls;
    struct worker *workers;
    int64_t t0_ns;
    benchfeed_t *feed;
    _Atomic int64_t feed_start_us; /* 0 until the feed starts */
    int64_t feed_end_ns;           /* CLOCK_REALTIME when the drain ended (main only) */
    _Atomic int phase;
    _Atomic bool resume;
    _Atomic bool connect_deadline;
};

static void bump(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static void bump32(_Atomic uint32_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void *tag_of(struct stream *s, int op)
{
    return (void *)((uintptr_t)s | (uintptr_t)op);
}

/* ---- per-message checks -------------------------------------------------- */

static void note_violation(struct worker *w, const struct stream *s, const char *what,
                           uint64_t expected, uint64_t got)
{
    if (w->first_violation[0])
        return;
    snprintf(w->first_violation, sizeof(w->first_violation),
             "stream %u%s: %s: expected seq %llu, got %llu (after %llu Data)", s->index,
             s->stalled ? " (stalled)" : "", what, (unsigned long long)expected,
             (unsigned long long)got, (unsigned long long)s->data);
}

static void settle(struct stream *s)
{
    if (s->settled || s->stalled)
        return;
    s->settled = true;
    bump32(&s->w->settled);
}

static void record(hist_t *h, int64_t ns, uint64_t *negative)
{
    if (ns < 0) {
        (*negative)++;
        ns = 0;
    }
    hist_record(h, (uint64_t)ns);
}

/* The receipt time of the message being handled: read at its first use,
 * then shared by every delivery it carries (0 = not read yet). */
static int64_t now_of(int64_t *now)
{
    if (*now == 0)
        *now = clock_unix_ns();
    return *now;
}

/* Latency of a live Data on a normal stream; see benchrun.h. */
static void measure(struct worker *w, struct stream *s, const struct evparse_event *ev,
                    int64_t *nowp)
{
    struct run *run = w->run;
    int phase = atomic_load_explicit(&run->phase, memory_order_relaxed);
    if (phase != PHASE_RUN && phase != PHASE_DRAIN)
        return;
    int64_t now = now_of(nowp);
    if (run->feed) {
        int64_t start = atomic_load_explicit(&run->feed_start_us, memory_order_relaxed);
        if (start == 0 || ev->emitted_us < start)
            return; /* not a tick this run sent */
        record(w->hist, now - ev->emitted_us * 1000, &w->latency_negative);
        record(w->hist_ingest, now - ev->ingested_us * 1000, &w->latency_ingest_negative);
        s->fed++;
        if (!s->filtered)
            bump(&w->fed_seen, 1);
    } else if (phase == PHASE_RUN) {
        record(w->hist, now - ev->ingested_us * 1000, &w->latency_negative);
        record(w->hist_ingest, now - ev->ingested_us * 1000, &w->latency_ingest_negative);
    }
}

static void sub_remove(struct worker *w, struct stream *s);

/* Cancels a Watch stream, whichever client carries it. */
static void cancel_call(struct stream *s)
{
    s->cancelled = true;
#ifdef TICKFAN_BENCH_H2
    if (s->h2) {
        h2stream_cancel(s->h2);
        return;
    }
#endif
    grpc_call_cancel(s->call, NULL);
}

static void on_data(struct worker *w, struct stream *s, const struct evparse_event *ev,
                    int64_t *now)
{
    const struct benchrun_config *cfg = w->run->cfg;
    if (ev->snapshot) {
        s->snapshots++;
        return;
    }
    s->data++;
    if (!s->stalled)
        bump(&w->data_seen, 1);
    if (s->data == 1) {
        s->first_seq = s->last_seq = ev->seq;
        s->gap_pending = false;
    } else {
        uint64_t expected = s->last_seq + 1;
        if (ev->seq == expected) {
            if (s->gap_pending && s->gap_pending_missed && !s->filtered) {
                s->v_mismatch++;
                note_violation(w, s, "Gap announced events missed but none were", expected,
                               ev->seq);
            }
        } else if (ev->seq > expected) {
            uint64_t jump = ev->seq - expected;
            if (s->gap_pending && !s->jump_seen) {
                s->jump_seen = true;
                s->first_gap_jump = jump;
            }
            if (s->filtered) {
                /* the filter hides the events in between */
            } else if (s->gap_pending) {
                if (jump != s->gap_pending_missed) {
                    s->v_mismatch++;
                    note_violation(w, s, "seq jump differs from the Gap's missed count",
                                   expected + s->gap_pending_missed, ev->seq);
                }
            } else {
                s->v_gap++;
                note_violation(w, s, "unannounced gap", expected, ev->seq);
            }
        } else if (ev->seq == s->last_seq) {
            s->v_repeat++;
            note_violation(w, s, "repeat", expected, ev->seq);
        } else {
            s->v_reorder++;
            note_violation(w, s, "reorder", expected, ev->seq);
        }
        if (s->gap_pending && ev->seq == expected && !s->jump_seen) {
            s->jump_seen = true;
            s->first_gap_jump = 0;
        }
        s->gap_pending = false;
        s->gap_pending_missed = 0;
        if (ev->seq > s->last_seq)
            s->last_seq = ev->seq;
    }
    if (!s->stalled && s->live)
        measure(w, s, ev, now);
    if (!s->stalled && cfg->messages && s->data >= cfg->messages && !s->done) {
        s->done = true;
        if (s->sc) {
            sub_remove(w, s);
        } else {
            cancel_call(s);
        }
        settle(s);
    }
}

/* A received message's bytes, contiguous: in place when gRPC handed back
 * one uncompressed slice, else copied into *all (unref it after). */
static bool message_bytes(grpc_byte_buffer *bb, grpc_slice *all, const uint8_t **p, size_t *n)
{
    *all = grpc_empty_slice();
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
        grpc_slice one = bb->data.raw.slice_buffer.slices[0];
        *p = GRPC_SLICE_START_PTR(one);
        *n = GRPC_SLICE_LENGTH(one);
        return true;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return false;
    *all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    *p = GRPC_SLICE_START_PTR(*all);
    *n = GRPC_SLICE_LENGTH(*all);
    return true;
}

/* One event for stream (or subscription) s, parsed with result rc: the
 * same checks whichever rpc carried it. */
static void on_parsed(struct worker *w, struct stream *s, int rc, const struct evparse_event *ev,
                      int64_t *now)
{
    if (!s->connected) {
        s->connected = true;
        bump32(&w->connected);
    }
    if (rc) {
        s->bad++;
        return;
    }
    switch (ev->kind) {
    case EVPARSE_DATA:
        on_data(w, s, ev, now);
        break;
    case EVPARSE_HEARTBEAT:
        s->heartbeats++;
        break;
    case EVPARSE_END_OF_BACKLOG:
        s->eobs++;
        s->live = true;
        break;
    case EVPARSE_GAP:
        if (s->gaps == 0) {
            s->data_before_gap = s->data;
            s->first_gap_missed = ev->gap_missed;
            s->first_gap_reason = ev->gap_reason;
        }
        s->gaps++;
        s->gap_missed += ev->gap_missed;
        s->gap_pending = true;
        /* frames lost before the server's feed took no seq; the Gap event
         * that tells of them takes one. Other Gaps stand for the seqs of
         * the events they skip. */
        s->gap_pending_missed +=
            ev->gap_reason == EVENTS__V1__GAP_REASON__GAP_UPSTREAM_LOSS ? 1 : ev->gap_missed;
        break;
    case EVPARSE_NONE:
        s->bad++;
        break;
    }
}

/* One Watch message's bytes (NULL: unreadable), whichever client read it. */
static void on_message_bytes(struct worker *w, struct stream *s, const uint8_t *p, size_t n)
{
    struct evparse_event ev;
    int64_t now = 0;
    s->msgs++;
    s->bytes += n;
    if (!s->stalled)
        bump(&w->msgs_seen, 1);
    int rc = p ? evparse_watch_event(p, n, &ev) : -1;
    on_parsed(w, s, rc, &ev, &now);
}

static void on_message(struct worker *w, struct stream *s, grpc_byte_buffer *bb)
{
    grpc_slice all;
    const uint8_t *p;
    size_t n;
    if (!message_bytes(bb, &all, &p, &n)) {
        s->bad++;
        return;
    }
    on_message_bytes(w, s, p, n);
    grpc_slice_unref(all);
}

/* ---- operations ---------------------------------------------------------- */

static void post_recv(struct worker *w, struct stream *s)
{
    if (s->pending & PENDING(OP_RECV) || s->status_done || s->cancelled)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv;
    if (grpc_call_start_batch(s->call, &op, 1, tag_of(s, OP_RECV), NULL) != GRPC_CALL_OK)
        return; /* the call is over; its status batch reports how */
    s->pending |= PENDING(OP_RECV);
    w->pending_ops++;
}

#ifdef TICKFAN_BENCH_H2
/* ---- Watch streams on HTTP/2 directly (--client h2) ---------------------- */

static bool h2_on_message(void *ud, const uint8_t *p, size_t n)
{
    struct stream *s = ud;
    on_message_bytes(s->w, s, p, n);
    /* a stalled stream reads its first message (it is connected), then
     * nothing until it is resumed, as with the gRPC client */
    return !s->stalled || s->resumed;
}

static void h2_on_end(void *ud, int status, const char *message, const char *cursor)
{
    struct stream *s = ud;
    s->status_done = true;
    s->status = (grpc_status_code)status;
    grpc_slice_unref(s->details);
    s->details = grpc_slice_from_copied_string(message);
    snprintf(s->h2_cursor, sizeof(s->h2_cursor), "%s", cursor);
    if (!s->connected)
        bump32(&s->w->failed);
    settle(s);
}

static const struct h2conn_handler h2_handler = {.on_message = h2_on_message, .on_end = h2_on_end};

static void open_stream_h2(struct worker *w, struct stream *s)
{
    struct run *run = w->run;
    const grpc_slice *req = &run->requests[s->overflow];
    s->opened = true;
    s->h2 = h2conn_call(run->h2conns[s->conn], WATCH_METHOD, GRPC_SLICE_START_PTR(*req),
                        GRPC_SLICE_LENGTH(*req), s);
    if (!s->h2) {
        s->status_done = true;
        s->status = GRPC_STATUS_UNAVAILABLE;
        grpc_slice_unref(s->details);
        s->details = grpc_slice_from_static_string("cannot start the call: connection lost");
        bump32(&w->failed);
        settle(s);
    }
}
#endif

static void open_stream(struct worker *w, struct stream *s)
{
    struct run *run = w->run;
#ifdef TICKFAN_BENCH_H2
    if (run->cfg->client == BENCHRUN_CLIENT_H2) {
        open_stream_h2(w, s);
        return;
    }
#endif
    grpc_slice method = grpc_slice_from_static_string(WATCH_METHOD);
    s->opened = true;
    s->call = grpc_channel_create_call(run->channels[s->conn], NULL, GRPC_PROPAGATE_DEFAULTS, w->cq,
                                       method, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    s->request = grpc_raw_byte_buffer_create(&run->requests[s->overflow], 1);
    if (s->call == NULL || s->request == NULL)
        goto out_failed;

    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    if (grpc_call_start_batch(s->call, ops, 4, tag_of(s, OP_START), NULL) != GRPC_CALL_OK)
        goto out_failed;
    s->pending |= PENDING(OP_START);
    w->pending_ops++;

    grpc_op st;
    memset(&st, 0, sizeof(st));
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    st.data.recv_status_on_client.status = &s->status;
    st.data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, &st, 1, tag_of(s, OP_STATUS), NULL) != GRPC_CALL_OK) {
        grpc_call_cancel(s->call, NULL);
        s->cancelled = true;
        s->status_done = true; /* no status will come: failed now */
        s->status = GRPC_STATUS_INTERNAL;
        bump32(&w->failed);
        settle(s);
        return;
    }
    s->pending |= PENDING(OP_STATUS);
    w->pending_ops++;
    post_recv(w, s);
    return;

out_failed:
    s->status_done = true;
    s->status = GRPC_STATUS_INTERNAL;
    bump32(&w->failed);
    settle(s);
}

/* ---- Subscribe streams --------------------------------------------------- */

static void *call_tag(struct subcall *c, int op)
{
    return (void *)((uintptr_t)c | (uintptr_t)op);
}

/* Ends subscription s (once) with status and details (a reference the
 * subscription takes over). */
static void sub_end(struct worker *w, struct stream *s, grpc_status_code status, grpc_slice details)
{
    if (s->status_done) {
        grpc_slice_unref(details);
        return;
    }
    s->status_done = true;
    s->status = status;
    grpc_slice_unref(s->details);
    s->details = details;
    if (!s->connected)
        bump32(&w->failed);
    settle(s);
}

static void sub_post_recv(struct worker *w, struct subcall *c)
{
    if (c->pending & PENDING(OP_RECV) || c->status_done || c->cancelled)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv;
    if (grpc_call_start_batch(c->call, &op, 1, call_tag(c, OP_RECV), NULL) != GRPC_CALL_OK)
        return; /* the call is over; its status batch reports how */
    c->pending |= PENDING(OP_RECV);
    w->pending_ops++;
}

/* Request `op` of the send queue (an id to add, or SENDQ_REMOVE | id),
 * encoded as a SubscribeRequest. */
static grpc_slice encode_op(struct worker *w, struct subcall *c, uint32_t op)
{
    uint32_t id = op & ~SENDQ_REMOVE;
    if (op & SENDQ_REMOVE) {
        size_t n = subparse_encode_remove(NULL, 0, id);
        grpc_slice sl = grpc_slice_malloc(n);
        subparse_encode_remove(GRPC_SLICE_START_PTR(sl), n, id);
        return sl;
    }
    grpc_slice req = w->run->requests[c->subs[id - 1]->overflow];
    size_t n = subparse_encode_add(NULL, 0, id, GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req));
    grpc_slice sl = grpc_slice_malloc(n);
    subparse_encode_add(GRPC_SLICE_START_PTR(sl), n, id, GRPC_SLICE_START_PTR(req),
                        GRPC_SLICE_LENGTH(req));
    return sl;
}

#ifdef TICKFAN_BENCH_H2
/* --client h2: every queued request goes to the call's send buffer at once
 * (they leave with the worker's next flush). */
static void sub_send_h2(struct worker *w, struct subcall *c)
{
    while (c->q_head != c->q_tail && !c->status_done && !c->cancelled) {
        grpc_slice sl = encode_op(w, c, c->sendq[c->q_head++ % c->q_cap]);
        int rc = h2stream_send(c->h2, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
        grpc_slice_unref(sl);
        if (rc == -ENOMEM) {
            /* the stream cannot carry its requests: end it, saying why */
            fprintf(stderr, "tickfan-bench: Subscribe stream %u: out of memory for its requests\n",
                    c->index);
            h2stream_cancel(c->h2);
        }
        if (rc != 0)
            return; /* the call is over: its on_end says how */
    }
}
#endif

/* Sends the next queued request, if none is in flight. */
static void sub_try_send(struct worker *w, struct subcall *c)
{
#ifdef TICKFAN_BENCH_H2
    if (c->h2) {
        sub_send_h2(w, c);
        return;
    }
#endif
    if (c->pending & PENDING(OP_SEND) || c->status_done || c->cancelled || c->q_head == c->q_tail)
        return;
    grpc_slice sl = encode_op(w, c, c->sendq[c->q_head++ % c->q_cap]);
    c->send = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_op o;
    memset(&o, 0, sizeof(o));
    o.op = GRPC_OP_SEND_MESSAGE;
    o.data.send_message.send_message = c->send;
    if (grpc_call_start_batch(c->call, &o, 1, call_tag(c, OP_SEND), NULL) != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(c->send);
        c->send = NULL;
        return; /* the call is over; its status batch reports how */
    }
    c->pending |= PENDING(OP_SEND);
    w->pending_ops++;
}

static void sub_queue(struct worker *w, struct subcall *c, uint32_t op)
{
    if (c->q_tail - c->q_head < c->q_cap)
        c->sendq[c->q_tail++ % c->q_cap] = op;
    sub_try_send(w, c);
}

/* Ends subscription s from our side: a remove; its SubscriptionEnd{OK}
 * comes later. */
static void sub_remove(struct worker *w, struct stream *s)
{
    s->cancelled = true;
    sub_queue(w, s->sc, SENDQ_REMOVE | s->id);
}

/* Every subscription of c that was added and has not ended ends with the
 * stream's own status. */
static void call_over(struct worker *w, struct subcall *c)
{
    for (uint32_t i = 0; i < c->n_subs; i++) {
        struct stream *s = c->subs[i];
        if (s->opened && !s->status_done)
            sub_end(w, s, c->status, grpc_slice_ref(c->details));
    }
}

static void open_call(struct worker *w, struct subcall *c)
{
    struct run *run = w->run;
    c->opened = true;
#ifdef TICKFAN_BENCH_H2
    if (run->cfg->client == BENCHRUN_CLIENT_H2) {
        c->h2 = h2conn_open(run->h2conns[c->conn], SUBSCRIBE_METHOD, c);
        if (!c->h2) {
            c->status_done = true;
            c->status = GRPC_STATUS_UNAVAILABLE;
            grpc_slice_unref(c->details);
            c->details = grpc_slice_from_static_string("cannot start the call: connection lost");
        }
        return;
    }
#endif
    grpc_slice method = grpc_slice_from_static_string(SUBSCRIBE_METHOD);
    c->call = grpc_channel_create_call(run->channels[c->conn], NULL, GRPC_PROPAGATE_DEFAULTS, w->cq,
                                       method, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (c->call == NULL)
        goto out_failed;
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
    if (grpc_call_start_batch(c->call, ops, 2, call_tag(c, OP_START), NULL) != GRPC_CALL_OK)
        goto out_failed;
    c->pending |= PENDING(OP_START);
    w->pending_ops++;
    grpc_op st;
    memset(&st, 0, sizeof(st));
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &c->trailing_md;
    st.data.recv_status_on_client.status = &c->status;
    st.data.recv_status_on_client.status_details = &c->details;
    if (grpc_call_start_batch(c->call, &st, 1, call_tag(c, OP_STATUS), NULL) != GRPC_CALL_OK) {
        grpc_call_cancel(c->call, NULL);
        c->cancelled = true;
        goto out_failed;
    }
    c->pending |= PENDING(OP_STATUS);
    w->pending_ops++;
    sub_post_recv(w, c);
    return;

out_failed:
    /* no status will come: the stream and what it would carry fail now */
    c->status_done = true;
    c->status = GRPC_STATUS_INTERNAL;
}

/* Opens subscription s: its Subscribe stream first if it is the first. */
static void open_sub(struct worker *w, struct stream *s)
{
    struct subcall *c = s->sc;
    s->opened = true;
    if (!c->opened)
        open_call(w, c);
    if (c->status_done) {
        sub_end(w, s, c->status, grpc_slice_ref(c->details));
        return;
    }
    sub_queue(w, c, s->id);
}

/* The subscription an id of stream c names, or NULL if c never added it. */
static struct stream *sub_of(struct subcall *c, uint32_t id)
{
    if (id == 0 || id > c->n_subs || !c->subs[id - 1]->opened)
        return NULL;
    return c->subs[id - 1];
}

static void on_sub_end(struct worker *w, struct subcall *c, struct stream *s,
                       const struct subparse_delivery *d)
{
    if (s->status_done) {
        if (!s->cancelled)
            c->after_end++; /* a second end */
        return;
    }
    grpc_status_code code = d->end_code >= 0 && d->end_code < BENCHRUN_STATUS_MAX
                                ? (grpc_status_code)d->end_code
                                : GRPC_STATUS_UNKNOWN;
    sub_end(w, s, code,
            grpc_slice_from_copied_buffer((const char *)d->end_message, d->end_message_len));
}

/* One SubscribeResponse's bytes: each delivery's event parsed once, then
 * checked and measured for each of its ids. */
static void on_sub_bytes(struct worker *w, struct subcall *c, const uint8_t *p, size_t n)
{
    int64_t now = 0;
    c->got_message = true;
    c->msgs++;
    c->bytes += n;
    bump(&w->msgs_seen, 1);
    struct subparse_response it;
    struct subparse_delivery d;
    int rc;
    subparse_init(&it, p, n);
    while ((rc = subparse_next(&it, &d, w->ids, w->ids_cap)) == 1) {
        c->records++;
        if (d.n_ids > c->max_ids)
            c->max_ids = (uint32_t)d.n_ids;
        if (d.kind == SUBPARSE_END) {
            c->ends += d.n_ids;
            for (size_t k = 0; k < d.n_ids; k++) {
                struct stream *s = sub_of(c, d.ids[k]);
                if (s == NULL)
                    c->unknown_ids++;
                else
                    on_sub_end(w, c, s, &d);
            }
            continue;
        }
        struct evparse_event ev;
        int erc = -EBADMSG; /* a delivery with no payload is malformed */
        if (d.kind == SUBPARSE_EVENT)
            erc = evparse_watch_event(d.event, d.event_len, &ev);
        else
            memset(&ev, 0, sizeof(ev));
        c->deliveries += d.n_ids;
        for (size_t k = 0; k < d.n_ids; k++) {
            struct stream *s = sub_of(c, d.ids[k]);
            if (s == NULL) {
                c->unknown_ids++;
                continue;
            }
            if (s->status_done) {
                /* after its end; or ours, which the server has not seen yet */
                if (!s->cancelled)
                    c->after_end++;
                continue;
            }
            on_parsed(w, s, erc, &ev, &now);
        }
    }
    if (rc < 0)
        c->bad++;
}

static void on_sub_message(struct worker *w, struct subcall *c, grpc_byte_buffer *bb)
{
    grpc_slice all;
    const uint8_t *p;
    size_t n;
    if (!message_bytes(bb, &all, &p, &n)) {
        c->bad++;
        return;
    }
    on_sub_bytes(w, c, p, n);
    grpc_slice_unref(all);
}

#ifdef TICKFAN_BENCH_H2
/* --client h2: a Subscribe stream's messages and its end. */
static bool h2_sub_on_message(void *ud, const uint8_t *p, size_t n)
{
    struct subcall *c = ud;
    on_sub_bytes(c->w, c, p, n);
    return true;
}

static void h2_sub_on_end(void *ud, int status, const char *message, const char *cursor)
{
    (void)cursor;
    struct subcall *c = ud;
    c->status_done = true;
    c->status = (grpc_status_code)status;
    grpc_slice_unref(c->details);
    c->details = grpc_slice_from_copied_string(message);
    call_over(c->w, c);
}

static const struct h2conn_handler h2_sub_handler = {.on_message = h2_sub_on_message,
                                                     .on_end = h2_sub_on_end};
#endif

static void on_call_event(struct worker *w, const grpc_event *e)
{
    struct subcall *c = (struct subcall *)((uintptr_t)e->tag & ~(uintptr_t)OP_MASK);
    int op = (int)((uintptr_t)e->tag & OP_MASK);
    c->pending &= (uint8_t)~PENDING(op);
    w->pending_ops--;
    switch (op) {
    case OP_START:
        break;
    case OP_SEND:
        grpc_byte_buffer_destroy(c->send);
        c->send = NULL;
        if (e->success)
            sub_try_send(w, c);
        break;
    case OP_RECV: {
        grpc_byte_buffer *bb = c->recv;
        c->recv = NULL;
        if (bb == NULL)
            break; /* no more messages: the status batch says why */
        on_sub_message(w, c, bb);
        grpc_byte_buffer_destroy(bb);
        if (atomic_load_explicit(&w->run->phase, memory_order_relaxed) != PHASE_STOP)
            sub_post_recv(w, c);
        break;
    }
    case OP_STATUS:
        c->status_done = true;
        call_over(w, c);
        break;
    }
}

static void on_event(struct worker *w, const grpc_event *e)
{
    if (e->type != GRPC_OP_COMPLETE)
        return;
    if (w->run->cfg->rpc == BENCHRUN_RPC_SUBSCRIBE) {
        on_call_event(w, e);
        return;
    }
    struct stream *s = (struct stream *)((uintptr_t)e->tag & ~(uintptr_t)OP_MASK);
    int op = (int)((uintptr_t)e->tag & OP_MASK);
    s->pending &= (uint8_t)~PENDING(op);
    w->pending_ops--;
    switch (op) {
    case OP_START:
        grpc_byte_buffer_destroy(s->request);
        s->request = NULL;
        break;
    case OP_RECV: {
        grpc_byte_buffer *bb = s->recv;
        s->recv = NULL;
        if (bb == NULL)
            break; /* no more messages: the status batch says why */
        on_message(w, s, bb);
        grpc_byte_buffer_destroy(bb);
        bool stop = atomic_load_explicit(&w->run->phase, memory_order_relaxed) == PHASE_STOP;
        if (!stop && (!s->stalled || s->resumed))
            post_recv(w, s);
        break;
    }
    case OP_STATUS:
        s->status_done = true;
        if (!s->connected)
            bump32(&w->failed);
        settle(s);
        break;
    }
}

/* ---- worker -------------------------------------------------------------- */

static void open_due(struct worker *w, int64_t now)
{
    const struct benchrun_config *cfg = w->run->cfg;
    while (w->opened < w->n) {
        struct stream *s = w->streams[w->opened];
        if (cfg->ramp_s > 0) {
            int64_t due = w->run->t0_ns +
                          (int64_t)(cfg->ramp_s * 1e9 * (double)s->index / (double)cfg->streams);
            if (due > now)
                break;
        }
        if (s->sc)
            open_sub(w, s);
        else
            open_stream(w, s);
        w->opened++;
    }
}

static void cancel_where(struct worker *w, bool only_unconnected)
{
    if (w->run->cfg->rpc == BENCHRUN_RPC_SUBSCRIBE) {
        if (only_unconnected) {
            /* past the connect deadline: removed, and failed now (the
             * stream and the other subscriptions on it go on) */
            for (uint32_t i = 0; i < w->opened; i++) {
                struct stream *s = w->streams[i];
                if (s->status_done || s->cancelled || s->connected)
                    continue;
                sub_remove(w, s);
                sub_end(w, s, GRPC_STATUS_DEADLINE_EXCEEDED,
                        grpc_slice_from_static_string("no delivery before the connect timeout"));
            }
            return;
        }
        for (uint32_t i = 0; i < w->opened; i++)
            if (!w->streams[i]->status_done)
                w->streams[i]->cancelled = true;
        for (uint32_t j = 0; j < w->n_calls; j++) {
            struct subcall *c = w->calls[j];
            if (!c->opened || c->status_done || c->cancelled)
                continue;
            c->cancelled = true;
#ifdef TICKFAN_BENCH_H2
            if (c->h2) {
                h2stream_cancel(c->h2);
                continue;
            }
#endif
            grpc_call_cancel(c->call, NULL);
        }
        return;
    }
    for (uint32_t i = 0; i < w->opened; i++) {
        struct stream *s = w->streams[i];
        if (s->status_done || s->cancelled || (only_unconnected && s->connected))
            continue;
        cancel_call(s);
    }
}

/* A stalled stream reads again, whichever client carries it. */
static void resume_stream(struct worker *w, struct stream *s)
{
#ifdef TICKFAN_BENCH_H2
    if (w->run->cfg->client == BENCHRUN_CLIENT_H2) {
        if (s->h2)
            h2stream_resume(s->h2);
        return;
    }
#endif
    post_recv(w, s);
}

/* What both workers do each round before they wait: open the streams that
 * are due, fail the unconnected ones at the connect deadline, resume the
 * stalled ones, and on STOP (once) fail the streams never opened and cancel
 * the rest. Returns the phase. */
static int worker_round(struct worker *w)
{
    struct run *run = w->run;
    int phase = atomic_load_explicit(&run->phase, memory_order_relaxed);
    if (phase != PHASE_STOP)
        open_due(w, clock_mono_ns());
    if (!w->deadline_done && atomic_load(&run->connect_deadline)) {
        w->deadline_done = true;
        cancel_where(w, true);
    }
    if (!w->resumed_all && atomic_load(&run->resume)) {
        w->resumed_all = true;
        for (uint32_t i = 0; i < w->opened; i++) {
            struct stream *s = w->streams[i];
            if (!s->stalled)
                continue;
            s->resumed = true;
            s->data_before_resume = s->data;
            resume_stream(w, s);
        }
    }
    if (phase == PHASE_STOP && !w->cancelled_all) {
        w->cancelled_all = true;
        /* streams never opened (ramp cut short) failed to connect */
        for (uint32_t i = w->opened; i < w->n; i++) {
            bump32(&w->failed);
            settle(w->streams[i]);
        }
        cancel_where(w, false);
    }
    return phase;
}

#ifdef TICKFAN_BENCH_H2
/* Arms or disarms EPOLLOUT on connection k of the worker as its output
 * needs; drops a lost connection from the poll set. */
static void h2_poll_set(struct worker *w, uint32_t k, int flush_rc)
{
    struct h2conn *c = w->run->h2conns[w->conns[k]];
    if (w->conn_dead[k])
        return;
    if (flush_rc < 0) {
        epoll_ctl(w->ep, EPOLL_CTL_DEL, h2conn_fd(c), NULL);
        w->conn_dead[k] = true;
        return;
    }
    bool want = flush_rc > 0;
    if (want == w->conn_out[k])
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.u32 = k};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, h2conn_fd(c), &ev);
    w->conn_out[k] = want;
}

/* The worker with --client h2: the same phases as worker_main, its
 * connections polled with epoll instead of a completion queue. */
static void *worker_main_h2(struct worker *w)
{
    struct run *run = w->run;
    int64_t stop_at = 0;
    struct epoll_event evs[64];
    for (;;) {
        if (worker_round(w) == PHASE_STOP) {
            int64_t now = clock_mono_ns();
            if (!stop_at)
                stop_at = now;
            size_t open = 0;
            for (uint32_t k = 0; k < w->n_conns; k++)
                if (!w->conn_dead[k])
                    open += h2conn_open_calls(run->h2conns[w->conns[k]]);
            /* every cancel answered, or the server no longer reads */
            if (open == 0 || now - stop_at >= H2_STOP_WAIT_NS)
                break;
        }
        for (uint32_t k = 0; k < w->n_conns; k++)
            if (!w->conn_dead[k])
                h2_poll_set(w, k, h2conn_flush(run->h2conns[w->conns[k]]));
        int n = epoll_wait(w->ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), POLL_MS);
        for (int i = 0; i < n; i++) {
            uint32_t k = evs[i].data.u32;
            if (w->conn_dead[k])
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR) &&
                h2conn_read(run->h2conns[w->conns[k]]) < 0)
                h2_poll_set(w, k, -1);
        }
    }
    return NULL;
}
#endif

static void *worker_main(void *p)
{
    struct worker *w = p;
    struct run *run = w->run;
#ifdef TICKFAN_BENCH_H2
    if (run->cfg->client == BENCHRUN_CLIENT_H2)
        return worker_main_h2(w);
#endif
    for (;;) {
        if (worker_round(w) == PHASE_STOP && w->pending_ops == 0)
            break;
        gpr_timespec deadline =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(POLL_MS, GPR_TIMESPAN));
        grpc_event e = grpc_completion_queue_next(w->cq, deadline, NULL);
        on_event(w, &e);
        /* drain what is ready without going back to the clock */
        for (int k = 0; k < 256 && e.type == GRPC_OP_COMPLETE; k++) {
            e = grpc_completion_queue_next(w->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
            on_event(w, &e);
        }
    }
    for (uint32_t i = 0; i < w->opened; i++)
        if (w->streams[i]->call != NULL) {
            grpc_call_unref(w->streams[i]->call);
            w->streams[i]->call = NULL;
        }
    for (uint32_t j = 0; j < w->n_calls; j++)
        if (w->calls[j]->call != NULL) {
            grpc_call_unref(w->calls[j]->call);
            w->calls[j]->call = NULL;
        }
    grpc_completion_queue_shutdown(w->cq);
    while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    return NULL;
}

/* ---- set-up -------------------------------------------------------------- */

static int raise_fd_limit(uint64_t need, uint64_t *limit)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -errno;
    if (rl.rlim_cur < need || rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (rl.rlim_max < need)
            rl.rlim_cur = rl.rlim_max = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    *limit = rl.rlim_cur;
    if (rl.rlim_cur < need) {
        fprintf(stderr,
                "tickfan-bench: need %llu file descriptors for the connections, limit is %llu "
                "and cannot be raised\n",
                (unsigned long long)need, (unsigned long long)rl.rlim_cur);
        return -EMFILE;
    }
    return 0;
}

static int encode_requests(struct run *run)
{
    const struct benchrun_config *cfg = run->cfg;
    run->requests = calloc(4, sizeof(grpc_slice));
    if (run->requests == NULL)
        return -ENOMEM;
    for (int policy = 0; policy < 4; policy++) {
        Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
        req.topic = (char *)cfg->topic;
        req.kinds = cfg->kinds;
        req.n_kinds = cfg->n_kinds;
        req.keys = cfg->keys;
        req.n_keys = cfg->n_keys;
        req.start = (Events__V1__StartPosition)cfg->start;
        req.overflow = (Events__V1__OverflowPolicy)policy;
        size_t len = events__v1__watch_request__get_packed_size(&req);
        run->requests[policy] = grpc_slice_malloc(len);
        events__v1__watch_request__pack(&req, GRPC_SLICE_START_PTR(run->requests[policy]));
    }
    return 0;
}

static grpc_channel *make_channel(const char *target, uint32_t index, bool stalled)
{
    grpc_arg args[3];
    size_t n = 0;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[n++].value.integer = 1;
    /* distinct args per channel: never one shared subchannel */
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)"tickfan.bench.connection";
    args[n++].value.integer = (int)index;
    if (stalled) {
        /* keep the receive window at its initial size: the server's send
         * then blocks after little slack */
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = (char *)GRPC_ARG_HTTP2_BDP_PROBE;
        args[n++].value.integer = 0;
    }
    grpc_channel_args chargs = {.num_args = n, .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    return ch;
}

/* Subscribe mode: ceil(S / K) streams, subscription i on stream i % calls
 * (see benchrun.h), stream j on connection j % M and worker j % T. */
static int make_calls(struct run *run)
{
    const struct benchrun_config *cfg = run->cfg;
    uint32_t k = cfg->subs_per_stream;
    run->n_calls = (uint32_t)(((uint64_t)cfg->streams + k - 1) / k);
    run->calls = calloc(run->n_calls, sizeof(*run->calls));
    if (!run->calls)
        return -ENOMEM;
    uint32_t most = 0;
    for (uint32_t j = 0; j < run->n_calls; j++) {
        struct subcall *c = &run->calls[j];
        c->index = j;
        c->conn = j % cfg->connections;
        /* --client h2: the worker that polls its connection */
        c->w = &run->workers[(cfg->client == BENCHRUN_CLIENT_H2 ? c->conn : j) % cfg->threads];
        c->details = grpc_empty_slice();
        grpc_metadata_array_init(&c->initial_md);
        grpc_metadata_array_init(&c->trailing_md);
        c->n_subs = (cfg->streams - j + run->n_calls - 1) / run->n_calls;
        c->q_cap = 2 * c->n_subs;
        c->subs = calloc(c->n_subs, sizeof(*c->subs));
        c->sendq = calloc(c->q_cap, sizeof(*c->sendq));
        if (!c->subs || !c->sendq)
            return -ENOMEM;
        if (c->n_subs > most)
            most = c->n_subs;
    }
    for (uint32_t t = 0; t < cfg->threads; t++) {
        struct worker *w = &run->workers[t];
        w->calls = calloc(run->n_calls, sizeof(*w->calls));
        /* room for every id twice: a server repeating ids is reported,
         * not a reason to drop the message */
        w->ids_cap = 2 * (size_t)most + 64;
        w->ids = calloc(w->ids_cap, sizeof(*w->ids));
        if (!w->calls || !w->ids)
            return -ENOMEM;
    }
    for (uint32_t j = 0; j < run->n_calls; j++) {
        struct worker *w = run->calls[j].w;
        w->calls[w->n_calls++] = &run->calls[j];
    }
    return 0;
}

bool benchrun_has_h2(void)
{
#ifdef TICKFAN_BENCH_H2
    return true;
#else
    return false;
#endif
}

/* --client h2: connection c, opened now (blocking connect). */
static int connect_h2(struct run *run, uint32_t c, bool stalled)
{
#ifdef TICKFAN_BENCH_H2
    if (!run->h2conns) {
        run->h2conns = calloc(run->n_channels, sizeof(*run->h2conns));
        if (!run->h2conns)
            return -ENOMEM;
    }
    struct h2conn_options opt = {
        .stream_window = stalled ? H2_STALLED_WINDOW : H2_STREAM_WINDOW,
        .connection_window = stalled ? H2_STALLED_WINDOW : H2_CONNECTION_WINDOW,
    };
    char err[256];
    const struct h2conn_handler *h =
        run->cfg->rpc == BENCHRUN_RPC_SUBSCRIBE ? &h2_sub_handler : &h2_handler;
    int rc = h2conn_connect(&run->h2conns[c], run->cfg->server, &opt, h, err, sizeof(err));
    if (rc)
        fprintf(stderr, "tickfan-bench: connection %u: %s\n", c, err);
    return rc;
#else
    (void)run;
    (void)c;
    (void)stalled;
    return -ENOTSUP;
#endif
}

/* --client h2: each worker polls connections c with c % threads == id. */
static int poll_h2(struct run *run)
{
#ifdef TICKFAN_BENCH_H2
    uint32_t threads = run->cfg->threads;
    for (uint32_t t = 0; t < threads; t++) {
        struct worker *w = &run->workers[t];
        uint32_t most = run->n_channels / threads + 1;
        w->conns = calloc(most, sizeof(*w->conns));
        w->conn_out = calloc(most, sizeof(*w->conn_out));
        w->conn_dead = calloc(most, sizeof(*w->conn_dead));
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (!w->conns || !w->conn_out || !w->conn_dead || w->ep < 0)
            return -ENOMEM;
    }
    for (uint32_t c = 0; c < run->n_channels; c++) {
        struct worker *w = &run->workers[c % threads];
        uint32_t k = w->n_conns++;
        w->conns[k] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = k};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, h2conn_fd(run->h2conns[c]), &ev) != 0)
            return -errno;
    }
    return 0;
#else
    (void)run;
    return -ENOTSUP;
#endif
}

static int check_config(const struct benchrun_config *cfg)
{
    const char *why = NULL;
    if (!cfg->server || !cfg->topic)
        why = "server and topic are required";
    else if (cfg->streams == 0)
        why = "streams must be at least 1";
    else if (cfg->stall > cfg->streams)
        why = "stall is larger than streams";
    else if (cfg->stall < cfg->streams && cfg->connections == 0)
        why = "connections must be at least 1";
    else if (cfg->threads == 0)
        why = "threads must be at least 1";
    else if (cfg->stall && cfg->stall_connections == 0)
        why = "stall-connections must be at least 1";
    else if (cfg->duration_s <= 0)
        why = "duration must be positive";
    else if (cfg->feed && cfg->drain_s < 0)
        why = "drain must not be negative";
    else if (cfg->rpc != BENCHRUN_RPC_WATCH && cfg->rpc != BENCHRUN_RPC_SUBSCRIBE)
        why = "unknown rpc";
    else if (cfg->rpc == BENCHRUN_RPC_SUBSCRIBE && cfg->stall)
        why = "stalled streams are Watch streams only";
    else if (cfg->client != BENCHRUN_CLIENT_GRPC && cfg->client != BENCHRUN_CLIENT_H2)
        why = "unknown client";
    else if (cfg->client == BENCHRUN_CLIENT_H2 && !benchrun_has_h2())
        why = "--client h2: this tickfan-bench was built without libnghttp2 "
              "(install libnghttp2-dev and rebuild)";
    else if (cfg->rpc == BENCHRUN_RPC_SUBSCRIBE &&
             (cfg->subs_per_stream == 0 || cfg->subs_per_stream >= SENDQ_REMOVE / 2))
        why = "subscriptions per stream must be at least 1";
    if (why) {
        fprintf(stderr, "tickfan-bench: %s\n", why);
        return -EINVAL;
    }
    return 0;
}

/* ---- results ------------------------------------------------------------- */

static void trailer(const grpc_metadata_array *md, const char *key, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, key) != 0)
            continue;
        size_t len = GRPC_SLICE_LENGTH(md->metadata[i].value);
        if (len >= cap)
            len = cap - 1;
        memcpy(out, GRPC_SLICE_START_PTR(md->metadata[i].value), len);
        out[len] = '\0';
        return;
    }
}

static void slice_text(grpc_slice s, char *out, size_t cap)
{
    size_t len = GRPC_SLICE_LENGTH(s);
    if (len >= cap)
        len = cap - 1;
    memcpy(out, GRPC_SLICE_START_PTR(s), len);
    out[len] = '\0';
}

/*
 * After the join, with a feed: the ticks an unfiltered normal stream has
 * neither received nor been told of as missed (a Gap) are still on their
 * way. Leaving them out would hide the worst latencies of a server that
 * fell behind, so each is recorded at its age when the drain ended: a lower
 * bound of its latency (counted as censored). A stream receives in order,
 * so those are the last ticks sent.
 */
static void censor_undelivered(struct run *run, struct benchrun_results *res)
{
    const struct benchrun_config *cfg = run->cfg;
    if (!res->fed)
        return;
    bool censor = !cfg->messages && !cfg->n_kinds && !cfg->n_keys;
    struct benchfeed_schedule sched = benchfeed_get_schedule(run->feed);
    uint64_t sent = res->feed.ticks;
    for (uint32_t i = 0; i < cfg->streams; i++) {
        const struct stream *s = &run->streams[i];
        if (s->stalled)
            continue;
        res->feed_received += s->fed;
        uint64_t accounted = s->fed + s->gap_missed;
        if (!censor || accounted >= sent)
            continue;
        for (uint64_t t = accounted; t < sent; t++) {
            int64_t age = run->feed_end_ns - benchfeed_stamp_us(&sched, t) * 1000;
            hist_record(res->latency_ns, age > 0 ? (uint64_t)age : 0);
        }
        res->feed_undelivered += sent - accounted;
    }
}

static void collect(struct run *run, struct benchrun_results *res)
{
    const struct benchrun_config *cfg = run->cfg;
    uint64_t sum = 0;
    res->data_min = UINT64_MAX;
    res->first_seq_min = res->last_seq_min = UINT64_MAX;
    for (uint32_t i = 0; i < cfg->streams; i++) {
        struct stream *s = &run->streams[i];
        bool failed = !s->connected;
        bool early = s->connected && s->status_done && !s->cancelled;
        if (s->connected)
            res->connected++;
        else
            res->failed++;
        if (!s->stalled && (failed || early)) {
            if (early)
                res->ended_early++;
            if ((unsigned)s->status < BENCHRUN_STATUS_MAX)
                res->status_counts[s->status]++;
            if (!res->first_failure[0]) {
                char d[200];
                slice_text(s->details, d, sizeof(d));
                snprintf(res->first_failure, sizeof(res->first_failure),
                         "stream %u %s: status %d \"%s\" after %llu Data", i,
                         failed ? "failed" : "ended early", (int)s->status, d,
                         (unsigned long long)s->data);
            }
        }
        if (s->stalled) {
            struct benchrun_stalled *st = &res->stalled[res->n_stalled++];
            st->index = i;
            st->overflow = s->overflow;
            st->resumed = s->resumed;
            st->data_before_resume = s->resumed ? s->data_before_resume : s->data;
            st->data_before_gap = s->gaps ? s->data_before_gap : s->data;
            st->data = s->data;
            st->last_seq = s->data ? s->last_seq : 0;
            st->gaps = s->gaps;
            st->gap_missed = s->gap_missed;
            st->first_gap_missed = s->first_gap_missed;
            st->first_gap_reason = s->first_gap_reason;
            st->first_gap_jump = s->first_gap_jump;
            st->jump_seen = s->jump_seen;
            st->violations = s->v_gap + s->v_repeat + s->v_reorder + s->v_mismatch;
            st->ended = s->status_done && !s->cancelled;
            st->status = s->status_done ? (int)s->status : -1;
            slice_text(s->details, st->details, sizeof(st->details));
            if (s->h2)
                snprintf(st->cursor_trailer, sizeof(st->cursor_trailer), "%s", s->h2_cursor);
            else
                trailer(&s->trailing_md, "tickfan-cursor", st->cursor_trailer,
                        sizeof(st->cursor_trailer));
            continue;
        }
        if (cfg->messages && !s->done)
            res->incomplete++;
        sum += s->data;
        if (s->data < res->data_min)
            res->data_min = s->data;
        if (s->data > res->data_max)
            res->data_max = s->data;
        res->snapshots += s->snapshots;
        res->heartbeats += s->heartbeats;
        res->end_of_backlogs += s->eobs;
        res->gaps += s->gaps;
        res->gap_missed += s->gap_missed;
        res->order_gaps += s->v_gap;
        res->order_repeats += s->v_repeat;
        res->order_reorders += s->v_reorder;
        res->gap_mismatches += s->v_mismatch;
        res->bad_messages += s->bad;
        if (!s->filtered && s->data) {
            res->seq_streams++;
            if (s->first_seq < res->first_seq_min)
                res->first_seq_min = s->first_seq;
            if (s->first_seq > res->first_seq_max)
                res->first_seq_max = s->first_seq;
            if (s->last_seq < res->last_seq_min)
                res->last_seq_min = s->last_seq;
            if (s->last_seq > res->last_seq_max)
                res->last_seq_max = s->last_seq;
        }
    }
    res->data_total = sum;
    if (cfg->rpc == BENCHRUN_RPC_SUBSCRIBE) {
        res->grpc_streams = run->n_calls;
        for (uint32_t j = 0; j < run->n_calls; j++) {
            const struct subcall *c = &run->calls[j];
            if (!c->got_message)
                res->grpc_streams_failed++;
            res->grpc_messages += c->msgs;
            res->grpc_message_bytes += c->bytes;
            res->delivery_records += c->records;
            res->deliveries += c->deliveries;
            res->subscription_ends += c->ends;
            res->unknown_ids += c->unknown_ids;
            res->after_end += c->after_end;
            res->bad_messages += c->bad;
            if (c->max_ids > res->max_ids_per_record)
                res->max_ids_per_record = c->max_ids;
        }
    } else {
        res->grpc_streams = res->normal_streams;
        for (uint32_t i = 0; i < cfg->streams; i++) {
            const struct stream *s = &run->streams[i];
            if (s->stalled)
                continue;
            res->grpc_messages += s->msgs;
            res->grpc_message_bytes += s->bytes;
        }
        res->delivery_records = res->deliveries = res->grpc_messages;
        res->max_ids_per_record = res->grpc_messages ? 1 : 0;
    }
    if (res->normal_streams)
        res->data_avg = (double)sum / res->normal_streams;
    if (res->data_min == UINT64_MAX)
        res->data_min = 0;
    if (res->seq_streams == 0)
        res->first_seq_min = res->last_seq_min = 0;
    censor_undelivered(run, res);
    for (uint32_t t = 0; t < cfg->threads; t++) {
        struct worker *w = &run->workers[t];
        hist_merge(res->latency_ns, w->hist);
        hist_merge(res->latency_ingest_ns, w->hist_ingest);
        res->latency_negative += w->latency_negative;
        res->latency_ingest_negative += w->latency_ingest_negative;
        if (!res->first_violation[0] && w->first_violation[0])
            memcpy(res->first_violation, w->first_violation, sizeof(res->first_violation));
    }
}

static uint64_t sum_u64(struct run *run, size_t offset)
{
    uint64_t n = 0;
    for (uint32_t t = 0; t < run->cfg->threads; t++)
        n += atomic_load_explicit((_Atomic uint64_t *)((char *)&run->workers[t] + offset),
                                  memory_order_relaxed);
    return n;
}

static uint64_t sum_data_seen(struct run *run)
{
    return sum_u64(run, offsetof(struct worker, data_seen));
}

static uint32_t sum_u32(struct run *run, size_t offset)
{
    uint32_t n = 0;
    for (uint32_t t = 0; t < run->cfg->threads; t++)
        n += atomic_load_explicit((_Atomic uint32_t *)((char *)&run->workers[t] + offset),
                                  memory_order_relaxed);
    return n;
}

static double cpu_s(int which)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    struct timeval tv = which ? ru.ru_stime : ru.ru_utime;
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* utime and stime of process pid, in seconds (false: unreadable). */
static bool proc_cpu_s(int pid, double *user, double *sys)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* fields 14 and 15, counted after the ")" that ends the command name */
    const char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return false;
    long hz = sysconf(_SC_CLK_TCK);
    *user = (double)ut / (double)hz;
    *sys = (double)st / (double)hz;
    return true;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Main thread, after the window: stops the feed, then lets the streams
 * receive what it sent, up to cfg->drain_s (the whole of it for filtered
 * streams, whose share of the ticks is not known here). */
static void drain(struct run *run, struct benchrun_results *res)
{
    const struct benchrun_config *cfg = run->cfg;
    benchfeed_stop(run->feed);
    benchfeed_get_stats(run->feed, &res->feed);
    res->fed = true;
    atomic_store(&run->phase, PHASE_DRAIN);
    uint32_t normal = cfg->streams - cfg->stall;
    bool filtered = cfg->n_kinds || cfg->n_keys;
    uint64_t want = filtered ? 0 : res->feed.ticks * normal;
    int64_t t0 = clock_mono_ns();
    int64_t until = t0 + (int64_t)(cfg->drain_s * 1e9);
    while (!cfg->messages) {
        if (!filtered && sum_u64(run, offsetof(struct worker, fed_seen)) >= want)
            break;
        if (clock_mono_ns() >= until)
            break;
        sleep_ms(2);
    }
    res->drain_s = (double)(clock_mono_ns() - t0) / 1e9;
    run->feed_end_ns = clock_unix_ns();
}

/* Main thread: connect phase, run window, stall resume, drain, stop. */
static void pace(struct run *run, struct benchrun_results *res)
{
    const struct benchrun_config *cfg = run->cfg;
    int64_t start = run->t0_ns;
    int64_t connect_deadline = start + (int64_t)((cfg->connect_timeout_s + cfg->ramp_s) * 1e9);
    while (sum_u32(run, offsetof(struct worker, connected)) +
               sum_u32(run, offsetof(struct worker, failed)) <
           cfg->streams) {
        if (clock_mono_ns() >= connect_deadline) {
            atomic_store(&run->connect_deadline, true);
            break;
        }
        sleep_ms(5);
    }
    int64_t t1 = clock_mono_ns();
    res->connect_s = (double)(t1 - start) / 1e9;
    double u0 = cpu_s(0), s0 = cpu_s(1);
    double su0 = 0, ss0 = 0;
    bool server_cpu = cfg->server_pid > 0 && proc_cpu_s(cfg->server_pid, &su0, &ss0);
    uint64_t seen0 = sum_data_seen(run);
    uint64_t msgs0 = sum_u64(run, offsetof(struct worker, msgs_seen));
    atomic_store(&run->phase, PHASE_RUN);
    if (run->feed) {
        /* every stream is live: the first tick cannot be missed. The stamps
         * of the ticks are at or after this lower bound. */
        atomic_store(&run->feed_start_us, clock_unix_us());
        int rc = benchfeed_start(run->feed, clock_mono_ns());
        if (rc)
            fprintf(stderr, "tickfan-bench: cannot start the feed sender: %s\n", strerror(-rc));
    }
    int64_t end = t1 + (int64_t)(cfg->duration_s * 1e9);
    int64_t resume_at = cfg->stall && cfg->stall_resume_after_s >= 0
                            ? t1 + (int64_t)(cfg->stall_resume_after_s * 1e9)
                            : INT64_MAX;
    uint32_t normal = cfg->streams - cfg->stall;
    for (;;) {
        int64_t now = clock_mono_ns();
        if (now >= resume_at && !atomic_load(&run->resume))
            atomic_store(&run->resume, true);
        if (now >= end)
            break;
        /* --messages: done when every normal stream is, and resumed
         * stalled streams have had STALL_DRAIN_NS to read */
        bool stalls_drained = resume_at == INT64_MAX || now - resume_at >= STALL_DRAIN_NS;
        if (cfg->messages && stalls_drained &&
            sum_u32(run, offsetof(struct worker, settled)) >= normal)
            break;
        sleep_ms(cfg->messages ? 2 : 10);
    }
    int64_t t2 = clock_mono_ns();
    res->data_window = sum_data_seen(run) - seen0;
    res->grpc_messages_window = sum_u64(run, offsetof(struct worker, msgs_seen)) - msgs0;
    res->window_s = (double)(t2 - t1) / 1e9;
    res->cpu_user_s = cpu_s(0) - u0;
    res->cpu_sys_s = cpu_s(1) - s0;
    double su1, ss1;
    if (server_cpu && proc_cpu_s(cfg->server_pid, &su1, &ss1)) {
        res->server_cpu_read = true;
        res->server_cpu_user_s = su1 - su0;
        res->server_cpu_sys_s = ss1 - ss0;
    }
    if (run->feed)
        drain(run, res);
    atomic_store(&run->phase, PHASE_STOP);
}

static void destroy_run(struct run *run)
{
    const struct benchrun_config *cfg = run->cfg;
    benchfeed_destroy(run->feed);
    if (run->workers) {
        for (uint32_t t = 0; t < cfg->threads; t++) {
            struct worker *w = &run->workers[t];
            if (w->cq && !w->started) {
                grpc_completion_queue_shutdown(w->cq);
                while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
                           .type != GRPC_QUEUE_SHUTDOWN)
                    ;
            }
            if (w->cq)
                grpc_completion_queue_destroy(w->cq);
#ifdef TICKFAN_BENCH_H2
            if (w->ep >= 0)
                close(w->ep);
#endif
            free(w->conns);
            free(w->conn_out);
            free(w->conn_dead);
            hist_destroy(w->hist);
            hist_destroy(w->hist_ingest);
            free(w->streams);
            free(w->calls);
            free(w->ids);
        }
        free(run->workers);
    }
    if (run->streams) {
        for (uint32_t i = 0; i < cfg->streams; i++) {
            struct stream *s = &run->streams[i];
            if (s->request)
                grpc_byte_buffer_destroy(s->request);
            if (s->recv)
                grpc_byte_buffer_destroy(s->recv);
            grpc_metadata_array_destroy(&s->initial_md);
            grpc_metadata_array_destroy(&s->trailing_md);
            grpc_slice_unref(s->details);
        }
        free(run->streams);
    }
    if (run->calls) {
        for (uint32_t j = 0; j < run->n_calls; j++) {
            struct subcall *c = &run->calls[j];
            if (c->send)
                grpc_byte_buffer_destroy(c->send);
            if (c->recv)
                grpc_byte_buffer_destroy(c->recv);
            grpc_metadata_array_destroy(&c->initial_md);
            grpc_metadata_array_destroy(&c->trailing_md);
            grpc_slice_unref(c->details);
            free(c->subs);
            free(c->sendq);
        }
        free(run->calls);
    }
#ifdef TICKFAN_BENCH_H2
    if (run->h2conns) {
        for (uint32_t c = 0; c < run->n_channels; c++)
            h2conn_destroy(run->h2conns[c]);
        free(run->h2conns);
    }
#endif
    if (run->channels) {
        for (uint32_t c = 0; c < run->n_channels; c++)
            if (run->channels[c])
                grpc_channel_destroy(run->channels[c]);
        free(run->channels);
    }
    if (run->requests) {
        for (int p = 0; p < 4; p++)
            grpc_slice_unref(run->requests[p]);
        free(run->requests);
    }
}

int benchrun_run(const struct benchrun_config *cfg, struct benchrun_results *res)
{
    struct run run;
    int rc;

    memset(res, 0, sizeof(*res));
    memset(&run, 0, sizeof(run));
    run.cfg = cfg;
    rc = check_config(cfg);
    if (rc)
        return rc;
    uint32_t normal = cfg->streams - cfg->stall;
    uint32_t normal_conns = normal ? cfg->connections : 0;
    uint32_t stall_conns = cfg->stall ? cfg->stall_connections : 0;
    run.n_channels = normal_conns + stall_conns;
    rc = raise_fd_limit((uint64_t)run.n_channels + 64, &res->fd_limit);
    if (rc)
        return rc;
    res->normal_streams = normal;
    rc = hist_create(&res->latency_ns, cfg->hist_precision);
    if (rc == 0)
        rc = hist_create(&res->latency_ingest_ns, cfg->hist_precision);
    if (rc)
        return rc;
    res->stalled = calloc(cfg->stall ? cfg->stall : 1, sizeof(*res->stalled));
    if (!res->stalled)
        return -ENOMEM;

    grpc_init();
    atomic_init(&run.phase, PHASE_CONNECT);
    atomic_init(&run.resume, false);
    atomic_init(&run.connect_deadline, false);
    atomic_init(&run.feed_start_us, 0);
    if (cfg->feed) {
        char err[256];
        rc = benchfeed_create(&run.feed, cfg->feed, err, sizeof(err));
        if (rc) {
            fprintf(stderr, "tickfan-bench: %s\n", err);
            goto out_destroy;
        }
    }
    run.channels = calloc(run.n_channels ? run.n_channels : 1, sizeof(*run.channels));
    run.streams = calloc(cfg->streams, sizeof(*run.streams));
    run.workers = calloc(cfg->threads, sizeof(*run.workers));
    for (uint32_t t = 0; run.workers && t < cfg->threads; t++)
        run.workers[t].ep = -1; /* --client h2: its epoll set, made by poll_h2 */
    if (!run.channels || !run.streams || !run.workers) {
        rc = -ENOMEM;
        goto out_destroy;
    }
    for (uint32_t i = 0; i < cfg->streams; i++)
        run.streams[i].details = grpc_empty_slice();
    rc = encode_requests(&run);
    if (rc)
        goto out_destroy;
    bool h2 = cfg->client == BENCHRUN_CLIENT_H2;
    for (uint32_t c = 0; c < run.n_channels && h2; c++) {
        rc = connect_h2(&run, c, c >= normal_conns);
        if (rc)
            goto out_destroy;
    }
    for (uint32_t c = 0; c < run.n_channels && !h2; c++) {
        run.channels[c] = make_channel(cfg->server, c, c >= normal_conns);
        if (!run.channels[c]) {
            fprintf(stderr, "tickfan-bench: cannot create a channel to %s\n", cfg->server);
            rc = -EIO;
            goto out_destroy;
        }
    }
    for (uint32_t t = 0; t < cfg->threads; t++) {
        struct worker *w = &run.workers[t];
        w->run = &run;
        w->id = t;
        w->cq = grpc_completion_queue_create_for_next(NULL);
        /* Subscribe: whole streams of subscriptions per worker, so the
         * share may be uneven */
        /* Subscribe, and Watch with --client h2: whole streams, or whole
         * connections, per worker (connection % threads) */
        w->streams =
            calloc(cfg->rpc == BENCHRUN_RPC_SUBSCRIBE || h2 ? cfg->streams
                                                            : cfg->streams / cfg->threads + 1,
                   sizeof(*w->streams));
        rc = hist_create(&w->hist, cfg->hist_precision);
        if (rc == 0)
            rc = hist_create(&w->hist_ingest, cfg->hist_precision);
        if (!w->cq || !w->streams || rc) {
            rc = rc ? rc : -ENOMEM;
            goto out_destroy;
        }
        atomic_init(&w->data_seen, 0);
        atomic_init(&w->msgs_seen, 0);
        atomic_init(&w->fed_seen, 0);
        atomic_init(&w->connected, 0);
        atomic_init(&w->failed, 0);
        atomic_init(&w->settled, 0);
    }
    if (cfg->rpc == BENCHRUN_RPC_SUBSCRIBE) {
        rc = make_calls(&run);
        if (rc)
            goto out_destroy;
    }
    if (h2) {
        rc = poll_h2(&run);
        if (rc)
            goto out_destroy;
    }
    /* normal streams first, the stalled ones last; each worker opens its
     * streams in index order */
    for (uint32_t i = 0; i < cfg->streams; i++) {
        struct stream *s = &run.streams[i];
        struct worker *w = &run.workers[i % cfg->threads];
        s->index = i;
        s->w = w;
        s->filtered = cfg->n_kinds || cfg->n_keys;
        grpc_metadata_array_init(&s->initial_md);
        grpc_metadata_array_init(&s->trailing_md);
        if (i < normal) {
            s->conn = i % normal_conns;
            s->overflow = cfg->overflow;
        } else {
            uint32_t j = i - normal;
            s->stalled = true;
            s->conn = normal_conns + j % stall_conns;
            s->overflow = cfg->stall_overflow && cfg->n_stall_overflow
                              ? cfg->stall_overflow[j % cfg->n_stall_overflow]
                              : cfg->overflow;
        }
        if (s->overflow < 0 || s->overflow > 3) {
            rc = -EINVAL;
            goto out_destroy;
        }
        if (cfg->rpc == BENCHRUN_RPC_SUBSCRIBE) {
            struct subcall *c = &run.calls[i % run.n_calls];
            s->sc = c;
            s->id = i / run.n_calls + 1;
            s->w = w = c->w;
            c->subs[s->id - 1] = s;
        } else if (h2) {
            s->w = w = &run.workers[s->conn % cfg->threads];
        }
        w->streams[w->n++] = s;
    }

    run.t0_ns = clock_mono_ns();
    for (uint32_t t = 0; t < cfg->threads; t++) {
        struct worker *w = &run.workers[t];
        int err = pthread_create(&w->thread, NULL, worker_main, w);
        if (err) {
            fprintf(stderr, "tickfan-bench: cannot start worker %u: %s\n", t, strerror(err));
            rc = -err;
            atomic_store(&run.phase, PHASE_STOP);
            break;
        }
        w->started = true;
    }
    if (rc == 0)
        pace(&run, res);
    for (uint32_t t = 0; t < cfg->threads; t++)
        if (run.workers[t].started)
            pthread_join(run.workers[t].thread, NULL);
    if (rc == 0)
        collect(&run, res);

out_destroy:
    destroy_run(&run);
    grpc_shutdown();
    return rc;
}

void benchrun_results_free(struct benchrun_results *res)
{
    hist_destroy(res->latency_ns);
    hist_destroy(res->latency_ingest_ns);
    free(res->stalled);
    memset(res, 0, sizeof(*res));
}
