/*
 * muxsub: many subscriptions over one Subscribe stream, each resumed by
 * itself, none ever losing or repeating an event.
 *
 * One tickfan_mux_t is one connection and one Subscribe stream at a time,
 * carrying any number of subscriptions, added and removed at any time.
 * Each subscription has Watch's semantics (its request is a WatchRequest),
 * its own handler, its own cursor and optionally its own cursor file. Its
 * cursor moves to an event's cursor only after its on_event returned 0.
 * A delivery the server shares between several subscriptions (its ids) is
 * handed to each of them, in the order of the ids.
 *
 * When the stream breaks (server drain, connection reset, a silent
 * network), the mux opens a new one on a fresh connection after a backoff
 * and re-adds every live subscription from its own cursor: each continues
 * right after the last event its handler accepted, nothing skipped, nothing
 * twice. The rules are tickfan_sub's (subscriber.h), per stream and per
 * subscription:
 *
 * The stream ends with
 *   resumed   UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ABORTED,
 *             CANCELLED not asked for, OK (the server has no reason to end
 *             a Subscribe stream normally), RESOURCE_EXHAUSTED "received
 *             initial metadata size exceeds limit" (gRPC closed a shared
 *             connection for another stream) or "server out of memory",
 *             connections that fail or break, and a stream on which nothing
 *             arrived for heartbeat_timeout_ms while a subscription was live
 *             on it (the watchdog);
 *   stopped   every other status (RESOURCE_EXHAUSTED "too many streams",
 *             UNIMPLEMENTED from a server without Subscribe, ...):
 *             tickfan_mux_run returns -EPIPE. The subscriptions stay: run
 *             again continues them.
 * A subscription ends (SubscriptionEnd) with
 *   OK                 after tickfan_mux_remove: on_end, then it is gone;
 *   RESOURCE_EXHAUSTED with a cursor, or a message starting "slow consumer: "
 *                      (OVERFLOW_DISCONNECT): re-added on the same stream
 *                      from its own cursor, after its own backoff;
 *   UNAVAILABLE        (the server drains): re-added on the next stream;
 *                      when every subscription waits so, the mux does not
 *                      wait for the server to close: it reconnects now
 *                      (after the backoff). A stream that goes on anyway
 *                      gets it back after backoff_max_ms;
 *   OUT_OF_RANGE       its cursor is older than the topic retains (or from
 *                      another epoch): on_end with earliest_cursor, then it
 *                      is gone; the caller decides, e.g. to add it again with
 *                      allow_gap or from earliest_cursor, as tickfan_sub
 *                      returns -ERANGE;
 *   anything else      (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED
 *                      without a cursor, e.g. over the server's subscriptions
 *                      per stream): on_end, then it is gone.
 *
 * Threads: tickfan_mux_run() does all the work in the calling thread (gRPC
 * has threads of its own; this module creates none). on_event, on_end,
 * on_commit and log are called from that thread only, one at a time.
 * tickfan_mux_add() and tickfan_mux_remove() may be called from any thread,
 * inside the callbacks too: they queue the operation under a mutex, and the
 * run loop carries it out the next time it looks, within
 * TICKFAN_MUX_POLL_MS (at once after the current response when called from
 * a callback). tickfan_mux_cancel() and tickfan_mux_reconnect() may be
 * called from any thread and from a signal handler (they set a flag).
 * tickfan_mux_stats() and tickfan_mux_cursor() may be called from any
 * thread between create and destroy. Everything else belongs to the thread
 * that calls tickfan_mux_run, and not while it runs.
 *
 * Errors are 0 or a negative errno value.
 *
 * Exactly once, and its limit: as tickfan_sub's. Cursors live in memory;
 * a subscription with a cursor file also writes it every
 * commit_interval_ms, when the stream breaks, when the subscription ends,
 * and when run returns: at least once across a crash of the process.
 * on_commit gives each cursor at those points, to store it with the
 * effect of the events for exactly once across a crash.
 */
#ifndef TICKFAN_MUXSUB_H
#define TICKFAN_MUXSUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>

#include "events/v1/watcher.pb-c.h"

/* Longest a queued operation, cancel or reconnect waits to be seen, in ms. */
#define TICKFAN_MUX_POLL_MS 50

