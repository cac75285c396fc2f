/*
 * benchfeed: the load generator's paced feed sender. The schedule and its
 * stamps, and real sends over loopback UDP decoded with the feed format's
 * own decoder: every tick once, in order, stamped with its scheduled time,
 * also when the sender starts behind schedule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchfeed.h"
#include "clock.h"
#include "feedframe.h"
#include "feedout.h"
#include "feedpace.h"

#define MAX_TICKS 4096

static void stamps_follow_the_schedule_exactly(void **state)
{
    struct benchfeed_schedule s = {
        .t0_mono_ns = 5000000000LL, .t0_real_us = 1700000000000000LL, .rate = 3};
    assert_int_equal(benchfeed_due_ns(&s, 0), 5000000000LL);
    assert_int_equal(benchfeed_due_ns(&s, 1), 5333333333LL);
    assert_int_equal(benchfeed_stamp_us(&s, 0), 1700000000000000LL);
    assert_int_equal(benchfeed_stamp_us(&s, 1), 1700000000333333LL);
    assert_int_equal(benchfeed_stamp_us(&s, 2), 1700000000666666LL);
    assert_int_equal(benchfeed_stamp_us(&s, 3), 1700000001000000LL);
    /* a day at 100,000 ticks/s: no drift from i / rate */
    s.rate = 100000;
    uint64_t i = 100000ull * 86400;
    assert_int_equal(benchfeed_stamp_us(&s, i), 1700000000000000LL + 86400LL * 1000000);
    assert_int_equal(benchfeed_stamp_us(&s, i + 1), 1700000000000000LL + 86400LL * 1000000 + 10);
}

static void bad_configurations_are_refused(void **state)
{
    char err[256];
    benchfeed_t *f = (benchfeed_t *)&err; /* must be reset to NULL */
    struct benchfeed_config c = {.spec = "file:/tmp/x", .topic = "bench", .rate = 10};
    assert_int_equal(benchfeed_create(&f, &c, err, sizeof(err)), -EINVAL);
    assert_null(f);
    c.spec = "udp://127.0.0.1:9";
    c.rate = 0;
    assert_int_equal(benchfeed_create(&f, &c, err, sizeof(err)), -EINVAL);
    assert_null(f);
    c.rate = 10;
    c.topic = "not a topic";
    assert_int_equal(benchfeed_create(&f, &c, err, sizeof(err)), -EINVAL);
    assert_null(f);
}

struct receiver {
    int fd;
    char spec[64];
};

static void receiver_open(struct receiver *r)
{
    r->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(r->fd >= 0);
    int buf = 8 << 20;
    setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(r->fd, (struct sockaddr *)&a, &len), 0);
    snprintf(r->spec, sizeof(r->spec), "udp://127.0.0.1:%u", ntohs(a.sin_port));
}

struct received {
    uint64_t seq[MAX_TICKS];
    int64_t time_us[MAX_TICKS];
    size_t n;
    size_t datagrams;
    size_t max_per_datagram;
};

/* Reads every datagram queued on r and decodes its frames; each must be a
 * whole, valid frame of topic "bench", channel `channel`, body `body`
 * bytes. */
