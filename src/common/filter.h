/*
 * filter: a subscriber's kinds/keys filter, checked once per event.
 *
 * Built from the WatchRequest on the shard thread that owns the stream and
 * used only there. Matching is a binary search over sorted copies: no
 * allocation, no locking per event.
 */
#ifndef TICKFAN_FILTER_H
#define TICKFAN_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#define FILTER_MAX_KINDS 64
#define FILTER_MAX_KEYS 100000

struct filter_set {
    char **items; /* sorted by (length, bytes) */
    size_t count;
};

struct filter {
    struct filter_set kinds; /* empty = all kinds */
    struct filter_set keys;  /* empty = all keys */
};

/* Copies and sorts the lists. Returns 0, -EINVAL with a reason in *why for
 * an empty entry, one over 255 bytes, or too many entries, or -ENOMEM. */
int filter_init(struct filter *f, char **kinds, size_t nkinds, char **keys, size_t nkeys,
                const char **why);
bool filter_match(const struct filter *f, const char *kind, size_t kind_len, const char *key,
                  size_t key_len);
void filter_free(struct filter *f);

#endif