typedef struct tickfan_mux tickfan_mux_t;

/*
 * Called once per event of subscription id, in its order. Return 0 when
 * the event is processed: the subscription's cursor then moves to
 * ev->cursor. Any other value stops tickfan_mux_run (-ECANCELED,
 * tickfan_mux_handler_result) without moving that cursor; the others keep
 * theirs. ev belongs to the mux, freed when on_event returns.
 */
typedef int (*tickfan_mux_event_fn)(uint32_t id, const Events__V1__WatchEvent *ev, void *arg);

/* Why a subscription is over; every string is "" when there is none, and
 * is owned by the mux for the duration of on_end. */
struct tickfan_mux_end {
    grpc_status_code code; /* OK after a remove */
    const char *message;
    /* The subscription's own cursor (the last event accepted, else the
     * start), to add it again from. */
    const char *cursor;
    /* With OUT_OF_RANGE: the earliest cursor the topic can resume from. */
    const char *earliest_cursor;
};

/*
 * Called exactly once per subscription that tickfan_mux_add accepted, when
 * it is over (see the ends above); nothing is called for id after it, and
 * arg may be freed in it. Not called for subscriptions still live when
 * tickfan_mux_destroy runs.
 */
typedef void (*tickfan_mux_end_fn)(uint32_t id, const struct tickfan_mux_end *end, void *arg);

/* At each commit point, per subscription whose cursor moved, before its
 * cursor file is written. Return 0, or a negative errno to stop run (which
 * returns it; the file is not written). */
typedef int (*tickfan_mux_commit_fn)(uint32_t id, const char *cursor, void *arg);

typedef void (*tickfan_mux_log_fn)(const char *line, void *arg);

struct tickfan_mux_options {
    /* Server address, "host:port" or a gRPC target URI. Required. */
    const char *target;
    /* Resume broken streams (default true). false: the first break of the
     * stream ends run with -EPIPE (-ETIMEDOUT for the watchdog); a
     * subscription's own resumable end is still re-added. */
    bool resume;
    /* Backoff and its reset, as tickfan_sub: full jitter in [0, min(max,
     * initial * 2^n)]; defaults 100, 5000 and 10000 ms. Per stream, and
     * per subscription for its own re-adds. */
    int64_t backoff_initial_ms;
    int64_t backoff_max_ms;
    int64_t healthy_ms;
    /* Give up after this many stream resumes in a row with no event
     * processed in between; 0 (default): never. */
    uint32_t max_retries;
    /* Nothing received for this long while a subscription is live on the
     * stream: the stream is dead, reopen it. Default 15000 (3 heartbeats of
     * the server's default 5 s cadence); 0: off. */
    int64_t heartbeat_timeout_ms;
    /* Timed commits, default 1000 ms; 0: only at the other commit points. */
    int64_t commit_interval_ms;
    tickfan_mux_commit_fn on_commit;
    void *commit_arg;
    /* Log lines; NULL (default): "tickfan: LINE" on stderr. */
    tickfan_mux_log_fn log;
    void *log_arg;
};

struct tickfan_mux_sub_options {
    /*
     * The subscription: exactly Watch's request (topic required), copied
     * by tickfan_mux_add. Re-adds send it with the subscription's cursor;
     * snapshot only while no event after the snapshot has been accepted.
     */
    const Events__V1__WatchRequest *request;
    tickfan_mux_event_fn on_event; /* required */
    tickfan_mux_end_fn on_end;     /* may be NULL */
    void *arg;
    /* As tickfan_sub's: read by tickfan_mux_add when the request has no
     * cursor (a missing file: no cursor), written at commit points. One
     * subscription per file. NULL: none. */
    const char *cursor_file;
};

/* Counters, readable at any time. */
struct tickfan_mux_stats {
    uint64_t events;         /* handler calls that returned 0 */
    uint64_t data_events;    /* of which Data */
    uint64_t deliveries;     /* Delivery messages received (an event shared by ids counts once) */
    uint64_t responses;      /* SubscribeResponse messages received */
    uint64_t streams;        /* streams opened */
    uint64_t resumes;        /* streams reopened: the three below */
    uint64_t resumes_broken; /* a resumable status or broken connection */
    uint64_t resumes_watchdog;
    uint64_t resumes_reconnect; /* tickfan_mux_reconnect, and "everyone drains" */
    uint64_t adds_sent;         /* SubscriptionAdd sent, re-adds included */
    uint64_t readds;            /* re-adds on the same stream (slow consumer, drain fallback) */
    uint64_t ends;              /* subscriptions over (on_end calls) */
    uint64_t live;              /* subscriptions added and not over */
    uint64_t commits;           /* cursors committed (per subscription) */
};

