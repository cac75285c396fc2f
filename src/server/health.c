/*
 * health: grpc.health.v1.Health Check and Watch. Shard thread only.
 */
#include "health.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "call.h"
#include "log.h"
#include "server.h"
#include "wire.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

static const char *const known_services[] = {"", "events.v1.Watcher", "grpc.health.v1.Health"};

/* The status of `service`, or SERVICE_UNKNOWN. */
static serving_status status_of(const struct shard *sh, const char *service)
{
    for (size_t i = 0; i < sizeof(known_services) / sizeof(known_services[0]); i++)
        if (strcmp(service, known_services[i]) == 0)
            return atomic_load(&sh->srv->draining)
                       ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
}

static grpc_byte_buffer *response(serving_status status)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = status;
    uint8_t buf[16];
    size_t n = grpc__health__v1__health_check_response__pack(&r, buf);
    return wire_buffer(buf, n);
}

/* The requested service name (malloc'd), or NULL for a malformed request. */
static char *requested_service(grpc_byte_buffer *payload)
{
    if (!payload)
        return NULL;
    grpc_slice s;
    if (wire_read_all(payload, &s))
        return NULL;
    char why[200];
    Grpc__Health__V1__HealthCheckRequest *req =
        wire_check_text(&grpc__health__v1__health_check_request__descriptor,
                        GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), why, sizeof(why))
            ? NULL
            : grpc__health__v1__health_check_request__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                             GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (!req)
        return NULL;
    char *name = strdup(req->service ? req->service : "");
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    return name;
}

/* ---- Check --------------------------------------------------------------- */

struct health_check {
    struct call base; /* first */
    struct tag tag;
    grpc_byte_buffer *resp;
    grpc_slice details;
};

static void check_release(struct call *c)
{
    struct health_check *hc = (struct health_check *)c;
    if (hc->resp)
        grpc_byte_buffer_destroy(hc->resp);
    grpc_slice_unref(hc->details);
    free(hc);
}

static const struct call_ops check_ops = {.release = check_release};

static void check_done(struct shard *sh, void *obj, bool ok)
{
    (void)sh;
    (void)ok;
    call_unref(obj);
}
static void accept_check(struct shard *sh, void *st, grpc_call *call, grpc_byte_buffer *payload)
{
    (void)st;
    char *service = requested_service(payload);
    if (payload)
        grpc_byte_buffer_destroy(payload);
    struct health_check *hc = calloc(1, sizeof(*hc));
    if (!hc) {
        free(service);
        shard_refuse(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    hc->tag = (struct tag){.fn = check_done, .obj = &hc->base};
    call_open(&hc->base, sh, call, &check_ops, NULL, false);
    grpc_status_code code = GRPC_STATUS_OK;
    char msg[300] = "";
    if (!service) {
        code = GRPC_STATUS_INVALID_ARGUMENT;
        snprintf(msg, sizeof(msg), "malformed HealthCheckRequest");
    } else {
        serving_status st = status_of(sh, service);
        if (st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN) {
            code = GRPC_STATUS_NOT_FOUND;
            snprintf(msg, sizeof(msg), "unknown service '%.200s'", service);
        } else {
            hc->resp = response(st);
        }
    }
    free(service);
    hc->details = grpc_slice_from_copied_string(msg);
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (hc->resp) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = hc->resp;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &hc->details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &hc->base.cancelled;
    if (call_start_batch(&hc->base, ops, n, &hc->tag) != GRPC_CALL_OK)
        log_error("msg=start_batch_failed op=health_check");
    call_unref(&hc->base);
}

/* ---- Watch --------------------------------------------------------------- */

struct health_watch {
    struct call base; /* first; on its shard's list (struct health_shard) */
    struct tag t_send;
    bool md_sent, send_busy, ended, end_pending;
    grpc_byte_buffer *bb;
    grpc_slice details;
};

/* The Health service's state on one shard: its Watch streams. */
struct health_shard {
    struct call_list watches;
};

static void watch_release(struct call *c)
{
    struct health_watch *hw = (struct health_watch *)c;
    if (hw->ended)
        grpc_slice_unref(hw->details);
    free(hw);
}

static const struct call_ops watch_ops = {.release = watch_release};

/* Sends `status`; with `end`, also ends the call with UNAVAILABLE. */
static void watch_send(struct health_watch *hw, serving_status status, bool end)
{
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!hw->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        hw->md_sent = true;
    }
    hw->bb = response(status);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = hw->bb;
    if (end) {
        hw->ended = true;
        hw->details = grpc_slice_from_static_string("server shutting down");
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = GRPC_STATUS_UNAVAILABLE;
        ops[n++].data.send_status_from_server.status_details = &hw->details;
    }
    hw->send_busy = true;
    if (call_start_batch(&hw->base, ops, n, &hw->t_send) != GRPC_CALL_OK) {
        log_error("msg=start_batch_failed op=health_watch");
        hw->send_busy = false;
        grpc_byte_buffer_destroy(hw->bb);
        hw->bb = NULL;
    }
}

static void watch_on_send(struct shard *sh, void *obj, bool ok)
{
    struct health_watch *hw = obj;
    hw->send_busy = false;
    grpc_byte_buffer_destroy(hw->bb);
    hw->bb = NULL;
    if (ok && hw->end_pending && !hw->ended)
        watch_send(hw, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING, true);
    call_unref(&hw->base);
}

static void accept_watch(struct shard *sh, void *st, grpc_call *call, grpc_byte_buffer *payload)
{
    char *service = requested_service(payload);
    if (payload)
        grpc_byte_buffer_destroy(payload);
    if (!service) {
        shard_refuse(call, GRPC_STATUS_INVALID_ARGUMENT, "malformed HealthCheckRequest");
        return;
    }
    struct health_watch *hw = calloc(1, sizeof(*hw));
    if (!hw) {
        free(service);
        shard_refuse(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    hw->t_send = (struct tag){.fn = watch_on_send, .obj = hw};
    call_open(&hw->base, sh, call, &watch_ops, &((struct health_shard *)st)->watches, true);
    if (call_start_recv_close(&hw->base, false)) {
        serving_status status = status_of(sh, service);
        /* Draining already: say so and end; otherwise the current status. */
        watch_send(
            hw, status,
            atomic_load(&sh->srv->draining) &&
                status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN);
    }
    free(service);
    call_unref(&hw->base);
}

/* Drain: every Watch stream is told NOT_SERVING and ended. */
static void hs_drain(struct shard *sh, void *st)
{
    (void)sh;
    for (struct call *c = ((struct health_shard *)st)->watches.head; c; c = c->next) {
        struct health_watch *hw = (struct health_watch *)c;
        if (hw->ended || hw->end_pending)
            continue;
        if (hw->send_busy)
            hw->end_pending = true;
        else
            watch_send(hw, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
                       true);
    }
}

/* Streams opened while the server was stopping are ended at once. */
static void hs_run(struct shard *sh, void *st)
{
    if (atomic_load(&sh->srv->stopping))
        hs_drain(sh, st);
}

static const struct service_method methods[] = {
    {"/grpc.health.v1.Health/Check", true, accept_check, 0, false},
    {"/grpc.health.v1.Health/Watch", true, accept_watch, 0, false},
};

const struct service health_service = {
    .name = "health",
    .methods = methods,
    .nmethods = sizeof(methods) / sizeof(methods[0]),
    .state_size = sizeof(struct health_shard),
    .run = hs_run,
    .drain = hs_drain,
};
