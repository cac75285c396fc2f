/*
 * hist: log-linear histogram. See hist.h. Owned by one thread.
 *
 * With H = 2^p: a value v < 2H is its own bucket. Otherwise, with
 * shift = msb(v) - p, the top p+1 bits of v (in [H, 2H)) pick one of H
 * buckets of width 2^shift, at index shift * H + top. Consecutive shifts
 * tile the index space without holes.
 */
#include "hist.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct hist {
    unsigned precision;
    uint32_t nbuckets;
    uint64_t count;
    uint64_t min;
    uint64_t max;
    unsigned __int128 sum;
    uint64_t counts[];
};

static uint32_t bucket_count(unsigned p)
{
    return (65u - p) << p;
}

int hist_create(hist_t **out, unsigned precision_bits)
{
    *out = NULL;
    if (precision_bits < HIST_PRECISION_MIN || precision_bits > HIST_PRECISION_MAX)
        return -EINVAL;
    uint32_t n = bucket_count(precision_bits);
    hist_t *h = calloc(1, sizeof(*h) + (size_t)n * sizeof(h->counts[0]));
    if (h == NULL)
        return -ENOMEM;
    h->precision = precision_bits;
    h->nbuckets = n;
    h->min = UINT64_MAX;
    *out = h;
    return 0;
}

void hist_destroy(hist_t *h)
{
    free(h);
}

void hist_reset(hist_t *h)
{
    memset(h->counts, 0, (size_t)h->nbuckets * sizeof(h->counts[0]));
    h->count = 0;
    h->min = UINT64_MAX;
    h->max = 0;
    h->sum = 0;
}

uint32_t hist_index_of(const hist_t *h, uint64_t value)
{
    unsigned p = h->precision;
    if (value < (2ull << p))
        return (uint32_t)value;
    unsigned shift = (63u - (unsigned)__builtin_clzll(value)) - p;
    return (shift << p) + (uint32_t)(value >> shift);
}

uint64_t hist_bucket_low(const hist_t *h, uint32_t index)
{
    unsigned p = h->precision;
    if (index < (2u << p))
        return index;
    unsigned shift = (index >> p) - 1;
    uint64_t top = index - (shift << p);
    return top << shift;
}

uint64_t hist_bucket_high(const hist_t *h, uint32_t index)
{
    unsigned p = h->precision;
    if (index < (2u << p))
        return index;
    unsigned shift = (index >> p) - 1;
    return hist_bucket_low(h, index) + ((1ull << shift) - 1);
}

void hist_record_n(hist_t *h, uint64_t value, uint64_t n)
{
    if (n == 0)
        return;
    h->counts[hist_index_of(h, value)] += n;
    h->count += n;
    h->sum += (unsigned __int128)value * n;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void hist_record(hist_t *h, uint64_t value)
{
    hist_record_n(h, value, 1);
}

int hist_merge(hist_t *dst, const hist_t *src)
{
    if (dst->precision != src->precision)
        return -EINVAL;
    if (src->count == 0)
        return 0;
    for (uint32_t i = 0; i < src->nbuckets; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    return 0;
}

uint64_t hist_count(const hist_t *h)
{
    return h->count;
}

uint64_t hist_min(const hist_t *h)
{
    return h->count ? h->min : 0;
}

uint64_t hist_max(const hist_t *h)
{
    return h->max;
}

double hist_mean(const hist_t *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}

uint64_t hist_value_at(const hist_t *h, double percentile)
{
    if (h->count == 0)
        return 0;
    if (!(percentile > 0.0))
        return h->min;
    if (percentile > 100.0)
        percentile = 100.0;
    /* rank of the answer among the sorted values, 1-based; the small
     * relative slack keeps e.g. 99.9 % of 1000 at rank 999 despite 99.9 not
     * being exact in binary */
    double r = percentile / 100.0 * (double)h->count;
    r -= r * 1e-12;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < h->nbuckets; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_bucket_high(h, i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

double hist_relative_error(const hist_t *h)
{
    return 1.0 / (double)(1u << h->precision);
}
