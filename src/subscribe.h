/*
 * subscribe: the Subscribe bidi stream, many subscriptions over one call.
 *
 * Each subscription is a struct watch with Watch's whole logic (watch.c);
 * what it would send as a message it puts into its stream's next
 * SubscribeResponse as a Delivery instead, and its status becomes a
 * SubscriptionEnd. The stream keeps exactly one message in flight: when it
 * completes, the subscriptions with work fill the next one, up to
 * --max-batch-bytes. A data event that several subscriptions send at the
 * same place in the message goes out once with all their ids.
 *
 * Shard thread only, like everything it serves.
 */
#ifndef TICKFAN_SUBSCRIBE_H
#define TICKFAN_SUBSCRIBE_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stdint.h>

#include "shard.h"

struct mux;
struct watch;

/* The Subscribe method, for the server's table. */
const struct service_method *subscribe_methods(size_t *count);

/* The shard loop: sends what the streams with work have gathered. */
void subscribe_run(struct shard *sh);
/* Drain: every subscription has been told UNAVAILABLE (watch_drain); each
 * stream ends with UNAVAILABLE once that is out. */
void subscribe_drain(struct shard *sh);

/* For watch.c, a subscription `w` of stream m: */
uint64_t mux_id(const struct mux *m);
/* it is new: the stream owns it (and knows its id) from now on */
void mux_attach(struct mux *m, struct watch *w);
/* a data event (a reference to the shard's shared slice, which this takes)
 * of topic index `topic` at `seq`: one delivery, shared when it can be */
void mux_emit_event(struct mux *m, struct watch *w, grpc_slice event, uint32_t topic, uint64_t seq);
/* a heartbeat: dropped again if an event of w follows it in the message */
void mux_emit_heartbeat(struct mux *m, struct watch *w, grpc_byte_buffer *bb);
/* any other event (this takes the byte buffer) */
void mux_emit_buffer(struct mux *m, struct watch *w, grpc_byte_buffer *bb);
/* its SubscriptionEnd; md_key "tickfan-cursor" or "tickfan-earliest-cursor"
 * names what md_value is. The stream forgets the id: it may be reused. */
void mux_end(struct mux *m, struct watch *w, grpc_status_code code, const char *details,
             const char *md_key, const char *md_value);
/* it has work: its stream gathers it into the next message */
void mux_wake(struct mux *m, struct watch *w);
/* the next message has room for more */
bool mux_room(const struct mux *m);
/* deliveries put into messages so far (to see whether a pump added one) */
uint64_t mux_emitted(const struct mux *m);
/* the time (monotonic) its deliveries now being gathered go out at: read
 * once per flush, not per delivery */
int64_t mux_now_us(const struct mux *m);
/* the last seq of topic t the subscriptions read in this flush: its head
 * when the flush began */
uint64_t mux_horizon(const struct mux *m, const struct topic *t);
/* a message of the stream is in flight */
bool mux_send_busy(const struct mux *m);
/* the next message already holds a delivery of w */
bool mux_holds(const struct mux *m, const struct watch *w);

#endif
