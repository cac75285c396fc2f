/*
 * seqcopy: byte copies into and out of memory that one writer overwrites
 * while lock-free readers may be reading it (the ring log's records, the
 * last-value cache's entries), validated after the fact, seqlock-style.
 *
 * Threading: seqcopy_to is for the one writer, seqcopy_from for any number
 * of readers. Every byte moves through a relaxed atomic access of an aligned
 * 8-byte word, so a reader that races with the writer reads defined (if
 * possibly torn) values instead of a C11 data race; the reader's validation
 * (a fence, then a version or position check) decides whether to trust
 * them. On x86-64 a relaxed 8-byte access is a plain move: this costs about
 * what memcpy does for the short records the log holds.
 *
 * Both sides must use these for the shared bytes: an atomic read racing
 * with a plain write (or the reverse) is still a data race.
 */
#ifndef TICKFAN_SEQCOPY_H
#define TICKFAN_SEQCOPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A word of shared memory; may alias the record structs laid over it. */
typedef uint64_t seqcopy_word __attribute__((may_alias));

/* Writer: copies n bytes from private memory `src` to shared memory `dst`,
 * which must be 8-byte aligned and have room for n rounded up to 8 (a last
 * partial word is completed with zeros). */
static inline void seqcopy_to(void *dst, const void *src, size_t n)
{
    seqcopy_word *d = dst;
    const uint8_t *s = src;
    for (; n >= 8; n -= 8, s += 8, d++) {
        uint64_t w;
        memcpy(&w, s, 8);
        __atomic_store_n(d, w, __ATOMIC_RELAXED);
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        __atomic_store_n(d, w, __ATOMIC_RELAXED);
    }
}

/* Reader: copies n bytes at `src` (any alignment) from shared memory into
 * private memory `dst`. Reads the whole aligned words that cover the range,
 * so those words must lie in the same shared object (true for a ring log
 * record and a cache entry, both 8-byte aligned and sized). */
static inline void seqcopy_from(void *dst, const void *src, size_t n)
{
    if (!n)
        return;
    uint8_t *d = dst;
    size_t skip = (uintptr_t)src & 7;
    const seqcopy_word *w = (const seqcopy_word *)((uintptr_t)src - skip);
    if (skip) {
        uint64_t v = __atomic_load_n(w++, __ATOMIC_RELAXED);
        size_t take = 8 - skip < n ? 8 - skip : n;
        memcpy(d, (const uint8_t *)&v + skip, take);
        d += take;
        n -= take;
    }
    for (; n >= 8; n -= 8, d += 8) {
        uint64_t v = __atomic_load_n(w++, __ATOMIC_RELAXED);
        memcpy(d, &v, 8);
    }
    if (n) {
        uint64_t v = __atomic_load_n(w, __ATOMIC_RELAXED);
        memcpy(d, &v, n);
    }
}

/* Reader: copies `words` whole words from shared memory at the 8-byte
 * aligned `src` into `dst`: the fast case of seqcopy_from (record headers,
 * a kind and key copied whole words at a time). */
static inline void seqcopy_words_from(void *dst, const void *src, size_t words)
{
    uint8_t *d = dst;
    const seqcopy_word *w = src;
    for (size_t i = 0; i < words; i++, d += 8) {
        uint64_t v = __atomic_load_n(&w[i], __ATOMIC_RELAXED);
        memcpy(d, &v, 8);
    }
}

#endif
