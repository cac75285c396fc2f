/*
 * reader: where one subscriber is in its topic's log, and what it gets next
 * by the contract's rules: the cursor and start positions, the filter,
 * EndOfBacklog once, the lag budget and the overflow policy, laps and
 * re-seeks, snapshot and conflation sets. No gRPC here: it returns an
 * action (send this Gap, this event, EndOfBacklog, the snapshot's next
 * value; wait; yield; end with this status) and the Watch service (watch.c)
 * encodes and sends it, on a Watch stream or as a subscription of a
 * Subscribe stream. Unit-tested over an in-memory ring
 * (tests/unit/reader_test.c).
 *
 * One thread at a time uses a reader (its shard's); the log's writer runs
 * concurrently, so any record read may be overwritten under it, and every
 * rule here copes with that.
 */
#ifndef TICKFAN_READER_H
#define TICKFAN_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "counter.h"
#include "cursor.h"
#include "filter.h"
#include "keyset.h"
#include "ringlog.h"
#include "snapset.h"
#include "topics.h"
#include "events/v1/watcher.pb-c.h"

/* What readers count, summed per shard (the shard's counters embed it). */
struct reader_counters {
    counter_t resumes;        /* requests with a cursor */
    counter_t gaps;           /* Gap events made for subscribers */
    counter_t dropped_events; /* events a subscriber did not get (slow, retention) */
    counter_t slow[4];        /* slow-consumer episodes by OverflowPolicy (1..3) */
};

/* How a reader was positioned: decides what a lap before its first message
 * means (reader.c, lapped_in_backlog). */
enum {
    READER_START_POSITION = 0, /* no cursor: START_EARLIEST, _LIVE or _AT_TIME */
    READER_START_CURSOR,       /* a cursor, no gap allowed */
    READER_START_CURSOR_GAP,   /* a cursor with allow_gap */
};

/* A Gap to tell: `missed` matching events lost after cursor `from`; the
 * reader goes on after cursor `at`. */
struct reader_gap {
    struct cursor at, from;
    uint64_t missed;
    int reason; /* Events__V1__GapReason */
};

/* The status a reader's stream ends with. */
struct reader_end {
    int code; /* a grpc_status_code */
    char message[400];
    const char *md_key; /* trailing metadata to send with it, or NULL */
    char md_value[CURSOR_TEXT_MAX];
    bool stalled; /* DISCONNECT while the send was held by flow control */
};

enum reader_action {
    READER_GAP,      /* send step.gap */
    READER_SNAPSHOT, /* send the snapshot's next value (or reader_snapshot_end) */
    READER_EOB,      /* send EndOfBacklog at reader_cursor() */
    READER_EVENT,    /* send what the encoder made of record step.seq */
    READER_WAIT,     /* at the head (or the limit): wait for new records */
    READER_YIELD,    /* scanned its budget of filtered-out records: go on later */
    READER_END,      /* end the stream with step.end */
};

struct reader_step {
    enum reader_action action;
    uint64_t seq;             /* READER_EVENT */
    struct ringlog_iter from; /* READER_EVENT: where the read of that record began */
    struct reader_gap gap;
    struct reader_end end;
};

/* How the caller encodes a matching record for sending, while the writer
 * may overwrite it: encode returns false when it could not (the record was
 * overwritten while it was read, or out of memory); discard drops what
 * encode made when the record turns out overwritten after all. */
struct reader_encoder {
    bool (*encode)(void *ctx, const struct ringlog_iter *it, const struct ringlog_view *v);
    void (*discard)(void *ctx);
    void *ctx;
};

struct reader {
    /* read for every record (keep them together, first) */
    struct topic *topic;
    struct ringlog_iter it; /* the next record to read */
    bool has_filter;
    bool sent_first; /* its first message is out (set by the sender) */
    bool eob_sent;
    /* a Gap to send before anything else: `gap_missed` matching events lost
     * after cursor `gap_from` (its own cursor is the reader's when sent) */
    bool gap_pending;
    bool gap_slow;    /* a slow-consumer Gap: an overflow before it is sent widens it */
    bool gap_stalled; /* its episode began while the send was held */
    /* snapshot or conflation phase: for each (kind, key), the sequence
     * number of its value as of the reader's position (aux: its cache index
     * + 1), sent one per message before the reader goes on from it.seq */
    bool snap_active;
    bool snap_initial;    /* the request's snapshot (told a Gap if values are lost) */
    uint64_t backlog_end; /* head seq when positioned: EndOfBacklog once past it */
    struct filter filter;

