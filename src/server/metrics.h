/*
 * metrics: Prometheus text exposition over HTTP (GET /metrics), served by
 * libmicrohttpd on its own thread.
 *
 * It only reads: relaxed counters of the ingest thread and the shards, the
 * topic logs' head and tail, and jemalloc's statistics when tickfand is
 * linked with jemalloc. No label names a subscriber (bounded cardinality).
 */
#ifndef TICKFAN_METRICS_H
#define TICKFAN_METRICS_H

#include <stddef.h>
#include <stdio.h>

#include "ingest.h"
#include "server.h"
#include "topics.h"

typedef struct metrics metrics_t;

/* Starts serving on `listen` (HOST:PORT; port 0 picks one, see
 * metrics_port). Returns 0 or -errno with a message naming --metrics-listen
 * in err. */
int metrics_start(metrics_t **out, const char *listen, struct server *srv, struct topics *topics,
                  ingest_t *ingest, char *err, size_t errlen);
int metrics_port(const metrics_t *m);
void metrics_stop(metrics_t *m);

/* Writes the exposition text (exposed for tests). */
void metrics_render(FILE *out, struct server *srv, struct topics *topics, ingest_t *ingest);

#endif
