/*
 * muxclient: a client of one events.v1.Watcher/Subscribe bidi stream over
 * gRPC C core.
 *
 * One muxclient is one channel, one completion queue and one call: the
 * transport under the multiplexed subscriber (muxsub.h), as watchclient is
 * the one under the Watch subscriber. It is pull-driven: the owner queues
 * SubscribeRequests with muxclient_send() and reads SubscribeResponses with
 * muxclient_next(); the gRPC work of the call (connecting, writing the
 * queued requests one at a time, reading, the final status) happens inside
 * muxclient_next(). Nothing runs in the background on the owner's behalf.
 *
 * Threads: a muxclient belongs to one thread. The only function another
 * thread may call is muxclient_cancel(), before muxclient_close(). None is
 * async-signal-safe.
 *
 * Errors are 0 or a negative errno. Errors of the stream itself are not
 * errno values: muxclient_next() returns -EPIPE and muxclient_status() says
 * what the server or the transport reported.
 */
#ifndef TICKFAN_MUXCLIENT_H
#define TICKFAN_MUXCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "events/v1/watcher.pb-c.h"

/* The full method name of the Subscribe stream. */
#define MUXCLIENT_METHOD "/events.v1.Watcher/Subscribe"

typedef struct muxclient muxclient_t;

/*
 * Opens an insecure channel to target ("host:port" or a gRPC target URI)
 * on a TCP connection of its own (a local subchannel pool: a connection
 * that went silent is never reused by the next stream) and starts the
 * Subscribe call. Takes a gRPC library reference that muxclient_close()
 * gives back. A server that cannot be reached shows up in muxclient_next()
 * as -EPIPE with UNAVAILABLE, not here.
 * Returns 0, -EINVAL, -ENOMEM or -EIO (gRPC refused the call); *out is NULL
 * on failure.
 */
int muxclient_open(muxclient_t **out, const char *target);

/*
 * Queues req (encoded here; req stays the caller's) to be sent after the
 * requests queued before it. Returns 0, -ENOMEM, or -EPIPE once the stream
 * has ended (nothing is queued then).
 */
int muxclient_send(muxclient_t *mc, const Events__V1__SubscribeRequest *req);

/* Requests queued or in flight, not yet handed to the transport. */
size_t muxclient_unsent(const muxclient_t *mc);

/*
 * Waits up to timeout_ms (< 0: forever, 0: poll) for the next response,
 * sending queued requests meanwhile. Returns
 *   0        *resp is a new response; the caller frees it with
 *            events__v1__subscribe_response__free_unpacked(*resp, NULL)
 *   -EAGAIN  nothing within the timeout; the read stays pending
 *   -EPIPE   the stream has ended; muxclient_status() is now available,
 *            and every later call returns -EPIPE too
 *   -EBADMSG a message arrived that is not a SubscribeResponse (the
 *            stream goes on)
 * *resp is NULL unless 0 is returned.
 */
int muxclient_next(muxclient_t *mc, int64_t timeout_ms, Events__V1__SubscribeResponse **resp);

/* The final status once muxclient_next() returned -EPIPE; *details (may be
 * NULL) is owned by mc, "" if none. Returns 0, or -EAGAIN while the stream
 * runs. */
int muxclient_status(muxclient_t *mc, grpc_status_code *code, const char **details);

/* Ends the stream from the client side. Any thread; idempotent. */
void muxclient_cancel(muxclient_t *mc);

/* Cancels the stream if it still runs, waits for every operation in
 * flight, frees everything and drops the gRPC reference. NULL is a no-op. */
void muxclient_close(muxclient_t *mc);

#endif
