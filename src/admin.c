/*
 * admin: ListSubscribers. Shard threads; the snapshots are the only state
 * shared between shards here, each behind its shard's mutex (taken at a tick
 * and by an answering call, which takes them all in index order; never on
 * the message path).
 */
#include "admin.h"

#include <grpc/byte_buffer_reader.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "tickfan/admin/v1/admin.pb-c.h"
#include "watch.h"
#include "wire.h"

#define WANTED_US 5000000   /* keep snapshotting this long after a request */
#define PATIENCE_US 2000000 /* answer with what there is after this long */

struct admin_call {
    struct admin_call *next;
    struct tag tag;
    grpc_call *call;
    int64_t requested_us;
    char topic[130];
    bool answered;
    int cancelled;
    grpc_byte_buffer *resp;
    grpc_slice details;
};

static void join(char *out, size_t len, const struct filter_set *s)
{
    out[0] = 0;
    size_t used = 0;
    for (size_t i = 0; i < s->count && used + 2 < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? "," : "", s->items[i]);
}

/* Splits a comma-joined list in place; returns the entries (malloc'd). */
static char **split(char *joined, size_t *count)
{
    size_t n = joined[0] ? 1 : 0;
    for (char *c = joined; *c; c++)
        n += *c == ',';
    char **out = calloc(n + 1, sizeof(char *));
    *count = 0;
    if (!out)
        return NULL;
    for (char *tok = n ? joined : NULL; tok;) {
        char *comma = strchr(tok, ',');
        if (comma)
            *comma = 0;
        out[(*count)++] = tok;
        tok = comma ? comma + 1 : NULL;
    }
    return out;
}

static void take_snapshot(struct shard *sh, int64_t now_us)
{
    pthread_mutex_lock(&sh->snap_mu);
    size_t n = 0;
    for (struct watch *w = sh->all; w; w = w->next)
        n++;
    if (n > sh->capsnap) {
        struct admin_row *grown = realloc(sh->snap, n * sizeof(*grown));
        if (grown) {
            sh->snap = grown;
            sh->capsnap = n;
        }
    }
    sh->nsnap = 0;
    for (struct watch *w = sh->all; w && sh->nsnap < sh->capsnap; w = w->next) {
        if (!w->topic)
            continue; /* still being set up */
        struct admin_row *r = &sh->snap[sh->nsnap++];
        ringlog_t *log = w->topic->log;
        r->id = w->id;
        snprintf(r->peer, sizeof(r->peer), "%s", w->peer);
        snprintf(r->topic, sizeof(r->topic), "%s", w->topic->name);
        join(r->kinds, sizeof(r->kinds), &w->filter.kinds);
        join(r->keys, sizeof(r->keys), &w->filter.keys);
        uint64_t head = ringlog_head_seq(log);
        r->lag_events = head >= w->it.seq ? head - w->it.seq + 1 : 0;
        r->lag_bytes = ringlog_head_pos(log) - w->it.pos;
        r->sent = w->sent_data;
        r->dropped = w->dropped;
        r->since_us = w->since_us;
        cursor_format((struct cursor){.epoch = ringlog_epoch(log), .seq = w->it.seq - 1},
                      r->cursor);
        r->state = w->status_started || w->closed ? "ending" : w->eob_sent ? "live" : "replaying";
    }
    pthread_mutex_unlock(&sh->snap_mu);
    atomic_store(&sh->snap_at_us, now_us);
}

static void call_done(struct shard *sh, void *obj, bool ok)
{
    struct admin_call *ac = obj;
    if (ac->resp)
        grpc_byte_buffer_destroy(ac->resp);
    grpc_slice_unref(ac->details);
    grpc_call_unref(ac->call);
    free(ac);
    sh->calls_live--;
}

