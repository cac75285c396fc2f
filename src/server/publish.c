/*
 * publish: events.v1.Publisher/Publish, the client-streaming ingest.
 *
 * A call lives on the shard that accepted it; only that thread touches it.
 * Records are read one message at a time, validated, and collected into a
 * batch; a batch goes to the ingest thread (the single writer of the logs)
 * as an ingest_job and comes back through the shard's inbox. One batch is in
 * flight per call while the next one fills; when it is full the call stops
 * reading, so a fast publisher is paced by the writer (backpressure through
 * HTTP/2 flow control). The first invalid record stops the call: what came
 * before it is appended, then the call ends with its index.
 */
#include "publish.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/v1/publisher.pb-c.h"
#include "ingest.h"
#include "call.h"
#include "log.h"
#include "server.h"
#include "wire.h"

#define PUBLISH_BATCH 256

struct batch {
    Events__V1__PublishRequest *reqs[PUBLISH_BATCH];
    struct ingest_record recs[PUBLISH_BATCH];
    size_t n;
    struct ingest_job job;
    struct tag acked; /* the job is back: on_ack on the call's shard */
};

/* The Publish service's state on one shard: its calls. */
struct publish_shard {
    struct call_list calls;
};

struct publish_call {
    struct call base; /* first; on its shard's list (struct publish_shard); holds a
                       * reference while a batch is with the ingest thread */
    struct tag t_recv, t_end;

    grpc_byte_buffer *recv_bb;
    bool recv_busy;
    bool client_done; /* the client half-closed */
    bool stop_reading;

    struct batch batches[2];
    int filling;    /* index of the batch being filled */
    bool in_flight; /* the other batch is with the ingest thread */
    uint64_t index; /* records received so far */
    uint64_t accepted;
    struct cursor last;
    bool have_last;

    bool failed;
    grpc_status_code fail_code;
    char fail_msg[300];

    bool ended;
    grpc_byte_buffer *resp;
    grpc_slice details;
    grpc_metadata md[2];
    char md_accepted[24];
    char md_cursor[CURSOR_TEXT_MAX];
};

static void free_batch(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        events__v1__publish_request__free_unpacked(b->reqs[i], NULL);
    b->n = 0;
}

static void release(struct call *c)
{
    struct publish_call *pc = (struct publish_call *)c;
    free_batch(&pc->batches[0]);
    free_batch(&pc->batches[1]);
    if (pc->recv_bb)
        grpc_byte_buffer_destroy(pc->recv_bb);
    if (pc->ended) {
        if (pc->resp)
            grpc_byte_buffer_destroy(pc->resp);
        grpc_slice_unref(pc->details);
        for (int i = 0; i < 2; i++) {
            grpc_slice_unref(pc->md[i].key);
            grpc_slice_unref(pc->md[i].value);
        }
    }
    log_info("msg=publish_closed accepted=%llu reason=%s", (unsigned long long)pc->accepted,
             pc->ended ? wire_status_name(pc->failed ? pc->fail_code : GRPC_STATUS_OK)
                       : "cancelled");
    free(pc);
}

static const struct call_ops call_ops = {.release = release};

/* Ends the call: the response and OK, or the failure; with the count and
 * the last cursor in the trailing metadata either way. */
static void end_call(struct publish_call *pc)
{
    if (pc->ended || pc->base.closed)
        return;
    pc->ended = true;
    grpc_status_code code = pc->failed ? pc->fail_code : GRPC_STATUS_OK;
    char cursor[CURSOR_TEXT_MAX] = "";
    if (pc->have_last)
        cursor_format(pc->last, cursor);
    if (!pc->failed) {
        Events__V1__PublishResponse r = EVENTS__V1__PUBLISH_RESPONSE__INIT;
        r.accepted = pc->accepted;
        r.last_cursor = cursor;
        uint8_t buf[128];
        pc->resp = wire_buffer(buf, events__v1__publish_response__pack(&r, buf));
    }
    pc->details = grpc_slice_from_copied_string(pc->failed ? pc->fail_msg : "");
    snprintf(pc->md_accepted, sizeof(pc->md_accepted), "%llu", (unsigned long long)pc->accepted);
    snprintf(pc->md_cursor, sizeof(pc->md_cursor), "%s", cursor);
    pc->md[0].key = grpc_slice_from_static_string("tickfan-accepted");
    pc->md[0].value = grpc_slice_from_copied_string(pc->md_accepted);
    pc->md[1].key = grpc_slice_from_static_string("tickfan-last-cursor");
    pc->md[1].value = grpc_slice_from_copied_string(pc->md_cursor);

    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (pc->resp) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = pc->resp;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &pc->details;
    ops[n].data.send_status_from_server.trailing_metadata = pc->md;
    ops[n++].data.send_status_from_server.trailing_metadata_count = 2;
    call_start_batch(&pc->base, ops, n, &pc->t_end);
}

