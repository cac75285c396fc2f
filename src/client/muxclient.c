/*
 * muxclient: one Subscribe bidi stream over gRPC C core.
 *
 * Owned by one thread (see muxclient.h); only muxclient_cancel() may come
 * from another. Batches in flight on the call: the start batch (initial
 * metadata both ways), the status batch (outstanding for the call's whole
 * life), at most one SEND_MESSAGE and at most one RECV_MESSAGE. Each
 * batch's tag is the address of its "pending" flag.
 */
#include "muxclient.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "wire.h"

/* A request waiting for its turn to be sent. */
struct outgoing {
    struct outgoing *next;
    grpc_byte_buffer *bb;
};

struct muxclient {
    grpc_channel *channel;
    grpc_completion_queue *cq;
    grpc_call *call;

    grpc_metadata_array initial_md;
    grpc_byte_buffer *recv_buf;
    grpc_byte_buffer *send_buf; /* the one in flight */
    struct outgoing *queue_head;
    struct outgoing *queue_tail;
    size_t unsent; /* queued + in flight */

    grpc_metadata_array trailing_md;
    grpc_status_code status;
    grpc_slice status_details;
    char *details;

    bool start_pending;
    bool send_pending;
    bool recv_pending;
    bool status_pending;
    bool status_done;
    bool read_closed;
    bool write_closed; /* a send failed: the call is over */
};

static void drop_queue(struct muxclient *mc)
{
    while (mc->queue_head != NULL) {
        struct outgoing *o = mc->queue_head;
        mc->queue_head = o->next;
        grpc_byte_buffer_destroy(o->bb);
        free(o);
    }
    mc->queue_tail = NULL;
    mc->unsent = mc->send_pending ? 1 : 0;
}

/* Starts sending the next queued request if none is in flight. */
static void pump_send(struct muxclient *mc)
{
    if (mc->send_pending || mc->write_closed || mc->queue_head == NULL)
        return;
    struct outgoing *o = mc->queue_head;
    mc->queue_head = o->next;
    if (mc->queue_head == NULL)
        mc->queue_tail = NULL;
    mc->send_buf = o->bb;
    free(o);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = mc->send_buf;
    if (grpc_call_start_batch(mc->call, &op, 1, &mc->send_pending, NULL) != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(mc->send_buf);
        mc->send_buf = NULL;
        mc->write_closed = true;
        drop_queue(mc);
        mc->unsent = 0;
        grpc_call_cancel(mc->call, NULL);
        return;
    }
    mc->send_pending = true;
}

static void handle_event(struct muxclient *mc, const grpc_event *e)
{
    if (e->type != GRPC_OP_COMPLETE)
        return;
    if (e->tag == &mc->start_pending) {
        mc->start_pending = false;
    } else if (e->tag == &mc->send_pending) {
        mc->send_pending = false;
        grpc_byte_buffer_destroy(mc->send_buf);
        mc->send_buf = NULL;
        if (mc->unsent > 0)
            mc->unsent--;
        if (!e->success) {
            /* The call is over; its status says why. */
            mc->write_closed = true;
            drop_queue(mc);
            mc->unsent = 0;
        }
        pump_send(mc);
    } else if (e->tag == &mc->recv_pending) {
        mc->recv_pending = false;
        if (mc->recv_buf == NULL)
            mc->read_closed = true;
    } else if (e->tag == &mc->status_pending) {
        mc->status_pending = false;
        mc->status_done = true;
        size_t len = GRPC_SLICE_LENGTH(mc->status_details);
        mc->details = malloc(len + 1);
        if (mc->details != NULL) {
            memcpy(mc->details, GRPC_SLICE_START_PTR(mc->status_details), len);
            mc->details[len] = '\0';
        }
    }
}

static bool anything_pending(const struct muxclient *mc)
{
    return mc->start_pending || mc->send_pending || mc->recv_pending || mc->status_pending;
}

static int start_call(struct muxclient *mc)
{
    grpc_slice method = grpc_slice_from_static_string(MUXCLIENT_METHOD);
    grpc_op ops[2];
    grpc_op status_op;

    mc->call = grpc_channel_create_call(mc->channel, NULL, GRPC_PROPAGATE_DEFAULTS, mc->cq, method,
                                        NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (mc->call == NULL)
        return -EIO;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &mc->initial_md;
    if (grpc_call_start_batch(mc->call, ops, 2, &mc->start_pending, NULL) != GRPC_CALL_OK)
        return -EIO;
    mc->start_pending = true;

    memset(&status_op, 0, sizeof(status_op));
    status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status_op.data.recv_status_on_client.trailing_metadata = &mc->trailing_md;
    status_op.data.recv_status_on_client.status = &mc->status;
    status_op.data.recv_status_on_client.status_details = &mc->status_details;
    if (grpc_call_start_batch(mc->call, &status_op, 1, &mc->status_pending, NULL) != GRPC_CALL_OK)
        return -EIO;
    mc->status_pending = true;
    return 0;
}

int muxclient_open(muxclient_t **out, const char *target)
{
    struct muxclient *mc;
    int rc;

    *out = NULL;
    if (target == NULL)
        return -EINVAL;
    mc = calloc(1, sizeof(*mc));
    if (mc == NULL)
        return -ENOMEM;
    /* From here on, muxclient_close() undoes whatever was done. */
    grpc_init();
    grpc_metadata_array_init(&mc->initial_md);
    grpc_metadata_array_init(&mc->trailing_md);
    mc->status_details = grpc_empty_slice();

    grpc_arg own_pool = {GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}};
    grpc_channel_args args = {1, &own_pool};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    mc->channel = grpc_channel_create(target, creds, &args);
    grpc_channel_credentials_release(creds);
    mc->cq = grpc_completion_queue_create_for_next(NULL);
    if (mc->channel == NULL || mc->cq == NULL) {
        rc = -ENOMEM;
        goto out_close;
    }
    rc = start_call(mc);
    if (rc < 0)
        goto out_close;
    *out = mc;
    return 0;

out_close:
    muxclient_close(mc);
    return rc;
}

