/*
 * watch_snapshot: a stream's snapshot and conflation phase. For each
 * (kind, key) the filter matches, the sequence number of its value as of
 * the stream's position, from the topic's last-value cache and, where the
 * cache moved on, a scan of the log; then one value per send, each
 * re-encoded with snapshot = true and the position's cursor. Shard thread.
 */
#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "lvc.h"
#include "watch_shard.h"

/* Moves `it` to the oldest record the log holds (it may move on under us). */
void watch_seek_oldest(ringlog_t *log, struct ringlog_iter *it)
{
    for (int i = 0; i < 64; i++)
        if (ringlog_seek(log, ringlog_first_seq(log), it) == 0)
            return;
    ringlog_seek_head(log, it);
}

/* An event re-encoded with snapshot = true and the snapshot's cursor (the
 * position the stream continues from). */
static grpc_byte_buffer *snapshot_event(struct watch *w, const uint8_t *event, size_t len)
{
    Events__V1__WatchEvent *ev = events__v1__watch_event__unpack(NULL, len, event);
    if (!ev)
        return NULL;
    grpc_byte_buffer *bb = NULL;
    if (ev->payload_case == EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA) {
        char text[CURSOR_TEXT_MAX];
        cursor_format(watch_cursor(w), text);
        ev->data->snapshot = true;
        char *old_cursor = ev->cursor;
        ev->cursor = text;
        size_t n = events__v1__watch_event__get_packed_size(ev);
        grpc_slice slice = grpc_slice_malloc(n);
        events__v1__watch_event__pack(ev, GRPC_SLICE_START_PTR(slice));
        bb = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        ev->cursor = old_cursor;
    }
    events__v1__watch_event__free_unpacked(ev, NULL);
    return bb;
}

/* The snapshot value of entry e: the record with its sequence number, from
 * the log, or else from the cache if the cache still holds that very value. */
static grpc_byte_buffer *snapshot_value(struct watch *w, const struct keyset_entry *e)
{
    ringlog_t *log = w->topic->log;
    struct ringlog_iter it;
    struct ringlog_view v;
    if (!e->value)
        return NULL; /* a late pair the scan did not find: its value is gone */
    if (ringlog_seek(log, e->value, &it) == 0 && ringlog_peek(log, &it, &v) == 0 &&
        v.seq == e->value) {
        uint8_t *copy = malloc(v.event_len);
        grpc_byte_buffer *bb = NULL;
        if (copy) {
            ringlog_copy_event(&v, copy);
            if (ringlog_view_valid(log, &it))
                bb = snapshot_event(w, copy, v.event_len);
            free(copy);
        }
        if (bb)
            return bb;
    }
    if (e->aux) {
        struct lvc_value *cv = malloc(sizeof(*cv));
        grpc_byte_buffer *bb = NULL;
        if (cv) {
            lvc_read(ringlog_lvc(log), e->aux - 1, cv);
            if (cv->seq == e->value && cv->inline_event)
                bb = snapshot_event(w, cv->event, cv->event_len);
            free(cv);
        }
        return bb;
    }
    return NULL;
}

/* Adds every matching pair whose cached value is older than `before`, with
 * that value's sequence number. Returns how many matching pairs that
 * existed before `before` have a cached value at or past it (their value as
 * of `before` is not in the cache any more); with note_late they are added
 * too, with value 0 (unknown: the scan of the log fills it in, else the
 * snapshot counts it as lost). Pairs born at or after `before` are not part
 * of a snapshot as of it. */
