/*
 * shard: a worker thread with its own gRPC completion queue, serving the
 * streams whose calls gRPC bound to that queue, for their whole lives.
 *
 * Threading: everything in struct shard is touched only by its thread,
 * except `bell_armed` (the doorbell, rung by the ingest thread and main) and
 * `streams` (read by any thread for stats). The doorbell is a call on a lame
 * channel bound to the shard's queue: an empty batch on it posts a tag at
 * once, which wakes the thread. It is rung only when the shard armed it
 * (idle, about to block), so a busy shard is never rung again.
 */
#ifndef TICKFAN_SHARD_H
#define TICKFAN_SHARD_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "counter.h"

struct server;
struct watch;
struct health_watch;
struct publish_call;
struct admin_call;
struct ingest_job;
struct topic;
struct ringlog_iter;
struct ringlog_view;

enum tag_kind {
    TAG_BELL,
    TAG_NEW_WATCH,  /* a requested Watch call arrived (struct request_slot) */
    TAG_NEW_OTHER,  /* an unknown method arrived (struct request_slot) */
    TAG_OTHER_DONE, /* UNIMPLEMENTED status sent (struct other_call) */
    TAG_SEND,       /* struct watch */
    TAG_RECV_CLOSE, /* struct watch */
    TAG_STATUS,     /* struct watch */
    TAG_NEW_METHOD, /* a call of another served method arrived (struct request_slot) */
    TAG_CALLBACK,   /* an operation of another module completed: fn(shard, obj, ok) */
};

struct shard;

struct tag {
    enum tag_kind kind;
    void *obj;
    void (*fn)(struct shard *sh, void *obj, bool ok); /* TAG_CALLBACK */
    /* a completion taken from the thread-local cache, waiting for the loop */
    struct tag *done_next;
    bool done_ok;
};

/* A method served by a module other than watch (health, ...). `accept`
 * runs on the shard thread with the new call and, when read_payload, its
 * first request message (owned by accept; NULL when the client half-closed
 * without one: a call reset before its request is counted and dropped by
 * the shard, never accepted). A module's calls count in shard->calls_live
 * while they are in flight. */
struct service_method {
    const char *path;
    bool read_payload;
    void (*accept)(struct shard *sh, grpc_call *call, grpc_byte_buffer *payload);
};

#define SHARD_MAX_METHODS 8

enum { SHARD_LIST_NONE = 0, SHARD_LIST_WAITING, SHARD_LIST_READY };

#define SHARD_WATCH_REQUESTS 8 /* Watch calls requested ahead per shard */
#define SHARD_SLICE_CACHE 1024 /* recent events kept as shared slices, per topic */

/* One recent event's encoded bytes, shared by every stream of the shard that
 * sends it: each send takes a reference, none copies the payload. */
struct slice_cache_entry {
    uint64_t seq; /* 0: empty */
    grpc_slice slice;
};

struct request_slot {
    struct tag tag;
    struct shard *shard;
    size_t method; /* TAG_NEW_METHOD: index into server->methods */
    bool armed;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* TAG_NEW_OTHER only */
};

/* Subscriber lag buckets (log bytes behind the head), upper bounds. */
#define SHARD_LAG_BUCKETS 6
static const uint64_t shard_lag_bounds[SHARD_LAG_BUCKETS] = {0,       4096,     65536,
                                                             1 << 20, 16 << 20, UINT64_MAX};

/* What a shard counts; written by its thread, read by the metrics endpoint. */
struct shard_counters {
    counter_t opened;                 /* Watch streams accepted */
    counter_t resumes;                /* ... of them with a cursor */
    counter_t sent;                   /* messages sent, all kinds */
    counter_t heartbeats;             /* ... of them heartbeats */
    counter_t gaps;                   /* ... of them Gap events made for this stream */
    counter_t dropped_events;         /* events a subscriber did not get (slow, retention) */
    counter_t slow[4];                /* slow-consumer episodes by OverflowPolicy (1..3) */
    counter_t status[17];             /* statuses Watch ended with, by code */
    counter_t lag[SHARD_LAG_BUCKETS]; /* live streams per lag bucket, as of the last tick */
    counter_t lag_sum;                /* their lag in bytes, summed, as of the last tick */
    counter_t slice_copies;           /* events copied out of the logs into shared slices */
    counter_t slice_shares;           /* sends that reused a shared slice */
    counter_t cq_cached;              /* completions taken from the thread-local cache */
    /* calls their clients reset before sending the request (shard.c) */
    counter_t cancelled_before_request;
    /* Subscribe (subscribe.c) */
    counter_t sub_streams_opened; /* Subscribe streams accepted */
    counter_t sub_streams_live;   /* ... open on this shard (a gauge) */
    counter_t subs_opened;        /* subscriptions started (past validation) */
    counter_t sub_ends[17];       /* SubscriptionEnds sent, by code */
    counter_t sub_responses;      /* SubscribeResponse messages sent */
    counter_t sub_deliveries;     /* deliveries in them */
    counter_t sub_delivered;      /* (delivery, id) pairs: one per subscription served */
    counter_t sub_subs_live;      /* subscriptions live on this shard (a gauge) */
};

