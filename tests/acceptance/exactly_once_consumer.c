/*
 * exactly_once_consumer: the consumer of the exactly-once acceptance test
 * (run_exactly_once.py drives it).
 *
 * Subscribes through the subscriber library and appends "SEQ KIND\n" to
 * --out for every Data event it processes, with write(2) (so a line is in
 * the kernel before the handler returns: a kill of this process loses
 * nothing that was processed). Stops once it has processed through seq
 * --through: the Data event with that seq, or (with a filter that hides it)
 * the first event whose position is past it. Any Gap fails the run: the
 * test allows no loss, told or not.
 *
 * With --open-end the end is not known at the start: the consumer runs
 * until SIGUSR2, then stops at the first position past both --through and
 * everything it has seen, so the feed's pace never races the test's breaks.
 * The stats line names the end it chose ("through").
 *
 * Signals: SIGUSR1 asks the subscriber to reconnect (the "client cancels
 * the stream" break); SIGUSR2 ends an --open-end run; SIGINT/SIGTERM
 * cancel. At the end one JSON line of counters goes to stdout. Exit 0 when
 * the end was reached, 1 otherwise.
 *
 * Threads: the main thread runs the subscription; gRPC's threads may take a
 * signal, so the handlers only touch atomics.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "subscriber.h"

struct consumer {
    tickfan_sub_t *sub;
    int out_fd;
    uint64_t through;  /* the end; UINT64_MAX until SIGUSR2 with --open-end */
    uint64_t at_least; /* --through */
    uint64_t seen;     /* the furthest position of any event */
    uint64_t written;
    uint64_t last_seq;
    bool reached;
    const char *failure;
};

static _Atomic(tickfan_sub_t *) signal_sub;
static atomic_int in_handler;
static atomic_bool end_asked;

static void on_signal(int signo)
{
    atomic_fetch_add(&in_handler, 1);
    if (signo == SIGUSR2) {
        atomic_store(&end_asked, true);
        atomic_fetch_sub(&in_handler, 1);
        return;
    }
    tickfan_sub_t *s = atomic_load(&signal_sub);
    if (s != NULL) {
        if (signo == SIGUSR1)
            tickfan_sub_reconnect(s);
        else
            tickfan_sub_cancel(s);
    }
    atomic_fetch_sub(&in_handler, 1);
}

/*
 * The position a cursor names. Cursors are opaque to clients; a test may
 * look inside ("1-<epoch>-<seq>") to know when a filtered stream has moved
 * past --through. Returns 0 when it cannot tell.
 */
static uint64_t cursor_seq(const char *cursor)
{
    const char *dash = cursor ? strrchr(cursor, '-') : NULL;
    return dash ? strtoull(dash + 1, NULL, 10) : 0;
}