static void on_ack(struct shard *sh, void *obj, bool ok);
static void ps_drain(struct shard *sh, void *st);

static void job_done(struct ingest_job *job)
{
    struct publish_call *pc = job->arg;
    struct batch *b = (struct batch *)((char *)job - offsetof(struct batch, job));
    shard_post(pc->base.shard, &b->acked); /* back to the call's shard */
}

/* Hands the filling batch to the ingest thread if it has records and none
 * is in flight. */
static void submit(struct publish_call *pc)
{
    struct batch *b = &pc->batches[pc->filling];
    if (pc->in_flight || !b->n)
        return;
    b->job = (struct ingest_job){.recs = b->recs, .n = b->n, .done = job_done, .arg = pc};
    b->acked = (struct tag){.fn = on_ack, .obj = b};
    pc->in_flight = true;
    call_ref(&pc->base); /* until on_ack */
    pc->filling ^= 1;
    ingest_submit(pc->base.shard->srv->ingest, &b->job);
}

static void post_recv(struct publish_call *pc)
{
    if (pc->recv_busy || pc->client_done || pc->stop_reading || pc->base.closed || pc->ended)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &pc->recv_bb;
    pc->recv_busy = true;
    if (call_start_batch(&pc->base, &op, 1, &pc->t_recv) != GRPC_CALL_OK)
        pc->recv_busy = false;
}

/* What to do next: read more, submit, or end. */
static void advance(struct publish_call *pc)
{
    if (pc->base.closed)
        return;
    submit(pc);
    bool done_reading = pc->client_done || pc->stop_reading;
    if (done_reading && !pc->in_flight && !pc->batches[pc->filling].n) {
        end_call(pc);
        return;
    }
    if (pc->batches[pc->filling].n < PUBLISH_BATCH)
        post_recv(pc); /* full: wait for the ack (backpressure) */
}

static void fail(struct publish_call *pc, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct publish_call *pc, grpc_status_code code, const char *fmt, ...)
{
    if (pc->failed)
        return;
    pc->failed = true;
    pc->fail_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pc->fail_msg, sizeof(pc->fail_msg), fmt, ap);
    va_end(ap);
    pc->stop_reading = true;
}

/* Validates a record and adds it to the filling batch. */
static void take(struct publish_call *pc, grpc_byte_buffer *bb)
{
    uint64_t i = pc->index++;
    Events__V1__PublishRequest *req = NULL;
    grpc_slice s;
    char bad[200] = "";
    if (wire_read_all(bb, &s) == 0) {
        if (wire_check_text(&events__v1__publish_request__descriptor, GRPC_SLICE_START_PTR(s),
                            GRPC_SLICE_LENGTH(s), bad, sizeof(bad)) == 0)
            req = events__v1__publish_request__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                      GRPC_SLICE_START_PTR(s));
        grpc_slice_unref(s);
    }
    if (bad[0]) {
        /* a poison record: clients that check UTF-8 could not decode it */
        fail(pc, GRPC_STATUS_INVALID_ARGUMENT, "record %llu: %s", (unsigned long long)i, bad);
        return;
    }
    if (!req) {
        fail(pc, GRPC_STATUS_INVALID_ARGUMENT, "record %llu: malformed PublishRequest",
             (unsigned long long)i);
        return;
    }
    size_t tl = req->topic ? strlen(req->topic) : 0, kl = req->kind ? strlen(req->kind) : 0,
           yl = req->key ? strlen(req->key) : 0;
    int why = 0;
    struct topic *t =
        tl ? topics_find_or_create(pc->base.shard->srv->topics, req->topic, tl, &why) : NULL;
    if (!tl)
        fail(pc, GRPC_STATUS_INVALID_ARGUMENT, "record %llu: topic is required",
             (unsigned long long)i);
    else if (why == -ENOENT)
        fail(pc, GRPC_STATUS_NOT_FOUND, "record %llu: unknown topic '%.128s'",
             (unsigned long long)i, req->topic);
    else if (!t)
        fail(pc,
             why == -EINVAL   ? GRPC_STATUS_INVALID_ARGUMENT
             : why == -ENOSPC ? GRPC_STATUS_RESOURCE_EXHAUSTED
                              : GRPC_STATUS_UNAVAILABLE,
             "record %llu: topic '%.128s': %s", (unsigned long long)i, req->topic,
             topics_strerror(why));
    else if (kl > RINGLOG_MAX_KIND || yl > RINGLOG_MAX_KEY)
        fail(pc, GRPC_STATUS_INVALID_ARGUMENT, "record %llu: kind or key over 255 bytes",
             (unsigned long long)i);
    else if (req->body.len > RINGLOG_MAX_EVENT - 4096)
        fail(pc, GRPC_STATUS_INVALID_ARGUMENT, "record %llu: body of %zu bytes is too large",
             (unsigned long long)i, req->body.len);
    if (pc->failed) {
        events__v1__publish_request__free_unpacked(req, NULL);
        return;
    }
    struct batch *b = &pc->batches[pc->filling];
    b->reqs[b->n] = req;
    b->recs[b->n] = (struct ingest_record){
        .topic = t,
        .rec = {.kind = req->kind,
                .kind_len = kl,
                .key = req->key,
                .key_len = yl,
                .body = req->body.data,
                .body_len = req->body.len},
        .emitted_us = req->emitted_at_unix_micros,
    };
    b->n++;
}

