/*
 * subscribe: the Subscribe bidi stream. See subscribe.h.
 *
 * Life of a stream: accepted -> initial metadata and RECV_CLOSE_ON_SERVER
 * (refs=1) and one RECV_MESSAGE at a time, each an add or a remove ->
 * subscriptions put deliveries into the open batch -> the batch is encoded
 * into one SubscribeResponse when no message is in flight -> status (drain,
 * undecodable request) or client cancel -> freed with its subscriptions
 * when no operation is in flight any more.
 *
 * The open batch: deliveries in order, each holding a reference to its
 * bytes (a data event's is the shard's shared slice) and a chain of ids.
 * A data event of (topic, seq) that a subscription sends while the batch
 * already holds it after that subscription's last delivery is not added
 * again: the subscription's id joins that delivery. Each subscription's
 * deliveries therefore stay in its own order.
 */
#include "subscribe.h"
#include "clock.h"

#include <errno.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "log.h"
#include "ringlog.h"
#include "server.h"
#include "topics.h"
#include "watch_shard.h"
#include "wire.h"

#define NO_LINK UINT32_MAX
#define TOMBSTONE ((struct watch *)1)
/* what a delivery costs in the message beyond its event: its tags, lengths
 * and one id (an estimate on the safe side, for the batch limit) */
#define DELIVERY_OVERHEAD 16

enum { FIELD_EVENT = 1, FIELD_END = 3 };

struct delivery {
    grpc_slice bytes;
    uint32_t field;
    uint32_t first_id, last_id; /* chain in mux->ids */
    uint32_t topic;
    uint64_t seq; /* a data event: with topic, what may be shared; 0: never */
    bool dead;    /* a heartbeat an event of its subscription made moot */
};

struct id_link {
    uint32_t id;
    uint32_t next;
};

struct mux {
    struct call base;  /* first; on its shard's list (struct sub_shard) */
    struct mux *dnext; /* the shard's streams with something to send */
    bool dirty;

    struct sub_shard *ss; /* the service's state on that shard */
    uint64_t id;
    char peer[64];
    bool counted;
    bool send_busy;
    bool status_started;
    bool stopping; /* ending: no more filling, status once the batch is out */
    grpc_status_code end_code;
    char end_details[320];
    grpc_slice status_details;
    grpc_byte_buffer *recv_bb, *send_bb;
    struct tag t_recv, t_send, t_status;

    /* live subscriptions by id: open addressing, linear probing */
    struct watch **table;
    size_t table_cap, table_used; /* used counts tombstones */
    size_t nsubs;
    struct watch *subs; /* all of them, live or ended and not yet freed */
    struct watch *ready, *ready_tail;

    /* the open batch */
    struct delivery *dl;
    size_t ndl, capdl;
    struct id_link *ids;
    size_t nids, capids;
    uint32_t *dedup; /* (topic, seq) -> delivery index + 1 */
    size_t dedup_cap;
    size_t batch_bytes;
    uint64_t gen; /* bumped when a batch goes out */
    uint64_t emitted;
    int64_t now_us; /* monotonic, taken once per flush: when its deliveries went out */
};

/* The Subscribe service's state on one shard. */
struct sub_shard {
    struct call_list muxes; /* the streams on this shard */
    struct mux *mux_dirty;  /* ... of them with something to send */
    /* per topic index: the head seq a flush reads up to, valid while
     * horizon_of equals horizon_gen (bumped per flush) */
    uint64_t *horizon_seq, *horizon_of;
    uint64_t horizon_gen;
};

static bool mux_live(const struct mux *m)
{
    return !m->status_started && !m->base.closed && !m->stopping;
}

/* ---- the shard's lists -------------------------------------------------- */

static void set_dirty(struct mux *m)
{
    if (m->dirty)
        return;
    m->dirty = true;
    m->dnext = m->ss->mux_dirty;
    m->ss->mux_dirty = m;
}

