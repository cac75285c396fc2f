/*
 * health: the standard grpc.health.v1.Health service (Check and Watch).
 *
 * SERVING while the server accepts streams, NOT_SERVING once it drains (a
 * server still recovering its logs is not listening yet, which probes see
 * as not ready). Known service names: "" (the server), "events.v1.Watcher"
 * and "grpc.health.v1.Health". Calls live on the shard that accepted them
 * and are touched only by its thread.
 */
#ifndef TICKFAN_HEALTH_H
#define TICKFAN_HEALTH_H

#include <stddef.h>

#include "shard.h"

/* The Health service (/grpc.health.v1.Health/Check and /Watch). Draining:
 * every Watch gets NOT_SERVING, then UNAVAILABLE. */
extern const struct service health_service;

#endif
