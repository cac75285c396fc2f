/*
 * muxsub: the multiplexed subscriber against a scripted Subscribe server
 * built with gRPC C core in this process. Each test's script runs in the
 * fake server's thread, one call at a time: it reads the client's
 * SubscribeRequests (every one is recorded for the asserts), sends
 * responses, ends or breaks the call. One fake, the "model", is a tiny
 * honest server: it serves each topic's events 1..N from whatever cursor a
 * subscription is added with, shares a delivery between subscriptions at
 * the same place, and breaks the stream every few events, so exactly once
 * across breaks is checked against what the server really sent.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "muxsub.h"
#include "subscriber.h"
#include "wire.h"

static char tmp_dir[] = "/tmp/muxsub_test.XXXXXX";

static int setup(void **state)
{
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Cursors of the fake topics: "1-<epoch of the topic>-<seq>". */
static void make_cursor(char *buf, size_t len, const char *topic, uint64_t seq)
{
    snprintf(buf, len, "1-%016x-%llu", (unsigned)(strlen(topic) * 0x1111 + (unsigned char)topic[0]),
             (unsigned long long)seq);
}

static uint64_t cursor_seq(const char *cursor)
{
    const char *dash = strrchr(cursor, '-');
    return dash ? strtoull(dash + 1, NULL, 10) : 0;
}

/* ---- the fake server ---------------------------------------------------------- */

enum { TAG_NEW = 1, TAG_OP, TAG_CLOSE };

struct seen_req {
    int call;
    bool remove;
    uint32_t id;
    char topic[32];
    char cursor[64];
    bool snapshot;
};

struct fake;
typedef void (*script_fn)(struct fake *fk, int call_no);

struct fake {
    bool stopped; /* fake_stop joined the thread and destroyed the lock */
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    char target[64];
    script_fn script;
    void *ctx;
    tickfan_mux_t *mux;

    grpc_call *call;
    int cancelled;
    bool closed;
    bool status_sent;
    int calls;

    pthread_mutex_t lock;
    struct seen_req seen[512];
    int nseen;
};

