/*
 * watchclient: a client of one events.v1.Watcher/Watch server-stream over
 * gRPC C core.
 *
 * One watchclient is one channel, one completion queue and one call. It is
 * pull-driven: the owner calls watchclient_next() in a loop, and the gRPC
 * work of the call (connecting, reading, the final status) happens inside
 * that call. Nothing runs in the background on the owner's behalf.
 *
 * Threads: a watchclient belongs to one thread (the one calling
 * watchclient_next). The only function another thread may call is
 * watchclient_cancel(), at any time before watchclient_close(). None of
 * these functions is async-signal-safe: a signal handler sets a flag and the
 * owner thread calls watchclient_cancel() when it sees it (use a short
 * timeout in watchclient_next so it does).
 *
 * Errors are 0 or a negative errno. Errors of the stream itself (connection
 * refused, OUT_OF_RANGE ...) are not errno values: watchclient_next()
 * returns -EPIPE and watchclient_status() says what the server or the
 * transport reported.
 *
 * Built so that a resuming subscriber can sit on top: the caller sees every
 * event's cursor, a timeout with no event (-EAGAIN) is cheap and leaves the
 * read pending (a heartbeat watchdog counts these), and the final status and
 * trailing metadata (tickfan-cursor, tickfan-earliest-cursor) say whether
 * and where to resume.
 */
#ifndef TICKFAN_WATCHCLIENT_H
#define TICKFAN_WATCHCLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "events/v1/watcher.pb-c.h"

/* The full method name of the Watch stream. */
#define WATCHCLIENT_METHOD "/events.v1.Watcher/Watch"

typedef struct watchclient watchclient_t;

/*
 * Opens an insecure channel to target ("host:port" or any gRPC target URI)
 * and starts one Watch call with req. Takes a reference on the gRPC library
 * (grpc_init) that watchclient_close() gives back. The request is encoded
 * here; req stays the caller's. Connecting happens in the background of the
 * first watchclient_next(): a server that cannot be reached shows up there
 * as -EPIPE with status UNAVAILABLE, not here.
 * Returns 0, -EINVAL (NULL target or request), -ENOMEM, or -EIO if gRPC
 * refused to create or start the call; *out is NULL on failure.
 */
int watchclient_open(watchclient_t **out, const char *target, const Events__V1__WatchRequest *req);

/* Options of watchclient_open_with(); all zero gives watchclient_open(). */
struct watchclient_opts {
    /* Connect on a TCP connection of the call's own, never one shared with
     * other channels to the same target (a local subchannel pool). A
     * resuming client wants this: a connection that went silent is not
     * reused for the next attempt. */
    bool own_connection;
};

/* watchclient_open() with options; opts may be NULL. */
int watchclient_open_with(watchclient_t **out, const char *target,
                          const Events__V1__WatchRequest *req, const struct watchclient_opts *opts);

/*
 * Waits up to timeout_ms (< 0: forever, 0: poll) for the next event.
 * Returns
 *   0        *ev is a new event; the caller frees it with
 *            events__v1__watch_event__free_unpacked(*ev, NULL)
 *   -EAGAIN  no event within the timeout; the read stays pending and the
 *            next call continues waiting for the same message
 *   -EPIPE   the stream has ended (server status, transport failure or
 *            watchclient_cancel); watchclient_status() is now available.
 *            Every later call returns -EPIPE too.
 *   -EBADMSG a message arrived that is not a WatchEvent; the stream goes on
 * *ev is NULL unless 0 is returned.
 */
int watchclient_next(watchclient_t *wc, int64_t timeout_ms, Events__V1__WatchEvent **ev);

/*
 * The final status of the stream, once watchclient_next() returned -EPIPE.
 * *details (may be NULL) points at the status message, "" if none, owned by
 * wc until watchclient_close(). Returns 0, or -EAGAIN while the stream is
 * still running.
 */
int watchclient_status(watchclient_t *wc, grpc_status_code *code, const char **details);

/*
 * The value of trailing metadata key (lower case, e.g. "tickfan-cursor"),
 * NUL-terminated and owned by wc until watchclient_close(); NULL if the
 * stream has not ended or the server sent no such key. If the key was sent
 * more than once, the first value.
 */
const char *watchclient_trailer(watchclient_t *wc, const char *key);

/*
 * Ends the stream from the client side. Thread-safe; idempotent; a no-op
 * once the stream has ended. The owner's watchclient_next() may still return
 * an event that had already arrived, then -EPIPE with status CANCELLED.
 */
void watchclient_cancel(watchclient_t *wc);

/*
 * Cancels the stream if it is still running, waits for gRPC to hand back
 * every operation in flight, frees everything and drops the gRPC library
 * reference. No other thread may use wc (watchclient_cancel included) once
 * this has started. NULL is a no-op.
 */
void watchclient_close(watchclient_t *wc);

/*
 * One unary call of `method` with the request bytes (e.g. the admin
 * service's ListSubscribers). On 0, *code and *details (malloc'd, caller
 * frees) are the status and *reply the response (caller destroys; NULL when
 * the call failed). Returns -EIO if the call could not be started.
 */
int watchclient_unary(const char *target, const char *method, const void *req, size_t len,
                      int64_t timeout_ms, grpc_byte_buffer **reply, grpc_status_code *code,
                      char **details);

#endif
