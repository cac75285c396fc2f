/*
 * server: gRPC server set-up, shards, and the drain/stop order. Main thread,
 * except server_notify (ingest thread).
 *
 * Stop order: shutdown_and_notify (no new calls) -> every stream gets
 * UNAVAILABLE with its cursor -> after the drain timeout, cancel what is
 * left -> gRPC reports shutdown on the control queue -> shards exit once
 * their streams are freed -> destroy.
 */
#include "server.h"

#include <errno.h>
#include <sched.h>
#include <grpc/grpc_security.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "health.h"
#include "log.h"
#include "publish.h"
#include "reflection.h"
#include "shard.h"
#include "subscribe.h"
#include "watch.h"

/* The services served, in the order each shard runs their hooks: Watch
 * first (Subscribe's subscriptions are its streams), the admin view last. */
static const struct service *const services[] = {
    &watch_service,   &subscribe_service,  &health_service,
    &publish_service, &reflection_service, &admin_service,
};

static int shutdown_tag;

void server_notify(void *arg)
{
    struct server *srv = arg;
    /* Pairs with the shard's fence after arming its doorbell. */
    atomic_thread_fence(memory_order_seq_cst);
    for (size_t i = 0; i < srv->nshards; i++)
        if (atomic_load_explicit(&srv->shards[i]->wants_data, memory_order_relaxed))
            shard_ring(srv->shards[i]);
}

int64_t server_streams_live(const struct server *srv)
{
    return atomic_load(&srv->streams_live) + atomic_load(&srv->other_streams_live);
}

/* The CPUs the process may run on: its affinity mask (taskset, cpusets,
 * container limits set that way). */
static size_t server_cpus(void)
{
    cpu_set_t set;
    long cpus = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        cpus = CPU_COUNT(&set);
    if (cpus <= 0)
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus <= 0 ? 1 : (size_t)cpus;
}

/* 8 shards per CPU the process may run on (server_cpus). More completion queues than
 * cores pay off with gRPC as Debian builds it (assertions on): every
 * completion is checked against a list of the queue's outstanding
 * operations, one scan per completion, so a queue holding fewer streams
 * completes faster. At 1,000 streams on one core, 1 -> 4 -> 8 -> 16 shards
 * gave a p99 of 0.45-0.73 s, 39 ms, 29-31 ms, 36 ms at 200,000
 * deliveries/s (perf/, docs/architecture.md). */
static size_t server_default_shards(void)
{
    size_t cpus = server_cpus();
    return cpus * 8 > 256 ? 256 : cpus * 8;
}

/* The shards that take calls from the start. gRPC's default poller on
 * Linux (epoll1) polls every connection from whichever thread waits in
 * any queue, so a queue nobody waits on strands nothing; the poll engine
 * polls a connection only from the queue it was given, so with it (and
 * with --shard-balance=connection, which keeps a connection's calls on
 * that queue) every shard starts. */
static size_t server_initial_shards(const struct server *srv)
{
    const char *poller = getenv("GRPC_POLL_STRATEGY");
    bool epoll1 =
        !poller || !*poller || strcmp(poller, "epoll1") == 0 || strcmp(poller, "all") == 0;
    if (!srv->balance_streams || srv->shard_fill == 0 || !epoll1)
        return srv->nshards;
    size_t cpus = server_cpus();
    return cpus < srv->nshards ? cpus : srv->nshards;
}

int server_create(struct server **out, const struct config *cfg, struct topics *topics,
                  struct ingest *ingest, char *err, size_t errlen)
{
    *out = NULL;
    struct server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    srv->cfg = cfg;
    srv->topics = topics;
    srv->max_streams = cfg->max_streams;
    srv->write_coalescing = cfg->write_coalescing;
    srv->cq_thread_cache = cfg->cq_thread_cache;
    srv->balance_streams = strcmp(cfg->shard_balance, "stream") == 0;
    atomic_init(&srv->draining, false);
    atomic_init(&srv->stopping, false);
    atomic_init(&srv->streams_live, 0);
    atomic_init(&srv->other_streams_live, 0);
    atomic_init(&srv->admin_wanted_until_us, 0);
    atomic_init(&srv->next_stream_id, 0);
    atomic_init(&srv->cancel_log_us, 0);
    atomic_init(&srv->cancel_logged, 0);
    srv->nshards = cfg->shards > 0 ? (size_t)cfg->shards : server_default_shards();
    srv->shard_fill = cfg->shard_fill;
    atomic_init(&srv->shards_active, server_initial_shards(srv));
    pthread_mutex_init(&srv->park_mu, NULL);
    pthread_cond_init(&srv->park_cv, NULL);