static void undirty(struct mux *m)
{
    if (!m->dirty)
        return;
    for (struct mux **p = &m->ss->mux_dirty; *p; p = &(*p)->dnext)
        if (*p == m) {
            *p = m->dnext;
            break;
        }
    m->dirty = false;
}

/* ---- subscriptions by id ------------------------------------------------ */

static size_t slot_of(uint32_t id, size_t cap)
{
    return (id * 2654435761u) & (cap - 1);
}

static struct watch *find(const struct mux *m, uint32_t id)
{
    if (!m->table_cap)
        return NULL;
    for (size_t i = slot_of(id, m->table_cap);; i = (i + 1) & (m->table_cap - 1)) {
        struct watch *w = m->table[i];
        if (!w)
            return NULL;
        if (w != TOMBSTONE && w->sub_id == id)
            return w;
    }
}

static int table_grow(struct mux *m)
{
    size_t cap = m->table_cap ? m->table_cap : 16;
    while (m->nsubs * 2 + 2 > cap)
        cap *= 2;
    struct watch **t = calloc(cap, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < m->table_cap; i++) {
        struct watch *w = m->table[i];
        if (!w || w == TOMBSTONE)
            continue;
        size_t j = slot_of(w->sub_id, cap);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = w;
    }
    free(m->table);
    m->table = t;
    m->table_cap = cap;
    m->table_used = m->nsubs;
    return 0;
}

static int table_put(struct mux *m, struct watch *w)
{
    if ((m->table_used + 1) * 4 > m->table_cap * 3 && table_grow(m))
        return -ENOMEM;
    size_t i = slot_of(w->sub_id, m->table_cap);
    while (m->table[i] && m->table[i] != TOMBSTONE)
        i = (i + 1) & (m->table_cap - 1);
    if (!m->table[i])
        m->table_used++;
    m->table[i] = w;
    m->nsubs++;
    return 0;
}

static void table_del(struct mux *m, struct watch *w)
{
    if (!m->table_cap)
        return;
    for (size_t i = slot_of(w->sub_id, m->table_cap);; i = (i + 1) & (m->table_cap - 1)) {
        if (!m->table[i])
            return;
        if (m->table[i] == w) {
            m->table[i] = TOMBSTONE;
            m->nsubs--;
            return;
        }
    }
}

/* ---- the open batch ----------------------------------------------------- */

static size_t dedup_slot(uint32_t topic, uint64_t seq, size_t cap)
{
    uint64_t h = (seq ^ ((uint64_t)topic << 48)) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (cap - 1);
}

static void dedup_put(struct mux *m, size_t index)
{
    const struct delivery *d = &m->dl[index];
    for (size_t i = dedup_slot(d->topic, d->seq, m->dedup_cap);; i = (i + 1) & (m->dedup_cap - 1)) {
        uint32_t x = m->dedup[i];
        if (!x || (m->dl[x - 1].seq == d->seq && m->dl[x - 1].topic == d->topic)) {
            m->dedup[i] = (uint32_t)index + 1; /* the newest delivery of it */
            return;
        }
    }
}

/* Room for more id links. false: out of memory. */
static bool grow_ids(struct mux *m)
{
    size_t cap = m->capids ? m->capids * 2 : 64;
    struct id_link *ids = realloc(m->ids, cap * sizeof(*ids));
    if (!ids)
        return false;
    m->ids = ids;
    m->capids = cap;
    return true;
}

/* Room for one more delivery (and its dedup entry). false: out of memory. */
static bool batch_reserve(struct mux *m)
{
    if (m->ndl == m->capdl) {
        size_t cap = m->capdl ? m->capdl * 2 : 64;
        struct delivery *dl = realloc(m->dl, cap * sizeof(*dl));
        if (!dl)
            return false;
        m->dl = dl;
        m->capdl = cap;
    }
    if (m->nids == m->capids && !grow_ids(m))
        return false;
    if ((m->ndl + 1) * 2 > m->dedup_cap) {
        size_t cap = m->dedup_cap ? m->dedup_cap * 2 : 128;
        uint32_t *t = calloc(cap, sizeof(*t));
        if (!t)
            return false;
        free(m->dedup);
        m->dedup = t;
        m->dedup_cap = cap;
        for (size_t i = 0; i < m->ndl; i++)
            if (m->dl[i].seq)
                dedup_put(m, i);
    }
    return true;
}