/* Waits for tag; the close notification may come first. */
static bool fk_wait(struct fake *fk, intptr_t tag)
{
    for (;;) {
        grpc_event e =
            grpc_completion_queue_next(fk->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (e.type != GRPC_OP_COMPLETE)
            return false;
        if ((intptr_t)e.tag == TAG_CLOSE) {
            fk->closed = true;
            if (tag == TAG_CLOSE)
                return true;
            continue;
        }
        if ((intptr_t)e.tag == tag)
            return e.success;
    }
}

/* The next request of the call, recorded; NULL when the client is gone. */
static Events__V1__SubscribeRequest *fk_recv(struct fake *fk)
{
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    if (grpc_call_start_batch(fk->call, &op, 1, (void *)TAG_OP, NULL) != GRPC_CALL_OK)
        return NULL;
    if (!fk_wait(fk, TAG_OP) || bb == NULL) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return NULL;
    }
    grpc_slice all;
    assert_int_equal(wire_read_all(bb, &all), 0);
    grpc_byte_buffer_destroy(bb);
    Events__V1__SubscribeRequest *req = events__v1__subscribe_request__unpack(
        NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    assert_non_null(req);
    pthread_mutex_lock(&fk->lock);
    struct seen_req *s = &fk->seen[fk->nseen < 511 ? fk->nseen++ : 511];
    memset(s, 0, sizeof(*s));
    s->call = fk->calls;
    if (req->op_case == EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD) {
        s->id = req->add->id;
        snprintf(s->topic, sizeof(s->topic), "%s", req->add->request->topic);
        snprintf(s->cursor, sizeof(s->cursor), "%s", req->add->request->cursor);
        s->snapshot = req->add->request->snapshot;
    } else {
        s->remove = true;
        s->id = req->remove->id;
    }
    pthread_mutex_unlock(&fk->lock);
    return req;
}

/* Receives an add and returns its id (the test fails on anything else). */
static uint32_t fk_recv_add(struct fake *fk)
{
    Events__V1__SubscribeRequest *req = fk_recv(fk);
    assert_non_null(req);
    assert_int_equal(req->op_case, EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD);
    uint32_t id = req->add->id;
    events__v1__subscribe_request__free_unpacked(req, NULL);
    return id;
}

static bool fk_send(struct fake *fk, const Events__V1__SubscribeResponse *resp)
{
    size_t len = events__v1__subscribe_response__get_packed_size(resp);
    grpc_slice sl = grpc_slice_malloc(len);
    events__v1__subscribe_response__pack(resp, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    bool ok = grpc_call_start_batch(fk->call, &op, 1, (void *)TAG_OP, NULL) == GRPC_CALL_OK &&
              fk_wait(fk, TAG_OP);
    grpc_byte_buffer_destroy(bb);
    return ok;
}

static void fk_status(struct fake *fk, grpc_status_code code, const char *msg)
{
    grpc_slice details = grpc_slice_from_copied_string(msg);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = code;
    op.data.send_status_from_server.status_details = &details;
    if (grpc_call_start_batch(fk->call, &op, 1, (void *)TAG_OP, NULL) == GRPC_CALL_OK)
        fk_wait(fk, TAG_OP);
    grpc_slice_unref(details);
    fk->status_sent = true;
}

/* Reads until the client goes away (a cancel or the watchdog's). */
static void fk_until_gone(struct fake *fk)
{
    Events__V1__SubscribeRequest *req;
    while ((req = fk_recv(fk)) != NULL)
        events__v1__subscribe_request__free_unpacked(req, NULL);
}

/* A response under construction. */
struct resp {
    Events__V1__SubscribeResponse r;
    Events__V1__Delivery d[64];
    Events__V1__Delivery *dp[64];
    Events__V1__WatchEvent ev[64];
    Events__V1__Data data[64];
    Events__V1__Heartbeat hb[64];
    Events__V1__SubscriptionEnd end[64];
    uint32_t ids[64][8];
    char cursor[64][48];
};

static void resp_init(struct resp *r)
{
    memset(r, 0, sizeof(*r));
    events__v1__subscribe_response__init(&r->r);
    r->r.deliveries = r->dp;
}

static Events__V1__Delivery *resp_add(struct resp *r, const uint32_t *ids, size_t n)
{
    size_t i = r->r.n_deliveries++;
    assert_true(i < 64 && n <= 8);
    events__v1__delivery__init(&r->d[i]);
    memcpy(r->ids[i], ids, n * sizeof(*ids));
    r->d[i].ids = r->ids[i];
    r->d[i].n_ids = n;
    r->dp[i] = &r->d[i];
    return &r->d[i];
}

/* A Data event of topic at seq, for the n ids. */
static void resp_data(struct resp *r, const char *topic, uint64_t seq, const uint32_t *ids,
                      size_t n)
{
    Events__V1__Delivery *d = resp_add(r, ids, n);
    size_t i = r->r.n_deliveries - 1;
    events__v1__watch_event__init(&r->ev[i]);
    events__v1__data__init(&r->data[i]);
    r->data[i].kind = "trade";
    r->data[i].key = (char *)topic;
    r->data[i].seq = seq;
    make_cursor(r->cursor[i], sizeof(r->cursor[i]), topic, seq);
    r->ev[i].cursor = r->cursor[i];
    r->ev[i].payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA;
    r->ev[i].data = &r->data[i];
    d->payload_case = EVENTS__V1__DELIVERY__PAYLOAD_EVENT;
    d->event = &r->ev[i];
}

static void resp_end(struct resp *r, uint32_t id, grpc_status_code code, const char *msg,
                     const char *cursor, const char *earliest)
{
    Events__V1__Delivery *d = resp_add(r, &id, 1);
    size_t i = r->r.n_deliveries - 1;
    events__v1__subscription_end__init(&r->end[i]);
    r->end[i].code = code;
    r->end[i].message = (char *)msg;
    r->end[i].cursor = (char *)(cursor ? cursor : "");
    r->end[i].earliest_cursor = (char *)(earliest ? earliest : "");
    d->payload_case = EVENTS__V1__DELIVERY__PAYLOAD_END;
    d->end = &r->end[i];
}

static void *fake_main(void *arg)
{
    struct fake *fk = arg;
    for (;;) {
        grpc_call_details details;
        grpc_metadata_array md;
        grpc_call_details_init(&details);
        grpc_metadata_array_init(&md);
        fk->call = NULL;
        if (grpc_server_request_call(fk->server, &fk->call, &details, &md, fk->cq, fk->cq,
                                     (void *)TAG_NEW) != GRPC_CALL_OK)
            break;
        bool ok = fk_wait(fk, TAG_NEW);
        grpc_call_details_destroy(&details);
        grpc_metadata_array_destroy(&md);
        if (!ok)
            break;
        fk->closed = false;
        fk->status_sent = false;
        grpc_op ops[2];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[1].data.recv_close_on_server.cancelled = &fk->cancelled;
        /* The close completes at the end of the call, under TAG_CLOSE. */
        grpc_call_start_batch(fk->call, &ops[1], 1, (void *)TAG_CLOSE, NULL);
        if (grpc_call_start_batch(fk->call, ops, 1, (void *)TAG_OP, NULL) == GRPC_CALL_OK)
            fk_wait(fk, TAG_OP);
        fk->script(fk, fk->calls);
        if (!fk->status_sent)
            fk_status(fk, GRPC_STATUS_UNAVAILABLE, "fake: script over");
        if (!fk->closed)
            fk_wait(fk, TAG_CLOSE);
        grpc_call_unref(fk->call);
        fk->call = NULL;
        fk->calls++;
    }
    if (fk->call)
        grpc_call_unref(fk->call);
    return NULL;
}

static void fake_start(struct fake *fk, script_fn script, void *ctx)
{
    memset(fk, 0, sizeof(*fk));
    fk->script = script;
    fk->ctx = ctx;
    pthread_mutex_init(&fk->lock, NULL);
    grpc_init();
    fk->server = grpc_server_create(NULL, NULL);
    fk->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(fk->server, fk->cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(fk->server, "127.0.0.1:0", creds);
    grpc_server_credentials_release(creds);
    assert_true(port > 0);
    snprintf(fk->target, sizeof(fk->target), "127.0.0.1:%d", port);
    grpc_server_start(fk->server);
    assert_int_equal(pthread_create(&fk->thread, NULL, fake_main, fk), 0);
}

static void fake_stop(struct fake *fk)
{
    grpc_server_shutdown_and_notify(fk->server, fk->cq, (void *)TAG_OP);
    grpc_server_cancel_all_calls(fk->server);
    pthread_join(fk->thread, NULL);
    grpc_server_destroy(fk->server);
    grpc_completion_queue_shutdown(fk->cq);
    while (grpc_completion_queue_next(fk->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(fk->cq);
    pthread_mutex_destroy(&fk->lock);
    fk->stopped = true;
    grpc_shutdown();
}

/* The adds of call `call` (in order), copied out. */
static int seen_adds(struct fake *fk, int call, struct seen_req *out, int max)
{
    int n = 0;
    /* after fake_stop the server thread is gone: nothing to lock against */
    if (!fk->stopped)
        pthread_mutex_lock(&fk->lock);
    for (int i = 0; i < fk->nseen && n < max; i++)
        if (fk->seen[i].call == call && !fk->seen[i].remove)
            out[n++] = fk->seen[i];
    if (!fk->stopped)
        pthread_mutex_unlock(&fk->lock);
    return n;
}

/* ---- the client side ------------------------------------------------------------ */

/* What one subscription's handlers saw. */
struct rec {
    const char *topic;
    uint32_t id;
    uint64_t seqs[4096];
    size_t n;
    int ends;
    grpc_status_code end_code;
    char end_message[200];
    char end_cursor[64];
    char end_earliest[64];
    tickfan_mux_t *mux;
    /* The test's own stop rule: cancel once every rec has `want` seqs. */
    struct rec **all;
    size_t nall;
    uint64_t want;
    uint64_t refuse_seq; /* on_event returns -EIO once for this seq (0: never) */
    bool remove_after_first;
};

static bool all_done(struct rec *r)
{
    for (size_t i = 0; i < r->nall; i++)
        if (r->all[i]->n < r->all[i]->want)
            return false;
    return true;
}

static int rec_event(uint32_t id, const Events__V1__WatchEvent *ev, void *arg)
{
    struct rec *r = arg;
    assert_int_equal(id, r->id);
    if (ev->payload_case != EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA)
        return 0;
    /* The delivery is for this subscription's topic, never another's. */
    assert_string_equal(ev->data->key, r->topic);
    if (r->refuse_seq != 0 && ev->data->seq == r->refuse_seq) {
        r->refuse_seq = 0;
        return -EIO;
    }
    assert_true(r->n < 4096);
    r->seqs[r->n++] = ev->data->seq;
    if (r->remove_after_first && r->n == 1)
        assert_int_equal(tickfan_mux_remove(r->mux, id), 0);
    if (r->want != 0 && all_done(r))
        tickfan_mux_cancel(r->mux);
    return 0;
}

static void rec_end(uint32_t id, const struct tickfan_mux_end *e, void *arg)
{
    struct rec *r = arg;
    assert_int_equal(id, r->id);
    r->ends++;
    r->end_code = e->code;
    snprintf(r->end_message, sizeof(r->end_message), "%s", e->message);
    snprintf(r->end_cursor, sizeof(r->end_cursor), "%s", e->cursor);
    snprintf(r->end_earliest, sizeof(r->end_earliest), "%s", e->earliest_cursor);
}

static void quiet_log(const char *line, void *arg)
{
    (*(int *)arg)++;
}

static int log_lines;

static tickfan_mux_t *new_mux(const char *target, int64_t heartbeat_timeout_ms)
{
    struct tickfan_mux_options o;
    tickfan_mux_t *m;
    tickfan_mux_options_init(&o);
    o.target = target;
    o.backoff_initial_ms = 1;
    o.backoff_max_ms = 20;
    o.heartbeat_timeout_ms = heartbeat_timeout_ms;
    o.log = quiet_log;
    o.log_arg = &log_lines;
    assert_int_equal(tickfan_mux_create(&m, &o), 0);
    return m;
}

/* tickfan_mux_run, cancelled after 10 s if it has not returned: a broken
 * mux fails its asserts instead of hanging the test. */
struct bounded {
    tickfan_mux_t *m;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

static void *bound_main(void *arg)
{
    struct bounded *b = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&b->lock);
    while (!b->done)
        if (pthread_cond_timedwait(&b->cond, &b->lock, &until) != 0)
            break;
    if (!b->done)
        tickfan_mux_cancel(b->m);
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

static int run_bounded(tickfan_mux_t *m)
{
    struct bounded b = {.m = m, .done = false};
    pthread_t th;
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);
    assert_int_equal(pthread_create(&th, NULL, bound_main, &b), 0);
    int rc = tickfan_mux_run(m);
    pthread_mutex_lock(&b.lock);
    b.done = true;
    pthread_cond_signal(&b.cond);
    pthread_mutex_unlock(&b.lock);
    pthread_join(th, NULL);
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);
    return rc;
}

static void add_rec(tickfan_mux_t *m, struct rec *r, const char *topic, const char *cursor_file)
{
    Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
    struct tickfan_mux_sub_options so = {0};
    req.topic = (char *)topic;
    so.request = &req;
    so.on_event = rec_event;
    so.on_end = rec_end;
    so.arg = r;
    so.cursor_file = cursor_file;
    r->topic = topic;
    r->mux = m;
    assert_int_equal(tickfan_mux_add(m, &so, &r->id), 0);
    assert_true(r->id != 0);
}

static void assert_seqs(const struct rec *r, uint64_t first, uint64_t last)
{
    assert_int_equal(r->n, last - first + 1);
    for (size_t i = 0; i < r->n; i++)
        assert_int_equal(r->seqs[i], first + i);
}

/* ---- tests ---------------------------------------------------------------------- */

static void options_and_adds_are_checked(void **state)
{
    struct tickfan_mux_options o;
    tickfan_mux_t *m = (tickfan_mux_t *)1;
    uint32_t id = 7;

    tickfan_mux_options_init(&o);
    o.log = quiet_log;
    o.log_arg = &log_lines;
    assert_true(o.resume);
    assert_int_equal(o.heartbeat_timeout_ms, 15000);
    assert_int_equal(tickfan_mux_create(&m, &o), -EINVAL); /* no target */
    assert_null(m);
    o.target = "127.0.0.1:1";
    o.backoff_initial_ms = 0;
    assert_int_equal(tickfan_mux_create(&m, &o), -EINVAL);
    o.backoff_initial_ms = 100;
    assert_int_equal(tickfan_mux_create(&m, &o), 0);

    Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
    struct tickfan_mux_sub_options so = {.request = &req, .on_event = rec_event};
    req.topic = "";
    assert_int_equal(tickfan_mux_add(m, &so, &id), -EINVAL);
    assert_int_equal(id, 0);
    req.topic = "sim";
    so.on_event = NULL;
    assert_int_equal(tickfan_mux_add(m, &so, &id), -EINVAL);
    assert_int_equal(tickfan_mux_remove(m, 1), -ENOENT);

    /* Ids are distinct, and a removed one is not live any more. */
    uint32_t a, b;
    so.on_event = rec_event;
    assert_int_equal(tickfan_mux_add(m, &so, &a), 0);
    assert_int_equal(tickfan_mux_add(m, &so, &b), 0);
    assert_true(a != 0 && b != 0 && a != b);
    assert_int_equal(tickfan_mux_remove(m, a), 0);
    assert_int_equal(tickfan_mux_remove(m, a), -ENOENT);
    tickfan_mux_destroy(m);
}

static void start_cursor_comes_from_the_subscriptions_own_file(void **state)
{
    char path[256], buf[64];
    tickfan_mux_t *m = new_mux("127.0.0.1:1", 0);
    struct rec a = {0}, b = {0};

    snprintf(path, sizeof(path), "%s/a.cursor", tmp_dir);
    assert_int_equal(tickfan_sub_cursor_file_write(path, "1-00000000000000ab-41"), 0);
    add_rec(m, &a, "sim", path);
    add_rec(m, &b, "fx", NULL);
    assert_int_equal(tickfan_mux_cursor(m, a.id, buf, sizeof(buf)), 21);
    assert_string_equal(buf, "1-00000000000000ab-41");
    assert_int_equal(tickfan_mux_cursor(m, b.id, buf, sizeof(buf)), 0);
    assert_int_equal(tickfan_mux_cursor(m, 999, buf, sizeof(buf)), -ENOENT);
    tickfan_mux_destroy(m);
}

/* Call 0: two adds, one response whose first delivery is for both. */
static void script_shared(struct fake *fk, int call_no)
{
    uint32_t x = fk_recv_add(fk);
    uint32_t y = fk_recv_add(fk);
    uint32_t both[2] = {x, y};
    struct resp r;
    resp_init(&r);
    resp_data(&r, "sim", 1, both, 2);
    resp_data(&r, "sim", 2, &y, 1);
    resp_data(&r, "sim", 3, both, 2);
    fk_send(fk, &r.r);
    fk_until_gone(fk);
}

static void a_delivery_for_several_ids_reaches_each_of_them(void **state)
{
    struct fake fk;
    struct rec a = {0}, b = {0};
    struct rec *all[] = {&a, &b};
    struct tickfan_mux_stats st;
    char buf[64], want[64];

    fake_start(&fk, script_shared, NULL);
    tickfan_mux_t *m = new_mux(fk.target, 0);
    add_rec(m, &a, "sim", NULL);
    add_rec(m, &b, "sim", NULL);
    a.all = b.all = all;
    a.nall = b.nall = 2;
    a.want = 2; /* 1 and 3 */
    b.want = 3; /* 1, 2 and 3 */
    assert_int_equal(run_bounded(m), 0);
    fake_stop(&fk);

    assert_int_equal(a.n, 2);
    assert_int_equal(a.seqs[0], 1);
    assert_int_equal(a.seqs[1], 3);
    assert_seqs(&b, 1, 3);
    /* Each cursor moved with its own events. */
    make_cursor(want, sizeof(want), "sim", 3);
    tickfan_mux_cursor(m, a.id, buf, sizeof(buf));
    assert_string_equal(buf, want);
    tickfan_mux_cursor(m, b.id, buf, sizeof(buf));
    assert_string_equal(buf, want);
    tickfan_mux_stats(m, &st);
    assert_int_equal(st.deliveries, 3);
    assert_int_equal(st.events, 5);
    assert_int_equal(st.streams, 1);
    assert_int_equal(st.adds_sent, 2);
    assert_int_equal(a.ends + b.ends, 0);
    tickfan_mux_destroy(m);
}

/* Call 0: events, then the stream breaks. Call 1: the re-adds are
 * recorded, then more events from where each cursor says. */
static void script_break_once(struct fake *fk, int call_no)
{
    uint32_t ids[2];
    for (int i = 0; i < 2; i++)
        ids[i] = fk_recv_add(fk);
    struct resp r;
    resp_init(&r);
    if (call_no == 0) {
        for (uint64_t s = 1; s <= 3; s++)
            resp_data(&r, "sim", s, &ids[0], 1);
        for (uint64_t s = 1; s <= 5; s++)
            resp_data(&r, "fx", s, &ids[1], 1);
        fk_send(fk, &r.r);
        fk_status(fk, GRPC_STATUS_UNAVAILABLE, "fake: connection lost");
        return;
    }
    struct seen_req adds[2];
    assert_int_equal(seen_adds(fk, call_no, adds, 2), 2);
    for (int i = 0; i < 2; i++) {
        const char *topic = adds[i].id == ids[0] ? "sim" : "fx";
        for (uint64_t s = cursor_seq(adds[i].cursor) + 1; s <= 8; s++)
            resp_data(&r, topic, s, &adds[i].id, 1);
    }
    fk_send(fk, &r.r);
    fk_until_gone(fk);
}

static void a_broken_stream_readds_every_subscription_from_its_own_cursor(void **state)
{
    struct fake fk;
    struct rec a = {0}, b = {0};
    struct rec *all[] = {&a, &b};
    struct tickfan_mux_stats st;
    struct seen_req adds[4];
    char want[64];

    fake_start(&fk, script_break_once, NULL);
    tickfan_mux_t *m = new_mux(fk.target, 0);
    add_rec(m, &a, "sim", NULL);
    add_rec(m, &b, "fx", NULL);
    a.all = b.all = all;
    a.nall = b.nall = 2;
    a.want = b.want = 8;
    assert_int_equal(run_bounded(m), 0);
    fake_stop(&fk);

    assert_int_equal(seen_adds(&fk, 0, adds, 4), 2);
    assert_string_equal(adds[0].cursor, "");
    assert_string_equal(adds[1].cursor, "");
    assert_int_equal(seen_adds(&fk, 1, adds, 4), 2);
    for (int i = 0; i < 2; i++) {
        bool is_a = adds[i].id == a.id;
        assert_true(is_a || adds[i].id == b.id);
        assert_string_equal(adds[i].topic, is_a ? "sim" : "fx");
        make_cursor(want, sizeof(want), is_a ? "sim" : "fx", is_a ? 3 : 5);
        assert_string_equal(adds[i].cursor, want);
    }
    assert_seqs(&a, 1, 8);
    assert_seqs(&b, 1, 8);
    tickfan_mux_stats(m, &st);
    assert_int_equal(st.streams, 2);
    assert_int_equal(st.resumes_broken, 1);
    tickfan_mux_destroy(m);
}

/* ---- the model: an honest server that breaks often ------------------------------ */

#define MODEL_EVENTS 60

struct model {
    const char *topics[3];
    int breaks; /* calls ended by the model */
};

struct model_sub {
    uint32_t id;
    int topic;
    uint64_t next; /* next seq to send */
};

/* Serves every added subscription from its cursor; one delivery per
 * (topic, seq) with every id at that place; breaks the stream after a few
 * events, alternating a status and an abrupt cancel. */
static void script_model(struct fake *fk, int call_no)
{
    struct model *md = fk->ctx;
    struct model_sub subs[3];
    int n = 0;
    for (; n < 3; n++) {
        Events__V1__SubscribeRequest *req = fk_recv(fk);
        if (req == NULL)
            return;
        assert_int_equal(req->op_case, EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD);
        subs[n].id = req->add->id;
        subs[n].topic = -1;
        for (int t = 0; t < 3; t++)
            if (md->topics[t] && strcmp(md->topics[t], req->add->request->topic) == 0)
                subs[n].topic = t;
        assert_true(subs[n].topic >= 0);
        subs[n].next = cursor_seq(req->add->request->cursor) + 1;
        events__v1__subscribe_request__free_unpacked(req, NULL);
    }
    /* A different number of events per call, in one or several messages. */
    int budget = 7 + (call_no * 5) % 11;
    for (;;) {
        struct resp r;
        resp_init(&r);
        for (int k = 0; k < 3 && budget > 0; k++) {
            int lo = -1;
            for (int i = 0; i < n; i++)
                if (subs[i].next <= MODEL_EVENTS &&
                    (lo < 0 || subs[i].next < subs[lo].next ||
                     (subs[i].next == subs[lo].next && subs[i].topic < subs[lo].topic)))
                    lo = i;
            if (lo < 0)
                break;
            uint32_t ids[3];
            size_t nid = 0;
            uint64_t seq = subs[lo].next;
            int topic = subs[lo].topic;
            for (int i = 0; i < n; i++)
                if (subs[i].topic == topic && subs[i].next == seq) {
                    ids[nid++] = subs[i].id;
                    subs[i].next++;
                }
            resp_data(&r, md->topics[topic], seq, ids, nid);
            budget--;
        }
        if (r.r.n_deliveries == 0)
            break;
        if (!fk_send(fk, &r.r))
            return;
        if (budget == 0) {
            md->breaks++;
            if (call_no % 2 == 0)
                fk_status(fk, GRPC_STATUS_UNAVAILABLE, "fake: draining");
            else
                grpc_call_cancel_with_status(fk->call, GRPC_STATUS_INTERNAL, "fake: reset", NULL);
            fk->status_sent = true;
            return;
        }
    }
    fk_until_gone(fk);
}

static void every_event_arrives_exactly_once_across_many_breaks(void **state)
{
    struct fake fk;
    struct model md = {.topics = {"sim", "fx", NULL}};
    struct rec a = {0}, b = {0}, c = {0};
    struct rec *all[] = {&a, &b, &c};
    struct tickfan_mux_stats st;

    fake_start(&fk, script_model, &md);
    tickfan_mux_t *m = new_mux(fk.target, 0);
    add_rec(m, &a, "sim", NULL);
    add_rec(m, &b, "fx", NULL);
    add_rec(m, &c, "sim", NULL); /* shares deliveries with a */
    for (int i = 0; i < 3; i++) {
        all[i]->all = all;
        all[i]->nall = 3;
        all[i]->want = MODEL_EVENTS;
    }
    b.refuse_seq = 17; /* the handler refuses one event: run stops */
    int rc = run_bounded(m);
    assert_int_equal(rc, -ECANCELED);
    uint32_t who = 0;
    assert_int_equal(tickfan_mux_handler_result(m, &who), -EIO);
    assert_int_equal(who, b.id);
    assert_int_equal(b.n, 16); /* the refused event did not count */
    /* Run again: everyone continues from their own cursor. */
    assert_int_equal(run_bounded(m), 0);
    fake_stop(&fk);

    assert_seqs(&a, 1, MODEL_EVENTS);
    assert_seqs(&b, 1, MODEL_EVENTS);
    assert_seqs(&c, 1, MODEL_EVENTS);
    tickfan_mux_stats(m, &st);
    assert_true(md.breaks >= 5);
    assert_true(st.resumes >= (uint64_t)md.breaks - 1);
    /* a and c were served shared deliveries: fewer deliveries than events. */
    assert_true(st.deliveries < st.events);
    assert_int_equal(st.events, 3 * MODEL_EVENTS);
    tickfan_mux_destroy(m);
}

/* Call 0: one subscription per end code. */
static void script_ends(struct fake *fk, int call_no)
{
    char ca[48];
    uint32_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = fk_recv_add(fk);
    struct resp r;
    resp_init(&r);
    resp_data(&r, "sim", 1, &ids[0], 1);
    make_cursor(ca, sizeof(ca), "sim", 1);
    resp_end(&r, ids[0], GRPC_STATUS_RESOURCE_EXHAUSTED, "slow consumer: too far behind", ca, NULL);
    resp_end(&r, ids[1], GRPC_STATUS_NOT_FOUND, "unknown topic 'nope'", NULL, NULL);
    resp_end(&r, ids[2], GRPC_STATUS_INVALID_ARGUMENT, "kinds[0] is empty", NULL, NULL);
    resp_end(&r, ids[3], GRPC_STATUS_OUT_OF_RANGE, "cursor older than retention", NULL,
             "1-00000000000000ab-500");
    fk_send(fk, &r.r);
    /* Only the slow consumer comes back, on this stream, from its cursor. */
    uint32_t again = fk_recv_add(fk);
    assert_int_equal(again, ids[0]);
    resp_init(&r);
    resp_data(&r, "sim", 2, &ids[0], 1);
    fk_send(fk, &r.r);
    fk_until_gone(fk);
}

static void subscription_ends_are_handled_by_their_code(void **state)
{
    struct fake fk;
    struct rec a = {0}, b = {0}, c = {0}, d = {0};
    struct rec *all[] = {&a};
    struct tickfan_mux_stats st;
    struct seen_req adds[8];
    char want[64];

    fake_start(&fk, script_ends, NULL);
    tickfan_mux_t *m = new_mux(fk.target, 0);
    add_rec(m, &a, "sim", NULL);
    add_rec(m, &b, "nope", NULL);
    add_rec(m, &c, "sim", NULL);
    add_rec(m, &d, "sim", NULL);
    a.all = all;
    a.nall = 1;
    a.want = 2;
    assert_int_equal(run_bounded(m), 0);
    fake_stop(&fk);

    assert_seqs(&a, 1, 2);
    assert_int_equal(a.ends, 0);
    assert_int_equal(b.ends, 1);
    assert_int_equal(b.end_code, GRPC_STATUS_NOT_FOUND);
    assert_non_null(strstr(b.end_message, "unknown topic"));
    assert_int_equal(c.ends, 1);
    assert_int_equal(c.end_code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(d.ends, 1);
    assert_int_equal(d.end_code, GRPC_STATUS_OUT_OF_RANGE);
    assert_string_equal(d.end_earliest, "1-00000000000000ab-500");
    /* The re-add of the slow consumer: same stream, its own cursor. */
    assert_int_equal(seen_adds(&fk, 0, adds, 8), 5);
    make_cursor(want, sizeof(want), "sim", 1);
    assert_int_equal(adds[4].id, a.id);
    assert_string_equal(adds[4].cursor, want);
    tickfan_mux_stats(m, &st);
    assert_int_equal(st.streams, 1);
    assert_int_equal(st.readds, 1);
    assert_int_equal(st.ends, 3);
    assert_int_equal(st.live, 1);
    assert_int_equal(tickfan_mux_cursor(m, b.id, NULL, 0), -ENOENT);
    tickfan_mux_destroy(m);
}

/* Call 0: an event each, then both told UNAVAILABLE, and the stream left
 * open. Call 1: the re-adds. */
static void script_drain(struct fake *fk, int call_no)
{
    uint32_t ids[2];
    for (int i = 0; i < 2; i++)
        ids[i] = fk_recv_add(fk);
    struct resp r;
    resp_init(&r);
    if (call_no == 0) {
        char c0[48], c1[48];
        resp_data(&r, "sim", 1, &ids[0], 1);
        resp_data(&r, "fx", 4, &ids[1], 1);
        make_cursor(c0, sizeof(c0), "sim", 1);
        make_cursor(c1, sizeof(c1), "fx", 4);
        resp_end(&r, ids[0], GRPC_STATUS_UNAVAILABLE, "server shutting down", c0, NULL);
        resp_end(&r, ids[1], GRPC_STATUS_UNAVAILABLE, "server shutting down", c1, NULL);
        fk_send(fk, &r.r);
        fk_until_gone(fk); /* the client leaves by itself */
        return;
    }
    resp_data(&r, "sim", 2, &ids[0], 1);
    resp_data(&r, "fx", 5, &ids[1], 1);
    fk_send(fk, &r.r);
    fk_until_gone(fk);
}

static void unavailable_ends_are_readded_on_a_new_stream(void **state)
{
    struct fake fk;
    struct rec a = {0}, b = {0};
    struct rec *all[] = {&a, &b};
    struct tickfan_mux_stats st;
    struct seen_req adds[4];
    char want[64];

    fake_start(&fk, script_drain, NULL);
    tickfan_mux_t *m = new_mux(fk.target, 0);
    add_rec(m, &a, "sim", NULL);
    add_rec(m, &b, "fx", NULL);
    a.all = b.all = all;
    a.nall = b.nall = 2;
    a.want = b.want = 2;
    assert_int_equal(run_bounded(m), 0);
    fake_stop(&fk);

    assert_int_equal(a.n, 2);
    assert_int_equal(a.seqs[1], 2);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.seqs[1], 5);
    assert_int_equal(a.ends + b.ends, 0);
    assert_int_equal(seen_adds(&fk, 0, adds, 4), 2); /* nothing re-added on the draining one */
    assert_int_equal(seen_adds(&fk, 1, adds, 4), 2);
    for (int i = 0; i < 2; i++) {
        bool is_a = adds[i].id == a.id;
        make_cursor(want, sizeof(want), is_a ? "sim" : "fx", is_a ? 1 : 4);
        assert_string_equal(adds[i].cursor, want);
    }
    tickfan_mux_stats(m, &st);
    assert_int_equal(st.streams, 2);
    assert_int_equal(st.resumes_reconnect, 1);
    tickfan_mux_destroy(m);
}

/* The handler removes after the first event; the server sends one more
 * before it sees the remove, then the end. */
static void script_remove(struct fake *fk, int call_no)
{
    uint32_t id = fk_recv_add(fk);
    struct resp r;
    resp_init(&r);
    resp_data(&r, "sim", 1, &id, 1);
    fk_send(fk, &r.r);
    Events__V1__SubscribeRequest *req = fk_recv(fk);
    assert_non_null(req);
    assert_int_equal(req->op_case, EVENTS__V1__SUBSCRIBE_REQUEST__OP_REMOVE);
    assert_int_equal(req->remove->id, id);
    events__v1__subscribe_request__free_unpacked(req, NULL);
    resp_init(&r);
    resp_data(&r, "sim", 2, &id, 1); /* already on its way: never shown */
    resp_end(&r, id, GRPC_STATUS_OK, "", NULL, NULL);
    fk_send(fk, &r.r);
    fk_until_gone(fk);
}

static void cancel_in_end(uint32_t id, const struct tickfan_mux_end *e, void *arg)
{
    rec_end(id, e, arg);
    tickfan_mux_cancel(((struct rec *)arg)->mux);
}

static void a_removed_subscription_sees_nothing_more_and_ends_ok(void **state)
{
    struct fake fk;
    struct rec a = {0};
    Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
    struct tickfan_mux_sub_options so = {0};
    char want[64];

    fake_start(&fk, script_remove, NULL);
    tickfan_mux_t *m = new_mux(fk.target, 0);
    req.topic = "sim";
    so.request = &req;
    so.on_event = rec_event;
    so.on_end = cancel_in_end;
    so.arg = &a;
    a.topic = "sim";
    a.mux = m;
    a.remove_after_first = true;
    assert_int_equal(tickfan_mux_add(m, &so, &a.id), 0);
    assert_int_equal(run_bounded(m), 0);
    fake_stop(&fk);

    assert_seqs(&a, 1, 1);
    assert_int_equal(a.ends, 1);
    assert_int_equal(a.end_code, GRPC_STATUS_OK);
    make_cursor(want, sizeof(want), "sim", 1);
    assert_string_equal(a.end_cursor, want);
    tickfan_mux_destroy(m);
}

/* Call 0 takes the add and sends nothing; call 1 serves. */
static void script_silent(struct fake *fk, int call_no)
{
    uint32_t id = fk_recv_add(fk);
    if (call_no == 0) {
        fk_until_gone(fk);
        return;
    }
    struct resp r;
    resp_init(&r);
    resp_data(&r, "sim", 1, &id, 1);
    fk_send(fk, &r.r);
    fk_until_gone(fk);
}

static void a_silent_stream_is_reopened_by_the_watchdog(void **state)
{
    struct fake fk;
    struct rec a = {0};
    struct rec *all[] = {&a};
    struct tickfan_mux_stats st;

    fake_start(&fk, script_silent, NULL);
    tickfan_mux_t *m = new_mux(fk.target, 300);
    add_rec(m, &a, "sim", NULL);
    a.all = all;
    a.nall = 1;
    a.want = 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(run_bounded(m), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fake_stop(&fk);

    assert_seqs(&a, 1, 1);
    tickfan_mux_stats(m, &st);
    assert_int_equal(st.streams, 2);
    assert_int_equal(st.resumes_watchdog, 1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(took >= 0.3);
    tickfan_mux_destroy(m);
}

static void script_too_many_streams(struct fake *fk, int call_no)
{
    fk_status(fk, GRPC_STATUS_RESOURCE_EXHAUSTED,
              "too many streams (max 1); retry later or elsewhere");
}

static void a_stream_refused_for_too_many_streams_is_not_resumed(void **state)
{
    struct fake fk;
    struct rec a = {0};
    struct tickfan_mux_stats st;
    grpc_status_code code;
    const char *details;

    fake_start(&fk, script_too_many_streams, NULL);
    tickfan_mux_t *m = new_mux(fk.target, 0);
    add_rec(m, &a, "sim", NULL);
    assert_int_equal(run_bounded(m), -EPIPE);
    fake_stop(&fk);
    assert_int_equal(tickfan_mux_status(m, &code, &details), 0);
    assert_int_equal(code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(details, "too many streams"));
    tickfan_mux_stats(m, &st);
    assert_int_equal(st.streams, 1);
    assert_int_equal(st.resumes, 0);
    assert_int_equal(a.ends, 0); /* the subscription stays: run again goes on */
    assert_int_equal(st.live, 1);
    tickfan_mux_destroy(m);
}

static void cursor_files_are_written_per_subscription(void **state)
{
    struct fake fk;
    struct rec a = {0}, b = {0};
    struct rec *all[] = {&a, &b};
    char pa[256], pb[256], want[64];
    char *got;

    snprintf(pa, sizeof(pa), "%s/sim.cursor", tmp_dir);
    snprintf(pb, sizeof(pb), "%s/fx.cursor", tmp_dir);
    fake_start(&fk, script_break_once, NULL);
    tickfan_mux_t *m = new_mux(fk.target, 0);
    add_rec(m, &a, "sim", pa);
    add_rec(m, &b, "fx", pb);
    a.all = b.all = all;
    a.nall = b.nall = 2;
    a.want = b.want = 8;
    assert_int_equal(run_bounded(m), 0);
    fake_stop(&fk);
    tickfan_mux_destroy(m);

    make_cursor(want, sizeof(want), "sim", 8);
    assert_int_equal(tickfan_sub_cursor_file_read(pa, &got), 0);
    assert_string_equal(got, want);
    free(got);
    make_cursor(want, sizeof(want), "fx", 8);
    assert_int_equal(tickfan_sub_cursor_file_read(pb, &got), 0);
    assert_string_equal(got, want);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(options_and_adds_are_checked),
        cmocka_unit_test(start_cursor_comes_from_the_subscriptions_own_file),
        cmocka_unit_test(a_delivery_for_several_ids_reaches_each_of_them),
        cmocka_unit_test(a_broken_stream_readds_every_subscription_from_its_own_cursor),
        cmocka_unit_test(every_event_arrives_exactly_once_across_many_breaks),
        cmocka_unit_test(subscription_ends_are_handled_by_their_code),
        cmocka_unit_test(unavailable_ends_are_readded_on_a_new_stream),
        cmocka_unit_test(a_removed_subscription_sees_nothing_more_and_ends_ok),
        cmocka_unit_test(a_silent_stream_is_reopened_by_the_watchdog),
        cmocka_unit_test(a_stream_refused_for_too_many_streams_is_not_resumed),
        cmocka_unit_test(cursor_files_are_written_per_subscription),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