static int write_line(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int on_event(const Events__V1__WatchEvent *ev, void *arg)
{
    struct consumer *c = arg;
    uint64_t pos = ev->payload_case == EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA
                       ? ev->data->seq
                       : cursor_seq(ev->cursor);

    if (pos > c->seen)
        c->seen = pos;
    /* The end: past everything seen so far, so nothing processed lies beyond it. */
    if (c->through == UINT64_MAX && atomic_load(&end_asked))
        c->through = c->seen + 1 > c->at_least ? c->seen + 1 : c->at_least;
    switch (ev->payload_case) {
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA: {
        uint64_t seq = ev->data->seq;
        if (seq > c->through)
            break;
        if (seq <= c->last_seq) {
            c->failure = "a Data event at or before the previous one";
            return -EPROTO;
        }
        char line[160];
        int n = snprintf(line, sizeof(line), "%" PRIu64 " %s\n", seq,
                         ev->data->kind ? ev->data->kind : "");
        int rc = write_line(c->out_fd, line, (size_t)n);
        if (rc < 0) {
            c->failure = "cannot write --out";
            return rc;
        }
        c->last_seq = seq;
        c->written++;
        break;
    }
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP:
        c->failure = "a Gap event";
        return -EPROTO;
    default:
        break;
    }
    if (pos >= c->through) {
        c->reached = true;
        tickfan_sub_cancel(c->sub);
    }
    return 0;
}

static void usage(void)
{
    fputs("usage: exactly_once_consumer --server ADDR --through N --out FILE\n"
          "           [--open-end] [--topic T] [--kinds K,...] [--heartbeat-timeout-ms MS]\n"
          "           [--backoff-initial-ms MS] [--backoff-max-ms MS] [--healthy-ms MS]\n",
          stderr);
}

static int64_t num(const char *v)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*end != '\0' || n < 0) {
        fprintf(stderr, "exactly_once_consumer: '%s' is not a number\n", v);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
    struct tickfan_sub_options so;
    struct consumer c = {.out_fd = -1};
    const char *out = NULL;
    bool open_end = false;
    char *kinds[16];
    char *kinds_buf = NULL;
    struct sigaction sa;

    /* Never outlive the test that started us. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    tickfan_sub_options_init(&so);
    req.topic = "sim";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--open-end") == 0) {
            open_end = true;
            continue;
        }
        if (v == NULL) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(a, "--server") == 0)
            so.target = v;
        else if (strcmp(a, "--topic") == 0)
            req.topic = (char *)v;
        else if (strcmp(a, "--through") == 0)
            c.through = (uint64_t)num(v);
        else if (strcmp(a, "--out") == 0)
            out = v;
        else if (strcmp(a, "--heartbeat-timeout-ms") == 0)
            so.heartbeat_timeout_ms = num(v);
        else if (strcmp(a, "--backoff-initial-ms") == 0)
            so.backoff_initial_ms = num(v);
        else if (strcmp(a, "--backoff-max-ms") == 0)
            so.backoff_max_ms = num(v);
        else if (strcmp(a, "--healthy-ms") == 0)
            so.healthy_ms = num(v);
        else if (strcmp(a, "--kinds") == 0) {
            free(kinds_buf);
            kinds_buf = strdup(v);
            req.n_kinds = 0;
            for (char *save, *k = strtok_r(kinds_buf, ",", &save); k && req.n_kinds < 16;
                 k = strtok_r(NULL, ",", &save))
                kinds[req.n_kinds++] = k;
            req.kinds = kinds;
        } else {
            usage();
            return 2;
        }
    }
    if (so.target == NULL || out == NULL || c.through == 0) {
        usage();
        return 2;
    }
    c.at_least = c.through;
    if (open_end)
        c.through = UINT64_MAX;
    /* Slow consumers are disconnected with their cursor, never skipped. */
    req.overflow = EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT;

    c.out_fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (c.out_fd < 0) {
        fprintf(stderr, "exactly_once_consumer: %s: %s\n", out, strerror(errno));
        return 1;
    }
    so.request = &req;
    so.on_event = on_event;
    so.arg = &c;
    int rc = tickfan_sub_create(&c.sub, &so);
    if (rc < 0) {
        fprintf(stderr, "exactly_once_consumer: %s\n", strerror(-rc));
        return 1;
    }

    atomic_store(&signal_sub, c.sub);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* The orchestrator waits for this line before it breaks anything. */
    printf("{\"ready\":true}\n");
    fflush(stdout);

    rc = tickfan_sub_run(c.sub);

    atomic_store(&signal_sub, NULL);
    while (atomic_load(&in_handler) != 0)
        ;
    struct tickfan_sub_stats st;
    char cursor[128];
    tickfan_sub_stats(c.sub, &st);
    tickfan_sub_cursor(c.sub, cursor, sizeof(cursor));
    printf("{\"reached\":%s,\"run_rc\":%d,\"failure\":\"%s\",\"written\":%" PRIu64
           ",\"last_seq\":%" PRIu64 ",\"events\":%" PRIu64 ",\"data_events\":%" PRIu64
           ",\"streams\":%" PRIu64 ",\"resumes\":%" PRIu64 ",\"server\":%" PRIu64
           ",\"transport\":%" PRIu64 ",\"watchdog\":%" PRIu64 ",\"reconnect\":%" PRIu64
           ",\"unavailable\":%" PRIu64 ",\"internal\":%" PRIu64 ",\"cursor\":\"%s\""
           ",\"through\":%" PRIu64 "}\n",
           c.reached ? "true" : "false", rc, c.failure ? c.failure : "", c.written, c.last_seq,
           st.events, st.data_events, st.streams, st.resumes, st.resumes_server,
           st.resumes_transport, st.resumes_watchdog, st.resumes_reconnect,
           st.resumes_by_status[GRPC_STATUS_UNAVAILABLE],
           st.resumes_by_status[GRPC_STATUS_INTERNAL], cursor, c.through);
    fflush(stdout);
    tickfan_sub_destroy(c.sub);
    close(c.out_fd);
    free(kinds_buf);
    return c.reached && rc == 0 ? 0 : 1;
}
