/*
 * counter: monotonic counters written by one thread, read by any.
 *
 * The owning thread adds with a plain load and store (no locked
 * instruction on the hot path); readers (the metrics endpoint) load
 * relaxed and may see a value a moment old, never a torn one.
 */
#ifndef TICKFAN_COUNTER_H
#define TICKFAN_COUNTER_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t counter_t;

static inline void counter_add(counter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t counter_get(const counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

#endif
