/* feedout: frames into datagrams (whole frames, size and batch limits), a
 * TCP stream, a capture file. Over the loopback interface. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "feedcap.h"
#include "feedframe.h"
#include "feedout.h"

static size_t make_frame(uint8_t *out, uint64_t seq, size_t body_len)
{
    uint8_t body[2048] = {0};
    struct feedframe f = {.source_seq = seq,
                          .topic = "md",
                          .topic_len = 2,
                          .rec.kind = "trade",
                          .rec.kind_len = 5,
                          .rec.key = "IBM",
                          .rec.key_len = 3,
                          .rec.body = body,
                          .rec.body_len = body_len};
    return feedframe_encode(&f, out);
}

/* A UDP socket on 127.0.0.1, its port in *port. */
static int udp_receiver(int *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    *port = ntohs(a.sin_port);
    return fd;
}

/* Sends `n` frames of `body` bytes with batch `batch`; checks that the
 * datagrams hold whole frames in order, at most `per` each, none larger than
 * `max`. */
static void check_datagrams(size_t batch, size_t body, size_t n, size_t per, size_t max)
{
    int port;
    int rfd = udp_receiver(&port);
    char spec[64], err[256];
    snprintf(spec, sizeof(spec), "udp://127.0.0.1:%d", port);
    struct feedout_options o = {.batch = batch, .ttl = -1};
    feedout_t *out;
    assert_int_equal(feedout_open(&out, spec, &o, err, sizeof(err)), 0);
    uint8_t frame[4096];
    size_t flen = 0;
    for (size_t i = 0; i < n; i++) {
        flen = make_frame(frame, i + 1, body);
        assert_int_equal(feedout_put(out, frame, flen, 0, err, sizeof(err)), 0);
    }
    assert_int_equal(feedout_flush(out, err, sizeof(err)), 0);
    struct feedout_stats st;
    feedout_get_stats(out, &st);
    assert_int_equal(st.frames, n);
    assert_int_equal(st.bytes, n * flen);
    assert_int_equal(st.datagrams, (n + per - 1) / per);
    assert_int_equal(feedout_close(out, err, sizeof(err)), 0);

    uint8_t *dgram = malloc(65536);
    uint64_t next = 1;
    for (uint64_t d = 0; d < st.datagrams; d++) {
        ssize_t len = recv(rfd, dgram, 65536, 0);
        assert_true(len > 0 && (size_t)len <= max);
        size_t off = 0, frames = 0;
        while (off < (size_t)len) {
            struct feedframe f;
            size_t fl;
            assert_int_equal(feedframe_decode(dgram + off, (size_t)len - off, &f, &fl),
                             FEEDFRAME_OK);
            assert_int_equal(f.source_seq, next++);
            off += fl;
            frames++;
        }
        assert_true(frames == per || (d == st.datagrams - 1 && frames <= per));
    }
    assert_int_equal(next, n + 1);
    free(dgram);
    close(rfd);
}

static void frames_fill_datagrams_of_at_most_1472_bytes(void **state)
{
    /* 40 + 2 + 5 + 3 + 100 = 150-byte frames: 9 fit 1,472 bytes */
    check_datagrams(0, 100, 1000, 9, FEEDOUT_MTU_PAYLOAD);
}

static void batch_sets_the_frames_per_datagram(void **state)
{
    check_datagrams(4, 100, 1001, 4, 4 * 150);
    /* a batch beyond 1,472 bytes: datagrams up to 65,507 */
    check_datagrams(64, 100, 640, 64, 64 * 150);
    check_datagrams(1000, 1000, 200, 62, FEEDOUT_DGRAM_MAX);
}

