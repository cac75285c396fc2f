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

struct server;
struct watch;

enum tag_kind {
    TAG_BELL,
    TAG_NEW_WATCH,  /* a requested Watch call arrived (struct request_slot) */
    TAG_NEW_OTHER,  /* an unknown method arrived (struct request_slot) */
    TAG_OTHER_DONE, /* UNIMPLEMENTED status sent (struct other_call) */
    TAG_SEND,       /* struct watch */
    TAG_RECV_CLOSE, /* struct watch */
    TAG_STATUS,     /* struct watch */
};

struct tag {
    enum tag_kind kind;
    void *obj;
};

enum { SHARD_LIST_NONE = 0, SHARD_LIST_WAITING, SHARD_LIST_READY };

#define SHARD_WATCH_REQUESTS 8 /* Watch calls requested ahead per shard */

struct request_slot {
    struct tag tag;
    struct shard *shard;
    bool armed;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* TAG_NEW_OTHER only */
};

struct shard {
    struct server *srv;
    size_t index;
    grpc_completion_queue *cq;
    pthread_t thread;
    bool started;
    bool cq_shut;

    grpc_channel *bell_channel;
    grpc_call *bell_call;
    struct tag bell_tag;
    atomic_bool bell_armed;
    bool bell_pending; /* armed by us and not yet consumed */

    struct request_slot watch_req[SHARD_WATCH_REQUESTS];
    struct request_slot other_req;
    int others_live; /* UNIMPLEMENTED replies in flight */

    struct watch *all;
    struct watch **waiting;           /* per topic index: streams at the live head */
    uint64_t *seen_head;              /* per topic index: head_pos when last checked */
    struct watch *ready, *ready_tail; /* streams with more to scan */
    _Atomic int64_t streams;

    bool drain_seen;
    int64_t next_tick_us;
    int64_t tick_us;
};

int shard_create(struct shard **out, struct server *srv, size_t index);
int shard_start(struct shard *sh);
/* Wakes the shard if it is idle. Any thread. */
void shard_ring(struct shard *sh);
void shard_join(struct shard *sh);
void shard_destroy(struct shard *sh);

/* For watch.c: list membership, on the shard thread. */
void shard_add(struct shard *sh, struct watch *w);
void shard_remove(struct shard *sh, struct watch *w);
void shard_set_waiting(struct shard *sh, struct watch *w);
void shard_set_ready(struct shard *sh, struct watch *w);
void shard_unlist(struct shard *sh, struct watch *w);

#endif
