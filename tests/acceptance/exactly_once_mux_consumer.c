/*
 * exactly_once_mux_consumer: the consumer of the exactly-once acceptance
 * test over Subscribe (run_exactly_once.py --subscribe N drives it).
 *
 * N subscriptions to one topic over one Subscribe stream, through the
 * multiplexed subscriber (muxsub.h), each with the same request and each
 * resumed by the mux from its own cursor. For every Data event a
 * subscription processes it appends "INDEX SEQ KIND\n" to --out (INDEX is
 * the subscription's number, 0..N-1). A subscription is through once it
 * has processed seq --through (or, filtered, an event past it); the
 * consumer stops when every one is. Any Gap, any Data at or before the
 * subscription's previous one, and any end of a subscription other than
 * by its removal fail the run.
 *
 * Lines are buffered and written with write(2) at least every 20 ms and
 * whenever 64 KiB are pending, and before the consumer exits: N lines per
 * event are too many for a write each. The test never kills the consumer
 * (it breaks the stream, the proxy and the server), and the mux's cursors
 * live in this process's memory as well, so the lines and the cursors stay
 * together.
 *
 * With --open-end the end is not known at the start: the consumer runs
 * until SIGUSR2, then every subscription stops at the first position past
 * both --through and everything any of them has seen, so the feed's pace
 * never races the test's breaks. The stats line names that end ("through").
 *
 * Signals: SIGUSR1 asks the mux to reconnect (the "client cancels the
 * stream" break); SIGUSR2 ends an --open-end run; SIGINT/SIGTERM cancel.
 * At the end one JSON line of counters goes to stdout. Exit 0 when every
 * subscription got through, 1 otherwise.
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
#include <time.h>
#include <unistd.h>

#include "muxsub.h"

#define OUT_BUF (64 * 1024)
#define FLUSH_NS (20 * 1000 * 1000)

struct consumer;

struct sub {
    struct consumer *c;
    unsigned index;
    uint32_t id;
    uint64_t last_seq;
    uint64_t written;
    bool reached;
};

struct consumer {
    tickfan_mux_t *mux;
    int out_fd;
    uint64_t through;  /* the end; UINT64_MAX until SIGUSR2 with --open-end */
    uint64_t at_least; /* --through */
    uint64_t seen;     /* the furthest position any subscription has seen */
    unsigned nsubs;
    unsigned reached;
    uint64_t written;
    uint64_t ended; /* subscriptions over other than by a remove */
    const char *failure;
    char buf[OUT_BUF + 256];
    size_t len;
    int64_t flushed_ns;
};

static _Atomic(tickfan_mux_t *) signal_mux;
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
    tickfan_mux_t *m = atomic_load(&signal_mux);
    if (m != NULL) {
        if (signo == SIGUSR1)
            tickfan_mux_reconnect(m);
        else
            tickfan_mux_cancel(m);
    }
    atomic_fetch_sub(&in_handler, 1);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The position a cursor names ("1-<epoch>-<seq>"; opaque to clients, looked
 * into only to know when a filtered subscription has moved past --through).
 * 0 when it cannot tell. */
static uint64_t cursor_seq(const char *cursor)
{
    const char *dash = cursor ? strrchr(cursor, '-') : NULL;
    return dash ? strtoull(dash + 1, NULL, 10) : 0;
}