static uint32_t new_link(struct mux *m, uint32_t id)
{
    m->ids[m->nids] = (struct id_link){.id = id, .next = NO_LINK};
    return (uint32_t)m->nids++;
}

/* Appends a delivery for `id` (w: its subscription, NULL for a refused
 * add). Takes the slice. */
static void append(struct mux *m, struct watch *w, uint32_t id, uint32_t field, grpc_slice bytes,
                   uint32_t topic, uint64_t seq)
{
    if (!batch_reserve(m)) {
        /* the stream cannot carry what it owes: end it, the client resumes */
        grpc_slice_unref(bytes);
        log_error("msg=subscribe_out_of_memory stream=%llu", (unsigned long long)m->id);
        grpc_call_cancel_with_status(m->base.call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "server out of memory", NULL);
        return;
    }
    size_t index = m->ndl++;
    uint32_t link = new_link(m, id);
    m->dl[index] = (struct delivery){.bytes = bytes,
                                     .field = field,
                                     .first_id = link,
                                     .last_id = link,
                                     .topic = topic,
                                     .seq = seq};
    if (seq)
        dedup_put(m, index);
    m->batch_bytes += GRPC_SLICE_LENGTH(bytes) + DELIVERY_OVERHEAD;
    m->emitted++;
    counter_add(&m->base.shard->ctr.sub_deliveries, 1);
    counter_add(&m->base.shard->ctr.sub_delivered, 1);
    if (w) {
        w->mgen = m->gen;
        w->mlast = (uint32_t)index + 1;
    }
    set_dirty(m);
}

static void mux_emit_event(struct mux *m, struct watch *w, grpc_slice event, bool owned,
                           uint32_t topic, uint64_t seq)
{
    if (w->mgen == m->gen && w->mhb_gen == m->gen && w->mlast && w->mlast == w->mhb) {
        /* its last delivery is a heartbeat (sent while it was idle): the
         * event after it carries a newer cursor, so the heartbeat goes,
         * and the event may join one sent before it */
        m->dl[w->mhb - 1].dead = true;
        w->mlast = w->mhb_before;
        w->mhb = 0;
    }
    uint32_t last = w->mgen == m->gen ? w->mlast : 0;
    if (m->dedup_cap) {
        for (size_t i = dedup_slot(topic, seq, m->dedup_cap);; i = (i + 1) & (m->dedup_cap - 1)) {
            uint32_t x = m->dedup[i];
            if (!x)
                break;
            struct delivery *d = &m->dl[x - 1];
            if (d->seq != seq || d->topic != topic)
                continue;
            if (x <= last)
                break; /* it would go before w's last delivery: a new one */
            if (m->nids == m->capids && !grow_ids(m))
                break; /* out of memory: append() ends the stream */
            uint32_t link = new_link(m, w->sub_id);
            m->ids[d->last_id].next = link;
            d->last_id = link;
            if (owned)
                grpc_slice_unref(event); /* the delivery holds its own */
            m->batch_bytes += 5;
            m->emitted++;
            counter_add(&m->base.shard->ctr.sub_delivered, 1);
            w->mgen = m->gen;
            w->mlast = x;
            return;
        }
    }
    append(m, w, w->sub_id, FIELD_EVENT, owned ? event : grpc_slice_ref(event), topic, seq);
}

static void mux_emit_buffer(struct mux *m, struct watch *w, grpc_byte_buffer *bb);

static void mux_emit_heartbeat(struct mux *m, struct watch *w, grpc_byte_buffer *bb)
{
    uint32_t before = w->mgen == m->gen ? w->mlast : 0;
    mux_emit_buffer(m, w, bb);
    if (w->mgen == m->gen && w->mlast > before) {
        w->mhb = w->mlast;
        w->mhb_before = before;
        w->mhb_gen = m->gen;
    }
}