/* One stream as the admin view shows it (copied at a shard tick). */
struct admin_row {
    uint64_t id;
    char peer[64];
    char topic[130];
    char kinds[200]; /* comma-joined, truncated */
    char keys[200];
    uint64_t lag_events, lag_bytes, sent, dropped;
    int64_t since_us;
    char cursor[40];
    const char *state;
};

struct shard {
    struct server *srv;
    size_t index;
    grpc_completion_queue *cq;
    pthread_t thread;
    bool started;
    bool cq_shut;

    grpc_channel *bell_channel;
    grpc_call *bell_call; /* set at create, never changed: other threads ring it */
    bool bell_released;   /* the thread dropped its reference on the way out */
    struct tag bell_tag;
    atomic_bool bell_armed;
    atomic_bool wants_data; /* a stream waits for appends: ring on data */
    bool bell_pending;      /* armed by us and not yet consumed */

    struct request_slot watch_req[SHARD_WATCH_REQUESTS];
    struct request_slot other_req;
    struct request_slot method_req[SHARD_MAX_METHODS];
    int calls_live; /* calls of other modules and UNIMPLEMENTED replies in flight */
    struct health_watch *health_watches; /* health.c's streams on this shard */
    struct publish_call *publish_calls;  /* publish.c's calls on this shard */
    _Atomic(struct ingest_job *) inbox;  /* batches the ingest thread handed back */

    struct watch *all;
    struct watch **waiting;            /* per topic index: streams at the live head */
    uint64_t *seen_head;               /* per topic index: head_pos when last checked */
    struct watch *ready, *ready_tail;  /* streams with more to scan */
    struct tag *done, *done_tail;      /* completions from shard_start_batch */
    int done_streak;                   /* loop rounds without polling the queue */
    struct slice_cache_entry **slices; /* per topic index: SHARD_SLICE_CACHE, on first use */
    _Atomic int64_t streams;

    struct shard_counters ctr;

    /* admin view: filled at a tick while someone asked recently */
    pthread_mutex_t snap_mu;
    struct admin_row *snap;
    size_t nsnap, capsnap;
    _Atomic int64_t snap_at_us;     /* when the snapshot was taken (monotonic) */
    struct admin_call *admin_calls; /* admin.c's calls waiting on this shard */
    struct mux *muxes;              /* subscribe.c's streams on this shard */
    struct mux *mux_dirty;          /* ... of them with something to send */
    /* per topic index: the head seq a Subscribe flush reads up to, valid
     * while horizon_of equals horizon_gen (bumped per flush) */
    uint64_t *horizon_seq, *horizon_of;
    uint64_t horizon_gen;

    bool drain_seen;
    int64_t next_tick_us;
    int64_t tick_us;
};

/* Creates shard `index` of `srv` (its queue registered with srv->grpc, its
 * doorbell, not yet started). Returns 0, or -ENOMEM, or -EIO when gRPC
 * refuses the queue or the doorbell, with a message in err. */
int shard_create(struct shard **out, struct server *srv, size_t index, char *err, size_t errlen);
int shard_start(struct shard *sh);
/* Ends a call this shard cannot take (e.g. out of memory) with `code` and
 * `msg`, and drops our reference. Shard thread. */
/* grpc_call_start_batch for a call of this shard, from its thread. With
 * --cq-thread-cache, a batch that completes inside the call (a send the
 * transport writes at once) comes back through gRPC's thread-local cache
 * instead of the completion queue: no queue push, kick or pop. Its tag is
 * then dispatched by the shard loop, never from inside this call, so the
 * caller's state is as after any start_batch. */
grpc_call_error shard_start_batch(struct shard *sh, grpc_call *call, const grpc_op *ops,
                                  size_t nops, struct tag *t);

void shard_refuse(grpc_call *call, grpc_status_code code, const char *msg);

/* Wakes the shard if it is idle. Any thread. */
void shard_ring(struct shard *sh);
/* Hands a finished ingest job back to the shard and wakes it. Any thread. */
void shard_post(struct shard *sh, struct ingest_job *job);
void shard_join(struct shard *sh);
void shard_destroy(struct shard *sh);

/* For watch.c, on the shard thread: a byte buffer holding the event of the
 * record `v` read at `it` in topic `t`'s log, sharing the shard's copy of it.
 * NULL when the record was overwritten while it was read. The caller owns
 * the byte buffer (the slice is reference-counted). */
grpc_byte_buffer *shard_event_buffer(struct shard *sh, const struct topic *t,
                                     const struct ringlog_iter *it, const struct ringlog_view *v);

/* The same event as a slice reference (the caller unrefs it); false when
 * the record was overwritten while it was read. */
bool shard_event_slice(struct shard *sh, const struct topic *t, const struct ringlog_iter *it,
                       const struct ringlog_view *v, grpc_slice *out);

/* For watch.c: list membership, on the shard thread. */
void shard_add(struct shard *sh, struct watch *w);
void shard_remove(struct shard *sh, struct watch *w);
void shard_set_waiting(struct shard *sh, struct watch *w);
void shard_set_ready(struct shard *sh, struct watch *w);
void shard_unlist(struct shard *sh, struct watch *w);

#endif
