/*
 * watchclient: one Watch server-stream over gRPC C core.
 *
 * Owned by one thread (see watchclient.h); only watchclient_cancel() may
 * come from another. Three batches can be in flight on the call: the start
 * batch (send request, half-close, receive initial metadata), the status
 * batch (outstanding for the call's whole life) and at most one
 * RECV_MESSAGE. Each batch's tag is the address of its "pending" flag, so
 * completions are told apart without a lookup and a stray tag is obvious.
 */
#include "watchclient.h"

#include "wire.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

struct watchclient_trailer {
    char *key;
    char *value;
};

struct watchclient {
    grpc_channel *channel;
    grpc_completion_queue *cq;
    grpc_call *call;

    grpc_byte_buffer *request;
    grpc_metadata_array initial_md;
    grpc_byte_buffer *recv_buf;

    /* Filled by the status batch; details and trailers copied on completion. */
    grpc_metadata_array trailing_md;
    grpc_status_code status;
    grpc_slice status_details;
    char *details;
    struct watchclient_trailer *trailers;
    size_t n_trailers;

    bool start_pending;
    bool recv_pending;
    bool status_pending;
    bool status_done;
    /* A RECV_MESSAGE came back empty: no more messages on this call. */
    bool read_closed;
};

static char *slice_strdup(grpc_slice s)
{
    size_t len = GRPC_SLICE_LENGTH(s);
    char *p = malloc(len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, GRPC_SLICE_START_PTR(s), len);
    p[len] = '\0';
    return p;
}

/* Keeps what the status batch delivered beyond the call's lifetime. */
static void status_complete(struct watchclient *wc)
{
    wc->status_done = true;
    wc->details = slice_strdup(wc->status_details);
    if (wc->trailing_md.count == 0)
        return;
    wc->trailers = calloc(wc->trailing_md.count, sizeof(*wc->trailers));
    if (wc->trailers == NULL)
        return;
    for (size_t i = 0; i < wc->trailing_md.count; i++) {
        const grpc_metadata *md = &wc->trailing_md.metadata[i];
        char *k = slice_strdup(md->key);
        char *v = slice_strdup(md->value);
        if (k == NULL || v == NULL) {
            free(k);
            free(v);
            continue;
        }
        wc->trailers[wc->n_trailers].key = k;
        wc->trailers[wc->n_trailers].value = v;
        wc->n_trailers++;
    }
}

/* Books one completion against the batch it belongs to. */
static void handle_event(struct watchclient *wc, const grpc_event *e)
{
    if (e->type != GRPC_OP_COMPLETE)
        return;
    if (e->tag == &wc->start_pending) {
        wc->start_pending = false;
    } else if (e->tag == &wc->recv_pending) {
        wc->recv_pending = false;
        /* A failed read (e->success == 0) leaves recv_buf NULL: the end. */
        if (wc->recv_buf == NULL)
            wc->read_closed = true;
    } else if (e->tag == &wc->status_pending) {
        wc->status_pending = false;
        status_complete(wc);
    }
}

static bool anything_pending(const struct watchclient *wc)
{
    return wc->start_pending || wc->recv_pending || wc->status_pending;
}

/* Runs the queue until the status batch is back; it always comes once the call is over. */
static void wait_status(struct watchclient *wc)
{
    while (wc->status_pending) {
        grpc_event e =
            grpc_completion_queue_next(wc->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (e.type == GRPC_QUEUE_SHUTDOWN)
            break;
        handle_event(wc, &e);
    }
}

static int start_call(struct watchclient *wc)
{
    grpc_slice method = grpc_slice_from_static_string(WATCHCLIENT_METHOD);
    grpc_op ops[4];
    grpc_op status_op;

    wc->call = grpc_channel_create_call(wc->channel, NULL, GRPC_PROPAGATE_DEFAULTS, wc->cq, method,
                                        NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (wc->call == NULL)
        return -EIO;

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = wc->request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &wc->initial_md;
    if (grpc_call_start_batch(wc->call, ops, 4, &wc->start_pending, NULL) != GRPC_CALL_OK)
        return -EIO;
    wc->start_pending = true;

    memset(&status_op, 0, sizeof(status_op));
    status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status_op.data.recv_status_on_client.trailing_metadata = &wc->trailing_md;
    status_op.data.recv_status_on_client.status = &wc->status;
    status_op.data.recv_status_on_client.status_details = &wc->status_details;
    if (grpc_call_start_batch(wc->call, &status_op, 1, &wc->status_pending, NULL) != GRPC_CALL_OK)
        return -EIO;
    wc->status_pending = true;
    return 0;
}

int watchclient_open(watchclient_t **out, const char *target, const Events__V1__WatchRequest *req)
{
    return watchclient_open_with(out, target, req, NULL);
}

int watchclient_open_with(watchclient_t **out, const char *target,
                          const Events__V1__WatchRequest *req, const struct watchclient_opts *opts)
{
    struct watchclient *wc;
    grpc_channel_credentials *creds;
    int rc;

    *out = NULL;
    if (target == NULL || req == NULL)
        return -EINVAL;
    wc = calloc(1, sizeof(*wc));
    if (wc == NULL)
        return -ENOMEM;
    /* From here on, watchclient_close() undoes whatever was done. */
    grpc_init();
    grpc_metadata_array_init(&wc->initial_md);
    grpc_metadata_array_init(&wc->trailing_md);
    wc->status_details = grpc_empty_slice();

    size_t len = events__v1__watch_request__get_packed_size(req);
    grpc_slice slice = grpc_slice_malloc(len);
    events__v1__watch_request__pack(req, GRPC_SLICE_START_PTR(slice));
    wc->request = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);

    grpc_arg own_pool = {GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}};
    grpc_channel_args own_args = {1, &own_pool};
    bool own = opts != NULL && opts->own_connection;
    creds = grpc_insecure_credentials_create();
    wc->channel = grpc_channel_create(target, creds, own ? &own_args : NULL);
    grpc_channel_credentials_release(creds);
    wc->cq = grpc_completion_queue_create_for_next(NULL);
    if (wc->request == NULL || wc->channel == NULL || wc->cq == NULL) {
        rc = -ENOMEM;
        goto out_close;
    }
    rc = start_call(wc);
    if (rc < 0)
        goto out_close;
    *out = wc;
    return 0;

out_close:
    watchclient_close(wc);
    return rc;
}

