/*
 * reader_snapshot: the sets a reader's snapshot and conflation phases send.
 * For each (kind, key) the filter matches, the sequence number of its value
 * as of the reader's position, from the topic's last-value cache and, where
 * the cache moved on, a scan of the log. Sending the values (re-encoded
 * with snapshot = true) is the Watch service's (watch_snapshot.c).
 */
#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "lvc.h"
#include "reader.h"

/* Moves `it` to the oldest record the log holds (it may move on under us). */
void reader_seek_oldest(ringlog_t *log, struct ringlog_iter *it)
{
    for (int i = 0; i < 64; i++)
        if (ringlog_seek(log, ringlog_first_seq(log), it) == 0)
            return;
    ringlog_seek_head(log, it);
}

/* Adds every matching pair whose cached value is older than `before`, with
 * that value's sequence number. Returns how many matching pairs that
 * existed before `before` have a cached value at or past it (their value as
 * of `before` is not in the cache any more); with note_late they are added
 * too, with value 0 (unknown: the scan of the log fills it in, else the
 * snapshot counts it as lost). Pairs born at or after `before` are not part
 * of a snapshot as of it. */
size_t reader_snapset_add_cache(struct reader *r, struct keyset *set, uint64_t before,
                                bool note_late)
{
    const lvc_t *cache = ringlog_lvc(r->topic->log);
    size_t count = lvc_count(cache), late = 0;
    struct lvc_value *v = malloc(sizeof(*v));
    if (!v)
        return 0;
    for (size_t i = 0; i < count; i++) {
        lvc_read(cache, i, v);
        if (r->has_filter && !filter_match(&r->filter, v->kind, v->kind_len, v->key, v->key_len))
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
static void snapset_add_scan(struct reader *r, struct keyset *set, uint64_t before)
{
    ringlog_t *log = r->topic->log;
    struct ringlog_iter it;
    reader_seek_oldest(log, &it);
    while (it.seq < before) {
        struct ringlog_view v;
        int rc = ringlog_peek(log, &it, &v);
        if (rc == -ESTALE) {
            reader_seek_oldest(log, &it); /* lapped: what is left (the head when nothing is) */
            continue;
        }
        if (rc != 0 || v.seq >= before)
            return;
        /* kind and key are the view's own copies: valid if the record was */
        if (v.type == RINGLOG_DATA && reader_matches(r, &v) && ringlog_view_valid(log, &it)) {
            const struct keyset_entry *old = keyset_get(set, v.kind, v.kind_len, v.key, v.key_len);
            uint64_t aux = old ? old->aux : 0;
            struct keyset_entry *e = keyset_put(set, v.kind, v.kind_len, v.key, v.key_len, v.seq);
            if (e)
                e->aux = aux;
        }
        ringlog_advance(&it, &v);
    }
}

#define SNAPSHOT_LIVE_ATTEMPTS 8 /* positions a live snapshot tries before it scans */

/* The snapshot as of the stream's position, exactly: the value every
 * matching pair had just before r->it. A live start may move the position
 * forward to one where the cache is consistent; any other start is fixed,
 * and pairs that changed since come from a scan of the log up to it. A live
 * start whose every position was overtaken keeps the last one and its
 * cached values, and scans too: the pairs that only the cache holds any
 * more are in the snapshot whatever the writer does. A pair that existed
 * before the position but whose value as of it neither the log nor the
 * cache holds any more stays in the set with value 0: counted as lost, and
 * told by the Gap that ends the snapshot. */
bool reader_snapshot_prepare(struct reader *r, bool live)
{
    r->snapset = calloc(1, sizeof(*r->snapset));
    if (!r->snapset)
        return false;
    size_t late = 0;
    for (int attempt = 1;; attempt++) {
        late = reader_snapset_add_cache(r, r->snapset, r->it.seq, true);
        if (!late || !live)
            break;
        if (attempt == SNAPSHOT_LIVE_ATTEMPTS) {
            log_debug("msg=snapshot_overtaken id=%llu topic=%s attempts=%d late=%zu action=scan",
                      (unsigned long long)r->id, r->topic->name, attempt, late);
            break;
        }
        keyset_free(r->snapset); /* the cache moved past us: take a newer position */
        ringlog_seek_head(r->topic->log, &r->it);
        r->backlog_end = r->it.seq - 1;
    }
    if (late)
        snapset_add_scan(r, r->snapset, r->it.seq);
    r->snap_active = true;
    r->snap_initial = true;
    r->snap_index = 0;
    return true;
}

void reader_snapshot_end(struct reader *r)
{
    r->snap_active = false;
    r->snap_initial = false;
    if (r->snapset) {
        keyset_free(r->snapset);
        free(r->snapset);
        r->snapset = NULL;
    }
}
