/*
 * subscriber: a Watch subscription that resumes by itself and never loses
 * or repeats an event.
 *
 * One tickfan_sub_t follows one topic through any number of Watch streams.
 * Every event goes to the caller's on_event callback, in order; the
 * subscriber's cursor moves to the event's cursor only after on_event
 * returned 0. When a stream breaks (server drain, connection reset, a stream
 * reset, a silent network), the subscriber opens a new one on a fresh
 * connection, after a backoff, with that cursor: the new stream continues
 * right after the last event the caller accepted, so across the join no
 * event is skipped and none is delivered twice.
 *
 * What resumes and what stops:
 *   resumed   UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ABORTED,
 *             CANCELLED not asked for by the caller, RESOURCE_EXHAUSTED with
 *             a "tickfan-cursor" trailer (a slow consumer disconnected),
 *             RESOURCE_EXHAUSTED "received initial metadata size exceeds
 *             limit" without one (gRPC's transport closed an HTTP/2
 *             connection shared with a stream that sent oversize metadata,
 *             e.g. through a proxy: the server did not end this stream),
 *             connections that fail or break, and a stream silent for
 *             heartbeat_timeout_ms (the watchdog);
 *   stopped   OUT_OF_RANGE (tickfan_sub_run returns -ERANGE and
 *             tickfan_sub_earliest_cursor() names the earliest cursor: the
 *             caller decides, e.g. to start again with allow_gap), and every
 *             other status (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
 *             UNAUTHENTICATED, UNIMPLEMENTED, RESOURCE_EXHAUSTED without a
 *             cursor ...), which tickfan_sub_run returns as -EPIPE.
 *
 * Threads: tickfan_sub_run() does all the work in the calling thread (gRPC
 * has internal threads of its own; this module creates none). on_event,
 * on_commit and log are called from that thread only, one at a time.
 * tickfan_sub_cancel() and tickfan_sub_reconnect() may be called from any
 * thread, from inside on_event, and from a signal handler (they only set a
 * flag, which the run loop looks at every TICKFAN_SUB_POLL_MS at most).
 * tickfan_sub_stats() and tickfan_sub_cursor() may be called from any thread
 * at any time between create and destroy. Everything else belongs to the
 * thread that calls tickfan_sub_run, and not while it runs.
 *
 * Errors are 0 or a negative errno value.
 *
 * Exactly once, and its limit: inside one process nothing is lost or
 * repeated. The cursor lives in memory; with a cursor file it is also
 * written to disk every commit_interval_ms and/or commit_every events, when
 * a stream breaks, and when run returns. A consumer that crashes between
 * processing an event and the next commit receives the events since that
 * commit again when it restarts from the file: at least once across a
 * crash. For exactly once across a crash, store the cursor together with
 * the effect of the events, in one transaction of your own: either in
 * on_event (ev->cursor) or, for batches, in on_commit, which is called at
 * each commit point with the cursor of the last event processed; start the
 * next process with that stored cursor in the request.
 */
#ifndef TICKFAN_SUBSCRIBER_H
#define TICKFAN_SUBSCRIBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>

#include "events/v1/watcher.pb-c.h"

/* Longest a cancel or reconnect request waits to be seen, in ms. */
#define TICKFAN_SUB_POLL_MS 50
/* Size of tickfan_sub_stats.resumes_by_status (grpc_status_code 0..16). */
#define TICKFAN_SUB_STATUS_CODES 17

typedef struct tickfan_sub tickfan_sub_t;

/*
 * Called once per event, in stream order: Data, Heartbeat, EndOfBacklog,
 * Gap (switch on ev->payload_case). Return 0 when the event is processed:
 * the subscriber's cursor then moves to ev->cursor. Any other value stops
 * the subscription without moving the cursor: tickfan_sub_run returns
 * -ECANCELED and tickfan_sub_handler_result() gives the value. ev belongs
 * to the subscriber and is freed when on_event returns.
 *
 * Per stream, EndOfBacklog comes once, when the stream reaches the live
 * head: after a resume it comes again. Heartbeats come only while the topic
 * (or the filter) is quiet; their cursor moves too.
 */
typedef int (*tickfan_sub_event_fn)(const Events__V1__WatchEvent *ev, void *arg);