    /* Keepalive pings reap dead peers even when no heartbeat is due; ping
     * enforcement and metadata limits blunt abusive clients. */
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = 1 << 20}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = 30000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = 10000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, {.integer = 1}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
         {.integer = 10000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PING_STRIKES, {.integer = 2}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_METADATA_SIZE, {.integer = 16 * 1024}},
        /* last: dropped from the list when --grpc-lean-filters=false. Each
         * filter left out is a step less per message of every call; the
         * message-size filter (MINIMAL_STACK would drop it too) stays. */
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_PER_MESSAGE_COMPRESSION, {.integer = 0}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, {.integer = 0}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_DEADLINE_CHECKS, {.integer = 0}},
    };
    size_t nargs = sizeof(args) / sizeof(args[0]) - (cfg->grpc_lean_filters ? 0 : 3);
    grpc_channel_args chargs = {.num_args = nargs, .args = args};
    srv->ingest = ingest;
    int rc;
    _Static_assert(sizeof(services) / sizeof(services[0]) <= SHARD_MAX_SERVICES,
                   "raise SHARD_MAX_SERVICES");
    size_t nrequests = 0;
    for (size_t p = 0; p < sizeof(services) / sizeof(services[0]); p++) {
        const struct service *svc = services[p];
        srv->services[srv->nservices++] = svc;
        for (size_t i = 0; i < svc->nmethods; i++) {
            const struct service_method *m = &svc->methods[i];
            nrequests += m->ahead ? m->ahead : 1;
            if (srv->nmethods == SHARD_MAX_METHODS || nrequests > SHARD_MAX_REQUESTS) {
                snprintf(err, errlen,
                         "the services have more than SHARD_MAX_METHODS (%d) methods or "
                         "SHARD_MAX_REQUESTS (%d) requests ahead (%s is one too many); raise "
                         "them in shard.h",
                         SHARD_MAX_METHODS, SHARD_MAX_REQUESTS, m->path);
                rc = -E2BIG;
                goto out_destroy;
            }
            srv->method_service[srv->nmethods] = p;
            srv->methods[srv->nmethods++] = m;
        }
    }
    srv->grpc = grpc_server_create(&chargs, NULL);
    srv->ctl_cq = grpc_completion_queue_create_for_next(NULL);
    if (!srv->grpc || !srv->ctl_cq) {
        snprintf(err, errlen, "cannot create the gRPC server%s",
                 srv->grpc ? " (its completion queue)" : "");
        if (srv->grpc)
            grpc_server_destroy(srv->grpc); /* nothing registered on it yet */
        srv->grpc = NULL;
        rc = -EIO;
        goto out_destroy;
    }
    grpc_server_register_completion_queue(srv->grpc, srv->ctl_cq, NULL);
    for (size_t i = 0; i < srv->nmethods; i++) {
        srv->method_handles[i] = grpc_server_register_method(
            srv->grpc, srv->methods[i]->path, NULL,
            srv->methods[i]->read_payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER
                                          : GRPC_SRM_PAYLOAD_NONE,
            0);
        if (!srv->method_handles[i]) {
            snprintf(err, errlen, "gRPC refused to register method %s (registered twice?)",
                     srv->methods[i]->path);
            rc = -EIO;
            goto out_destroy;
        }
    }

    srv->shards = calloc(srv->nshards, sizeof(*srv->shards));
    if (!srv->shards)
        goto out_nomem;
    for (size_t i = 0; i < srv->nshards; i++) {
        rc = shard_create(&srv->shards[i], srv, i, err, errlen);
        if (rc)
            goto out_destroy;
    }

    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    srv->port = grpc_server_add_http2_port(srv->grpc, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (srv->port <= 0) {
        snprintf(err, errlen, "--listen '%s': cannot listen (not HOST:PORT, or address in use)",
                 cfg->listen);
        server_destroy(srv);
        return -EADDRINUSE;
    }
    grpc_server_start(srv->grpc);
    for (size_t i = 0; i < srv->nshards; i++) {
        rc = shard_start(srv->shards[i]);
        if (rc) {
            snprintf(err, errlen, "cannot start shard thread: %s", strerror(-rc));
            server_drain_begin(srv);
            server_stop(srv);
            server_destroy(srv);
            return rc;
        }
    }
    *out = srv;
    return 0;

out_nomem:
    snprintf(err, errlen, "out of memory");
    rc = -ENOMEM;
out_destroy:
    server_destroy(srv);
    return rc;
}

void server_drain_begin(struct server *srv)
{
    if (atomic_exchange(&srv->draining, true))
        return;
    grpc_server_shutdown_and_notify(srv->grpc, srv->ctl_cq, &shutdown_tag);
    for (size_t i = 0; i < srv->nshards; i++)
        shard_ring(srv->shards[i]);
}

void server_stop(struct server *srv)
{
    server_drain_begin(srv);
    grpc_server_cancel_all_calls(srv->grpc);
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->ctl_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == &shutdown_tag)
            break;
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    atomic_store(&srv->stopping, true);
    shard_wake_parked(srv);
    for (size_t i = 0; i < srv->nshards; i++)
        shard_ring(srv->shards[i]);
    for (size_t i = 0; i < srv->nshards; i++)
        shard_join(srv->shards[i]);
}

void server_destroy(struct server *srv)
{
    if (!srv)
        return;
    if (srv->grpc) {
        if (!atomic_load(&srv->stopping)) {
            /* never started or failed early: nothing is running on it */
            grpc_server_shutdown_and_notify(srv->grpc, srv->ctl_cq, &shutdown_tag);
            grpc_server_cancel_all_calls(srv->grpc);
            grpc_event ev =
                grpc_completion_queue_next(srv->ctl_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
            (void)ev;
        }
        grpc_server_destroy(srv->grpc);
    }
    for (size_t i = 0; srv->shards && i < srv->nshards; i++)
        shard_destroy(srv->shards[i]);
    free(srv->shards);
    pthread_cond_destroy(&srv->park_cv);
    pthread_mutex_destroy(&srv->park_mu);
    if (srv->ctl_cq) {
        grpc_completion_queue_shutdown(srv->ctl_cq);
        while (grpc_completion_queue_next(srv->ctl_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(srv->ctl_cq);
    }
    free(srv);
}
