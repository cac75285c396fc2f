/*
 * watch_shard: what the Watch streams of one shard share: their lists (all,
 * the waiting list of each topic, the ready list) and the event slices.
 * Shard thread.
 */
#include <stdlib.h>

#include "watch_shard.h"

/* ---- lists --------------------------------------------------------------- */

void watch_shard_add(struct watch *w)
{
    struct watch_shard *ws = w->ws;
    w->prev = NULL;
    w->next = ws->all;
    if (ws->all)
        ws->all->prev = w;
    ws->all = w;
    if (!w->mux) /* a Subscribe stream counts once, not per subscription */
        shard_stream_opened(w->ws->shard);
}

void watch_shard_remove(struct watch *w)
{
    struct watch_shard *ws = w->ws;
    watch_unlist(w);
    if (w->prev)
        w->prev->next = w->next;
    else
        ws->all = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (!w->mux)
        shard_stream_closed(w->ws->shard);
}

void watch_unlist(struct watch *w)
{
    if (w->list == WATCH_LIST_NONE)
        return;
    struct watch_shard *ws = w->ws;
    struct watch **head =
        w->list == WATCH_LIST_WAITING ? &ws->waiting[w->rd.topic->index] : &ws->ready;
    if (w->wprev)
        w->wprev->wnext = w->wnext;
    else
        *head = w->wnext;
    if (w->wnext)
        w->wnext->wprev = w->wprev;
    else if (w->list == WATCH_LIST_READY)
        ws->ready_tail = w->wprev;
    w->wprev = w->wnext = NULL;
    w->list = WATCH_LIST_NONE;
}

void watch_set_waiting(struct watch *w)
{
    watch_unlist(w);
    struct watch **head = &w->ws->waiting[w->rd.topic->index];
    w->wprev = NULL;
    w->wnext = *head;
    if (*head)
        (*head)->wprev = w;
    *head = w;
    w->list = WATCH_LIST_WAITING;
}

void watch_set_ready(struct watch *w)
{
    watch_unlist(w);
    struct watch_shard *ws = w->ws;
    w->wnext = NULL;
    w->wprev = ws->ready_tail;
    if (ws->ready_tail)
        ws->ready_tail->wnext = w;
    else
        ws->ready = w;
    ws->ready_tail = w;
    w->list = WATCH_LIST_READY;
}

/* ---- shared event slices ------------------------------------------------- */

bool watch_event_slice(struct watch *w, const struct ringlog_iter *it, const struct ringlog_view *v,
                       grpc_slice *out)
{
    bool owned;
    if (!watch_event_slice_borrow(w, it, v, out, &owned))
        return false;
    if (!owned)
        grpc_slice_ref(*out);
    return true;
}

bool watch_event_slice_borrow(struct watch *w, const struct ringlog_iter *it,
                              const struct ringlog_view *v, grpc_slice *out, bool *owned)
{
    *owned = false;
    struct watch_shard *ws = w->ws;
    struct shard *sh = ws->shard;
    const struct topic *t = w->rd.topic;
    struct slice_cache_entry *cache = ws->slices[t->index];
    if (!cache) {
        /* first send of this topic on this shard (topics may be created late) */
        cache = ws->slices[t->index] = calloc(WATCH_SLICE_CACHE, sizeof(*cache));
        if (!cache) { /* out of memory: an unshared copy */
            *out = grpc_slice_malloc(v->event_len);
            ringlog_copy_event(v, GRPC_SLICE_START_PTR(*out));
            *owned = true;
            return true; /* the caller checks the view is still valid */
        }
    }
    struct slice_cache_entry *e = &cache[v->seq & (WATCH_SLICE_CACHE - 1)];
    if (e->seq != v->seq) {
        grpc_slice s = grpc_slice_malloc(v->event_len);
        ringlog_copy_event(v, GRPC_SLICE_START_PTR(s));
        if (!ringlog_view_valid(t->log, it)) {
            grpc_slice_unref(s); /* torn: the writer lapped us while we copied */
            return false;
        }
        if (e->seq)
            grpc_slice_unref(e->slice);
        e->slice = s;
        e->seq = v->seq;
        counter_add(&sh->ctr.slice_copies, 1);
    } else {
        counter_add(&sh->ctr.slice_shares, 1);
    }
    *out = e->slice; /* the cache's reference, lent */
    return true;
}

grpc_byte_buffer *watch_event_buffer(struct watch *w, const struct ringlog_iter *it,
                                     const struct ringlog_view *v)
{
    grpc_slice s;
    if (!watch_event_slice(w, it, v, &s))
        return NULL;
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}