static void receive_all(struct receiver *r, struct received *out, uint32_t channel, size_t body)
{
    static uint8_t buf[FEEDOUT_DGRAM_MAX];
    memset(out, 0, sizeof(*out));
    for (;;) {
        ssize_t len = recv(r->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (len < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            return;
        }
        out->datagrams++;
        size_t off = 0, frames = 0;
        while (off < (size_t)len) {
            struct feedframe f;
            size_t flen;
            assert_int_equal(feedframe_decode(buf + off, (size_t)len - off, &f, &flen),
                             FEEDFRAME_OK);
            assert_int_equal(f.topic_len, 5);
            assert_memory_equal(f.topic, "bench", 5);
            assert_int_equal(f.channel, channel);
            assert_true(f.rec.body_len == body ||
                        f.rec.body_len == body + 1); /* padding may add one */
            assert_true(f.rec.key_len > 0);
            assert_true(out->n < MAX_TICKS);
            out->seq[out->n] = f.source_seq;
            out->time_us[out->n] = f.source_time_us;
            out->n++;
            frames++;
            off += flen;
        }
        if (frames > out->max_per_datagram)
            out->max_per_datagram = frames;
    }
}

static void sleep_ms(int ms)
{
    feedpace_sleep_until(clock_mono_ns() + (int64_t)ms * 1000000);
}

static void on_schedule_every_tick_arrives_once_in_order_with_its_scheduled_stamp(void **state)
{
    struct receiver r;
    receiver_open(&r);
    char err[256];
    benchfeed_t *f;
    struct benchfeed_config c = {
        .spec = r.spec, .topic = "bench", .rate = 2000, .payload_bytes = 100, .channel = 7};
    assert_int_equal(benchfeed_create(&f, &c, err, sizeof(err)), 0);
    int64_t t0 = clock_mono_ns();
    assert_int_equal(benchfeed_start(f, t0), 0);
    assert_int_equal(benchfeed_start(f, t0), -EALREADY);
    sleep_ms(100);
    benchfeed_stop(f);
    int64_t stopped = clock_mono_ns();
    struct benchfeed_stats st;
    benchfeed_get_stats(f, &st);
    struct benchfeed_schedule s = benchfeed_get_schedule(f);
    assert_int_equal(st.error, 0);
    assert_int_equal(s.t0_mono_ns, t0);
    assert_int_equal(s.rate, 2000);

    struct received got;
    receive_all(&r, &got, 7, 100);
    /* only ticks that were due were sent: at most 2000/s since t0 */
    assert_true(st.ticks >= 100);
    assert_true((int64_t)st.ticks <= (stopped - t0) / 500000 + 1);
    assert_int_equal(got.n, st.ticks);
    assert_int_equal(got.datagrams, st.datagrams);
    for (size_t i = 0; i < got.n; i++) {
        assert_int_equal(got.seq[i], i + 1);
        assert_int_equal(got.time_us[i], benchfeed_stamp_us(&s, i));
    }
    assert_int_equal(st.first_stamp_us, benchfeed_stamp_us(&s, 0));
    assert_int_equal(st.last_stamp_us, benchfeed_stamp_us(&s, got.n - 1));
    /* t0 on the real-time clock is the same instant as on the monotonic one */
    int64_t skew = (clock_unix_us() - s.t0_real_us) - (clock_mono_ns() - t0) / 1000;
    assert_true(skew > -2000 && skew < 2000);
    benchfeed_destroy(f);
    close(r.fd);
}

/* With a quantum the sender sends at most once per quantum: the ticks due
 * meanwhile share a datagram, each still stamped with its own due time. */
static void a_quantum_sends_the_ticks_due_meanwhile_together(void **state)
{
    struct receiver r;
    receiver_open(&r);
    char err[256];
    benchfeed_t *f;
    struct benchfeed_config c = {.spec = r.spec,
                                 .topic = "bench",
                                 .rate = 20000,
                                 .payload_bytes = 100,
                                 .batch = 64,
                                 .channel = 3,
                                 .quantum_ns = 2000000};
    assert_int_equal(benchfeed_create(&f, &c, err, sizeof(err)), 0);
    int64_t t0 = clock_mono_ns();
    assert_int_equal(benchfeed_start(f, t0), 0);
    sleep_ms(100);
    benchfeed_stop(f);
    int64_t stopped = clock_mono_ns();
    struct benchfeed_stats st;
    benchfeed_get_stats(f, &st);
    struct benchfeed_schedule s = benchfeed_get_schedule(f);
    assert_int_equal(st.error, 0);

    struct received got;
    receive_all(&r, &got, 3, 100);
    assert_true(st.ticks >= 1000);
    assert_int_equal(got.n, st.ticks);
    assert_int_equal(got.datagrams, st.datagrams);
    /* one send per 2 ms at most (each one datagram: 40 ticks fit 64 KiB),
     * and the last one at the stop */
    assert_true((int64_t)got.datagrams <= (stopped - t0) / 2000000 + 2);
    assert_true(got.max_per_datagram > 1);
    for (size_t i = 0; i < got.n; i++) {
        assert_int_equal(got.seq[i], i + 1);
        assert_int_equal(got.time_us[i], benchfeed_stamp_us(&s, i));
    }
    benchfeed_destroy(f);
    close(r.fd);
}

static void a_late_sender_sends_at_once_and_keeps_the_scheduled_stamps(void **state)
{
    struct receiver r;
    receiver_open(&r);
    char err[256];
    benchfeed_t *f;
    struct benchfeed_config c = {.spec = r.spec,
                                 .topic = "bench",
                                 .rate = 1000,
                                 .payload_bytes = 100,
                                 .batch = 4,
                                 .channel = 1};
    assert_int_equal(benchfeed_create(&f, &c, err, sizeof(err)), 0);
    /* 200 ms behind schedule from the start: 200 ticks are overdue */
    int64_t t0 = clock_mono_ns() - 200 * 1000000LL;
    assert_int_equal(benchfeed_start(f, t0), 0);
    sleep_ms(30);
    benchfeed_stop(f);
    struct benchfeed_stats st;
    benchfeed_get_stats(f, &st);
    struct benchfeed_schedule s = benchfeed_get_schedule(f);

    struct received got;
    receive_all(&r, &got, 1, 100);
    assert_true(got.n >= 200);
    assert_int_equal(got.n, st.ticks);
    for (size_t i = 0; i < got.n; i++) {
        assert_int_equal(got.seq[i], i + 1);
        /* the scheduled time, 1 ms apart, not when the burst went out */
        assert_int_equal(got.time_us[i], s.t0_real_us + (int64_t)i * 1000);
    }
    /* overdue ticks went out together: full datagrams of --feed-batch */
    assert_int_equal(got.max_per_datagram, 4);
    assert_true(got.datagrams < got.n);
    /* and the lag is told: tick 0 left ~200 ms late */
    assert_true(st.max_lag_ns >= 200 * 1000000LL);
    assert_true(st.late_ticks >= 190);
    benchfeed_destroy(f);
    close(r.fd);
}

static void a_feed_stopped_before_it_started_sends_nothing(void **state)
{
    struct receiver r;
    receiver_open(&r);
    char err[256];
    benchfeed_t *f;
    struct benchfeed_config c = {.spec = r.spec, .topic = "bench", .rate = 10};
    assert_int_equal(benchfeed_create(&f, &c, err, sizeof(err)), 0);
    benchfeed_stop(f);
    struct benchfeed_stats st;
    benchfeed_get_stats(f, &st);
    assert_int_equal(st.ticks, 0);
    benchfeed_destroy(f);
    benchfeed_destroy(NULL);
    struct received got;
    receive_all(&r, &got, 1, 0);
    assert_int_equal(got.n, 0);
    close(r.fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stamps_follow_the_schedule_exactly),
        cmocka_unit_test(bad_configurations_are_refused),
        cmocka_unit_test(on_schedule_every_tick_arrives_once_in_order_with_its_scheduled_stamp),
        cmocka_unit_test(a_late_sender_sends_at_once_and_keeps_the_scheduled_stamps),
        cmocka_unit_test(a_quantum_sends_the_ticks_due_meanwhile_together),
        cmocka_unit_test(a_feed_stopped_before_it_started_sends_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
