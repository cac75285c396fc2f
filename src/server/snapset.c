/*
 * snapset: the sets a reader's snapshot and conflation phases send. For
 * each (kind, key) a filter matches, the sequence number of its value as
 * of a position in the log, from the topic's last-value cache and, where
 * the cache moved on, a scan of the log. The reader (reader.c) decides
 * which position; sending the values (re-encoded with snapshot = true) is
 * the Watch service's (watch_snapshot.c).
 */
#include "snapset.h"

#include <errno.h>
#include <stdlib.h>

#include "lvc.h"

/* Adds every matching pair whose cached value is older than `before`, with
 * that value's sequence number. Returns how many matching pairs that
 * existed before `before` have a cached value at or past it (their value as
 * of `before` is not in the cache any more); with note_late they are added
 * too, with value 0 (unknown: the scan of the log fills it in, else the
 * snapshot counts it as lost). Pairs born at or after `before` are not part
 * of a snapshot as of it. */
size_t snapset_add_cache(const ringlog_t *log, const struct filter *filter, struct keyset *set,
                         uint64_t before, bool note_late)
{
    const lvc_t *cache = ringlog_lvc(log);
    size_t count = lvc_count(cache), late = 0;
    struct lvc_value *v = malloc(sizeof(*v));
    if (!v)
        return 0;
    for (size_t i = 0; i < count; i++) {
        lvc_read(cache, i, v);
        if (filter && !filter_match(filter, v->kind, v->kind_len, v->key, v->key_len))
            continue;
        if (v->seq >= before) {
            if (v->born >= before)
                continue; /* born after: not in it (born 0 is unknown: may have been) */
            late++;
            if (note_late)
                keyset_put(set, v->kind, v->kind_len, v->key, v->key_len, 0);
            continue;
        }
        struct keyset_entry *e = keyset_put(set, v->kind, v->kind_len, v->key, v->key_len, v->seq);
        if (e)
            e->aux = i + 1;
    }
    free(v);
    return late;
}

/* The latest matching record of every pair in the retained log before
 * `before`. A cold path: one pass over the log up to the start position. */
void snapset_add_scan(const ringlog_t *log, const struct filter *filter, struct keyset *set,
                      uint64_t before)
{
    struct ringlog_iter it;
    ringlog_seek_oldest(log, &it);
    while (it.seq < before) {
        struct ringlog_view v;
        int rc = ringlog_peek(log, &it, &v);
        if (rc == -ESTALE) {
            ringlog_seek_oldest(log, &it); /* lapped: what is left (the head when nothing is) */
            continue;
        }
        if (rc != 0 || v.seq >= before)
            return;
        /* kind and key are the view's own copies: valid if the record was */
        if (v.type == RINGLOG_DATA && snapset_matches(filter, &v) && ringlog_view_valid(log, &it)) {
            const struct keyset_entry *old = keyset_get(set, v.kind, v.kind_len, v.key, v.key_len);
            uint64_t aux = old ? old->aux : 0;
            struct keyset_entry *e = keyset_put(set, v.kind, v.kind_len, v.key, v.key_len, v.seq);
            if (e)
                e->aux = aux;
        }
        ringlog_advance(&it, &v);
    }
}
