/*
 * call: the life of one server call of a service. See call.h.
 */
#include "call.h"

#include <stdatomic.h>
#include <string.h>

#include "log.h"
#include "server.h"

static void on_close(struct shard *sh, void *obj, bool ok)
{
    (void)sh;
    (void)ok;
    struct call *c = obj;
    c->closed = true;
    if (c->ops->closed)
        c->ops->closed(c);
    call_unref(c);
}

void call_open(struct call *c, struct shard *sh, grpc_call *call, const struct call_ops *ops,
               struct call_list *list, bool long_lived)
{
    c->shard = sh;
    c->call = call;
    c->ops = ops;
    c->list = list;
    c->refs = 1; /* the opener's, dropped at the end of its accept */
    c->long_lived = long_lived;
    c->t_close = (struct tag){.fn = on_close, .obj = c};
    c->prev = NULL;
    c->next = NULL;
    if (list) {
        c->next = list->head;
        if (c->next)
            c->next->prev = c;
        list->head = c;
    }
    shard_call_opened(sh);
    if (long_lived)
        atomic_fetch_add(&sh->srv->other_streams_live, 1);
}

bool call_start_recv_close(struct call *c, bool send_initial_metadata)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (send_initial_metadata)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    c->refs++;
    if (grpc_call_start_batch(c->call, ops, n, &c->t_close, NULL) == GRPC_CALL_OK)
        return true;
    log_error("msg=start_batch_failed op=recv_close");
    c->refs--;
    c->closed = true;
    grpc_call_cancel(c->call, NULL);
    return false;
}

grpc_call_error call_start_batch(struct call *c, const grpc_op *ops, size_t n, struct tag *t)
{
    c->refs++;
    grpc_call_error e = shard_start_batch(c->shard, c->call, ops, n, t);
    if (e != GRPC_CALL_OK) {
        c->refs--;
        grpc_call_cancel(c->call, NULL);
    }
    return e;
}

void call_ref(struct call *c)
{
    c->refs++;
}

void call_unref(struct call *c)
{
    if (--c->refs > 0)
        return;
    struct shard *sh = c->shard;
    if (c->list) {
        if (c->prev)
            c->prev->next = c->next;
        else
            c->list->head = c->next;
        if (c->next)
            c->next->prev = c->prev;
    }
    grpc_call_unref(c->call);
    c->call = NULL;
    if (c->long_lived)
        atomic_fetch_sub(&sh->srv->other_streams_live, 1);
    shard_call_closed(sh);
    c->ops->release(c);
}