static int flush_out(struct consumer *c)
{
    const char *p = c->buf;
    size_t len = c->len;
    while (len > 0) {
        ssize_t n = write(c->out_fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    c->len = 0;
    c->flushed_ns = now_ns();
    return 0;
}

static int on_event(uint32_t id, const Events__V1__WatchEvent *ev, void *arg)
{
    struct sub *s = arg;
    struct consumer *c = s->c;
    uint64_t pos = ev->payload_case == EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA
                       ? ev->data->seq
                       : cursor_seq(ev->cursor);

    (void)id;
    if (pos > c->seen)
        c->seen = pos;
    /* The end: past everything seen so far, so nothing processed lies beyond it. */
    if (c->through == UINT64_MAX && atomic_load(&end_asked))
        c->through = c->seen + 1 > c->at_least ? c->seen + 1 : c->at_least;
    switch (ev->payload_case) {
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA: {
        uint64_t seq = ev->data->seq;
        if (seq > c->through || s->reached)
            break;
        if (seq <= s->last_seq) {
            c->failure = "a Data event at or before the subscription's previous one";
            return -EPROTO;
        }
        c->len +=
            (size_t)snprintf(c->buf + c->len, sizeof(c->buf) - c->len, "%u %" PRIu64 " %.100s\n",
                             s->index, seq, ev->data->kind ? ev->data->kind : "");
        s->last_seq = seq;
        s->written++;
        c->written++;
        break;
    }
    case EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP:
        c->failure = "a Gap event";
        return -EPROTO;
    default:
        break;
    }
    if (c->len >= OUT_BUF || now_ns() - c->flushed_ns >= FLUSH_NS) {
        int rc = flush_out(c);
        if (rc < 0) {
            c->failure = "cannot write --out";
            return rc;
        }
    }
    if (!s->reached && pos >= c->through) {
        s->reached = true;
        if (++c->reached == c->nsubs)
            tickfan_mux_cancel(c->mux);
    }
    return 0;
}

static void on_end(uint32_t id, const struct tickfan_mux_end *end, void *arg)
{
    struct sub *s = arg;
    fprintf(stderr,
            "exactly_once_mux_consumer: subscription %u (id %" PRIu32 ") ended: code %d %s\n",
            s->index, id, (int)end->code, end->message);
    s->c->ended++;
    s->c->failure = "a subscription ended";
    tickfan_mux_cancel(s->c->mux);
}

static void usage(void)
{
    fputs("usage: exactly_once_mux_consumer --server ADDR --through N --out FILE --subs N\n"
          "           [--open-end] [--topic T] [--kinds K,...] [--heartbeat-timeout-ms MS]\n"
          "           [--backoff-initial-ms MS] [--backoff-max-ms MS] [--healthy-ms MS]\n",
          stderr);
}

static int64_t num(const char *v)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*end != '\0' || n < 0) {
        fprintf(stderr, "exactly_once_mux_consumer: '%s' is not a number\n", v);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
    struct tickfan_mux_options mo;
    struct consumer *c = calloc(1, sizeof(*c));
    const char *out = NULL;
    bool open_end = false;
    char *kinds[16];
    char *kinds_buf = NULL;
    struct sigaction sa;

    /* Never outlive the test that started us. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (c == NULL)
        return 1;
    c->out_fd = -1;
    tickfan_mux_options_init(&mo);
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
            mo.target = v;
        else if (strcmp(a, "--topic") == 0)
            req.topic = (char *)v;
        else if (strcmp(a, "--through") == 0)
            c->through = (uint64_t)num(v);
        else if (strcmp(a, "--out") == 0)
            out = v;
        else if (strcmp(a, "--subs") == 0)
            c->nsubs = (unsigned)num(v);
        else if (strcmp(a, "--heartbeat-timeout-ms") == 0)
            mo.heartbeat_timeout_ms = num(v);
        else if (strcmp(a, "--backoff-initial-ms") == 0)
            mo.backoff_initial_ms = num(v);
        else if (strcmp(a, "--backoff-max-ms") == 0)
            mo.backoff_max_ms = num(v);
        else if (strcmp(a, "--healthy-ms") == 0)
            mo.healthy_ms = num(v);
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
    if (mo.target == NULL || out == NULL || c->through == 0 || c->nsubs == 0 || c->nsubs > 10000) {
        usage();
        return 2;
    }
    c->at_least = c->through;
    if (open_end)
        c->through = UINT64_MAX;
    /* Slow consumers are ended with their cursor (and re-added), never skipped. */
    req.overflow = EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT;

    c->out_fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (c->out_fd < 0) {
        fprintf(stderr, "exactly_once_mux_consumer: %s: %s\n", out, strerror(errno));
        return 1;
    }
    int rc = tickfan_mux_create(&c->mux, &mo);
    if (rc < 0) {
        fprintf(stderr, "exactly_once_mux_consumer: %s\n", strerror(-rc));
        return 1;
    }
    struct sub *subs = calloc(c->nsubs, sizeof(*subs));
    if (subs == NULL)
        return 1;
    for (unsigned k = 0; k < c->nsubs; k++) {
        struct tickfan_mux_sub_options so = {0};
        subs[k].c = c;
        subs[k].index = k;
        so.request = &req;
        so.on_event = on_event;
        so.on_end = on_end;
        so.arg = &subs[k];
        rc = tickfan_mux_add(c->mux, &so, &subs[k].id);
        if (rc < 0) {
            fprintf(stderr, "exactly_once_mux_consumer: add %u: %s\n", k, strerror(-rc));
            return 1;
        }
    }
    c->flushed_ns = now_ns();

    atomic_store(&signal_mux, c->mux);
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

    rc = tickfan_mux_run(c->mux);

    atomic_store(&signal_mux, NULL);
    while (atomic_load(&in_handler) != 0)
        ;
    if (flush_out(c) < 0 && c->failure == NULL)
        c->failure = "cannot write --out";
    bool reached = c->reached == c->nsubs && c->failure == NULL;
    struct tickfan_mux_stats st;
    tickfan_mux_stats(c->mux, &st);
    printf("{\"reached\":%s,\"run_rc\":%d,\"failure\":\"%s\",\"subs\":%u,\"subs_through\":%u"
           ",\"written\":%" PRIu64 ",\"ended\":%" PRIu64 ",\"events\":%" PRIu64
           ",\"data_events\":%" PRIu64 ",\"deliveries\":%" PRIu64 ",\"responses\":%" PRIu64
           ",\"streams\":%" PRIu64 ",\"resumes\":%" PRIu64 ",\"broken\":%" PRIu64
           ",\"watchdog\":%" PRIu64 ",\"reconnect\":%" PRIu64 ",\"adds_sent\":%" PRIu64
           ",\"readds\":%" PRIu64 ",\"through\":%" PRIu64 "}\n",
           reached ? "true" : "false", rc, c->failure ? c->failure : "", c->nsubs, c->reached,
           c->written, c->ended, st.events, st.data_events, st.deliveries, st.responses, st.streams,
           st.resumes, st.resumes_broken, st.resumes_watchdog, st.resumes_reconnect, st.adds_sent,
           st.readds, c->through);
    fflush(stdout);
    tickfan_mux_destroy(c->mux);
    close(c->out_fd);
    free(kinds_buf);
    free(subs);
    free(c);
    return reached && rc == 0 ? 0 : 1;
}