/* Fills o with the defaults above (target still to set). */
void tickfan_mux_options_init(struct tickfan_mux_options *o);

/*
 * Checks and copies the options. Takes a gRPC library reference that
 * tickfan_mux_destroy gives back. Connects nothing: the stream is opened by
 * run, while there is a subscription. Returns 0, -EINVAL (logged, naming
 * the option and its value) or -ENOMEM; *out is NULL on failure.
 */
int tickfan_mux_create(tickfan_mux_t **out, const struct tickfan_mux_options *o);

/*
 * Adds a subscription (any thread). Copies what it needs from so and, with
 * a cursor file and no cursor in the request, reads the file. *id is its
 * id, non-zero, never reused by this mux; the Subscribe id on the wire.
 * Returns 0, -EINVAL (no topic or on_event; a cursor file that holds no
 * cursor, logged), -ENOMEM, -ECANCELED after tickfan_mux_cancel, or the
 * errno of reading the cursor file. On failure nothing is called back.
 */
int tickfan_mux_add(tickfan_mux_t *m, const struct tickfan_mux_sub_options *so, uint32_t *id);

/*
 * Ends subscription id (any thread): from the run loop's next look on, its
 * on_event is not called again; on_end (code OK) follows once the server
 * confirmed (or at once when it is not on a stream). Returns 0, or -ENOENT
 * when id is not live (never added, over, or already being removed).
 */
int tickfan_mux_remove(tickfan_mux_t *m, uint32_t id);

/*
 * Runs the stream in the calling thread until it stops. Returns
 *   0            tickfan_mux_cancel() was called
 *   -ECANCELED   an on_event returned non-zero (tickfan_mux_handler_result)
 *   -EPIPE       the stream ended with a status that is not resumed, or any
 *                status when resume is off or max_retries is reached
 *                (tickfan_mux_status)
 *   -ETIMEDOUT   the watchdog fired and resume is off or max_retries reached
 *   -EBADMSG     the server sent a message that is not a SubscribeResponse
 *   -ENOMEM, -EIO (gRPC refused a call), or a commit's error
 * Every cursor is committed before run returns. run may be called again; it
 * goes on with the subscriptions still live, unless cancel was called,
 * which is final.
 */
int tickfan_mux_run(tickfan_mux_t *m);

/* Stops run (now, or as soon as it is called). Async-signal-safe, any
 * thread, idempotent. No on_event is called once run has seen it. */
void tickfan_mux_cancel(tickfan_mux_t *m);

/* Drops the stream and reopens it at once (cuts a backoff short).
 * Async-signal-safe, any thread. */
void tickfan_mux_reconnect(tickfan_mux_t *m);

void tickfan_mux_stats(tickfan_mux_t *m, struct tickfan_mux_stats *out);

/*
 * Copies subscription id's cursor (the last event accepted, else the one
 * it started from) into buf (len bytes, NUL-terminated, truncated if
 * short). Returns its full length, 0 when there is none yet, -ENOENT when
 * id is not live. Any thread.
 */
long tickfan_mux_cursor(tickfan_mux_t *m, uint32_t id, char *buf, size_t len);

/* After run returned: how the last stream ended (*details owned by m until
 * the next run or destroy). Returns 0, or -ENOENT when run did not end on
 * a stream status. */
int tickfan_mux_status(tickfan_mux_t *m, grpc_status_code *code, const char **details);

/* After -ECANCELED: what on_event returned, and (id may be NULL) for which
 * subscription. */
int tickfan_mux_handler_result(tickfan_mux_t *m, uint32_t *id);

/* Call once run has returned (or was never called). Frees every
 * subscription without calling on_end, and drops the gRPC reference. NULL
 * is a no-op. */
void tickfan_mux_destroy(tickfan_mux_t *m);

#endif