    struct reader_counters *ctr;
    uint64_t id;        /* the stream's, for log lines */
    int start;          /* READER_START_* */
    int overflow;       /* Events__V1__OverflowPolicy, never DEFAULT */
    uint8_t gap_reason; /* Events__V1__GapReason */
    struct cursor gap_from;
    uint64_t gap_missed;
    uint64_t dropped; /* events lost to this reader, each told by a Gap */
    struct keyset *snapset;
    size_t snap_index; /* next slot of snapset to send */
    uint64_t snap_sent;
    uint64_t snap_lost; /* values neither the log nor the cache had any more */
};

/* Sets up `r` for `req` (its strings already checked as UTF-8): topic,
 * filter, overflow policy, position (cursor rules), snapshot set. true: it
 * may start; false: *end says how the stream ends (r is still to be freed
 * with reader_free). */
bool reader_open(struct reader *r, const struct topics *topics, const Events__V1__WatchRequest *req,
                 struct reader_counters *ctr, uint64_t id, struct reader_end *end);
void reader_free(struct reader *r);

/* What to do next. `limit`: read no record past this sequence number
 * (UINT64_MAX: none). The encoder is called on a matching record before it
 * is taken (READER_EVENT: the reader has moved past it). */
void reader_next(struct reader *r, uint64_t limit, const struct reader_encoder *enc,
                 struct reader_step *step);

/* One READER_EVENT step of an unfiltered reader: from `from` it read
 * record `seq` of `log` and moved to `to`. Another unfiltered reader at
 * `from` would read the same record and move the same way (the record at a
 * position of a log never changes; only being overwritten ends it). */
struct reader_hop {
    const ringlog_t *log;
    struct ringlog_iter from, to;
    uint64_t seq;
};

/* Takes the step `hop` tells, without reading the record, when reader_next
 * would have taken exactly it: r is unfiltered, live (EndOfBacklog sent),
 * has no Gap or snapshot to send, is at hop->from within `limit`, within
 * its lag budget, and the record is not overwritten. true: r moved to
 * hop->to, as after READER_EVENT for hop->seq; false: r is as it was (call
 * reader_next). */
bool reader_follow(struct reader *r, uint64_t limit, const struct reader_hop *hop);

/* True when the next record is already in the log and matches (the send
 * before it may be coalesced with it). Moves over filtered-out records. */
bool reader_next_is_queued(struct reader *r);

/* The send is held by flow control (the client does not read): over its
 * budget, the policy applies now. Returns true when the stream is to end
 * with *end (DISCONNECT); otherwise a Gap may have been queued. */
bool reader_check_stalled(struct reader *r, struct reader_end *end);

/* How far behind the head: records not read yet and their log bytes. */
void reader_lag(const struct reader *r, uint64_t *events, uint64_t *bytes);

/* The cursor of the last record the reader moved past. */
static inline struct cursor reader_cursor(const struct reader *r)
{
    return (struct cursor){.epoch = ringlog_epoch(r->topic->log), .seq = r->it.seq - 1};
}

/* The reader's filter; NULL: every pair. */
static inline const struct filter *reader_filter(const struct reader *r)
{
    return r->has_filter ? &r->filter : NULL;
}

/* Does record v pass the reader's filter (a Gap always does)? */
static inline bool reader_matches(const struct reader *r, const struct ringlog_view *v)
{
    return snapset_matches(reader_filter(r), v);
}

/* Snapshot and conflation sets (the sets themselves: snapset.h). */
/* The request's snapshot set as of the reader's position (a live start may
 * move it forward); false: out of memory. */
bool reader_snapshot_prepare(struct reader *r, bool live);
/* The phase is over: frees the set. */
void reader_snapshot_end(struct reader *r);

#endif