/*
 * The commit hook: called at each commit point (see commit_interval_ms)
 * with the cursor of the last event on_event accepted, before the cursor
 * file (if any) is written. Return 0, or a negative errno value to stop the
 * subscription (tickfan_sub_run returns it, or -ECANCELED for a positive
 * value; the cursor file is not written).
 */
typedef int (*tickfan_sub_commit_fn)(const char *cursor, void *arg);

/* One line of the subscriber's log (reconnects, cursor file), no newline. */
typedef void (*tickfan_sub_log_fn)(const char *line, void *arg);

struct tickfan_sub_options {
    /* Server address, "host:port" or a gRPC target URI. Required. */
    const char *target;
    /*
     * The subscription: topic (required), cursor, kinds, keys, start,
     * start_unix_micros, snapshot, overflow, allow_gap. Copied by
     * tickfan_sub_create. Resumes send the same request with the
     * subscriber's cursor; snapshot is asked for again only while no event
     * after the snapshot has been processed (a stream broken during the
     * snapshot sends it again, from the start position).
     */
    const Events__V1__WatchRequest *request;
    /* Required. */
    tickfan_sub_event_fn on_event;
    void *arg;

    /* Resume broken streams (default true). false: the first break ends run. */
    bool resume;
    /* Backoff before a resume: a random delay in [0, min(max, initial *
     * 2^n)] for the n-th resume in a row ("full jitter").
     * Defaults 100 ms and 5000 ms; 1 <= initial <= max. */
    int64_t backoff_initial_ms;
    int64_t backoff_max_ms;
    /* A stream that has received events for this long counts as healthy:
     * the backoff starts again from backoff_initial_ms. Default 10000. */
    int64_t healthy_ms;
    /* Give up (run returns the last error) after this many resumes in a row
     * without any event processed in between. 0 (default): never. */
    uint32_t max_retries;
    /* No event and no heartbeat for this long: the stream is dead; cancel
     * it and resume. Default 15000 (3x the server's default 5 s heartbeat
     * cadence); 0 turns the watchdog off. */
    int64_t heartbeat_timeout_ms;

    /* Cursor file (NULL: none). Read by tickfan_sub_create when the request
     * has no cursor: if the file exists, the subscription resumes from the
     * cursor in it. Written atomically (temporary file, fsync, rename, fsync
     * of the directory) at each commit point. One subscriber per file. */
    const char *cursor_file;
    /* Commit points, besides "a stream broke" and "run returns": every
     * commit_interval_ms (default 1000; 0: no timed commits) and every
     * commit_every processed events (default 0: off). A commit happens only
     * if the cursor moved since the last one. */
    int64_t commit_interval_ms;
    uint64_t commit_every;
    tickfan_sub_commit_fn on_commit;
    void *commit_arg;

    /* Log lines; NULL (default): "tickfan: LINE" on stderr. */
    tickfan_sub_log_fn log;
    void *log_arg;
};

/* Counters, readable at any time; resumes_* count streams reopened. */
struct tickfan_sub_stats {
    uint64_t events;      /* events on_event accepted, all payload kinds */
    uint64_t data_events; /* of which Data */
    uint64_t streams;     /* streams opened */
    uint64_t resumes;     /* all resumes: the sum of the four below */
    /* The server ended the stream with a resume cursor (trailer
     * tickfan-cursor): drain (UNAVAILABLE), slow consumer (RESOURCE_EXHAUSTED). */
    uint64_t resumes_server;
    /* Any other resumable status: connection refused or reset, stream
     * reset, CANCELLED by something else than the caller, a connection
     * closed for another stream's metadata (RESOURCE_EXHAUSTED). */
    uint64_t resumes_transport;
    /* No event or heartbeat for heartbeat_timeout_ms. */
    uint64_t resumes_watchdog;
    /* tickfan_sub_reconnect(). */
    uint64_t resumes_reconnect;
    /* resumes_server + resumes_transport by the status the stream ended with. */
    uint64_t resumes_by_status[TICKFAN_SUB_STATUS_CODES];
    uint64_t commits; /* commit points that wrote the cursor */
};

/* Fills o with the defaults above (target, request, on_event still to set). */
void tickfan_sub_options_init(struct tickfan_sub_options *o);