static void on_recv(struct shard *sh, void *obj, bool ok)
{
    struct publish_call *pc = obj;
    pc->recv_busy = false;
    grpc_byte_buffer *bb = pc->recv_bb;
    pc->recv_bb = NULL;
    if (!ok || !bb) {
        pc->client_done = true; /* half-closed, or the call is gone */
    } else {
        if (!pc->failed) /* after a failure nothing more is accepted */
            take(pc, bb);
        grpc_byte_buffer_destroy(bb);
    }
    advance(pc);
    call_unref(&pc->base);
}

/* A batch is back from the ingest thread, on the call's shard. */
static void on_ack(struct shard *sh, void *obj, bool ok)
{
    (void)ok;
    struct batch *b = obj;
    struct ingest_job *job = &b->job;
    struct publish_call *pc = job->arg;
    pc->in_flight = false;
    pc->accepted += job->appended;
    if (job->appended) {
        pc->last = job->last;
        pc->have_last = true;
    }
    if (job->appended < job->n) {
        uint64_t i = pc->index - pc->batches[pc->filling].n - (job->n - job->appended);
        const char *topic = b->recs[job->appended].topic->name;
        if (job->error == -EMSGSIZE)
            fail(pc, GRPC_STATUS_INVALID_ARGUMENT,
                 "record %llu: too large for the log of topic '%s'", (unsigned long long)i, topic);
        else if (job->error == -ENOMEM)
            fail(pc, GRPC_STATUS_RESOURCE_EXHAUSTED,
                 "record %llu: out of memory appending to topic '%s'; publish it again later",
                 (unsigned long long)i, topic);
        else
            fail(pc, GRPC_STATUS_UNAVAILABLE,
                 "record %llu: the log of topic '%s' could not store it: %s; publish it again",
                 (unsigned long long)i, topic, strerror(-job->error));
        free_batch(&pc->batches[pc->filling]); /* after the failed one: not appended */
    }
    free_batch(b);
    advance(pc);
    call_unref(&pc->base);
}

static void on_end(struct shard *sh, void *obj, bool ok)
{
    call_unref(&((struct publish_call *)obj)->base);
}

static void accept_publish(struct shard *sh, void *st, grpc_call *call, grpc_byte_buffer *payload)
{
    if (payload)
        grpc_byte_buffer_destroy(payload);
    struct publish_call *pc = calloc(1, sizeof(*pc));
    if (!pc) {
        shard_refuse(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    pc->t_recv = (struct tag){.fn = on_recv, .obj = pc};
    pc->t_end = (struct tag){.fn = on_end, .obj = pc};
    struct publish_shard *ps = st;
    call_open(&pc->base, sh, call, &call_ops, &ps->calls, true);
    if (call_start_recv_close(&pc->base, false)) {
        if (atomic_load(&sh->srv->draining))
            ps_drain(sh, ps);
        else
            post_recv(pc);
    }
    call_unref(&pc->base); /* the opener's: releases a call gRPC refused */
}

static void ps_drain(struct shard *sh, void *st)
{
    (void)sh;
    for (struct call *c = ((struct publish_shard *)st)->calls.head; c; c = c->next) {
        struct publish_call *pc = (struct publish_call *)c;
        if (pc->ended || pc->stop_reading)
            continue;
        /* what was received is appended first, then UNAVAILABLE */
        fail(pc, GRPC_STATUS_UNAVAILABLE, "server shutting down; publish again elsewhere");
        advance(pc);
    }
}

static const struct service_method methods[] = {
    {"/events.v1.Publisher/Publish", false, accept_publish, 0, false},
};

const struct service publish_service = {
    .name = "publish",
    .methods = methods,
    .nmethods = sizeof(methods) / sizeof(methods[0]),
    .state_size = sizeof(struct publish_shard),
    .drain = ps_drain,
};
