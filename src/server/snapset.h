/*
 * snapset: the (kind, key) -> value sets of a snapshot and of conflation
 * (snapset.c). No gRPC, no reader: a log, a filter (NULL: every pair) and
 * a position.
 */
#ifndef TICKFAN_SNAPSET_H
#define TICKFAN_SNAPSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"
#include "keyset.h"
#include "ringlog.h"

/* Does record v pass `filter` (NULL: everything; a Gap always does)? */
static inline bool snapset_matches(const struct filter *filter, const struct ringlog_view *v)
{
    return v->type == RINGLOG_GAP || !filter ||
           filter_match(filter, v->kind, v->kind_len, v->key, v->key_len);
}

/* Adds to `set` every matching pair whose cached value is older than
 * `before`; returns how many pairs are late (their value as of `before`
 * is not in the cache any more). */
size_t snapset_add_cache(const ringlog_t *log, const struct filter *filter, struct keyset *set,
                         uint64_t before, bool note_late);
/* Fills in, from a scan of the retained log, the latest matching record
 * before `before` of every pair. */
void snapset_add_scan(const ringlog_t *log, const struct filter *filter, struct keyset *set,
                      uint64_t before);

#endif
