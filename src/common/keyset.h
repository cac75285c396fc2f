/*
 * keyset: a growable hash map from (kind, key) pairs to a 64-bit value.
 *
 * Used on a shard thread, on cold paths only (conflation of a slow
 * subscriber remembers the sequence number of each pair's latest change).
 * Owned by its creator; no locking.
 */
#ifndef TICKFAN_KEYSET_H
#define TICKFAN_KEYSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct keyset_entry {
    uint64_t value;
    uint64_t aux; /* a second value for the caller's use, 0 when added */
    uint8_t kind_len;
    uint8_t key_len;
    char bytes[]; /* kind then key */
};

struct keyset {
    struct keyset_entry **items; /* NULL = empty slot */
    size_t cap;                  /* power of two, or 0 */
    size_t count;
};

/* Sets the value of (kind, key), adding the pair if new. Returns its entry,
 * or NULL (a part over 255 bytes, or out of memory). */
struct keyset_entry *keyset_put(struct keyset *s, const char *kind, size_t kind_len,
                                const char *key, size_t key_len, uint64_t value);
/* The entry of (kind, key), or NULL. */
const struct keyset_entry *keyset_get(const struct keyset *s, const char *kind, size_t kind_len,
                                      const char *key, size_t key_len);
/* Slot i (0 .. cap-1) for iteration: an entry, or NULL. */
static inline const struct keyset_entry *keyset_slot(const struct keyset *s, size_t i)
{
    return s->items[i];
}
void keyset_free(struct keyset *s);

#endif
