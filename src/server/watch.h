/*
 * watch: the Watch service, one server-stream per subscription, and the
 * stream engine Subscribe's subscriptions run on (subscribe.c).
 *
 * A stream is owned by the shard thread whose completion queue its call is
 * bound to; nothing else touches it. Exactly one SEND_MESSAGE is in flight
 * at a time (that is the backpressure), one RECV_CLOSE_ON_SERVER for the
 * whole life (that is how cancellation is learned), and the state is freed
 * when the last operation in flight has completed. The stream itself is
 * opaque outside watch*.c and subscribe.c (watch_shard.h).
 */
#ifndef TICKFAN_WATCH_H
#define TICKFAN_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "events/v1/watcher.pb-c.h"
#include "service.h"

struct shard;
struct watch;
struct watch_shard; /* the Watch service's state on a shard */
struct mux;

/* The Watch service (/events.v1.Watcher/Watch). */
extern const struct service watch_service;

/* Subscriber lag buckets (log bytes behind the head), upper bounds. */
#define WATCH_LAG_BUCKETS 6
static const uint64_t watch_lag_bounds[WATCH_LAG_BUCKETS] = {0,       4096,     65536,
                                                             1 << 20, 16 << 20, UINT64_MAX};

/* The shard's live streams per lag bucket and their lag summed, as of its
 * last tick. Any thread. */
void watch_lag_totals(const struct shard *sh, uint64_t lag[WATCH_LAG_BUCKETS], uint64_t *sum);

/* One Watch stream as the admin view shows it. */
struct watch_info {
    uint64_t id;
    char peer[64];
    char topic[130];
    char kinds[200]; /* comma-joined, truncated */
    char keys[200];
    uint64_t lag_events, lag_bytes, sent, dropped;
    int64_t since_us;
    char cursor[40];
    const char *state;
};

/* Describes up to `cap` positioned Watch streams of the shard into rows;
 * returns how many there are (more than cap: call again with more room).
 * Shard thread. */
size_t watch_list(struct shard *sh, struct watch_info *rows, size_t cap);

/* Subscriptions of a Subscribe stream (subscribe.c). What a subscription
 * would send as a message of its own goes to its stream `m` through these
 * (the stream's side is subscribe.c's; watch.c names none of it): */
struct topic;
struct watch_sink_ops {
    /* the stream's id, for logs */
    uint64_t (*id)(const struct mux *m);
    /* w is new: the stream owns it (and knows its id) from now on */
    void (*attach)(struct mux *m, struct watch *w);
    /* a data event (the shard's shared slice: a reference this takes when
     * `owned`, else one lent until the shard's next event slice, which
     * this refs only if it keeps it) of topic index `topic` at `seq`: one
     * delivery, shared when it can be */
    void (*emit_event)(struct mux *m, struct watch *w, grpc_slice event, bool owned, uint32_t topic,
                       uint64_t seq);
    /* a heartbeat: dropped again if an event of w follows it in the message */
    void (*emit_heartbeat)(struct mux *m, struct watch *w, grpc_byte_buffer *bb);
    /* any other event (this takes the byte buffer) */
    void (*emit_buffer)(struct mux *m, struct watch *w, grpc_byte_buffer *bb);
    /* its SubscriptionEnd; md_key "tickfan-cursor" or "tickfan-earliest-cursor"
     * names what md_value is. The stream forgets the id: it may be reused. */
    void (*end)(struct mux *m, struct watch *w, grpc_status_code code, const char *details,
                const char *md_key, const char *md_value);
    /* w has work: its stream gathers it into the next message */
    void (*wake)(struct mux *m, struct watch *w);
    /* the next message has room for more */
    bool (*room)(const struct mux *m);
    /* deliveries put into messages so far (to see whether a pump added one) */
    uint64_t (*emitted)(const struct mux *m);
    /* the time (monotonic) the deliveries now being gathered go out at */
    int64_t (*now_us)(const struct mux *m);
    /* the last seq of topic t the subscriptions read in this flush: its
     * head when the flush began */
    uint64_t (*horizon)(const struct mux *m, const struct topic *t);
    /* a message of the stream is in flight */
    bool (*send_busy)(const struct mux *m);
    /* the next message already holds a delivery of w */
    bool (*holds)(const struct mux *m, const struct watch *w);
};

/* A new subscription `sub_id` of stream m with the (text-checked) request.
 * NULL: out of memory. A request it refuses is returned ended: its
 * SubscriptionEnd is already in the stream's next message. */
struct watch *watch_sub_open(struct watch_shard *ws, const struct watch_sink_ops *ops,
                             struct mux *m, uint32_t sub_id, const Events__V1__WatchRequest *req,
                             const char *peer);
/* Puts what the subscription has into its stream's next message while
 * there is room. Returns true when it has more (the message is full). */
bool watch_sub_fill(struct watch *w);
/* Ends it with SubscriptionEnd{OK} after its last delivery (a remove). */
void watch_sub_remove(struct watch *w);
/* Stops it without a SubscriptionEnd: its stream is ending. */
void watch_sub_stop(struct watch *w, const char *reason);
/* Frees a subscription: after its SubscriptionEnd, or with its stream. */
void watch_sub_release(struct watch *w);

#endif
