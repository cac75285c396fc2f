/*
 * call: the life of one server call of a service, written once.
 *
 * A service embeds a struct call in its own call state and opens it when
 * the shard hands it the new call: from then on the call counts in the
 * shard's live calls (and, when long-lived, in the server's other streams,
 * which the drain waits for), sits on the service's list on that shard, and
 * holds one reference per operation in flight. RECV_CLOSE_ON_SERVER is
 * started once and stays outstanding: its completion is how a cancel is
 * learned. When the last reference goes, the call is unlinked, gRPC's call
 * is released and ops->release frees the service's state. Shard thread.
 */
#ifndef TICKFAN_CALL_H
#define TICKFAN_CALL_H

#include <grpc/grpc.h>
#include <stdbool.h>

#include "shard.h"

struct call;

struct call_ops {
    /* RECV_CLOSE_ON_SERVER completed: the call is over on the wire (the
     * client cancelled, or the status went out). May be NULL. */
    void (*closed)(struct call *c);
    /* The last reference went: free the service's state (c is inside it).
     * gRPC's call is already released. */
    void (*release)(struct call *c);
};

/* A service's calls on one shard. */
struct call_list {
    struct call *head;
};

struct call {
    struct shard *shard;
    grpc_call *call;
    const struct call_ops *ops;
    struct call_list *list; /* NULL: on none */
    struct call *prev, *next;
    int refs;      /* operations in flight, and holds (call_ref) */
    int cancelled; /* filled by RECV_CLOSE_ON_SERVER */
    bool closed;   /* RECV_CLOSE_ON_SERVER completed (or could not start) */
    bool long_lived;
    struct tag t_close;
};

/* Takes `call` (and its reference) for c, on shard sh, on `list` (NULL:
 * none). long_lived: counted in the server's other streams until released
 * (streaming calls that the drain must wait for). c holds one reference,
 * the opener's: drop it (call_unref) once the call is set going. */
void call_open(struct call *c, struct shard *sh, grpc_call *call, const struct call_ops *ops,
               struct call_list *list, bool long_lived);

/* Starts RECV_CLOSE_ON_SERVER, after SEND_INITIAL_METADATA when
 * send_initial_metadata. false: gRPC refused; the call is cancelled and
 * marked closed (the opener then drops its reference, which releases it). */
bool call_start_recv_close(struct call *c, bool send_initial_metadata);

/* shard_start_batch (so with --cq-thread-cache a batch that completes at
 * once comes back through the shard's loop) holding a reference until `t` completes (the
 * completion drops it with call_unref). On failure the reference is dropped
 * again, the call cancelled, and the error returned; c stays valid while
 * the caller holds a reference of its own or RECV_CLOSE is outstanding. */
grpc_call_error call_start_batch(struct call *c, const grpc_op *ops, size_t n, struct tag *t);

void call_ref(struct call *c);
/* Drops a reference; the last one releases the call. */
void call_unref(struct call *c);

#endif