static void mux_emit_buffer(struct mux *m, struct watch *w, grpc_byte_buffer *bb)
{
    grpc_slice s;
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
        s = grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
    } else if (wire_read_all(bb, &s)) {
        /* never for the buffers wire.c makes; were it to happen, the
         * subscription would lose an event without being told: end the
         * stream instead, the client resumes from its cursors */
        grpc_byte_buffer_destroy(bb);
        log_error("msg=subscribe_unreadable_event stream=%llu sub=%u", (unsigned long long)m->id,
                  w->sub_id);
        grpc_call_cancel_with_status(m->base.call, GRPC_STATUS_INTERNAL, "could not encode event",
                                     NULL);
        return;
    }
    grpc_byte_buffer_destroy(bb);
    append(m, w, w->sub_id, FIELD_EVENT, s, 0, 0);
}

/* Ends subscription `id` of the stream before it started (or for an id that
 * is not live): a SubscriptionEnd with no subscription behind it. */
static void refuse(struct mux *m, uint32_t id, grpc_status_code code, const char *msg)
{
    log_info("msg=subscription_refused stream=%llu sub=%u code=%s detail=\"%s\"",
             (unsigned long long)m->id, id, wire_status_name(code), msg);
    if ((unsigned)code < 17)
        counter_add(&m->base.shard->ctr.sub_ends[code], 1);
    append(m, NULL, id, FIELD_END, wire_subscription_end(code, msg, NULL, NULL), 0, 0);
}

static void mux_wake(struct mux *m, struct watch *w);

static void mux_end(struct mux *m, struct watch *w, grpc_status_code code, const char *details,
                    const char *md_key, const char *md_value)
{
    table_del(m, w);
    const char *cursor = NULL, *earliest = NULL;
    if (md_key && !strcmp(md_key, "tickfan-cursor"))
        cursor = md_value;
    else if (md_key && !strcmp(md_key, "tickfan-earliest-cursor"))
        earliest = md_value;
    append(m, w, w->sub_id, FIELD_END, wire_subscription_end(code, details, cursor, earliest), 0,
           0);
    mux_wake(m, w); /* to be freed when the stream next gathers */
}

static void mux_attach(struct mux *m, struct watch *w)
{
    w->sprev = NULL;
    w->snext = m->subs;
    if (m->subs)
        m->subs->sprev = w;
    m->subs = w;
    table_put(m, w); /* room was made before (add_sub) */
    counter_add(&m->base.shard->ctr.sub_subs_live, 1);
}

static void mux_wake(struct mux *m, struct watch *w)
{
    if (!w->mready) {
        w->mready = true;
        w->mnext = NULL;
        if (m->ready_tail)
            m->ready_tail->mnext = w;
        else
            m->ready = w;
        m->ready_tail = w;
    }
    set_dirty(m);
}

static bool mux_room(const struct mux *m)
{
    return m->batch_bytes < (size_t)m->base.shard->srv->cfg->max_batch_bytes;
}

static uint64_t mux_emitted(const struct mux *m)
{
    return m->emitted;
}

static bool mux_send_busy(const struct mux *m)
{
    return m->send_busy;
}

static bool mux_holds(const struct mux *m, const struct watch *w)
{
    return w->mgen == m->gen && w->mlast;
}

static uint64_t mux_horizon(const struct mux *m, const struct topic *t)
{
    struct sub_shard *ss = m->ss;
    if (ss->horizon_of[t->index] != ss->horizon_gen) {
        ss->horizon_of[t->index] = ss->horizon_gen;
        ss->horizon_seq[t->index] = ringlog_head_seq(t->log);
    }
    return ss->horizon_seq[t->index];
}

static int64_t mux_now_us(const struct mux *m)
{
    return m->now_us;
}

static uint64_t mux_id(const struct mux *m)
{
    return m->id;
}

