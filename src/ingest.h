/*
 * ingest: the thread that owns every feed source and is the single writer of
 * every topic log.
 *
 * It generates or receives events, assigns each the next sequence number of
 * its topic, encodes the WatchEvent once into the topic's log, and after each
 * batch calls `notify` (the server rings idle shards). No other thread
 * appends to a log.
 */
#ifndef TICKFAN_INGEST_H
#define TICKFAN_INGEST_H

#include <stdint.h>

#include "sim.h"
#include "topics.h"
#include "wire.h"

typedef struct ingest ingest_t;

/* One feed source. The ingest takes ownership of `sim`. */
struct ingest_feed {
    sim_t *sim;
    struct topic *topic;
    int64_t rate; /* events per second */
};

/* `notify(arg)` is called on the ingest thread after each batch of appends. */
int ingest_create(ingest_t **out, const struct ingest_feed *feeds, size_t nfeeds,
                  void (*notify)(void *arg), void *arg);
/* Starts the thread. Returns 0 or -errno. */
int ingest_start(ingest_t *in);
/* Stops and joins the thread; appends already made stay in the logs. */
void ingest_stop(ingest_t *in);
void ingest_destroy(ingest_t *in);

/* Appends a Data event to `t`'s log: sets d->seq, encodes, commits. Ingest
 * thread only (the single writer). Returns the sequence number, or 0 when
 * the event cannot fit the log (too large). */
uint64_t ingest_append(struct topic *t, struct wire_data *d);

/* Events appended by this ingest so far (any thread). */
uint64_t ingest_appended(const ingest_t *in);

#endif