size_t watch_snapset_add_cache(struct watch *w, struct keyset *set, uint64_t before, bool note_late)
{
    const lvc_t *cache = ringlog_lvc(w->topic->log);
    size_t count = lvc_count(cache), late = 0;
    struct lvc_value *v = malloc(sizeof(*v));
    if (!v)
        return 0;
    for (size_t i = 0; i < count; i++) {
        lvc_read(cache, i, v);
        if (w->has_filter && !filter_match(&w->filter, v->kind, v->kind_len, v->key, v->key_len))
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
static void snapset_add_scan(struct watch *w, struct keyset *set, uint64_t before)
{
    ringlog_t *log = w->topic->log;
    struct ringlog_iter it;
    watch_seek_oldest(log, &it);
    while (it.seq < before) {
        struct ringlog_view v;
        int rc = ringlog_peek(log, &it, &v);
        if (rc == -ESTALE) {
            watch_seek_oldest(log, &it); /* lapped: what is left (the head when nothing is) */
            continue;
        }
        if (rc != 0 || v.seq >= before)
            return;
        /* kind and key are the view's own copies: valid if the record was */
        if (v.type == RINGLOG_DATA && watch_matches(w, &v) && ringlog_view_valid(log, &it)) {
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
 * matching pair had just before w->it. A live start may move the position
 * forward to one where the cache is consistent; any other start is fixed,
 * and pairs that changed since come from a scan of the log up to it. A live
 * start whose every position was overtaken keeps the last one and its
 * cached values, and scans too: the pairs that only the cache holds any
 * more are in the snapshot whatever the writer does. A pair that existed
 * before the position but whose value as of it neither the log nor the
 * cache holds any more stays in the set with value 0: counted as lost, and
 * told by the Gap that ends the snapshot. */
bool watch_snapshot_prepare(struct watch *w, bool live)
{
    w->snapset = calloc(1, sizeof(*w->snapset));
    if (!w->snapset)
        return false;
    size_t late = 0;
    for (int attempt = 1;; attempt++) {
        late = watch_snapset_add_cache(w, w->snapset, w->it.seq, true);
        if (!late || !live)
            break;
        if (attempt == SNAPSHOT_LIVE_ATTEMPTS) {
            log_debug("msg=snapshot_overtaken id=%llu topic=%s attempts=%d late=%zu action=scan",
                      (unsigned long long)w->id, w->topic->name, attempt, late);
            break;
        }
        keyset_free(w->snapset); /* the cache moved past us: take a newer position */
        ringlog_seek_head(w->topic->log, &w->it);
        w->backlog_end = w->it.seq - 1;
    }
    if (late)
        snapset_add_scan(w, w->snapset, w->it.seq);
    w->snap_active = true;
    w->snap_initial = true;
    w->snap_index = 0;
    return true;
}

void watch_snapshot_end(struct watch *w)
{
    w->snap_active = false;
    w->snap_initial = false;
    if (w->snapset) {
        keyset_free(w->snapset);
        free(w->snapset);
        w->snapset = NULL;
    }
}

/* The next value of the snapshot (or conflation), or NULL when it is
 * complete. The request's snapshot ends with a Gap when values were lost,
 * so the client knows its state is short of them; a conflation's Gap has
 * already told what was skipped. */
grpc_byte_buffer *watch_snapshot_next(struct watch *w)
{
    while (w->snap_index < w->snapset->cap) {
        const struct keyset_entry *e = keyset_slot(w->snapset, w->snap_index++);
        if (!e)
            continue;
        grpc_byte_buffer *bb = snapshot_value(w, e);
        if (!bb) {
            w->snap_lost++; /* neither the log nor the cache has it any more */
            continue;
        }
        w->snap_sent++;
        return bb;
    }
    bool told = w->snap_initial && w->snap_lost;
    watch_snapshot_end(w);
    if (!told)
        return NULL;
    log_info("msg=snapshot_incomplete id=%llu topic=%s sent=%llu lost=%llu",
             (unsigned long long)w->id, w->topic->name, (unsigned long long)w->snap_sent,
             (unsigned long long)w->snap_lost);
    w->dropped += w->snap_lost;
    counter_add(&w->ws->shard->ctr.dropped_events, w->snap_lost);
    counter_add(&w->ws->shard->ctr.gaps, 1);
    return wire_gap(watch_cursor(w), w->snap_lost, EVENTS__V1__GAP_REASON__GAP_RETENTION,
                    watch_cursor(w));
}
