/*
 * watch_shard: a Watch stream's state and what the streams of one shard
 * share (their lists, the event slices: watch_shard.c). Private to the
 * Watch service (watch.c, watch_snapshot.c, watch_service.c) and to
 * Subscribe, whose subscriptions are such streams (subscribe.c); the rest of
 * the server sees watch.h only.
 */
#ifndef TICKFAN_WATCH_SHARD_H
#define TICKFAN_WATCH_SHARD_H

#include <assert.h>
#include <stddef.h>
#include <grpc/grpc.h>
#include <stdbool.h>
#include <stdint.h>

#include "call.h"
#include "counter.h"
#include "cursor.h"
#include "filter.h"
#include "keyset.h"
#include "reader.h"
#include "ringlog.h"
#include "shard.h"
#include "topics.h"
#include "watch.h"
#include "wire.h"

enum { WATCH_LIST_NONE = 0, WATCH_LIST_WAITING, WATCH_LIST_READY };

#define WATCH_REQUESTS 8       /* Watch calls requested ahead per shard */
#define WATCH_SLICE_CACHE 1024 /* recent events kept as shared slices, per topic */
#define WATCH_HOPS 16          /* recent steps of subscriptions, for others to follow */

/* One recent event's encoded bytes, shared by every stream of the shard that
 * sends it: each send takes a reference, none copies the payload. */
struct slice_cache_entry {
    uint64_t seq; /* 0: empty */
    grpc_slice slice;
};

/* A step an unfiltered subscription took and the event it delivered (a
 * reference of its own): a subscription of the shard at the same place
 * takes it too without reading the log (watch.c, reader_follow). */
struct watch_hop {
    struct reader_hop hop;
    grpc_slice slice;
    bool set;
};

/* The Watch service's state on one shard (shard thread, but for the lag
 * gauges). */
struct watch_shard {
    struct shard *shard;
    const struct watch_sink_ops *sink; /* the subscriptions' streams' (subscribe.c) */
    struct watch *all;                 /* every stream and subscription here */
    struct watch **waiting;            /* per topic index: streams at the live head */
    uint64_t *seen_head;               /* per topic index: head_pos when last checked */
    struct watch *ready, *ready_tail;  /* streams with more to scan */
    struct slice_cache_entry **slices; /* per topic index: WATCH_SLICE_CACHE, on first use */
    counter_t lag[WATCH_LAG_BUCKETS];  /* live streams per lag bucket, as of the last tick */
    counter_t lag_sum;                 /* their lag in bytes, summed, as of the last tick */
    struct watch_hop hops[WATCH_HOPS]; /* by hop.from.seq % WATCH_HOPS */
};

struct watch {
    /* What every delivery touches comes first, in two cache lines: a
     * shard's subscriptions are each read once per tick and record, and
     * at thousands of them every line more is a miss more per delivery. */
    struct watch *wprev, *wnext; /* the waiting list of its topic, or the ready list */
    int list;                    /* WATCH_LIST_* it is on */
    uint32_t sub_id;
    struct watch_shard *ws; /* the Watch state of its shard (ws->shard) */
    /* a subscription of Subscribe stream `mux` (NULL: a Watch stream): its
     * messages are deliveries in the stream's next SubscribeResponse, and
     * its status a SubscriptionEnd (see subscribe.h) */
    struct mux *mux;
    struct watch *mnext; /* the stream's list of subscriptions with work */
    uint64_t mgen;       /* the stream's batch its last delivery went into... */
    uint32_t mlast;      /* ...and that delivery's index + 1 */
    uint32_t mhb;        /* index + 1 of its heartbeat in that batch (0: none)... */
    uint64_t mhb_gen;    /* the batch mhb is of */
    uint32_t mhb_before; /* ...and of its delivery before the heartbeat */
    bool mready;         /* on the stream's list */
    bool send_busy;
    bool status_started;
    bool closed;          /* the call's RECV_CLOSE_ON_SERVER completed (Watch only) */
    int64_t last_send_us; /* monotonic */
    uint64_t sent_data;
    /* where it is in its topic's log and what it gets next (reader.h; its
     * hot fields first) */
    struct reader rd;

    /* the rest: opening, listing, ending */
    struct watch *prev, *next;   /* all watches of the shard */
    struct watch *sprev, *snext; /* all subscriptions of the stream */
    uint64_t id;
    bool counted; /* counted in streams_live */
    /* status to send once the send in flight completes (Watch only; the
     * rest of it is in struct watch_call) */
    bool end_pending;
    int64_t since_us; /* opened, wall clock */
    const char *peer; /* the call's (struct watch_call) or the Subscribe stream's */
    const char *close_reason;
};

