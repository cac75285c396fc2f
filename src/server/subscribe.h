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
struct topic;

/* The Subscribe service (/events.v1.Watcher/Subscribe). */
extern const struct service subscribe_service;

#endif
