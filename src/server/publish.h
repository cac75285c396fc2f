/*
 * publish: the events.v1.Publisher service (client-streaming ingest).
 *
 * Calls live on the shard that accepted them; their batches go to the
 * ingest thread and come back through the shard's inbox (shard_post).
 */
#ifndef TICKFAN_PUBLISH_H
#define TICKFAN_PUBLISH_H

#include <stddef.h>

#include "shard.h"

/* The Publish service (/events.v1.Publisher/Publish). Draining: every call
 * appends what it received, then ends with UNAVAILABLE and its count. */
extern const struct service publish_service;

#endif