static void a_frame_larger_than_a_datagram_is_refused(void **state)
{
    int port;
    int rfd = udp_receiver(&port);
    char spec[64], err[256];
    snprintf(spec, sizeof(spec), "udp://127.0.0.1:%d", port);
    struct feedout_options o = {.ttl = -1};
    feedout_t *out;
    assert_int_equal(feedout_open(&out, spec, &o, err, sizeof(err)), 0);
    assert_int_equal(feedout_max_frame(out), FEEDOUT_MTU_PAYLOAD);
    uint8_t frame[4096];
    size_t n = make_frame(frame, 1, 1500);
    assert_int_equal(feedout_put(out, frame, n, 0, err, sizeof(err)), -EMSGSIZE);
    assert_int_equal(feedout_close(out, err, sizeof(err)), 0);
    close(rfd);
}

static void bad_destinations_are_named(void **state)
{
    char err[256];
    feedout_t *out = (feedout_t *)1;
    struct feedout_options o = {.ttl = -1};
    assert_int_equal(feedout_open(&out, "http://x:1", &o, err, sizeof(err)), -EINVAL);
    assert_null(out);
    assert_non_null(strstr(err, "'http://x:1'"));
    assert_int_equal(feedout_open(&out, "udp://127.0.0.1", &o, err, sizeof(err)), -EINVAL);
    assert_int_equal(feedout_open(&out, "udp://127.0.0.1:99999", &o, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "99999"));
    o.iface = "127.0.0.1";
    assert_int_equal(feedout_open(&out, "udp://127.0.0.1:9", &o, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "--iface"));
    o.iface = "not-an-address";
    assert_int_equal(feedout_open(&out, "udp://239.1.1.1:9", &o, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not-an-address"));
}

static void a_tcp_stream_carries_the_frames_back_to_back(void **state)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 1), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    char spec[64], err[256];
    snprintf(spec, sizeof(spec), "tcp://127.0.0.1:%d", ntohs(a.sin_port));
    struct feedout_options o = {.ttl = -1};
    feedout_t *out;
    assert_int_equal(feedout_open(&out, spec, &o, err, sizeof(err)), 0);
    int cfd = accept(lfd, NULL, NULL);
    assert_true(cfd >= 0);
    uint8_t frame[4096];
    size_t flen = 0, n = 3000; /* ~450 KB: more than the stream buffer */
    for (size_t i = 0; i < n; i++) {
        flen = make_frame(frame, i + 1, 100);
        assert_int_equal(feedout_put(out, frame, flen, 0, err, sizeof(err)), 0);
        if (i == n / 2) { /* drain what has been sent so far */
            uint8_t sink[65536];
            while (recv(cfd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
                ;
        }
    }
    assert_int_equal(feedout_close(out, err, sizeof(err)), 0);
    close(cfd);
    close(lfd);
}

static void a_capture_file_gets_each_frame_with_its_time(void **state)
{
    char path[] = "/tmp/feedout_test.XXXXXX", err[256];
    close(mkstemp(path));
    feedout_t *out;
    assert_int_equal(feedout_open_file(&out, path, 99, err, sizeof(err)), 0);
    uint8_t frame[4096];
    for (size_t i = 0; i < 10; i++) {
        size_t n = make_frame(frame, i + 1, i);
        assert_int_equal(feedout_put(out, frame, n, 1000 + (int64_t)i, err, sizeof(err)), 0);
    }
    assert_int_equal(feedout_close(out, err, sizeof(err)), 0);
    feedcap_reader_t *r;
    assert_int_equal(feedcap_reader_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(feedcap_created_us(r), 99);
    struct feedcap_record rec;
    for (int64_t i = 0; i < 10; i++) {
        assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), 1);
        assert_int_equal(rec.recv_time_us, 1000 + i);
        assert_int_equal(rec.len, make_frame(frame, 1, (size_t)i));
    }
    assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), 0);
    feedcap_reader_close(r);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frames_fill_datagrams_of_at_most_1472_bytes),
        cmocka_unit_test(batch_sets_the_frames_per_datagram),
        cmocka_unit_test(a_frame_larger_than_a_datagram_is_refused),
        cmocka_unit_test(bad_destinations_are_named),
        cmocka_unit_test(a_tcp_stream_carries_the_frames_back_to_back),
        cmocka_unit_test(a_capture_file_gets_each_frame_with_its_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
