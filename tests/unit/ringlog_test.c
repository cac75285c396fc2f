/* ringlog: append/read, wrap-around, lapped readers, seeks, and a concurrent
 * writer/reader run that checks no torn record is ever accepted. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ringlog.h"

/* Event bytes are a pattern of the sequence number, so a torn read shows. */
static void fill(uint8_t *p, size_t n, uint64_t seq)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seq * 31 + i);
}

static bool pattern_ok(const uint8_t *p, size_t n, uint64_t seq)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)(seq * 31 + i))
            return false;
    return true;
}

static uint64_t append(ringlog_t *log, const char *kind, const char *key, size_t event_len,
                       int64_t ingest_us)
{
    struct ringlog_slot slot;
    assert_int_equal(
        ringlog_reserve(log, RINGLOG_DATA, strlen(kind), strlen(key), event_len, ingest_us, &slot),
        0);
    memcpy(slot.kind, kind, strlen(kind));
    memcpy(slot.key, key, strlen(key));
    fill(slot.event, event_len, slot.seq);
    ringlog_commit(log, &slot);
    return slot.seq;
}

static void appended_records_read_back_in_order(void **state)
{
    ringlog_t *log;
    assert_int_equal(ringlog_create(&log, "t", 64 * 1024), 0);
    assert_int_equal(ringlog_head_seq(log), 0);
    assert_int_equal(ringlog_first_seq(log), 1);
    for (int i = 1; i <= 100; i++)
        assert_int_equal(append(log, i % 2 ? "quote" : "trade", "AAPL", 50 + i, i), i);
    struct ringlog_iter it;
    assert_int_equal(ringlog_seek(log, 1, &it), 0);
    for (uint64_t s = 1; s <= 100; s++) {
        struct ringlog_view v;
        assert_int_equal(ringlog_peek(log, &it, &v), 0);
        assert_int_equal(v.seq, s);
        assert_int_equal(v.event_len, 50 + s);
        assert_true(pattern_ok(v.event, v.event_len, s));
        assert_int_equal(v.kind_len, s % 2 ? 5 : 5);
        assert_memory_equal(v.kind, s % 2 ? "quote" : "trade", 5);
        assert_memory_equal(v.key, "AAPL", 4);
        assert_true(ringlog_view_valid(log, &it));
        ringlog_advance(&it, &v);
    }
    struct ringlog_view v;
    assert_int_equal(ringlog_peek(log, &it, &v), -EAGAIN);
    ringlog_destroy(log);
}

static void wrap_around_keeps_the_newest_records_and_counts_retention(void **state)
{
    ringlog_t *log;
    assert_int_equal(ringlog_create(&log, "t", 64 * 1024), 0);
    /* ~100-byte events: several laps of the ring */
    for (int i = 1; i <= 5000; i++)
        append(log, "quote", "MSFT", 60 + i % 50, i);
    uint64_t first = ringlog_first_seq(log);
    assert_true(first > 1);
    assert_int_equal(ringlog_head_seq(log), 5000);
    struct ringlog_iter it;
    assert_int_equal(ringlog_seek(log, first - 1, &it), -ERANGE);
    assert_int_equal(ringlog_seek(log, first, &it), 0);
    uint64_t n = 0;
    for (;;) {
        struct ringlog_view v;
        int rc = ringlog_peek(log, &it, &v);
        if (rc == -EAGAIN)
            break;
        assert_int_equal(rc, 0);
        assert_int_equal(v.seq, first + n);
        assert_true(pattern_ok(v.event, v.event_len, v.seq));
        ringlog_advance(&it, &v);
        n++;
    }
    assert_int_equal(first + n - 1, 5000);
    ringlog_destroy(log);
}

static void lapped_reader_is_told_before_using_overwritten_bytes(void **state)
{
    ringlog_t *log;
    assert_int_equal(ringlog_create(&log, "t", 64 * 1024), 0);
    append(log, "quote", "A", 100, 1);
    struct ringlog_iter it;
    assert_int_equal(ringlog_seek(log, 1, &it), 0);
    struct ringlog_view v;
    assert_int_equal(ringlog_peek(log, &it, &v), 0);
    /* the writer laps the reader while it holds a view */
    for (int i = 0; i < 2000; i++)
        append(log, "quote", "A", 100, 2 + i);
    assert_false(ringlog_view_valid(log, &it));
    assert_int_equal(ringlog_peek(log, &it, &v), -ESTALE);
    ringlog_destroy(log);
}

static void seek_finds_every_retained_sequence_and_rejects_the_rest(void **state)
{
    ringlog_t *log;
    assert_int_equal(ringlog_create(&log, "t", 64 * 1024), 0);
    for (int i = 1; i <= 3000; i++)
        append(log, "k", "key", 1 + (i * 7) % 90, i);
    uint64_t first = ringlog_first_seq(log), head = ringlog_head_seq(log);
    for (uint64_t s = first; s <= head; s++) {
        struct ringlog_iter it;
        assert_int_equal(ringlog_seek(log, s, &it), 0);
        struct ringlog_view v;
        assert_int_equal(ringlog_peek(log, &it, &v), 0);
        assert_int_equal(v.seq, s);
    }
    struct ringlog_iter it;
    assert_int_equal(ringlog_seek(log, head + 1, &it), 0); /* the live head */
    struct ringlog_view v;
    assert_int_equal(ringlog_peek(log, &it, &v), -EAGAIN);
    assert_int_equal(ringlog_seek(log, head + 2, &it), -ERANGE);
    assert_int_equal(ringlog_seek(log, 0, &it), -ERANGE);
    ringlog_seek_head(log, &it);
    assert_int_equal(it.seq, head + 1);
    ringlog_destroy(log);
}