static const struct watch_sink_ops sink_ops = {
    .id = mux_id,
    .attach = mux_attach,
    .emit_event = mux_emit_event,
    .emit_heartbeat = mux_emit_heartbeat,
    .emit_buffer = mux_emit_buffer,
    .end = mux_end,
    .wake = mux_wake,
    .room = mux_room,
    .emitted = mux_emitted,
    .now_us = mux_now_us,
    .horizon = mux_horizon,
    .send_busy = mux_send_busy,
    .holds = mux_holds,
};

static size_t ids_len(const struct mux *m, const struct delivery *d)
{
    size_t n = 0;
    for (uint32_t l = d->first_id; l != NO_LINK; l = m->ids[l].next)
        n += wire_varint_len(m->ids[l].id);
    return n;
}

/* The inner size of delivery d (its payload field and its packed ids). */
static size_t delivery_len(const struct mux *m, const struct delivery *d, size_t *idlen)
{
    size_t len = GRPC_SLICE_LENGTH(d->bytes);
    *idlen = ids_len(m, d);
    return 1 + wire_varint_len(len) + len + 1 + wire_varint_len(*idlen) + *idlen;
}

/* Encodes the open batch as one SubscribeResponse (field 1, a Delivery per
 * entry: its event or end bytes as they are, then its packed ids) and
 * empties it. */
static grpc_byte_buffer *encode_batch(struct mux *m)
{
    size_t total = 0;
    for (size_t i = 0; i < m->ndl; i++) {
        if (m->dl[i].dead)
            continue;
        size_t idlen, n = delivery_len(m, &m->dl[i], &idlen);
        total += 1 + wire_varint_len(n) + n;
    }
    grpc_slice out = grpc_slice_malloc(total);
    uint8_t *p = GRPC_SLICE_START_PTR(out);
    for (size_t i = 0; i < m->ndl; i++) {
        struct delivery *d = &m->dl[i];
        if (d->dead) {
            grpc_slice_unref(d->bytes);
            continue;
        }
        size_t idlen, n = delivery_len(m, d, &idlen), len = GRPC_SLICE_LENGTH(d->bytes);
        *p++ = 1 << 3 | 2;
        p = wire_put_varint(p, n);
        *p++ = (uint8_t)(d->field << 3 | 2);
        p = wire_put_varint(p, len);
        memcpy(p, GRPC_SLICE_START_PTR(d->bytes), len);
        p += len;
        *p++ = 2 << 3 | 2;
        p = wire_put_varint(p, idlen);
        for (uint32_t l = d->first_id; l != NO_LINK; l = m->ids[l].next) {
            p = wire_put_varint(p, m->ids[l].id);
        }
        grpc_slice_unref(d->bytes);
    }
    m->ndl = m->nids = 0;
    m->batch_bytes = 0;
    if (m->dedup)
        memset(m->dedup, 0, m->dedup_cap * sizeof(*m->dedup));
    m->gen++;
    counter_add(&m->base.shard->ctr.sub_responses, 1);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&out, 1);
    grpc_slice_unref(out);
    return bb;
}

/* ---- the call ------------------------------------------------------------ */

static void release(struct call *c)
{
    struct mux *m = (struct mux *)c;
    struct shard *sh = c->shard;
    while (m->subs) {
        struct watch *w = m->subs;
        m->subs = w->snext;
        counter_add(&sh->ctr.sub_subs_live, (uint64_t)-1);
        watch_sub_release(w);
    }
    for (size_t i = 0; i < m->ndl; i++)
        grpc_slice_unref(m->dl[i].bytes);
    undirty(m);
    int64_t live = m->counted ? atomic_fetch_sub(&sh->srv->streams_live, 1) - 1
                              : atomic_load(&sh->srv->streams_live);
    shard_stream_closed(sh);
    if (m->counted)
        counter_add(&sh->ctr.sub_streams_live, (uint64_t)-1);
    log_info("msg=subscribe_closed stream=%llu shard=%zu reason=%s streams_live=%lld",
             (unsigned long long)m->id, sh->index,
             m->status_started ? wire_status_name(m->end_code) : "cancelled", (long long)live);
    if (m->recv_bb)
        grpc_byte_buffer_destroy(m->recv_bb);
    free(m->table);
    free(m->dl);
    free(m->ids);
    free(m->dedup);
    free(m);
}