int muxclient_send(muxclient_t *mc, const Events__V1__SubscribeRequest *req)
{
    if (mc->write_closed || mc->status_done)
        return -EPIPE;
    struct outgoing *o = malloc(sizeof(*o));
    if (o == NULL)
        return -ENOMEM;
    size_t len = events__v1__subscribe_request__get_packed_size(req);
    grpc_slice slice = grpc_slice_malloc(len);
    events__v1__subscribe_request__pack(req, GRPC_SLICE_START_PTR(slice));
    o->bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    if (o->bb == NULL) {
        free(o);
        return -ENOMEM;
    }
    o->next = NULL;
    if (mc->queue_tail != NULL)
        mc->queue_tail->next = o;
    else
        mc->queue_head = o;
    mc->queue_tail = o;
    mc->unsent++;
    pump_send(mc);
    return 0;
}

size_t muxclient_unsent(const muxclient_t *mc)
{
    return mc->unsent;
}

static void wait_status(struct muxclient *mc)
{
    while (mc->status_pending) {
        grpc_event e =
            grpc_completion_queue_next(mc->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (e.type == GRPC_QUEUE_SHUTDOWN)
            break;
        handle_event(mc, &e);
    }
}

int muxclient_next(muxclient_t *mc, int64_t timeout_ms, Events__V1__SubscribeResponse **resp)
{
    *resp = NULL;
    if (mc->read_closed)
        goto out_ended;
    if (!mc->recv_pending) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &mc->recv_buf;
        if (grpc_call_start_batch(mc->call, &op, 1, &mc->recv_pending, NULL) != GRPC_CALL_OK) {
            grpc_call_cancel(mc->call, NULL);
            mc->read_closed = true;
            goto out_ended;
        }
        mc->recv_pending = true;
    }

    gpr_timespec deadline = timeout_ms < 0
                                ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                                : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    while (mc->recv_pending) {
        grpc_event e = grpc_completion_queue_next(mc->cq, deadline, NULL);
        if (e.type == GRPC_QUEUE_TIMEOUT)
            return -EAGAIN;
        if (e.type == GRPC_QUEUE_SHUTDOWN)
            return -EPIPE; /* not reached: the queue is shut down only in close */
        handle_event(mc, &e);
    }
    if (mc->read_closed)
        goto out_ended;

    grpc_byte_buffer *buf = mc->recv_buf;
    grpc_slice all;
    mc->recv_buf = NULL;
    int bad = wire_read_all(buf, &all);
    grpc_byte_buffer_destroy(buf);
    if (bad)
        return -EBADMSG;
    *resp = events__v1__subscribe_response__unpack(NULL, GRPC_SLICE_LENGTH(all),
                                                   GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return *resp ? 0 : -EBADMSG;

out_ended:
    wait_status(mc);
    return -EPIPE;
}

int muxclient_status(muxclient_t *mc, grpc_status_code *code, const char **details)
{
    if (!mc->status_done)
        return -EAGAIN;
    if (code != NULL)
        *code = mc->status;
    if (details != NULL)
        *details = mc->details ? mc->details : "";
    return 0;
}

void muxclient_cancel(muxclient_t *mc)
{
    if (mc != NULL && mc->call != NULL)
        grpc_call_cancel(mc->call, NULL);
}

void muxclient_close(muxclient_t *mc)
{
    if (mc == NULL)
        return;
    if (mc->call != NULL) {
        if (!mc->status_done)
            grpc_call_cancel(mc->call, NULL);
        /* No new sends once the call is going away. */
        mc->write_closed = true;
        while (anything_pending(mc)) {
            grpc_event e =
                grpc_completion_queue_next(mc->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
            handle_event(mc, &e);
        }
        grpc_call_unref(mc->call);
    }
    drop_queue(mc);
    if (mc->cq != NULL) {
        grpc_completion_queue_shutdown(mc->cq);
        while (grpc_completion_queue_next(mc->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(mc->cq);
    }
    if (mc->channel != NULL)
        grpc_channel_destroy(mc->channel);
    if (mc->recv_buf != NULL)
        grpc_byte_buffer_destroy(mc->recv_buf);
    if (mc->send_buf != NULL)
        grpc_byte_buffer_destroy(mc->send_buf);
    grpc_metadata_array_destroy(&mc->initial_md);
    grpc_metadata_array_destroy(&mc->trailing_md);
    grpc_slice_unref(mc->status_details);
    free(mc->details);
    free(mc);
    grpc_shutdown();
}