/* What only a Watch stream has, its own gRPC call's state. A Watch stream
 * is allocated as a struct watch_stream; a subscription of a Subscribe
 * stream (10,000 to a stream) is a bare struct watch, its call's state in
 * the stream's struct mux, so it does not pay for this. */
struct watch_call {
    struct call base; /* first: the call, its references, RECV_CLOSE */
    char peer[64];
    int hinted; /* sends in a row with GRPC_WRITE_BUFFER_HINT */
    /* a status sent while the send was held: cancel the call with it at
     * this time (monotonic) if the client has not read it by then */
    int64_t held_deadline_us;
    grpc_status_code held_code;
    char *held_details; /* malloc'd */
    /* cursor seqs: of the message in flight, and of the last one the
     * client surely holds whole: an unhinted send completes once its bytes
     * (and all before them) passed flow control, a hinted one up to 64 KiB
     * before that, so only unhinted completions move done_seq */
    uint64_t send_seq;
    bool send_hinted; /* the send in flight has GRPC_WRITE_BUFFER_HINT */
    uint64_t done_seq;
    /* with watch.end_pending: the status to send */
    grpc_status_code end_code;
    char *end_details; /* the status message, malloc'd while end_pending */
    const char *end_md_key;
    char end_md_value[CURSOR_TEXT_MAX];

    grpc_byte_buffer *send_bb;
    grpc_slice status_details;
    grpc_metadata trailing[1];
    size_t trailing_count;

    struct tag t_send, t_status;
};

struct watch_stream {
    struct watch w; /* first: a tag's obj is &w */
    struct watch_call c;
};

/* The call state of a Watch stream; a subscription (w->mux set) has none,
 * and reading it would read past its allocation. */
static inline struct watch_call *watch_call(struct watch *w)
{
    assert(!w->mux);
    return &((struct watch_stream *)w)->c;
}

/* The stream whose call state `c` is. */
static inline struct watch *watch_of_call(struct call *c)
{
    return &((struct watch_stream *)((char *)c - offsetof(struct watch_stream, c.base)))->w;
}

/* Snapshot and conflation values, encoded (watch_snapshot.c). */
/* The next value to send, the closing Gap, or NULL: the phase is over. */
grpc_byte_buffer *watch_snapshot_next(struct watch *w);

/* How far behind the head the stream's read position is: records not read
 * yet (matching or not) and their log bytes. */
void watch_lag(const struct watch *w, uint64_t *events, uint64_t *bytes);

/* A new call for the Watch method arrived on `sh` with its request payload
 * (which this takes ownership of; NULL when the client half-closed without
 * one: calls reset before their request are dropped by the shard). */
void watch_accept(struct shard *sh, void *ws, grpc_call *call, grpc_byte_buffer *payload);

/* Sends what is next for the stream if nothing is in flight: pending Gap,
 * Data, EndOfBacklog. Called when data may have arrived. */
void watch_pump(struct watch *w);
/* Heartbeat if idle for the cadence (now: monotonic us). With a send in
 * flight, checks the lag budget instead: a send held by flow control does
 * not hide a stream from its overflow policy. */
void watch_tick(struct watch *w, int64_t now_us);
/* Ends the stream with UNAVAILABLE and its cursor (drain). */
void watch_drain(struct watch *w);

/* The stream lists of its shard (watch_shard.c). */
void watch_shard_add(struct watch *w);
void watch_shard_remove(struct watch *w);
void watch_set_waiting(struct watch *w);
void watch_set_ready(struct watch *w);
void watch_unlist(struct watch *w);

/* A byte buffer holding the event of the record `v` read at `it` in the
 * stream's topic log, sharing the shard's copy of it. NULL when the record
 * was overwritten while it was read. The caller owns the byte buffer (the
 * slice is reference-counted). */
grpc_byte_buffer *watch_event_buffer(struct watch *w, const struct ringlog_iter *it,
                                     const struct ringlog_view *v);
/* The same event as a slice reference (the caller unrefs it); false when
 * the record was overwritten while it was read. */
bool watch_event_slice(struct watch *w, const struct ringlog_iter *it, const struct ringlog_view *v,
                       grpc_slice *out);
/* The same without a reference of its own (*owned false): the slice is the
 * shard's cache's, valid until the next call of these two on this shard.
 * A subscription's delivery that joins one already in its stream's batch
 * needs none: two atomic operations less per subscription per event.
 * *owned is true when the caller got a reference after all (an unshared
 * copy, made when the cache could not be allocated). */
bool watch_event_slice_borrow(struct watch *w, const struct ringlog_iter *it,
                              const struct ringlog_view *v, grpc_slice *out, bool *owned);

#endif
