/*
 * publish: the events.v1.Publisher service (client-streaming ingest).
 *
 * Calls live on the shard that accepted them; their batches go to the
 * ingest thread and come back through the shard's inbox (shard_post).
 */
#ifndef TICKFAN_PUBLISH_H
#define TICKFAN_PUBLISH_H

#include <stddef.h>

#include "ingest.h"
#include "shard.h"

/* The methods to register (server.c). */
const struct service_method *publish_methods(size_t *count);

/* A batch came back from the ingest thread (shard thread). */
void publish_on_ack(struct shard *sh, struct ingest_job *job);

/* Draining: every Publish call on `sh` appends what it received, then ends
 * with UNAVAILABLE and its count. */
void publish_drain(struct shard *sh);

#endif
