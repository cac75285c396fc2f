/*
 * service: what a gRPC service plugs into the shards with, in the manner of
 * a protocol's ops table: the shards run every service through these and
 * name none of them.
 *
 * Each shard gives each service `state_size` bytes of its own (zeroed, then
 * init), found with shard_state(); every hook runs on that shard's thread
 * with that state. A service's calls count in the shard's live calls
 * (shard_call_opened/closed) while they are in flight: the shard exits
 * only when none is left.
 */
#ifndef TICKFAN_SERVICE_H
#define TICKFAN_SERVICE_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct shard;

/* One served method. `accept` runs on the shard thread with the service's
 * state on that shard, the new call and, when read_payload, its first request message (owned by
 * accept; NULL when the client half-closed without one: a call reset before its request is counted
 * and dropped by the shard, never accepted). */
struct service_method {
    const char *path;
    bool read_payload;
    void (*accept)(struct shard *sh, void *st, grpc_call *call, grpc_byte_buffer *payload);
    /* requests a shard keeps armed for it (0: 1) */
    unsigned ahead;
    /* with --shard-balance=stream, a shard arms these only while it serves
     * no more than its share of the streams (see shard.c) */
    bool balanced;
};

struct service {
    const char *name;
    const struct service_method *methods;
    size_t nmethods;
    size_t state_size; /* per shard */

    /* Every hook may be NULL. */
    int (*init)(struct shard *sh, void *st); /* 0 or -errno */
    void (*fini)(struct shard *sh, void *st);
    /* Each round of the shard's loop: the work that is ready. */
    void (*run)(struct shard *sh, void *st);
    /* Is work ready now (the shard polls instead of blocking)? */
    bool (*pending)(const struct shard *sh, const void *st);
    /* Does it wait for appends to some topic (the ingest thread then rings
     * the shard on data)? */
    bool (*wants_data)(const struct shard *sh, const void *st);
    /* Every shard tick (a quarter of the shortest heartbeat; now: monotonic
     * us): heartbeats, budgets, snapshots. */
    void (*tick)(struct shard *sh, void *st, int64_t now_us);
    /* The server drains (SIGTERM): end the calls, each as the contract says. */
    void (*drain)(struct shard *sh, void *st);
};

#endif