static void stop_subs(struct mux *m, const char *reason);

/* The client cancelled, or the status went out. */
static void closed(struct call *c)
{
    stop_subs((struct mux *)c, "cancelled");
}

static const struct call_ops call_ops = {.closed = closed, .release = release};

/* Stops every subscription quietly: the stream is ending as a whole. */
static void stop_subs(struct mux *m, const char *reason)
{
    for (struct watch *w = m->subs; w; w = w->snext) {
        table_del(m, w);
        watch_sub_stop(w, reason);
    }
}

static void send_status(struct mux *m)
{
    m->status_started = true;
    stop_subs(m, wire_status_name(m->end_code));
    m->status_details = grpc_slice_from_copied_string(m->end_details);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = m->end_code;
    op.data.send_status_from_server.status_details = &m->status_details;
    if (call_start_batch(&m->base, &op, 1, &m->t_status) != GRPC_CALL_OK) {
        log_error("msg=start_batch_failed op=status stream=%llu", (unsigned long long)m->id);
        grpc_slice_unref(m->status_details);
    }
}

/* Sends what the stream has: the subscriptions with work fill the open
 * batch (round robin: one whose fill the limit stopped goes last), which
 * goes out as one message; with nothing to send, an ending stream sends
 * its status. */
static void flush(struct mux *m)
{
    if (m->send_busy || m->status_started || m->base.closed)
        return;
    m->now_us = clock_mono_us();
    m->ss->horizon_gen++; /* each topic's head, read again when first needed */
    while (m->ready) {
        struct watch *w = m->ready;
        bool ended = w->status_started || w->closed;
        if (!ended && (m->stopping || !mux_room(m)))
            break;
        m->ready = w->mnext;
        if (!m->ready)
            m->ready_tail = NULL;
        w->mready = false;
        w->mnext = NULL;
        if (ended) { /* its SubscriptionEnd is in the batch (or the stream ends) */
            if (w->sprev)
                w->sprev->snext = w->snext;
            else
                m->subs = w->snext;
            if (w->snext)
                w->snext->sprev = w->sprev;
            counter_add(&m->base.shard->ctr.sub_subs_live, (uint64_t)-1);
            watch_sub_release(w);
            continue;
        }
        if (watch_sub_fill(w) || w->status_started)
            mux_wake(m, w); /* more (the limit stopped it), or ended: last */
    }
    if (m->ndl) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = m->send_bb = encode_batch(m);
        m->send_busy = true;
        if (call_start_batch(&m->base, &op, 1, &m->t_send) != GRPC_CALL_OK) {
            log_error("msg=start_batch_failed op=send stream=%llu", (unsigned long long)m->id);
            m->send_busy = false;
            grpc_byte_buffer_destroy(m->send_bb);
            m->send_bb = NULL;
        }
        return;
    }
    if (m->stopping)
        send_status(m);
}

/* Ends the whole stream with a status, after what the batch holds. */
static void end_stream(struct mux *m, grpc_status_code code, const char *msg)
{
    if (m->stopping || m->status_started || m->base.closed)
        return;
    m->stopping = true;
    m->end_code = code;
    snprintf(m->end_details, sizeof(m->end_details), "%s", msg);
    stop_subs(m, wire_status_name(code)); /* what they were told is in the batch */
    set_dirty(m);
}

