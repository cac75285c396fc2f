/* hist: the benchmark's log-linear latency histogram. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hist.h"

static uint64_t rng_state = 0x243f6a8885a308d3ull;

/* splitmix64: a fixed seed, so a failure reproduces */
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The oracle: the value of rank ceil(q/100 * n) in the sorted values. */
static uint64_t oracle(const uint64_t *sorted, size_t n, double q)
{
    if (q <= 0)
        return sorted[0];
    double r = q / 100.0 * (double)n;
    r -= r * 1e-12;
    size_t rank = (size_t)r;
    if ((double)rank < r)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

static hist_t *make(unsigned p)
{
    hist_t *h = NULL;
    assert_int_equal(hist_create(&h, p), 0);
    assert_non_null(h);
    return h;
}

static void empty_histogram_reports_zero(void **state)
{
    hist_t *h = make(7);
    assert_int_equal(hist_count(h), 0);
    assert_int_equal(hist_min(h), 0);
    assert_int_equal(hist_max(h), 0);
    assert_int_equal(hist_value_at(h, 50), 0);
    assert_true(hist_mean(h) == 0.0);
    hist_destroy(h);
}

static void precision_out_of_range_is_rejected(void **state)
{
    hist_t *h = (hist_t *)&h;
    assert_int_equal(hist_create(&h, 0), -EINVAL);
    assert_null(h);
    assert_int_equal(hist_create(&h, HIST_PRECISION_MAX + 1), -EINVAL);
    assert_null(h);
}

static void small_values_are_exact(void **state)
{
    hist_t *h = make(7);
    for (uint64_t v = 0; v < 256; v++)
        hist_record(h, v);
    assert_int_equal(hist_count(h), 256);
    assert_int_equal(hist_min(h), 0);
    assert_int_equal(hist_max(h), 255);
    assert_int_equal(hist_value_at(h, 50), 127);
    assert_int_equal(hist_value_at(h, 100), 255);
    assert_true(hist_mean(h) == 127.5);
    hist_destroy(h);
}

/* Every bucket is contiguous with the next, holds what maps to it, and is
 * never wider than 2^-p of its lowest value. */
static void buckets_tile_the_range_within_the_error_bound(void **state)
{
    for (unsigned p = HIST_PRECISION_MIN; p <= 10; p++) {
        hist_t *h = make(p);
        uint32_t last = hist_index_of(h, UINT64_MAX);
        assert_int_equal(hist_bucket_high(h, last), UINT64_MAX);
        assert_int_equal(hist_bucket_low(h, 0), 0);
        for (uint32_t i = 0; i < last; i++) {
            uint64_t lo = hist_bucket_low(h, i), hi = hist_bucket_high(h, i);
            assert_true(lo <= hi);
            assert_int_equal(hist_bucket_low(h, i + 1), hi + 1);
            assert_int_equal(hist_index_of(h, lo), i);
            assert_int_equal(hist_index_of(h, hi), i);
            assert_true((double)(hi - lo) <= (double)lo * hist_relative_error(h));
        }
        hist_destroy(h);
    }
}

/* Percentiles of random data against a sorted-array oracle: never below the
 * exact value, above it by at most the stated relative error. */
static void percentiles_match_sorted_oracle_within_error(void **state)
{
    enum { N = 200000 };
    static const double qs[] = {0, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100};
    uint64_t *v = malloc(N * sizeof(*v));
    assert_non_null(v);
    for (unsigned p = 3; p <= 10; p += 7) {
        for (int shape = 0; shape < 3; shape++) {
            hist_t *h = make(p);
            for (size_t i = 0; i < N; i++) {
                uint64_t r = rnd();
                if (shape == 0) /* uniform over 1 .. 10^6 */
                    v[i] = 1 + r % 1000000;
                else if (shape == 1) /* every scale from 2^0 to 2^64 */
                    v[i] = (r | 1) >> (rnd() % 64);
                else /* a latency-like body with a long tail */
                    v[i] = 20000 + r % 5000 + ((r & 0xff) == 0 ? (r >> 8) % 50000000 : 0);
                hist_record(h, v[i]);
            }
            qsort(v, N, sizeof(*v), cmp_u64);
            assert_int_equal(hist_count(h), N);
            assert_int_equal(hist_min(h), v[0]);
            assert_int_equal(hist_max(h), v[N - 1]);
            for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
                uint64_t exact = oracle(v, N, qs[k]);
                uint64_t got = hist_value_at(h, qs[k]);
                if (got < exact || (double)(got - exact) > (double)exact * hist_relative_error(h))
                    fail_msg("p=%u shape=%d q=%g: got %llu, exact %llu", p, shape, qs[k],
                             (unsigned long long)got, (unsigned long long)exact);
            }
            hist_destroy(h);
        }
    }
    free(v);
}

static void merge_equals_recording_everything_in_one(void **state)
{
    hist_t *a = make(7), *b = make(7), *all = make(7);
    for (int i = 0; i < 50000; i++) {
        uint64_t x = rnd() % 3000000, y = 1000 + rnd() % 9000;
        hist_record(a, x);
        hist_record(b, y);
        hist_record(all, x);
        hist_record(all, y);
    }
    hist_record_n(b, 123456789, 3);
    hist_record_n(all, 123456789, 3);
    assert_int_equal(hist_merge(a, b), 0);
    assert_int_equal(hist_count(a), hist_count(all));
    assert_int_equal(hist_min(a), hist_min(all));
    assert_int_equal(hist_max(a), 123456789);
    assert_true(hist_mean(a) == hist_mean(all));
    for (double q = 0; q <= 100; q += 0.5)
        assert_int_equal(hist_value_at(a, q), hist_value_at(all, q));
    hist_destroy(a);
    hist_destroy(b);
    hist_destroy(all);
}

static void merge_of_different_precisions_is_refused(void **state)
{
    hist_t *a = make(7), *b = make(8);
    hist_record(a, 5);
    hist_record(b, 9);
    assert_int_equal(hist_merge(a, b), -EINVAL);
    assert_int_equal(hist_count(a), 1);
    assert_int_equal(hist_max(a), 5);
    hist_destroy(a);
    hist_destroy(b);
}

static void max_caps_the_top_percentile_and_extremes_are_kept(void **state)
{
    hist_t *h = make(7);
    hist_record(h, 1000001); /* in a bucket of width 4096 */
    hist_record(h, 3);
    hist_record(h, UINT64_MAX);
    assert_int_equal(hist_min(h), 3);
    assert_int_equal(hist_max(h), UINT64_MAX);
    assert_int_equal(hist_value_at(h, 100), UINT64_MAX);
    assert_int_equal(hist_value_at(h, 0), 3);
    uint64_t mid = hist_value_at(h, 50);
    assert_true(mid >= 1000001 && mid <= 1000001 + 1000001 / 128);
    hist_reset(h);
    hist_record(h, 1000001);
    assert_int_equal(hist_value_at(h, 99.9), 1000001); /* capped by the exact max */
    assert_int_equal(hist_count(h), 1);
    hist_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_histogram_reports_zero),
        cmocka_unit_test(precision_out_of_range_is_rejected),
        cmocka_unit_test(small_values_are_exact),
        cmocka_unit_test(buckets_tile_the_range_within_the_error_bound),
        cmocka_unit_test(percentiles_match_sorted_oracle_within_error),
        cmocka_unit_test(merge_equals_recording_everything_in_one),
        cmocka_unit_test(merge_of_different_precisions_is_refused),
        cmocka_unit_test(max_caps_the_top_percentile_and_extremes_are_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
