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

#include "mpsc.h"
#include "reader.h"
#include "service.h"

struct server;

/* A completion: fn(shard, obj, ok) runs on the shard thread, for an
 * operation on the shard's queue, a batch of shard_start_batch that
 * completed inside the call, or a tag posted with shard_post. */
struct tag {
    void (*fn)(struct shard *sh, void *obj, bool ok);
    void *obj;
    /* on the shard's list of completions to run (next) or on its inbox
     * (node), never on both at once */
    union {
        struct tag *next;
        struct mpsc_node node;
    };
    bool done_ok;
};

#define SHARD_MAX_METHODS 16 /* methods of all services together */
#define SHARD_MAX_SERVICES 8
#define SHARD_MAX_REQUESTS 32 /* requests armed ahead, all methods together */

struct request_slot {
    struct tag tag;
    struct shard *shard;
    size_t method; /* index into server->methods */
    bool armed;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* the unknown-method slot only */
};

/* What a shard counts; written by its thread, read by the metrics endpoint. */
struct shard_counters {
    counter_t opened;          /* Watch streams accepted */
    struct reader_counters rd; /* resumes, Gaps, events lost, slow consumers (reader.h) */
    counter_t sent;            /* messages sent, all kinds */
    counter_t heartbeats;      /* ... of them heartbeats */
    counter_t status[17];      /* statuses Watch ended with, by code */
    counter_t slice_copies;    /* events copied out of the logs into shared slices */
    counter_t slice_shares;    /* sends that reused a shared slice */
    counter_t cq_cached;       /* completions taken from the thread-local cache */
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
    counter_t sub_followed;       /* ... of them that took another's step (no log read) */
    counter_t sub_subs_live;      /* subscriptions live on this shard (a gauge) */
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

    struct request_slot req[SHARD_MAX_REQUESTS]; /* of the served methods */
    size_t nreq;
    struct request_slot other_req; /* any other method: UNIMPLEMENTED */
    int calls_live;                /* calls in flight, of every service */
    struct mpsc inbox;             /* tags posted by other threads */

    struct tag *done, *done_tail; /* completions to run on the next round */
    int done_streak;              /* loop rounds without polling the queue */
    _Atomic int64_t streams;      /* streams served (Watch, Subscribe): balances shards */

    void *state[SHARD_MAX_SERVICES]; /* each service's, as server->services */

    struct shard_counters ctr;

    bool drain_seen;
    int64_t next_tick_us;
    int64_t tick_us;
};

/* Creates shard `index` of `srv` (its queue registered with srv->grpc, its
 * doorbell, not yet started). Returns 0, or -ENOMEM, or -EIO when gRPC
 * refuses the queue or the doorbell, with a message in err. */
int shard_create(struct shard **out, struct server *srv, size_t index, char *err, size_t errlen);
int shard_start(struct shard *sh);
/* grpc_call_start_batch for a call of this shard, from its thread. With
 * --cq-thread-cache, a batch that completes inside the call (a send the
 * transport writes at once) comes back through gRPC's thread-local cache
 * instead of the completion queue: no queue push, kick or pop. Its tag is
 * then dispatched by the shard loop, never from inside this call, so the
 * caller's state is as after any start_batch. */
grpc_call_error shard_start_batch(struct shard *sh, grpc_call *call, const grpc_op *ops,
                                  size_t nops, struct tag *t);

/* Ends a call this shard cannot take (e.g. out of memory) with `code` and
 * `msg`, and drops our reference. Shard thread. */
void shard_refuse(grpc_call *call, grpc_status_code code, const char *msg);

/* Wakes the shard if it is idle. Any thread. */
void shard_ring(struct shard *sh);
/* Runs t->fn(sh, t->obj, true) on the shard's thread, soon, and wakes the
 * shard. Any thread. */
void shard_post(struct shard *sh, struct tag *t);
void shard_join(struct shard *sh);
void shard_destroy(struct shard *sh);

/* The state service `svc` has on this shard (NULL: not served). */
void *shard_state(const struct shard *sh, const struct service *svc);

/* A call of a service starts or ends being in flight on this shard. */
void shard_call_opened(struct shard *sh);
void shard_call_closed(struct shard *sh);
/* A stream (Watch, Subscribe) opens or closes on this shard: the count
 * that --shard-balance=stream balances. */
void shard_stream_opened(struct shard *sh);
void shard_stream_closed(struct shard *sh);
/* Accepting new calls (not draining, not stopping)? */
bool shard_accepting(const struct shard *sh);
/* The shard takes calls (--shard-fill): the others have none, and wait
 * outside gRPC until needed. Any thread. */
bool shard_active(const struct shard *sh);
/* Wakes the waiting shards to look again (at stop). Any thread. */
void shard_wake_parked(struct server *srv);

#endif
