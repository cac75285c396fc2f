/*
 * lvc: last-value cache. One writer, lock-free readers; see lvc.h.
 *
 * Entries live in fixed chunks that are allocated as keys appear and never
 * move, so a reader holding an index needs no lock. The writer finds a key's
 * entry through an open-addressing table that only it touches. Fields a
 * reader copies while the writer may change them move through relaxed
 * atomic accesses on both sides (seqcopy.h); the generation decides.
 */
#include "lvc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "seqcopy.h"

#define CHUNK 1024

/* The arrays are word-aligned and sized in whole words for seqcopy. */
struct entry {
    _Atomic uint32_t gen; /* odd while the writer changes the entry */
    uint16_t key_len;
    uint16_t kind_len;
    uint32_t event_len;
    uint64_t seq;
    uint64_t pos;
    uint64_t born; /* seq of the pair's first value; 0: unknown */
    bool inline_event;
    _Alignas(8) char key[LVC_KEY_MAX + 1];
    _Alignas(8) char kind[LVC_KEY_MAX + 1];
    _Alignas(8) uint8_t event[LVC_VALUE_MAX];
};
_Static_assert((LVC_KEY_MAX + 1) % 8 == 0 && LVC_VALUE_MAX % 8 == 0, "whole words");

#define STORE(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define LOAD(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

struct lvc {
    size_t max_keys;
    struct entry **chunks; /* max_keys / CHUNK + 1 slots */
    _Atomic size_t count;
    /* writer only */
    uint32_t *table; /* entry index + 1; 0 = empty */
    size_t table_mask;
    _Atomic uint64_t rejected;
};

static uint64_t hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

int lvc_create(lvc_t **out, size_t max_keys)
{
    *out = NULL;
    if (max_keys == 0 || max_keys > (1u << 24))
        return -EINVAL;
    lvc_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->max_keys = max_keys;
    size_t tsize = 1;
    while (tsize < max_keys * 2)
        tsize <<= 1;
    c->table = calloc(tsize, sizeof(*c->table));
    c->table_mask = tsize - 1;
    c->chunks = calloc(max_keys / CHUNK + 1, sizeof(*c->chunks));
    if (!c->table || !c->chunks) {
        lvc_destroy(c);
        return -ENOMEM;
    }
    atomic_init(&c->count, 0);
    atomic_init(&c->rejected, 0);
    *out = c;
    return 0;
}

void lvc_destroy(lvc_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->chunks && i <= c->max_keys / CHUNK; i++)
        free(c->chunks[i]);
    free(c->chunks);
    free(c->table);
    free(c);
}

static struct entry *entry_at(const lvc_t *c, size_t i)
{
    return &c->chunks[i / CHUNK][i % CHUNK];
}

bool lvc_update(lvc_t *c, const char *key, size_t key_len, const char *kind, size_t kind_len,
                uint64_t seq, uint64_t pos, const uint8_t *event, size_t event_len)
{
    if (key_len > LVC_KEY_MAX || kind_len > LVC_KEY_MAX)
        return false;
    size_t slot = (hash(key, key_len) ^ (hash(kind, kind_len) * 31)) & c->table_mask;
    struct entry *e = NULL;
    size_t count = atomic_load_explicit(&c->count, memory_order_relaxed);
    for (;;) {
        uint32_t idx = c->table[slot];
        if (idx == 0)
            break;
        struct entry *x = entry_at(c, idx - 1);
        if (x->key_len == key_len && x->kind_len == kind_len && memcmp(x->key, key, key_len) == 0 &&
            memcmp(x->kind, kind, kind_len) == 0) {
            e = x;
            break;
        }
        slot = (slot + 1) & c->table_mask;
    }
    bool is_new = e == NULL;
    if (is_new) {
        if (count >= c->max_keys) {
            atomic_fetch_add_explicit(&c->rejected, 1, memory_order_relaxed);
            return false;
        }
        if (!c->chunks[count / CHUNK]) {
            c->chunks[count / CHUNK] = calloc(CHUNK, sizeof(struct entry));
            if (!c->chunks[count / CHUNK]) {
                atomic_fetch_add_explicit(&c->rejected, 1, memory_order_relaxed);
                return false;
            }
        }
        e = entry_at(c, count);
        c->table[slot] = (uint32_t)count + 1;
    }
    uint32_t gen = atomic_load_explicit(&e->gen, memory_order_relaxed);
    atomic_store_explicit(&e->gen, gen + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    STORE(e->key_len, (uint16_t)key_len);
    seqcopy_to(e->key, key, key_len);
    STORE(e->kind_len, (uint16_t)kind_len);
    seqcopy_to(e->kind, kind, kind_len);
    if (is_new)
        STORE(e->born, seq);
    STORE(e->seq, seq);
    STORE(e->pos, pos);
    STORE(e->event_len, (uint32_t)event_len);
    STORE(e->inline_event, event_len <= LVC_VALUE_MAX);
    if (event_len <= LVC_VALUE_MAX)
        seqcopy_to(e->event, event, event_len);
    atomic_store_explicit(&e->gen, gen + 2, memory_order_release);
    if (is_new)
        atomic_store_explicit(&c->count, count + 1, memory_order_release);
    return true;
}

size_t lvc_count(const lvc_t *c)
{
    return atomic_load_explicit(&c->count, memory_order_acquire);
}

void lvc_read(const lvc_t *c, size_t i, struct lvc_value *out)
{
    const struct entry *e = entry_at(c, i);
    for (;;) {
        uint32_t g1 = atomic_load_explicit(&e->gen, memory_order_acquire);
        if (g1 & 1)
            continue;
        /* a torn read may give any lengths: bound them to the arrays */
        out->seq = LOAD(e->seq);
        out->pos = LOAD(e->pos);
        out->born = LOAD(e->born);
        uint16_t key_len = LOAD(e->key_len), kind_len = LOAD(e->kind_len);
        out->key_len = key_len < LVC_KEY_MAX ? key_len : LVC_KEY_MAX;
        out->kind_len = kind_len < LVC_KEY_MAX ? kind_len : LVC_KEY_MAX;
        out->event_len = LOAD(e->event_len);
        out->inline_event = LOAD(e->inline_event);
        seqcopy_from(out->key, e->key, out->key_len);
        seqcopy_from(out->kind, e->kind, out->kind_len);
        if (out->inline_event)
            seqcopy_from(out->event, e->event,
                         out->event_len <= LVC_VALUE_MAX ? out->event_len : LVC_VALUE_MAX);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->gen, memory_order_relaxed) == g1)
            break;
    }
    out->key[out->key_len] = 0;
    out->kind[out->kind_len] = 0;
}

void lvc_forget_births(lvc_t *c)
{
    size_t count = atomic_load_explicit(&c->count, memory_order_relaxed);
    for (size_t i = 0; i < count; i++)
        STORE(entry_at(c, i)->born, 0);
}

uint64_t lvc_rejected(const lvc_t *c)
{
    return atomic_load_explicit(&c->rejected, memory_order_relaxed);
}
