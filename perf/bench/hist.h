/*
 * hist: a log-linear histogram of unsigned 64-bit values with a bounded
 * relative error, in the manner of HdrHistogram.
 *
 * Values below 2^(p+1) are counted exactly; above, every power-of-two range
 * [2^k, 2^(k+1)) is split into 2^p equal buckets, so a bucket is never wider
 * than 2^-p of the values it holds. With precision p the whole 64-bit range
 * takes (65 - p) * 2^p counters (p = 7: 7424 counters, 58 KiB).
 *
 * Reported values (hist_value_at) are the highest value of the bucket, capped
 * by the largest value recorded: never below the exact answer, and above it
 * by at most exact * 2^-p. Count, min, max and sum are exact.
 *
 * Threads: a histogram belongs to one thread; merge per-thread histograms
 * into one once their writers are done. No locks, no allocation after
 * hist_create.
 */
#ifndef TICKFAN_HIST_H
#define TICKFAN_HIST_H

#include <stdbool.h>
#include <stdint.h>

#define HIST_PRECISION_MIN 1
#define HIST_PRECISION_MAX 14

typedef struct hist hist_t;

/*
 * Creates an empty histogram whose relative error is at most
 * 2^-precision_bits (7 -> 0.79 %, 10 -> 0.098 %). Returns 0, -EINVAL for a
 * precision outside HIST_PRECISION_MIN..HIST_PRECISION_MAX, or -ENOMEM;
 * *out is NULL on failure.
 */
int hist_create(hist_t **out, unsigned precision_bits);

/* Frees h. NULL is a no-op. */
void hist_destroy(hist_t *h);

/* Forgets every recorded value; the precision stays. */
void hist_reset(hist_t *h);

/* Records value once; n times. Cheap: a shift, a count-leading-zeros and
 * an increment. */
void hist_record(hist_t *h, uint64_t value);
void hist_record_n(hist_t *h, uint64_t value, uint64_t n);

/* Adds every count of src to dst. Returns 0, or -EINVAL when the two were
 * created with different precisions (dst is then unchanged). */
int hist_merge(hist_t *dst, const hist_t *src);

uint64_t hist_count(const hist_t *h);
/* Exact smallest / largest value recorded; 0 when empty. */
uint64_t hist_min(const hist_t *h);
uint64_t hist_max(const hist_t *h);
/* Exact mean of the values recorded (sum kept in 128 bits); 0 when empty. */
double hist_mean(const hist_t *h);

/*
 * The value at `percentile` (0..100, clamped): the smallest recorded value v
 * such that at least percentile % of the values are <= v, reported as its
 * bucket's highest value and capped by hist_max. 0 when empty.
 */
uint64_t hist_value_at(const hist_t *h, double percentile);

/* 2^-precision: the bound on (reported - exact) / exact. */
double hist_relative_error(const hist_t *h);

/* Bucket arithmetic, exposed for tests: the index of value's bucket, and the
 * lowest and highest values that fall into bucket index. */
uint32_t hist_index_of(const hist_t *h, uint64_t value);
uint64_t hist_bucket_low(const hist_t *h, uint32_t index);
uint64_t hist_bucket_high(const hist_t *h, uint32_t index);

#endif