static int decode(grpc_byte_buffer *buf, Events__V1__WatchEvent **ev)
{
    grpc_slice all;
    if (wire_read_all(buf, &all))
        return -EBADMSG;
    *ev = events__v1__watch_event__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return *ev ? 0 : -EBADMSG;
}

static gpr_timespec deadline_after(int64_t timeout_ms)
{
    if (timeout_ms < 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

int watchclient_next(watchclient_t *wc, int64_t timeout_ms, Events__V1__WatchEvent **ev)
{
    *ev = NULL;
    if (wc->read_closed)
        goto out_ended;
    if (!wc->recv_pending) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &wc->recv_buf;
        if (grpc_call_start_batch(wc->call, &op, 1, &wc->recv_pending, NULL) != GRPC_CALL_OK) {
            /* Cannot read any more: end the call so its status arrives. */
            grpc_call_cancel(wc->call, NULL);
            wc->read_closed = true;
            goto out_ended;
        }
        wc->recv_pending = true;
    }

    gpr_timespec deadline = deadline_after(timeout_ms);
    while (wc->recv_pending) {
        grpc_event e = grpc_completion_queue_next(wc->cq, deadline, NULL);
        if (e.type == GRPC_QUEUE_TIMEOUT)
            return -EAGAIN;
        if (e.type == GRPC_QUEUE_SHUTDOWN)
            return -EPIPE; /* not reached: the queue is shut down only in close */
        handle_event(wc, &e);
    }
    if (wc->read_closed)
        goto out_ended;

    grpc_byte_buffer *buf = wc->recv_buf;
    wc->recv_buf = NULL;
    int rc = decode(buf, ev);
    grpc_byte_buffer_destroy(buf);
    return rc;

out_ended:
    wait_status(wc);
    return -EPIPE;
}

int watchclient_status(watchclient_t *wc, grpc_status_code *code, const char **details)
{
    if (!wc->status_done)
        return -EAGAIN;
    if (code != NULL)
        *code = wc->status;
    if (details != NULL)
        *details = wc->details ? wc->details : "";
    return 0;
}

const char *watchclient_trailer(watchclient_t *wc, const char *key)
{
    for (size_t i = 0; i < wc->n_trailers; i++)
        if (strcmp(wc->trailers[i].key, key) == 0)
            return wc->trailers[i].value;
    return NULL;
}

void watchclient_cancel(watchclient_t *wc)
{
    /* grpc_call_cancel is thread-safe and harmless on a finished call. */
    if (wc != NULL && wc->call != NULL)
        grpc_call_cancel(wc->call, NULL);
}

void watchclient_close(watchclient_t *wc)
{
    if (wc == NULL)
        return;
    if (wc->call != NULL) {
        if (!wc->status_done)
            grpc_call_cancel(wc->call, NULL);
        while (anything_pending(wc)) {
            grpc_event e =
                grpc_completion_queue_next(wc->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
            handle_event(wc, &e);
        }
        grpc_call_unref(wc->call);
    }
    if (wc->cq != NULL) {
        grpc_completion_queue_shutdown(wc->cq);
        while (grpc_completion_queue_next(wc->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(wc->cq);
    }
    if (wc->channel != NULL)
        grpc_channel_destroy(wc->channel);
    if (wc->recv_buf != NULL)
        grpc_byte_buffer_destroy(wc->recv_buf);
    if (wc->request != NULL)
        grpc_byte_buffer_destroy(wc->request);
    grpc_metadata_array_destroy(&wc->initial_md);
    grpc_metadata_array_destroy(&wc->trailing_md);
    grpc_slice_unref(wc->status_details);
    for (size_t i = 0; i < wc->n_trailers; i++) {
        free(wc->trailers[i].key);
        free(wc->trailers[i].value);
    }
    free(wc->trailers);
    free(wc->details);
    free(wc);
    grpc_shutdown();
}

int watchclient_unary(const char *target, const char *method, const void *req, size_t len,
                      int64_t timeout_ms, grpc_byte_buffer **reply, grpc_status_code *code,
                      char **details)
{
    *reply = NULL;
    *details = NULL;
    grpc_init();
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_call *call =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                 grpc_slice_from_static_string(method), NULL, deadline, NULL);
    grpc_slice s = grpc_slice_from_copied_buffer(req, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_slice status_details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = reply;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = code;
    ops[5].data.recv_status_on_client.status_details = &status_details;
    int rc = 0;
    if (grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
        rc = -EIO;
    } else {
        grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        *details = slice_strdup(status_details);
    }
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_slice_unref(status_details);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return rc;
}
