/*
 * feedgen: simulator ticks encoded as feed frames. One thread per generator.
 */
#include "feedgen.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "feedframe.h"
#include "sim.h"
#include "topics.h"

#define PAD_FIELD_SHORT 15 /* the largest field number with a one-byte tag */
#define PAD_FIELD_LONG 16  /* the smallest with a two-byte tag */
#define WIRE_LEN 2         /* protobuf wire type: length-delimited */
#define SYMBOL_MAX 16
#define KIND_MAX 5 /* "quote", "trade" */

struct feedgen {
    sim_t *sim;
    char topic[TOPIC_NAME_MAX];
    size_t topic_len;
    uint32_t channel;
    uint64_t seq;
    struct feedgen_range *drops; /* sorted, merged */
    size_t ndrops, next_drop;
    size_t body_size;
    uint8_t *body;  /* body_cap bytes */
    uint8_t *frame; /* feedgen_max_frame bytes */
    size_t body_cap;
};

static int cmp_range(const void *a, const void *b)
{
    const struct feedgen_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

void feedgen_destroy(feedgen_t *g)
{
    if (!g)
        return;
    sim_destroy(g->sim);
    free(g->drops);
    free(g->body);
    free(g->frame);
    free(g);
}

int feedgen_create(feedgen_t **out, const struct feedgen_options *o)
{
    *out = NULL;
    size_t tlen = o->topic ? strlen(o->topic) : 0;
    if (tlen == 0 || tlen > TOPIC_NAME_MAX || !topics_name_valid(o->topic, tlen) ||
        o->start_seq == 0 || o->body_size > FEEDGEN_BODY_MAX)
        return -EINVAL;
    struct feedgen *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    int rc = sim_create(&g->sim, o->symbols, o->seed);
    if (rc)
        goto out_free;
    memcpy(g->topic, o->topic, tlen);
    g->topic_len = tlen;
    g->channel = o->channel;
    g->seq = o->start_seq;
    g->body_size = o->body_size;
    g->body_cap = sizeof(((struct sim_tick *)0)->body) + o->body_size + 1;
    g->body = malloc(g->body_cap);
    g->frame = malloc(FEEDFRAME_HDR + TOPIC_NAME_MAX + KIND_MAX + SYMBOL_MAX + g->body_cap);
    if (!g->body || !g->frame)
        goto out_nomem;
    if (o->ndrops) {
        g->drops = malloc(o->ndrops * sizeof(*g->drops));
        if (!g->drops)
            goto out_nomem;
        memcpy(g->drops, o->drops, o->ndrops * sizeof(*g->drops));
        qsort(g->drops, o->ndrops, sizeof(*g->drops), cmp_range);
        for (size_t i = 0; i < o->ndrops; i++) {
            struct feedgen_range r = g->drops[i];
            if (r.lo > r.hi) {
                rc = -EINVAL;
                goto out_free;
            }
            if (g->ndrops && r.lo <= g->drops[g->ndrops - 1].hi + 1) {
                if (r.hi > g->drops[g->ndrops - 1].hi)
                    g->drops[g->ndrops - 1].hi = r.hi;
            } else {
                g->drops[g->ndrops++] = r;
            }
        }
    }
    *out = g;
    return 0;

out_nomem:
    rc = -ENOMEM;
out_free:
    feedgen_destroy(g);
    return rc;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

size_t feedgen_pad(uint8_t *body, size_t len, size_t size)
{
    if (len >= size)
        return len;
    size_t pad = size - len;
    if (pad == 1)
        pad = 2;
    /* tag + length + filler == pad: find a tag size and a length whose own
     * varint size adds up (e.g. pad 130 needs the two-byte tag) */
    for (uint32_t field = PAD_FIELD_SHORT; field <= PAD_FIELD_LONG; field++) {
        uint64_t tag = (uint64_t)field << 3 | WIRE_LEN;
        for (size_t vl = 1; vl <= 3; vl++) {
            if (pad < varint_len(tag) + vl)
                continue;
            size_t fill = pad - varint_len(tag) - vl;
            if (varint_len(fill) != vl)
                continue;
            uint8_t *p = put_varint(body + len, tag);
            p = put_varint(p, fill);
            memset(p, 0, fill);
            return len + pad;
        }
    }
    return len; /* not reached: every pad >= 2 has a layout */
}

static bool dropped(struct feedgen *g, uint64_t seq)
{
    while (g->next_drop < g->ndrops && g->drops[g->next_drop].hi < seq)
        g->next_drop++;
    return g->next_drop < g->ndrops && g->drops[g->next_drop].lo <= seq;
}

size_t feedgen_next(feedgen_t *g, int64_t time_us, const uint8_t **frame)
{
    struct sim_tick tick;
    sim_next(g->sim, time_us * 1000, &tick);
    uint64_t seq = g->seq++;
    if (dropped(g, seq))
        return 0;
    memcpy(g->body, tick.body, tick.body_len);
    size_t body_len = feedgen_pad(g->body, tick.body_len, g->body_size);
    struct feedframe f = {
        .channel = g->channel,
        .source_seq = seq,
        .source_time_us = time_us,
        .topic = g->topic,
        .topic_len = g->topic_len,
        .rec = {.kind = tick.kind,
                .kind_len = strlen(tick.kind),
                .key = tick.symbol,
                .key_len = strlen(tick.symbol),
                .body = g->body,
                .body_len = body_len},
    };
    *frame = g->frame;
    return feedframe_encode(&f, g->frame);
}

uint64_t feedgen_next_seq(const feedgen_t *g)
{
    return g->seq;
}

size_t feedgen_max_frame(const feedgen_t *g)
{
    size_t body = sizeof(((struct sim_tick *)0)->body);
    if (g->body_size >= body)
        body = g->body_size + 1;
    return FEEDFRAME_HDR + g->topic_len + KIND_MAX + SYMBOL_MAX + body;
}
