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
        cursor_format(reader_cursor(&w->rd), text);
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
    ringlog_t *log = w->rd.topic->log;
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

/* The next value of the snapshot (or conflation), or NULL when it is
 * complete. The request's snapshot ends with a Gap when values were lost,
 * so the client knows its state is short of them; a conflation's Gap has
 * already told what was skipped. */
grpc_byte_buffer *watch_snapshot_next(struct watch *w)
{
    while (w->rd.snap_index < w->rd.snapset->cap) {
        const struct keyset_entry *e = keyset_slot(w->rd.snapset, w->rd.snap_index++);
        if (!e)
            continue;
        grpc_byte_buffer *bb = snapshot_value(w, e);
        if (!bb) {
            w->rd.snap_lost++; /* neither the log nor the cache has it any more */
            continue;
        }
        w->rd.snap_sent++;
        return bb;
    }
    bool told = w->rd.snap_initial && w->rd.snap_lost;
    reader_snapshot_end(&w->rd);
    if (!told)
        return NULL;
    log_info("msg=snapshot_incomplete id=%llu topic=%s sent=%llu lost=%llu",
             (unsigned long long)w->id, w->rd.topic->name, (unsigned long long)w->rd.snap_sent,
             (unsigned long long)w->rd.snap_lost);
    w->rd.dropped += w->rd.snap_lost;
    counter_add(&w->ws->shard->ctr.rd.dropped_events, w->rd.snap_lost);
    counter_add(&w->ws->shard->ctr.rd.gaps, 1);
    return wire_gap(reader_cursor(&w->rd), w->rd.snap_lost, EVENTS__V1__GAP_REASON__GAP_RETENTION,
                    reader_cursor(&w->rd));
}
