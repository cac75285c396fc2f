/*
 * server: the gRPC server, its shards, and the start/drain/stop order.
 *
 * Main thread creates, drains and destroys it. struct server is shared with
 * the shard threads: after server_create returns, its plain fields are
 * read-only; the atomics are the only state that changes.
 */
#ifndef TICKFAN_SERVER_H
#define TICKFAN_SERVER_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "shard.h"
#include "topics.h"

struct shard;
struct ingest;

struct server {
    const struct config *cfg;
    struct topics *topics;
    grpc_server *grpc;
    /* the services every shard runs, in this order (server.c) */
    const struct service *services[SHARD_MAX_SERVICES];
    size_t nservices;
    const struct service_method *methods[SHARD_MAX_METHODS]; /* all of theirs */
    size_t nmethods;
    size_t method_service[SHARD_MAX_METHODS]; /* whose: index into services[] */
    void *method_handles[SHARD_MAX_METHODS];  /* registered handles of methods[] */
    struct ingest *ingest;                    /* where Publish hands its records */
    struct shard **shards;
    size_t nshards;
    grpc_completion_queue *ctl_cq; /* main thread: server shutdown notification */
    int port;

    int64_t max_streams;
    bool write_coalescing; /* --write-coalescing */
    bool cq_thread_cache;  /* --cq-thread-cache */
    bool balance_streams;  /* --shard-balance=stream */
    int64_t shard_fill;    /* --shard-fill; 0 when every shard takes calls from the start */

    /* Shards [0, shards_active) take calls; the others wait on park_cv
     * (shard.c: shard_activate), never in gRPC, until they are needed or
     * the server stops. It only grows. */
    _Atomic size_t shards_active;
    pthread_mutex_t park_mu;
    pthread_cond_t park_cv;

    atomic_bool draining;                  /* SIGTERM: end every stream with UNAVAILABLE */
    _Atomic uint64_t health_generation;    /* bumped when the serving status changes */
    _Atomic int64_t admin_wanted_until_us; /* shards snapshot their streams until then */
    atomic_bool stopping;                  /* server shut down: shards exit once empty */
    _Atomic int64_t streams_live;
    _Atomic int64_t other_streams_live; /* long-lived calls of other services (health Watch) */
    _Atomic uint64_t next_stream_id;
    /* the shards' one line a second about calls cancelled before their
     * request: when it was written (monotonic) and the total it reported */
    _Atomic int64_t cancel_log_us;
    _Atomic uint64_t cancel_logged;
};

/* Binds, starts gRPC and the shard threads. On failure returns -errno with a
 * message in err naming the option and value at fault. */
int server_create(struct server **out, const struct config *cfg, struct topics *topics,
                  struct ingest *ingest, char *err, size_t errlen);
/* Ingest callback after appends: rings every idle shard. Any thread. */
void server_notify(void *srv);
/* Stops accepting and asks every stream to end with UNAVAILABLE + cursor. */
void server_drain_begin(struct server *srv);
/* Streams still open, Watch and others (any thread): the drain waits for 0. */
int64_t server_streams_live(const struct server *srv);
/* Cancels what is left, waits for gRPC's shutdown, joins the shards. */
void server_stop(struct server *srv);
void server_destroy(struct server *srv);

#endif
