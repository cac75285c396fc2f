/* feedcap: capture files written and read back; damaged files. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "feedcap.h"
#include "feedframe.h"

static char path[64];

static int make_path(void **state)
{
    snprintf(path, sizeof(path), "/tmp/feedcap_test.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int remove_path(void **state)
{
    unlink(path);
    return 0;
}

/* A frame of topic "md" with a body of `body_len` bytes of `fill`. */
static size_t make_frame(uint8_t *out, uint64_t seq, size_t body_len, uint8_t fill,
                         const char *topic)
{
    uint8_t *body = malloc(body_len + 1);
    memset(body, fill, body_len);
    struct feedframe f = {.source_seq = seq,
                          .source_time_us = (int64_t)seq * 10,
                          .topic = topic,
                          .topic_len = strlen(topic),
                          .rec.kind = "quote",
                          .rec.kind_len = 5,
                          .rec.key = "AAPL",
                          .rec.key_len = 4,
                          .rec.body = body,
                          .rec.body_len = body_len};
    size_t n = feedframe_encode(&f, out);
    free(body);
    return n;
}

static void append_raw(const void *p, size_t n)
{
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void written_records_read_back_in_order(void **state)
{
    char err[256];
    feedcap_writer_t *w;
    assert_int_equal(feedcap_writer_create(&w, path, 777, err, sizeof(err)), 0);
    uint8_t *frame = malloc(FEEDFRAME_MAX);
    /* small frames, then one larger than the write and read buffers */
    size_t sizes[] = {0, 10, 100, 700 * 1024, 3, 60000};
    size_t nrec = 0;
    for (int round = 0; round < 200; round++)
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++, nrec++) {
            if (sizes[i] > 1000 && round % 50)
                continue;
            size_t n = make_frame(frame, nrec + 1, sizes[i], (uint8_t)nrec, "md");
            assert_int_equal(feedcap_write(w, 1000 + (int64_t)nrec, frame, n), 0);
        }
    assert_int_equal(feedcap_writer_close(w), 0);

    feedcap_reader_t *r;
    assert_int_equal(feedcap_reader_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(feedcap_created_us(r), 777);
    size_t got = 0;
    uint64_t offset = FEEDCAP_HDR;
    nrec = 0;
    for (int round = 0; round < 200; round++)
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++, nrec++) {
            if (sizes[i] > 1000 && round % 50)
                continue;
            struct feedcap_record rec;
            assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), 1);
            assert_int_equal(rec.recv_time_us, 1000 + (int64_t)nrec);
            assert_int_equal(rec.offset, offset);
            assert_int_equal(rec.status, FEEDFRAME_OK);
            struct feedframe f;
            size_t len;
            assert_int_equal(feedframe_decode(rec.frame, rec.len, &f, &len), FEEDFRAME_OK);
            assert_int_equal(f.source_seq, nrec + 1);
            assert_int_equal(f.rec.body_len, sizes[i]);
            for (size_t b = 0; b < f.rec.body_len; b++)
                assert_int_equal(f.rec.body[b], (uint8_t)nrec);
            offset += 8 + rec.len;
            got++;
        }
    struct feedcap_record rec;
    assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), 0);
    assert_true(got > 800);
    feedcap_reader_close(r);
    free(frame);
}

static void a_last_record_cut_short_is_truncated(void **state)
{
    char err[256];
    feedcap_writer_t *w;
    uint8_t frame[256];
    assert_int_equal(feedcap_writer_create(&w, path, 1, err, sizeof(err)), 0);
    size_t n = make_frame(frame, 1, 20, 1, "md");
    assert_int_equal(feedcap_write(w, 5, frame, n), 0);
    assert_int_equal(feedcap_writer_close(w), 0);
    uint8_t rec_time[8] = {6};
    append_raw(rec_time, 8);
    append_raw(frame, n - 1);

    feedcap_reader_t *r;
    struct feedcap_record rec;
    assert_int_equal(feedcap_reader_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), 1);
    assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "truncated"));
    char where[32];
    snprintf(where, sizeof(where), "offset %zu:", (size_t)FEEDCAP_HDR + 8 + n);
    assert_non_null(strstr(err, where));
    feedcap_reader_close(r);
}

static void a_bad_topic_is_returned_and_bad_magic_stops(void **state)
{
    char err[256];
    feedcap_writer_t *w;
    uint8_t frame[256];
    assert_int_equal(feedcap_writer_create(&w, path, 1, err, sizeof(err)), 0);
    size_t n = make_frame(frame, 1, 4, 1, "md");
    assert_int_equal(feedcap_write(w, 1, frame, n), 0);
    frame[FEEDFRAME_HDR] = '/'; /* the topic "md" becomes "/d" */
    assert_int_equal(feedcap_write(w, 2, frame, n), 0);
    frame[0] = 'X';
    assert_int_equal(feedcap_write(w, 3, frame, n), 0);
    assert_int_equal(feedcap_writer_close(w), 0);

    feedcap_reader_t *r;
    struct feedcap_record rec;
    assert_int_equal(feedcap_reader_open(&r, path, err, sizeof(err)), 0);
    assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), 1);
    assert_int_equal(rec.status, FEEDFRAME_OK);
    assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), 1);
    assert_int_equal(rec.status, FEEDFRAME_BAD_TOPIC);
    assert_int_equal(rec.len, n);
    assert_int_equal(feedcap_next(r, &rec, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "bad_magic"));
    feedcap_reader_close(r);
}

static void a_file_that_is_not_a_capture_is_refused(void **state)
{
    char err[256];
    feedcap_reader_t *r = (feedcap_reader_t *)1;
    append_raw("TKFCAP02\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 24);
    assert_int_equal(feedcap_reader_open(&r, path, err, sizeof(err)), -EINVAL);
    assert_null(r);
    assert_non_null(strstr(err, "not a version 1 capture file"));
    assert_int_equal(feedcap_reader_open(&r, "/nonexistent/x", err, sizeof(err)), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(written_records_read_back_in_order, make_path, remove_path),
        cmocka_unit_test_setup_teardown(a_last_record_cut_short_is_truncated, make_path,
                                        remove_path),
        cmocka_unit_test_setup_teardown(a_bad_topic_is_returned_and_bad_magic_stops, make_path,
                                        remove_path),
        cmocka_unit_test_setup_teardown(a_file_that_is_not_a_capture_is_refused, make_path,
                                        remove_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
