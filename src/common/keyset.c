/*
 * keyset: open-addressing map of (kind, key) pairs to a value. One thread, cold paths.
 */
#include "keyset.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t pair_hash(const char *kind, size_t kind_len, const char *key, size_t key_len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < kind_len; i++)
        h = (h ^ (uint8_t)kind[i]) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ (uint8_t)key[i]) * 1099511628211ull;
    return h;
}

static bool entry_is(const struct keyset_entry *e, const char *kind, size_t kind_len,
                     const char *key, size_t key_len)
{
    return e->kind_len == kind_len && e->key_len == key_len &&
           memcmp(e->bytes, kind, kind_len) == 0 && memcmp(e->bytes + kind_len, key, key_len) == 0;
}

static size_t slot_of(struct keyset_entry **items, size_t cap, const char *kind, size_t kind_len,
                      const char *key, size_t key_len)
{
    size_t i = pair_hash(kind, kind_len, key, key_len) & (cap - 1);
    while (items[i] && !entry_is(items[i], kind, kind_len, key, key_len))
        i = (i + 1) & (cap - 1);
    return i;
}

static int grow(struct keyset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 64;
    struct keyset_entry **items = calloc(cap, sizeof(*items));
    if (!items)
        return -ENOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        struct keyset_entry *e = s->items[i];
        if (e)
            items[slot_of(items, cap, e->bytes, e->kind_len, e->bytes + e->kind_len, e->key_len)] =
                e;
    }
    free(s->items);
    s->items = items;
    s->cap = cap;
    return 0;
}

struct keyset_entry *keyset_put(struct keyset *s, const char *kind, size_t kind_len,
                                const char *key, size_t key_len, uint64_t value)
{
    if (kind_len > 255 || key_len > 255)
        return NULL;
    if ((s->count + 1) * 2 > s->cap && grow(s))
        return NULL;
    size_t i = slot_of(s->items, s->cap, kind, kind_len, key, key_len);
    if (!s->items[i]) {
        struct keyset_entry *e = malloc(sizeof(*e) + kind_len + key_len);
        if (!e)
            return NULL;
        e->aux = 0;
        e->kind_len = (uint8_t)kind_len;
        e->key_len = (uint8_t)key_len;
        memcpy(e->bytes, kind, kind_len);
        memcpy(e->bytes + kind_len, key, key_len);
        s->items[i] = e;
        s->count++;
    }
    s->items[i]->value = value;
    return s->items[i];
}

const struct keyset_entry *keyset_get(const struct keyset *s, const char *kind, size_t kind_len,
                                      const char *key, size_t key_len)
{
    if (!s->cap || kind_len > 255 || key_len > 255)
        return NULL;
    return s->items[slot_of(s->items, s->cap, kind, kind_len, key, key_len)];
}

void keyset_free(struct keyset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->items[i]);
    free(s->items);
    s->items = NULL;
    s->cap = s->count = 0;
}
