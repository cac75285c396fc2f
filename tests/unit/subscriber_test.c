/*
 * subscriber: options, the cursor file, and the resume loop against an
 * address where nothing listens (no server needed: the stream fails with
 * UNAVAILABLE every time) or a scripted gRPC server in this process that
 * ends each call with the status a test gives it. Resumes across real
 * breaks with a real server are the acceptance test's job
 * (tests/acceptance/).
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include <cmocka.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "subscriber.h"

/* A port bound but not listening: connecting to it is refused at once. */
static int closed_port_fd = -1;
static char closed_target[64];
static char tmp_dir[] = "/tmp/subscriber_test.XXXXXX";

static int setup(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    closed_port_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (closed_port_fd < 0 || bind(closed_port_fd, (struct sockaddr *)&a, len) != 0 ||
        getsockname(closed_port_fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    snprintf(closed_target, sizeof(closed_target), "127.0.0.1:%u", ntohs(a.sin_port));
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    close(closed_port_fd);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_event(const Events__V1__WatchEvent *ev, void *arg)
{
    (*(int *)arg)++;
    return 0;
}

static void quiet_log(const char *line, void *arg)
{
    (*(int *)arg)++;
}

struct fixture {
    Events__V1__WatchRequest req;
    struct tickfan_sub_options o;
    int events;
    int log_lines;
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    events__v1__watch_request__init(&f->req);
    f->req.topic = "sim";
    tickfan_sub_options_init(&f->o);
    f->o.target = closed_target;
    f->o.request = &f->req;
    f->o.on_event = count_event;
    f->o.arg = &f->events;
    f->o.log = quiet_log;
    f->o.log_arg = &f->log_lines;
    f->o.backoff_initial_ms = 1;
    f->o.backoff_max_ms = 5;
}

static void defaults_resume_with_a_15s_watchdog(void **state)
{
    struct tickfan_sub_options o;
    tickfan_sub_options_init(&o);
    assert_true(o.resume);
    assert_int_equal(o.heartbeat_timeout_ms, 15000);
    assert_int_equal(o.backoff_initial_ms, 100);
    assert_int_equal(o.backoff_max_ms, 5000);
    assert_int_equal(o.commit_interval_ms, 1000);
    assert_int_equal(o.max_retries, 0);
    assert_null(o.cursor_file);
}

static void create_rejects_missing_or_bad_options(void **state)
{
    struct fixture f;
    tickfan_sub_t *s = (tickfan_sub_t *)1;

    fixture_init(&f);
    f.o.target = NULL;
    assert_int_equal(tickfan_sub_create(&s, &f.o), -EINVAL);
    assert_null(s);

    fixture_init(&f);
    f.req.topic = "";
    assert_int_equal(tickfan_sub_create(&s, &f.o), -EINVAL);

    fixture_init(&f);
    f.o.on_event = NULL;
    assert_int_equal(tickfan_sub_create(&s, &f.o), -EINVAL);

    fixture_init(&f);
    f.o.backoff_initial_ms = 0;
    assert_int_equal(tickfan_sub_create(&s, &f.o), -EINVAL);

    fixture_init(&f);
    f.o.backoff_max_ms = 0; /* below initial */
    assert_int_equal(tickfan_sub_create(&s, &f.o), -EINVAL);

    fixture_init(&f);
    f.o.heartbeat_timeout_ms = -1;
    assert_int_equal(tickfan_sub_create(&s, &f.o), -EINVAL);
    assert_null(s);
    assert_true(f.log_lines > 0); /* the reason went to the caller's log */
}

static void path_in_tmp(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmp_dir, name);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void cursor_file_round_trips_and_leaves_no_temporary(void **state)
{
    char path[256], tmp[300];
    char *got = NULL;
    struct stat st;

    path_in_tmp(path, sizeof(path), "rt.cursor");
    assert_int_equal(tickfan_sub_cursor_file_read(path, &got), -ENOENT);
    assert_null(got);
    assert_int_equal(tickfan_sub_cursor_file_write(path, "1-00000000000000ab-42"), 0);
    assert_int_equal(tickfan_sub_cursor_file_write(path, "1-00000000000000ab-43"), 0);
    assert_int_equal(tickfan_sub_cursor_file_read(path, &got), 0);
    assert_string_equal(got, "1-00000000000000ab-43");
    free(got);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_equal(stat(tmp, &st), -1);
}

static void cursor_file_without_one_cursor_is_rejected(void **state)
{
    const char *bad[] = {"", "\n", "two words\n", "1-ab-1\n\n", "tab\there\n"};
    char path[256];
    char *got = NULL;

    path_in_tmp(path, sizeof(path), "bad.cursor");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(path, bad[i]);
        assert_int_equal(tickfan_sub_cursor_file_read(path, &got), -EINVAL);
        assert_null(got);
    }
    assert_int_equal(tickfan_sub_cursor_file_write(path, "has space"), -EINVAL);
    assert_int_equal(tickfan_sub_cursor_file_write(path, ""), -EINVAL);
}

static void start_cursor_comes_from_the_file_unless_the_request_has_one(void **state)
{
    struct fixture f;
    tickfan_sub_t *s;
    char path[256], buf[64];

    path_in_tmp(path, sizeof(path), "start.cursor");
    write_file(path, "1-00000000000000ab-7\n");
    fixture_init(&f);
    f.o.cursor_file = path;
    assert_int_equal(tickfan_sub_create(&s, &f.o), 0);
    assert_int_equal(tickfan_sub_cursor(s, buf, sizeof(buf)), strlen("1-00000000000000ab-7"));
    assert_string_equal(buf, "1-00000000000000ab-7");
    tickfan_sub_destroy(s);

    f.req.cursor = "1-00000000000000ab-9";
    assert_int_equal(tickfan_sub_create(&s, &f.o), 0);
    tickfan_sub_cursor(s, buf, sizeof(buf));
    assert_string_equal(buf, "1-00000000000000ab-9");
    tickfan_sub_destroy(s);

    write_file(path, "not a cursor\n");
    f.req.cursor = "";
    assert_int_equal(tickfan_sub_create(&s, &f.o), -EINVAL);
    assert_null(s);
}

static void cursor_copy_truncates_and_reports_full_length(void **state)
{
    struct fixture f;
    tickfan_sub_t *s;
    char buf[5];

    fixture_init(&f);
    assert_int_equal(tickfan_sub_create(&s, &f.o), 0);
    assert_int_equal(tickfan_sub_cursor(s, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    tickfan_sub_destroy(s);

    f.req.cursor = "1-00000000000000ab-9";
    assert_int_equal(tickfan_sub_create(&s, &f.o), 0);
    assert_int_equal(tickfan_sub_cursor(s, buf, sizeof(buf)), 20);
    assert_string_equal(buf, "1-00");
    assert_int_equal(tickfan_sub_cursor(s, NULL, 0), 20);
    tickfan_sub_destroy(s);
}

static void unreachable_server_is_retried_then_given_up_with_its_status(void **state)
{
    struct fixture f;
    tickfan_sub_t *s;
    struct tickfan_sub_stats st;
    grpc_status_code code;
    const char *details;

    fixture_init(&f);
    f.o.max_retries = 2;
    assert_int_equal(tickfan_sub_create(&s, &f.o), 0);
    assert_int_equal(tickfan_sub_run(s), -EPIPE);
    assert_int_equal(tickfan_sub_status(s, &code, &details), 0);
    assert_int_equal(code, GRPC_STATUS_UNAVAILABLE);
    assert_non_null(details);
    tickfan_sub_stats(s, &st);
    assert_int_equal(st.streams, 3);
    assert_int_equal(st.resumes, 2);
    assert_int_equal(st.resumes_transport, 2);
    assert_int_equal(st.resumes_by_status[GRPC_STATUS_UNAVAILABLE], 2);
    assert_int_equal(st.events, 0);
    assert_int_equal(f.events, 0);
    /* two "resuming" lines and one "giving up" */
    assert_int_equal(f.log_lines, 3);
    tickfan_sub_destroy(s);
}

static void without_resume_the_first_break_ends_run(void **state)
{
    struct fixture f;
    tickfan_sub_t *s;
    struct tickfan_sub_stats st;

    fixture_init(&f);
    f.o.resume = false;
    assert_int_equal(tickfan_sub_create(&s, &f.o), 0);
    assert_int_equal(tickfan_sub_run(s), -EPIPE);
    tickfan_sub_stats(s, &st);
    assert_int_equal(st.streams, 1);
    assert_int_equal(st.resumes, 0);
    assert_null(tickfan_sub_earliest_cursor(s));
    tickfan_sub_destroy(s);
}

static void cancel_before_run_opens_nothing(void **state)
{
    struct fixture f;
    tickfan_sub_t *s;
    struct tickfan_sub_stats st;

    fixture_init(&f);
    assert_int_equal(tickfan_sub_create(&s, &f.o), 0);
    tickfan_sub_cancel(s);
    assert_int_equal(tickfan_sub_run(s), 0);
    assert_int_equal(tickfan_sub_status(s, NULL, NULL), -ENOENT);
    tickfan_sub_stats(s, &st);
    assert_int_equal(st.streams, 0);
    tickfan_sub_destroy(s);
}

struct poke {
    tickfan_sub_t *s;
    int64_t cancelled_at;
    uint64_t streams_after_reconnect;
};

/* Waits (bounded) until run is in its first backoff. */
static void wait_backing_off(tickfan_sub_t *s)
{
    struct tickfan_sub_stats st;
    for (int i = 0; i < 500; i++) {
        tickfan_sub_stats(s, &st);
        if (st.resumes >= 1)
            return;
        usleep(10000);
    }
}

static void *reconnect_then_cancel(void *arg)
{
    struct poke *p = arg;
    struct tickfan_sub_stats st;

    wait_backing_off(p->s);
    tickfan_sub_reconnect(p->s);
    /* The reconnect cuts the one-minute backoff short: a second stream. */
    for (int i = 0; i < 100; i++) {
        tickfan_sub_stats(p->s, &st);
        if (st.streams >= 2)
            break;
        usleep(10000);
    }
    p->streams_after_reconnect = st.streams;
    wait_backing_off(p->s);
    p->cancelled_at = mono_ms();
    tickfan_sub_cancel(p->s);
    return NULL;
}

static void cancel_and_reconnect_from_another_thread_act_within_a_second(void **state)
{
    struct fixture f;
    struct poke p = {0};
    pthread_t th;

    fixture_init(&f);
    f.o.backoff_initial_ms = 60000;
    f.o.backoff_max_ms = 60000;
    assert_int_equal(tickfan_sub_create(&p.s, &f.o), 0);
    assert_int_equal(pthread_create(&th, NULL, reconnect_then_cancel, &p), 0);
    int rc = tickfan_sub_run(p.s);
    int64_t returned_at = mono_ms();
    pthread_join(th, NULL);
    assert_int_equal(rc, 0);
    assert_true(p.streams_after_reconnect >= 2);
    assert_true(returned_at - p.cancelled_at < 1000);
    tickfan_sub_destroy(p.s);
}

/* ---- a scripted server ---------------------------------------------------- */

/* What the n-th call gets: a heartbeat first or not, then this status. */
struct fake_reply {
    bool heartbeat;
    grpc_status_code code;
    const char *details;
    const char *trailer; /* "tickfan-cursor" value, or NULL */
};

struct fake_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    char target[64];
    const struct fake_reply *replies;
    size_t nreplies;
    size_t calls; /* calls answered, read after the join */
};

enum { FAKE_NEW = 1, FAKE_DONE, FAKE_SHUTDOWN };

static void *fake_main(void *arg)
{
    struct fake_server *fs = arg;
    grpc_call *call = NULL;
    grpc_call_details details;
    grpc_metadata_array md;
    int cancelled;
    grpc_slice status_details = grpc_empty_slice();
    grpc_byte_buffer *bb = NULL;
    grpc_metadata trailer;
    grpc_call_details_init(&details);
    grpc_metadata_array_init(&md);
    grpc_server_request_call(fs->server, &call, &details, &md, fs->cq, fs->cq,
                             (void *)(intptr_t)FAKE_NEW);
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(fs->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        intptr_t tag = (intptr_t)ev.tag;
        if (ev.type != GRPC_OP_COMPLETE || tag == FAKE_SHUTDOWN)
            break;
        if (tag == FAKE_NEW && ev.success) {
            const struct fake_reply *r =
                &fs->replies[fs->calls < fs->nreplies ? fs->calls : fs->nreplies - 1];
            grpc_op ops[4];
            size_t n = 0;
            memset(ops, 0, sizeof(ops));
            ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
            if (r->heartbeat) {
                Events__V1__WatchEvent we = EVENTS__V1__WATCH_EVENT__INIT;
                Events__V1__Heartbeat hb = EVENTS__V1__HEARTBEAT__INIT;
                uint8_t buf[128];
                we.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT;
                we.heartbeat = &hb;
                we.cursor = "1-00000000000000ab-7";
                grpc_slice sl = grpc_slice_from_copied_buffer(
                    (const char *)buf, events__v1__watch_event__pack(&we, buf));
                bb = grpc_raw_byte_buffer_create(&sl, 1);
                grpc_slice_unref(sl);
                ops[n].op = GRPC_OP_SEND_MESSAGE;
                ops[n++].data.send_message.send_message = bb;
            }
            status_details = grpc_slice_from_static_string(r->details);
            ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[n].data.send_status_from_server.status = r->code;
            ops[n].data.send_status_from_server.status_details = &status_details;
            if (r->trailer) {
                trailer.key = grpc_slice_from_static_string("tickfan-cursor");
                trailer.value = grpc_slice_from_static_string(r->trailer);
                ops[n].data.send_status_from_server.trailing_metadata_count = 1;
                ops[n].data.send_status_from_server.trailing_metadata = &trailer;
            }
            n++;
            ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
            ops[n++].data.recv_close_on_server.cancelled = &cancelled;
            fs->calls++;
            if (grpc_call_start_batch(call, ops, n, (void *)(intptr_t)FAKE_DONE, NULL) ==
                GRPC_CALL_OK)
                continue;
        }
        /* FAKE_DONE, or a call that could not be answered: the next one */
        if (bb)
            grpc_byte_buffer_destroy(bb);
        bb = NULL;
        if (call)
            grpc_call_unref(call);
        call = NULL;
        grpc_call_details_destroy(&details);
        grpc_metadata_array_destroy(&md);
        grpc_call_details_init(&details);
        grpc_metadata_array_init(&md);
        if (grpc_server_request_call(fs->server, &call, &details, &md, fs->cq, fs->cq,
                                     (void *)(intptr_t)FAKE_NEW) != GRPC_CALL_OK)
            break;
    }
    if (bb)
        grpc_byte_buffer_destroy(bb);
    if (call)
        grpc_call_unref(call);
    grpc_call_details_destroy(&details);
    grpc_metadata_array_destroy(&md);
    return NULL;
}

static void fake_start(struct fake_server *fs, const struct fake_reply *replies, size_t n)
{
    memset(fs, 0, sizeof(*fs));
    fs->replies = replies;
    fs->nreplies = n;
    grpc_init();
    fs->server = grpc_server_create(NULL, NULL);
    fs->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(fs->server, fs->cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(fs->server, "127.0.0.1:0", creds);
    grpc_server_credentials_release(creds);
    assert_true(port > 0);
    snprintf(fs->target, sizeof(fs->target), "127.0.0.1:%d", port);
    grpc_server_start(fs->server);
    assert_int_equal(pthread_create(&fs->thread, NULL, fake_main, fs), 0);
}

static void fake_stop(struct fake_server *fs)
{
    grpc_server_shutdown_and_notify(fs->server, fs->cq, (void *)(intptr_t)FAKE_SHUTDOWN);
    grpc_server_cancel_all_calls(fs->server);
    pthread_join(fs->thread, NULL);
    grpc_server_destroy(fs->server);
    grpc_completion_queue_shutdown(fs->cq);
    while (grpc_completion_queue_next(fs->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(fs->cq);
    grpc_shutdown();
}

/* gRPC 1.51's text when another stream on the connection sent more metadata
 * than the server takes: the transport closes the connection, and every
 * stream on it ends with RESOURCE_EXHAUSTED and this, without our trailer
 * (tests/integration/test_metadata_limits.py records it). */
#define TRANSPORT_LIMIT "received initial metadata size exceeds limit"

/* Runs a subscriber against the fake server's replies; returns what
 * tickfan_sub_run returned, with its stats, status and events. */
struct run_result {
    int rc;
    unsigned calls;
    struct tickfan_sub_stats st;
    grpc_status_code code;
    char details[200];
    int events;
};

static void run_against(const struct fake_reply *replies, size_t n, struct run_result *r)
{
    struct fake_server fs;
    struct fixture f;
    tickfan_sub_t *s;
    const char *details = NULL;

    fake_start(&fs, replies, n);
    fixture_init(&f);
    f.o.target = fs.target;
    assert_int_equal(tickfan_sub_create(&s, &f.o), 0);
    r->rc = tickfan_sub_run(s);
    fake_stop(&fs);
    r->calls = fs.calls;
    assert_int_equal(tickfan_sub_status(s, &r->code, &details), 0);
    snprintf(r->details, sizeof(r->details), "%s", details ? details : "");
    tickfan_sub_stats(s, &r->st);
    r->events = f.events;
    tickfan_sub_destroy(s);
}

static void resource_exhausted_from_the_transport_is_resumed(void **state)
{
    static const struct fake_reply replies[] = {
        {false, GRPC_STATUS_RESOURCE_EXHAUSTED, TRANSPORT_LIMIT, NULL},
        {true, GRPC_STATUS_OK, "", NULL},
    };
    struct run_result r;
    run_against(replies, 2, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.code, GRPC_STATUS_OK);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.st.streams, 2);
    assert_int_equal(r.st.resumes_transport, 1);
    assert_int_equal(r.st.resumes_by_status[GRPC_STATUS_RESOURCE_EXHAUSTED], 1);
    assert_int_equal(r.events, 1);
}

static void resource_exhausted_from_the_server_without_a_cursor_stops(void **state)
{
    static const struct fake_reply replies[] = {
        {false, GRPC_STATUS_RESOURCE_EXHAUSTED,
         "too many streams (max 2); retry later or elsewhere", NULL},
        {true, GRPC_STATUS_OK, "", NULL},
    };
    struct run_result r;
    run_against(replies, 2, &r);
    assert_int_equal(r.rc, -EPIPE);
    assert_int_equal(r.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(r.details, "too many streams"));
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.st.streams, 1);
    assert_int_equal(r.st.resumes, 0);
}

static void resource_exhausted_with_a_cursor_is_resumed_as_the_servers(void **state)
{
    static const struct fake_reply replies[] = {
        {true, GRPC_STATUS_RESOURCE_EXHAUSTED, "slow consumer: resume from cursor",
         "1-00000000000000ab-7"},
        {true, GRPC_STATUS_OK, "", NULL},
    };
    struct run_result r;
    run_against(replies, 2, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.st.streams, 2);
    assert_int_equal(r.st.resumes_server, 1);
    assert_int_equal(r.st.resumes_transport, 0);
    assert_int_equal(r.events, 2);
}

/* A stream that had stopped reading is disconnected by a cancel with the
 * status, which carries no trailing metadata: the message alone says it is
 * a slow consumer's, and the subscriber resumes from its own cursor. */
static void a_slow_consumer_disconnect_without_a_trailer_is_resumed(void **state)
{
    static const struct fake_reply replies[] = {
        {true, GRPC_STATUS_RESOURCE_EXHAUSTED,
         "slow consumer: 2003 events behind the head of topic 'sim', over its lag budget of "
         "2000 events; resume from cursor 1-00000000000000ab-7",
         NULL},
        {true, GRPC_STATUS_OK, "", NULL},
    };
    struct run_result r;
    run_against(replies, 2, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.st.streams, 2);
    assert_int_equal(r.st.resumes_server, 1);
    assert_int_equal(r.st.resumes_by_status[GRPC_STATUS_RESOURCE_EXHAUSTED], 1);
    assert_int_equal(r.events, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_resume_with_a_15s_watchdog),
        cmocka_unit_test(create_rejects_missing_or_bad_options),
        cmocka_unit_test(cursor_file_round_trips_and_leaves_no_temporary),
        cmocka_unit_test(cursor_file_without_one_cursor_is_rejected),
        cmocka_unit_test(start_cursor_comes_from_the_file_unless_the_request_has_one),
        cmocka_unit_test(cursor_copy_truncates_and_reports_full_length),
        cmocka_unit_test(unreachable_server_is_retried_then_given_up_with_its_status),
        cmocka_unit_test(without_resume_the_first_break_ends_run),
        cmocka_unit_test(cancel_before_run_opens_nothing),
        cmocka_unit_test(cancel_and_reconnect_from_another_thread_act_within_a_second),
        cmocka_unit_test(resource_exhausted_from_the_transport_is_resumed),
        cmocka_unit_test(resource_exhausted_from_the_server_without_a_cursor_stops),
        cmocka_unit_test(resource_exhausted_with_a_cursor_is_resumed_as_the_servers),
        cmocka_unit_test(a_slow_consumer_disconnect_without_a_trailer_is_resumed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
