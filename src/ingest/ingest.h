/*
 * ingest: the thread that owns every feed source and is the single writer of
 * every topic log.
 *
 * Sources: the built-in simulator, UDP (unicast or multicast), TCP (we
 * connect, or senders connect to us) and capture-file replay, all speaking
 * the feed wire format (feed/FORMAT.md). One thread drives them through
 * io_uring, or epoll where io_uring cannot be set up (seccomp,
 * kernel.io_uring_disabled) or when asked. On io_uring a UDP socket is read
 * by one multishot recvmsg over its own ring of provided buffers (Linux
 * 6.0+; each buffer goes back to the ring as soon as its datagram is
 * appended), or by 16 one-shot recvmsg where multishot is missing or turned
 * off (--udp-multishot=false). For every valid frame it checks
 * the channel's sequence (an upstream loss becomes a Gap event in the
 * topic), assigns the next sequence number of the topic, encodes the
 * WatchEvent once into the topic's log, and after each batch calls `notify`
 * (the server rings idle shards). Bad input is dropped and counted per
 * source and reason, with rate-limited log lines; it never stops ingest.
 */
#ifndef TICKFAN_INGEST_H
#define TICKFAN_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "feedframe.h"
#include "mpsc.h"
#include "record.h"
#include "topics.h"
#include "wire.h"

typedef struct ingest ingest_t;

enum ingest_io { INGEST_IO_AUTO, INGEST_IO_URING, INGEST_IO_EPOLL };

struct ingest_options {
    enum ingest_io io;
    int64_t sim_rate;
    const char *sim_symbols;
    uint64_t sim_seed;
    int64_t udp_rcvbuf;    /* SO_RCVBUF for UDP sockets; 0: leave the default */
    bool udp_no_multishot; /* io_uring: one-shot recvmsg even where multishot works */
};

/* Parses the feed specs (NULL-terminated; NULL or empty: "sim") and opens
 * their sockets and files (bind, listen, open; TCP connects start on the
 * thread). Topics named by sim specs are added to `topics`. Returns 0, or
 * -errno with a message naming the spec and what is wrong in err. */
int ingest_create(ingest_t **out, char **specs, const struct ingest_options *opts,
                  struct topics *topics, const struct topics_options *topts,
                  void (*notify)(void *arg), void *arg, char *err, size_t errlen);
/* Starts the thread. Returns 0 or -errno. */
int ingest_start(ingest_t *in);
/* Stops and joins the thread; appends already made stay in the logs. */
void ingest_stop(ingest_t *in);
void ingest_destroy(ingest_t *in);
/* "io_uring" or "epoll": what the thread runs on. */
const char *ingest_io_name(const ingest_t *in);

/* Appends a Data event to `t`'s log: sets d->seq, encodes, commits. Ingest
 * thread only (the single writer). Returns 0 (the event is d->seq), or
 * -EMSGSIZE when it cannot fit the log (too large), -ENOMEM, or the log's
 * write error (see ringlog_reserve, ringlog_commit); nothing is appended
 * then. */
int ingest_append(struct topic *t, struct wire_data *d);
/* Appends a Gap{GAP_UPSTREAM_LOSS, missed} event. Ingest thread only.
 * Returns 0 or -errno as ingest_append. */
int ingest_append_gap(struct topic *t, uint64_t missed, int64_t now_us);

/* A batch of published records, handed from a shard to the ingest thread
 * (the single writer) and back. The shard owns it; the ingest thread only
 * reads the records, fills in the results and calls done(job) on its own
 * thread, which must only hand the job back (e.g. to the shard's inbox). */
struct ingest_record {
    struct topic *topic;
    struct record rec;
    int64_t emitted_us; /* 0: the ingest time */
};

struct ingest_job {
    struct mpsc_node node; /* queue link (private) */
    const struct ingest_record *recs;
    size_t n;
    /* results */
    size_t appended;    /* the first `appended` records are in their logs */
    int error;          /* why record `appended` was not: -errno of ingest_append; 0 */
    struct cursor last; /* of the last one appended */
    void (*done)(struct ingest_job *job);
    void *arg;
};

/* Queues a job for the ingest thread. Any thread; lock-free. */
void ingest_submit(ingest_t *in, struct ingest_job *job);

/* Totals over all sources (any thread, approximate while running). */
struct ingest_stats {
    uint64_t frames;        /* frames appended */
    uint64_t rejected;      /* frames dropped as malformed */
    uint64_t unknown_topic; /* frames for a topic this server does not have */
    uint64_t gaps;          /* upstream gaps detected */
    uint64_t missed;        /* frames lost upstream, summed over the gaps */
    uint64_t duplicates;    /* frames dropped as duplicate or reordered */
    uint64_t rxq_ovfl;      /* datagrams the kernel dropped (SO_RXQ_OVFL) */
    uint64_t append_failed; /* valid frames the log could not take (memory, disk) */
    uint64_t rejected_by_reason[FEEDFRAME_NREASONS]; /* by feedframe_error */
};
void ingest_get_stats(const ingest_t *in, struct ingest_stats *out);

#endif