static void seek_time_starts_at_first_record_at_or_after_the_time(void **state)
{
    ringlog_t *log;
    assert_int_equal(ringlog_create(&log, "t", 256 * 1024), 0);
    for (int i = 1; i <= 1000; i++)
        append(log, "k", "key", 40, 1000 + i * 10); /* seq i ingested at 1000+10i */
    struct ringlog_iter it;
    struct ringlog_view v;
    ringlog_seek_time(log, 1000 + 500 * 10, &it);
    assert_int_equal(ringlog_peek(log, &it, &v), 0);
    assert_int_equal(v.seq, 500);
    ringlog_seek_time(log, 1000 + 500 * 10 + 1, &it);
    assert_int_equal(ringlog_peek(log, &it, &v), 0);
    assert_int_equal(v.seq, 501);
    ringlog_seek_time(log, 0, &it);
    assert_int_equal(ringlog_peek(log, &it, &v), 0);
    assert_int_equal(v.seq, ringlog_first_seq(log));
    ringlog_seek_time(log, 1000000, &it);
    assert_int_equal(ringlog_peek(log, &it, &v), -EAGAIN);
    ringlog_destroy(log);
}

static void oversized_records_are_refused(void **state)
{
    ringlog_t *log;
    assert_int_equal(ringlog_create(&log, "t", 64 * 1024), 0);
    struct ringlog_slot slot;
    assert_int_equal(ringlog_reserve(log, RINGLOG_DATA, 1, 1, 40 * 1024, 0, &slot), -EMSGSIZE);
    assert_int_equal(ringlog_reserve(log, RINGLOG_DATA, 256, 1, 10, 0, &slot), -EMSGSIZE);
    ringlog_destroy(log);
    assert_int_equal(ringlog_create(&log, "t", 1024), -EINVAL);
    assert_null(log);
}

/* ---- concurrent writer and reader --------------------------------------- */

enum { STRESS_RECORDS = 300000 };

struct stress {
    ringlog_t *log;
    atomic_bool done;
};

static void *writer(void *p)
{
    struct stress *s = p;
    for (int i = 1; i <= STRESS_RECORDS; i++)
        append(s->log, "quote", "AAPL", 32 + i % 200, i);
    atomic_store(&s->done, true);
    return NULL;
}

static void concurrent_reader_never_accepts_a_torn_record(void **state)
{
    struct stress s;
    assert_int_equal(ringlog_create(&s.log, "t", 64 * 1024), 0);
    atomic_init(&s.done, false);
    pthread_t th;
    pthread_create(&th, NULL, writer, &s);
    struct ringlog_iter it;
    ringlog_seek_head(s.log, &it);
    uint64_t accepted = 0, lapped = 0, expect = it.seq;
    uint8_t copy[512];
    for (;;) {
        struct ringlog_view v;
        int rc = ringlog_peek(s.log, &it, &v);
        if (rc == -EAGAIN) {
            if (atomic_load(&s.done) && ringlog_head_seq(s.log) < it.seq)
                break;
            continue;
        }
        if (rc == -ESTALE) {
            lapped++;
            uint64_t first = ringlog_first_seq(s.log);
            if (ringlog_seek(s.log, first, &it) == 0)
                expect = it.seq;
            continue;
        }
        assert_int_equal(rc, 0);
        /* the header was validated by the peek: the length is the writer's */
        assert_true(v.event_len <= sizeof(copy));
        ringlog_copy_event(&v, copy);
        if (!ringlog_view_valid(s.log, &it)) {
            lapped++;
            continue;
        }
        /* validated: the copies must be exactly what the writer wrote */
        assert_int_equal(v.seq, expect);
        assert_true(v.kind_len == 5 && memcmp(v.kind, "quote", 5) == 0);
        assert_true(v.key_len == 4 && memcmp(v.key, "AAPL", 4) == 0);
        assert_true(pattern_ok(copy, v.event_len, v.seq));
        ringlog_advance(&it, &v);
        expect = v.seq + 1;
        accepted++;
    }
    pthread_join(th, NULL);
    print_message("accepted %llu records, lapped %llu times\n", (unsigned long long)accepted,
                  (unsigned long long)lapped);
    assert_true(accepted > 0);
    ringlog_destroy(s.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(appended_records_read_back_in_order),
        cmocka_unit_test(wrap_around_keeps_the_newest_records_and_counts_retention),
        cmocka_unit_test(lapped_reader_is_told_before_using_overwritten_bytes),
        cmocka_unit_test(seek_finds_every_retained_sequence_and_rejects_the_rest),
        cmocka_unit_test(seek_time_starts_at_first_record_at_or_after_the_time),
        cmocka_unit_test(oversized_records_are_refused),
        cmocka_unit_test(concurrent_reader_never_accepts_a_torn_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