static void add_sub(struct mux *m, const Events__V1__SubscriptionAdd *a)
{
    struct server *srv = m->base.shard->srv;
    char msg[200];
    uint32_t id = a->id;
    if (!id) {
        refuse(m, 0, GRPC_STATUS_INVALID_ARGUMENT, "subscription id 0: ids are non-zero");
        return;
    }
    if (find(m, id)) {
        snprintf(msg, sizeof(msg),
                 "duplicate subscription id %u: the live subscription %u goes on unchanged", id,
                 id);
        refuse(m, id, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    if (!a->request) {
        snprintf(msg, sizeof(msg), "SubscriptionAdd %u has no request", id);
        refuse(m, id, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    if ((int64_t)m->nsubs >= srv->cfg->max_subs_per_stream) {
        snprintf(msg, sizeof(msg),
                 "too many subscriptions on this stream (max %lld); open another stream",
                 (long long)srv->cfg->max_subs_per_stream);
        refuse(m, id, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return;
    }
    if (atomic_load(&srv->draining)) {
        refuse(m, id, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    if (((m->table_used + 1) * 4 > m->table_cap * 3 && table_grow(m)) ||
        !watch_sub_open(shard_state(m->base.shard, &watch_service), &sink_ops, m, id, a->request,
                        m->peer))
        refuse(m, id, GRPC_STATUS_RESOURCE_EXHAUSTED, "server out of memory");
}

static void remove_sub(struct mux *m, uint32_t id)
{
    struct watch *w = id ? find(m, id) : NULL;
    if (!w) {
        char msg[100];
        snprintf(msg, sizeof(msg), "subscription %u is not live", id);
        refuse(m, id, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    watch_sub_remove(w);
}

static void post_recv(struct mux *m)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &m->recv_bb;
    if (call_start_batch(&m->base, &op, 1, &m->t_recv) != GRPC_CALL_OK)
        log_error("msg=start_batch_failed op=recv stream=%llu", (unsigned long long)m->id);
}

static void on_recv(struct shard *sh, void *obj, bool ok)
{
    (void)sh;
    struct mux *m = obj;
    grpc_byte_buffer *bb = m->recv_bb;
    m->recv_bb = NULL;
    if (!ok || !mux_live(m)) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        call_unref(&m->base);
        return;
    }
    if (!bb) { /* half-closed: no more requests, deliveries go on */
        log_debug("msg=subscribe_half_closed stream=%llu", (unsigned long long)m->id);
        call_unref(&m->base);
        return;
    }
    Events__V1__SubscribeRequest *req = NULL;
    char why[300];
    if (wire_read_subscribe(bb, &req, why, sizeof(why)) != 0) {
        end_stream(m, GRPC_STATUS_INVALID_ARGUMENT, why);
    } else {
        switch (req->op_case) {
        case EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD:
            add_sub(m, req->add);
            post_recv(m);
            break;
        case EVENTS__V1__SUBSCRIBE_REQUEST__OP_REMOVE:
            remove_sub(m, req->remove->id);
            post_recv(m);
            break;
        default:
            end_stream(m, GRPC_STATUS_INVALID_ARGUMENT,
                       "SubscribeRequest names no operation (add or remove)");
        }
        events__v1__subscribe_request__free_unpacked(req, NULL);
    }
    grpc_byte_buffer_destroy(bb);
    call_unref(&m->base);
}

static void on_send(struct shard *sh, void *obj, bool ok)
{
    (void)sh;
    struct mux *m = obj;
    m->send_busy = false;
    grpc_byte_buffer_destroy(m->send_bb);
    m->send_bb = NULL;
    if (!ok && !m->status_started && !m->base.closed) {
        log_warn("msg=send_failed stream=%llu", (unsigned long long)m->id);
        grpc_call_cancel(m->base.call, NULL);
    } else if (ok) {
        flush(m);
    }
    call_unref(&m->base);
}

static void on_status(struct shard *sh, void *obj, bool ok)
{
    (void)sh;
    (void)ok;
    struct mux *m = obj;
    grpc_slice_unref(m->status_details);
    call_unref(&m->base);
}

static void accept_subscribe(struct shard *sh, void *st, grpc_call *call, grpc_byte_buffer *payload)
{
    struct server *srv = sh->srv;
    if (payload)
        grpc_byte_buffer_destroy(payload);
    struct mux *m = calloc(1, sizeof(*m));
    if (!m) {
        shard_refuse(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    struct sub_shard *ss = st;
    m->ss = ss;
    m->gen = 1;
    m->id = atomic_fetch_add(&srv->next_stream_id, 1) + 1;
    m->t_recv = (struct tag){.fn = on_recv, .obj = m};
    m->t_send = (struct tag){.fn = on_send, .obj = m};
    m->t_status = (struct tag){.fn = on_status, .obj = m};
    char *peer = grpc_call_get_peer(call);
    snprintf(m->peer, sizeof(m->peer), "%s", peer ? peer : "-");
    gpr_free(peer);
    m->now_us = clock_mono_us();
    call_open(&m->base, sh, call, &call_ops, &ss->muxes, false);
    shard_stream_opened(sh);

    /* headers at once: the client knows the stream is open before it has
     * anything to receive */
    if (!call_start_recv_close(&m->base, true)) {
        call_unref(&m->base);
        return;
    }
    m->counted = true;
    int64_t live = atomic_fetch_add(&srv->streams_live, 1) + 1;
    counter_add(&sh->ctr.sub_streams_opened, 1);
    counter_add(&sh->ctr.sub_streams_live, 1);
    log_info("msg=subscribe_opened stream=%llu peer=%s shard=%zu streams_live=%lld",
             (unsigned long long)m->id, m->peer, sh->index, (long long)live);
    if (live > srv->max_streams) {
        char msg[128];
        snprintf(msg, sizeof(msg), "too many streams (max %lld); retry later or elsewhere",
                 (long long)srv->max_streams);
        end_stream(m, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
    } else if (atomic_load(&srv->draining)) {
        end_stream(m, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    } else {
        post_recv(m);
    }
    call_unref(&m->base); /* the opener's */
}

/* Sends what the streams with work have gathered. */
static void ss_run(struct shard *sh, void *st)
{
    (void)sh;
    struct sub_shard *ss = st;
    while (ss->mux_dirty) {
        struct mux *m = ss->mux_dirty;
        ss->mux_dirty = m->dnext;
        m->dirty = false;
        call_ref(&m->base); /* flush may complete its last operation */
        flush(m);
        call_unref(&m->base);
    }
}

static bool ss_pending(const struct shard *sh, const void *st)
{
    (void)sh;
    return ((const struct sub_shard *)st)->mux_dirty != NULL;
}

/* Every subscription has been told UNAVAILABLE (Watch drains first); each
 * stream ends with UNAVAILABLE once that is out. */
static void ss_drain(struct shard *sh, void *st)
{
    (void)sh;
    for (struct call *c = ((struct sub_shard *)st)->muxes.head; c; c = c->next)
        end_stream((struct mux *)c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
}

static int ss_init(struct shard *sh, void *st)
{
    (void)sh;
    struct sub_shard *ss = st;
    ss->horizon_seq = calloc(TOPICS_MAX, sizeof(*ss->horizon_seq));
    ss->horizon_of = calloc(TOPICS_MAX, sizeof(*ss->horizon_of));
    ss->horizon_gen = 1;
    return ss->horizon_seq && ss->horizon_of ? 0 : -ENOMEM;
}

static void ss_fini(struct shard *sh, void *st)
{
    (void)sh;
    struct sub_shard *ss = st;
    free(ss->horizon_seq);
    free(ss->horizon_of);
}

static const struct service_method methods[] = {
    {"/events.v1.Watcher/Subscribe", false, accept_subscribe, 0, false},
};

const struct service subscribe_service = {
    .name = "subscribe",
    .methods = methods,
    .nmethods = sizeof(methods) / sizeof(methods[0]),
    .state_size = sizeof(struct sub_shard),
    .init = ss_init,
    .fini = ss_fini,
    .run = ss_run,
    .pending = ss_pending,
    .drain = ss_drain,
};
