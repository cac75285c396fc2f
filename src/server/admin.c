/*
 * admin: ListSubscribers. Shard threads; the snapshots are the only state
 * shared between shards here, each behind its shard's mutex (taken at a tick
 * and by an answering call, which takes them all in index order; never on
 * the message path).
 */
#include "admin.h"
#include "clock.h"

#include <grpc/byte_buffer_reader.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "log.h"
#include "server.h"
#include "tickfan/admin/v1/admin.pb-c.h"
#include "watch.h"
#include "wire.h"

#define WANTED_US 5000000   /* keep snapshotting this long after a request */
#define PATIENCE_US 2000000 /* answer with what there is after this long */

/* The admin service's state on one shard: the snapshot of its streams, and
 * the calls waiting on it. */
struct admin_shard {
    pthread_mutex_t snap_mu;
    struct watch_info *snap;
    size_t nsnap, capsnap;
    _Atomic int64_t snap_at_us; /* when the snapshot was taken (monotonic) */
    struct admin_call *calls;
};

static struct admin_shard *admin_of(const struct shard *sh)
{
    return shard_state(sh, &admin_service);
}

struct admin_call {
    struct call base;        /* first */
    struct admin_call *next; /* waiting on its shard (struct admin_shard) */
    struct tag tag;
    int64_t requested_us;
    char topic[130];
    bool answered;
    grpc_byte_buffer *resp;
    grpc_slice details;
};

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

static void take_snapshot(struct shard *sh, struct admin_shard *as, int64_t now_us)
{
    pthread_mutex_lock(&as->snap_mu);
    size_t n = watch_list(sh, as->snap, as->capsnap);
    if (n > as->capsnap) {
        struct watch_info *grown = realloc(as->snap, n * sizeof(*grown));
        if (grown) {
            as->snap = grown;
            as->capsnap = n;
        }
        n = watch_list(sh, as->snap, as->capsnap);
    }
    as->nsnap = n < as->capsnap ? n : as->capsnap;
    pthread_mutex_unlock(&as->snap_mu);
    atomic_store(&as->snap_at_us, now_us);
}

static void release(struct call *c)
{
    struct admin_call *ac = (struct admin_call *)c;
    if (ac->resp)
        grpc_byte_buffer_destroy(ac->resp);
    grpc_slice_unref(ac->details);
    free(ac);
}

static const struct call_ops call_ops = {.release = release};

static void call_done(struct shard *sh, void *obj, bool ok)
{
    (void)sh;
    (void)ok;
    call_unref(obj);
}

static void answer(struct shard *sh, struct admin_call *ac)
{
    struct server *srv = sh->srv;
    /* Every shard's snapshot, locked in index order (no thread holds two
     * otherwise), so the rows counted are the rows copied. */
    for (size_t i = 0; i < srv->nshards; i++)
        pthread_mutex_lock(&admin_of(srv->shards[i])->snap_mu);
    size_t total = 0;
    for (size_t i = 0; i < srv->nshards; i++)
        total += admin_of(srv->shards[i])->nsnap;
    Tickfan__Admin__V1__ListSubscribersResponse resp =
        TICKFAN__ADMIN__V1__LIST_SUBSCRIBERS_RESPONSE__INIT;
    Tickfan__Admin__V1__Subscriber *subs = calloc(total + 1, sizeof(*subs));
    Tickfan__Admin__V1__Subscriber **ptrs = calloc(total + 1, sizeof(*ptrs));
    /* the strings point into copies of the rows, kept until packed */
    struct watch_info *rows = calloc(total + 1, sizeof(*rows));
    char **kinds = calloc(total + 1, sizeof(char *)), **keys = calloc(total + 1, sizeof(char *));
    size_t n = 0;
    if (subs && ptrs && rows && kinds && keys) {
        for (size_t i = 0; i < srv->nshards; i++) {
            const struct admin_shard *s = admin_of(srv->shards[i]);
            for (size_t k = 0; k < s->nsnap && n < total; k++) {
                if (ac->topic[0] && strcmp(ac->topic, s->snap[k].topic) != 0)
                    continue;
                rows[n] = s->snap[k];
                struct watch_info *r = &rows[n];
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
        pthread_mutex_unlock(&admin_of(srv->shards[i])->snap_mu);
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
    ops[3].data.recv_close_on_server.cancelled = &ac->base.cancelled;
    call_start_batch(&ac->base, ops, 4, &ac->tag);
    call_unref(&ac->base); /* the opener's, held while it waited */
}

/* On the shard's tick: refresh its snapshot if wanted, answer the calls
 * waiting on it whose snapshots are all fresh. */
static void as_tick(struct shard *sh, void *st, int64_t now_us)
{
    struct server *srv = sh->srv;
    struct admin_shard *as = st;
    if (now_us < atomic_load(&srv->admin_wanted_until_us))
        take_snapshot(sh, as, now_us);
    for (struct admin_call **p = &as->calls; *p;) {
        struct admin_call *ac = *p;
        bool fresh = true;
        for (size_t i = 0; i < srv->nshards; i++) /* one that waits has no streams */
            fresh &= !shard_active(srv->shards[i]) ||
                     atomic_load(&admin_of(srv->shards[i])->snap_at_us) >= ac->requested_us;
        if (!fresh && now_us - ac->requested_us < PATIENCE_US) {
            p = &ac->next;
            continue;
        }
        *p = ac->next;
        answer(sh, ac);
    }
}

static void accept_list(struct shard *sh, void *st, grpc_call *call, grpc_byte_buffer *payload)
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
    int64_t now = clock_mono_us();
    ac->tag = (struct tag){.fn = call_done, .obj = &ac->base};
    call_open(&ac->base, sh, call, &call_ops, NULL, false);
    ac->requested_us = now;
    ac->details = grpc_empty_slice();
    snprintf(ac->topic, sizeof(ac->topic), "%s", topic);
    struct admin_shard *as = st;
    ac->next = as->calls;
    as->calls = ac;
    atomic_store(&sh->srv->admin_wanted_until_us, now + WANTED_US);
    for (size_t i = 0; i < sh->srv->nshards; i++)
        shard_ring(sh->srv->shards[i]);
}

static int as_init(struct shard *sh, void *st)
{
    (void)sh;
    struct admin_shard *as = st;
    atomic_init(&as->snap_at_us, 0);
    return -pthread_mutex_init(&as->snap_mu, NULL);
}

static void as_fini(struct shard *sh, void *st)
{
    (void)sh;
    struct admin_shard *as = st;
    free(as->snap);
    pthread_mutex_destroy(&as->snap_mu);
}

static const struct service_method methods[] = {
    {"/tickfan.admin.v1.Admin/ListSubscribers", true, accept_list, 0, false},
};

const struct service admin_service = {
    .name = "admin",
    .methods = methods,
    .nmethods = sizeof(methods) / sizeof(methods[0]),
    .state_size = sizeof(struct admin_shard),
    .init = as_init,
    .fini = as_fini,
    .tick = as_tick,
};