/*
 * Checks the options, copies what it needs (o and everything it points to
 * stay the caller's) and, with a cursor file and no cursor in the request,
 * reads the file. Takes a gRPC library reference (grpc_init) that
 * tickfan_sub_destroy gives back. Connects nothing yet.
 * Returns 0, -EINVAL (a missing or out-of-range option, logged with its
 * name and value; a cursor file that does not hold a cursor), -ENOMEM, or
 * the errno of reading the cursor file. *out is NULL on failure.
 */
int tickfan_sub_create(tickfan_sub_t **out, const struct tickfan_sub_options *o);

/*
 * Runs the subscription in the calling thread until it stops. Returns
 *   0            tickfan_sub_cancel() was called, or the server ended the
 *                stream normally (status OK; tickfan_sub_status says which)
 *   -ECANCELED   on_event returned non-zero (tickfan_sub_handler_result);
 *                the cursor is that of the last event it accepted
 *   -ERANGE      OUT_OF_RANGE: the cursor is older than what the topic
 *                retains or from another epoch of its log;
 *                tickfan_sub_earliest_cursor() names the earliest one
 *   -EPIPE       the stream ended with a status that is not resumed, or
 *                with any status when resume is off or max_retries is
 *                reached (tickfan_sub_status says which)
 *   -ETIMEDOUT   the watchdog fired and resume is off or max_retries is
 *                reached
 *   -EBADMSG     the server sent a message that is not a WatchEvent
 *   -ENOMEM, -EIO (gRPC refused to start a call), or the error of a commit
 *                (on_commit's value, or the errno of writing the cursor file)
 * In every case the cursor is committed before run returns (a failure to
 * do so is logged, and returned if nothing else went wrong). run may be
 * called again after it returned; it continues from the cursor, unless
 * tickfan_sub_cancel() was called, which is final.
 */
int tickfan_sub_run(tickfan_sub_t *s);

/* Stops tickfan_sub_run (now or, if it is not running, as soon as it is
 * called). Async-signal-safe; any thread; idempotent. */
void tickfan_sub_cancel(tickfan_sub_t *s);

/* Drops the current stream and resumes at once from the cursor (an
 * operator action; also cuts a backoff short). Async-signal-safe; any
 * thread. */
void tickfan_sub_reconnect(tickfan_sub_t *s);

/* Copies the counters. Any thread. */
void tickfan_sub_stats(tickfan_sub_t *s, struct tickfan_sub_stats *out);

/*
 * Copies the cursor of the last event processed (or the one the
 * subscription started from: the request's or the cursor file's) into buf
 * (len bytes, NUL-terminated, truncated if short). Returns its full length,
 * 0 when there is none yet. Any thread.
 */
size_t tickfan_sub_cursor(tickfan_sub_t *s, char *buf, size_t len);

/*
 * How the last stream ended, after tickfan_sub_run returned: *code (may be
 * NULL) the gRPC status, *details (may be NULL) its message ("" if none),
 * owned by s until the next run or destroy. Returns 0, or -ENOENT when the
 * last run did not end on a stream status (cancel, handler, watchdog ...).
 */
int tickfan_sub_status(tickfan_sub_t *s, grpc_status_code *code, const char **details);

/* After -ERANGE: the earliest cursor the server named (trailer
 * tickfan-earliest-cursor), owned by s until the next run or destroy; NULL
 * if it named none. */
const char *tickfan_sub_earliest_cursor(tickfan_sub_t *s);

/* After -ECANCELED: what on_event returned. */
int tickfan_sub_handler_result(tickfan_sub_t *s);

/* Cancels nothing: call it once tickfan_sub_run has returned (or was never
 * called). Frees everything and drops the gRPC reference. NULL is a no-op. */
void tickfan_sub_destroy(tickfan_sub_t *s);

/*
 * The cursor file format, for tools: the cursor and a newline.
 * read: *cursor is a malloc'd string (the caller frees it). Returns 0,
 * -ENOENT when there is no file, -EINVAL when it does not hold one cursor
 * (empty, several words, control characters, over 1024 bytes), or another
 * -errno. write: atomic as above. Returns 0 or -errno.
 */
int tickfan_sub_cursor_file_read(const char *path, char **cursor);
int tickfan_sub_cursor_file_write(const char *path, const char *cursor);

#endif