static void answer(struct shard *sh, struct admin_call *ac)
{
    struct server *srv = sh->srv;
    /* Every shard's snapshot, locked in index order (no thread holds two
     * otherwise), so the rows counted are the rows copied. */
    for (size_t i = 0; i < srv->nshards; i++)
        pthread_mutex_lock(&srv->shards[i]->snap_mu);
    size_t total = 0;
    for (size_t i = 0; i < srv->nshards; i++)
        total += srv->shards[i]->nsnap;
    Tickfan__Admin__V1__ListSubscribersResponse resp =
        TICKFAN__ADMIN__V1__LIST_SUBSCRIBERS_RESPONSE__INIT;
    Tickfan__Admin__V1__Subscriber *subs = calloc(total + 1, sizeof(*subs));
    Tickfan__Admin__V1__Subscriber **ptrs = calloc(total + 1, sizeof(*ptrs));
    /* the strings point into copies of the rows, kept until packed */
    struct admin_row *rows = calloc(total + 1, sizeof(*rows));
    char **kinds = calloc(total + 1, sizeof(char *)), **keys = calloc(total + 1, sizeof(char *));
    size_t n = 0;
    if (subs && ptrs && rows && kinds && keys) {
        for (size_t i = 0; i < srv->nshards; i++) {
            struct shard *s = srv->shards[i];
            for (size_t k = 0; k < s->nsnap && n < total; k++) {
                if (ac->topic[0] && strcmp(ac->topic, s->snap[k].topic) != 0)
                    continue;
                rows[n] = s->snap[k];
                struct admin_row *r = &rows[n];
                Tickfan__Admin__V1__Subscriber *x = &subs[n];
                tickfan__admin__v1__subscriber__init(x);
                x->id = r->id;
                x->peer = r->peer;
                x->topic = r->topic;
                x->kinds = split(r->kinds, &x->n_kinds);
                x->keys = split(r->keys, &x->n_keys);
                kinds[n] = (char *)x->kinds; /* freed after packing */
                keys[n] = (char *)x->keys;
                x->lag_events = r->lag_events;
                x->lag_bytes = r->lag_bytes;
                x->sent = r->sent;
                x->dropped = r->dropped;
                x->since_unix_micros = r->since_us;
                x->shard = (uint32_t)i;
                x->cursor = r->cursor;
                x->state = (char *)r->state;
                ptrs[n] = x;
                n++;
            }
        }
    }
    for (size_t i = 0; i < srv->nshards; i++)
        pthread_mutex_unlock(&srv->shards[i]->snap_mu);
    resp.n_subscribers = n;
    resp.subscribers = ptrs;
    size_t len = tickfan__admin__v1__list_subscribers_response__get_packed_size(&resp);
    grpc_slice out = grpc_slice_malloc(len);
    tickfan__admin__v1__list_subscribers_response__pack(&resp, GRPC_SLICE_START_PTR(out));
    ac->resp = grpc_raw_byte_buffer_create(&out, 1);
    grpc_slice_unref(out);
    for (size_t i = 0; i < n; i++) {
        free(kinds[i]);
        free(keys[i]);
    }
    free(subs);
    free(ptrs);
    free(rows);
    free(kinds);
    free(keys);

    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = ac->resp;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[2].data.send_status_from_server.status_details = &ac->details;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = &ac->cancelled;
    if (grpc_call_start_batch(ac->call, ops, 4, &ac->tag, NULL) != GRPC_CALL_OK)
        call_done(sh, ac, false);
}

void admin_tick(struct shard *sh, int64_t now_us)
{
    struct server *srv = sh->srv;
    if (now_us < atomic_load(&srv->admin_wanted_until_us))
        take_snapshot(sh, now_us);
    for (struct admin_call **p = &sh->admin_calls; *p;) {
        struct admin_call *ac = *p;
        bool fresh = true;
        for (size_t i = 0; i < srv->nshards; i++)
            fresh &= atomic_load(&srv->shards[i]->snap_at_us) >= ac->requested_us;
        if (!fresh && now_us - ac->requested_us < PATIENCE_US) {
            p = &ac->next;
            continue;
        }
        *p = ac->next;
        answer(sh, ac);
    }
}

static void accept_list(struct shard *sh, grpc_call *call, grpc_byte_buffer *payload)
{
    char topic[130] = "";
    if (payload) {
        grpc_slice s;
        char why[200] = "";
        if (wire_read_all(payload, &s) == 0) {
            int rc =
                wire_check_text(&tickfan__admin__v1__list_subscribers_request__descriptor,
                                GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), why, sizeof(why));
            Tickfan__Admin__V1__ListSubscribersRequest *req =
                rc ? NULL
                   : tickfan__admin__v1__list_subscribers_request__unpack(
                         NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
            grpc_slice_unref(s);
            if (req) {
                snprintf(topic, sizeof(topic), "%s", req->topic ? req->topic : "");
                tickfan__admin__v1__list_subscribers_request__free_unpacked(req, NULL);
            }
        }
        grpc_byte_buffer_destroy(payload);
        if (why[0]) {
            char msg[240];
            snprintf(msg, sizeof(msg), "invalid ListSubscribersRequest: %s", why);
            shard_refuse(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
            return;
        }
    }
    struct admin_call *ac = calloc(1, sizeof(*ac));
    if (!ac) {
        shard_refuse(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    int64_t now = log_now_mono_us();
    ac->tag = (struct tag){.kind = TAG_CALLBACK, .obj = ac, .fn = call_done};
    ac->call = call;
    ac->requested_us = now;
    ac->details = grpc_empty_slice();
    snprintf(ac->topic, sizeof(ac->topic), "%s", topic);
    ac->next = sh->admin_calls;
    sh->admin_calls = ac;
    sh->calls_live++;
    atomic_store(&sh->srv->admin_wanted_until_us, now + WANTED_US);
    for (size_t i = 0; i < sh->srv->nshards; i++)
        shard_ring(sh->srv->shards[i]);
}

static const struct service_method methods[] = {
    {"/tickfan.admin.v1.Admin/ListSubscribers", true, accept_list},
};

const struct service_method *admin_methods(size_t *count)
{
    *count = sizeof(methods) / sizeof(methods[0]);
    return methods;
}
