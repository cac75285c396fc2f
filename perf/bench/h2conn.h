/*
 * h2conn: a lean gRPC client for streaming calls, straight on HTTP/2
 * (libnghttp2), for the load generator's Watch and Subscribe streams
 * (--client h2).
 *
 * Why: gRPC C core spends a few microseconds of client CPU on every
 * message (a batch, a completion, a byte buffer), so one bench core
 * receiving 200,000 Watch messages a second is itself the limit and no
 * server can be measured through it. Here a message costs the HTTP/2 frame
 * parse and a pointer into the read buffer: the bytes are handed over in
 * place whenever a message lies whole in what one read() returned.
 *
 * One connection is one TCP socket and one HTTP/2 session, driven by one
 * thread: h2conn_read() when the socket is readable, h2conn_flush() after
 * anything that submits frames (it says when the socket must be watched for
 * writing). A call sends its request (a gRPC length-prefixed message) and
 * half-closes, or (h2conn_open) sends what h2stream_send gives it, as it
 * comes, and never half-closes; every whole response message goes to
 * on_message, in order;
 * the end goes to on_end once, with the grpc-status and grpc-message of the
 * trailers, or a status that says how the stream was lost. Compressed
 * messages are not asked for (no grpc-accept-encoding) and are reported as
 * malformed.
 *
 * Flow control is the application's: received bytes are handed back to the
 * peer's window once they are parsed, so a paused call (on_message returned
 * false) keeps what arrives after that unparsed and unacknowledged, and the
 * server's sends to it stop when its window is full — a stalled consumer.
 * h2stream_resume() parses what was held and opens the window again.
 */
#ifndef TICKFAN_H2CONN_H
#define TICKFAN_H2CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct h2conn;
struct h2stream;

struct h2conn_handler {
    /* One whole message of call `ud`; p is valid only during the call.
     * Return false to pause the call after this message. */
    bool (*on_message)(void *ud, const uint8_t *p, size_t n);
    /* The call is over: a gRPC status code (grpc-status, else 1 CANCELLED
     * after h2stream_cancel, 14 UNAVAILABLE when the stream or the
     * connection was lost, 2 UNKNOWN when it closed without one), the
     * decoded grpc-message and the tickfan-cursor trailer ("" when absent). */
    void (*on_end)(void *ud, int status, const char *message, const char *cursor);
};

struct h2conn_options {
    uint32_t stream_window;     /* initial receive window of each call, bytes */
    uint32_t connection_window; /* receive window of the connection, bytes */
};

/* Connects to host:port ("[v6]:port" too; a "dns:///" or "ipv4:" prefix is
 * skipped) and sends the HTTP/2 preface and settings. Blocking connect; the
 * socket is non-blocking from then on. */
int h2conn_connect(struct h2conn **out, const char *target, const struct h2conn_options *opt,
                   const struct h2conn_handler *h, char *err, size_t errlen);

/* Starts a call of `path` with one request message (the encoded protobuf,
 * without the gRPC prefix), half-closed. NULL when the connection is gone
 * or out of memory. The stream stays the connection's: valid until
 * h2conn_destroy. */
struct h2stream *h2conn_call(struct h2conn *c, const char *path, const uint8_t *req, size_t len,
                             void *ud);

/* Starts a call of `path` whose request messages come later, each by
 * h2stream_send; it is never half-closed (h2stream_cancel ends it). NULL
 * as h2conn_call. */
struct h2stream *h2conn_open(struct h2conn *c, const char *path, void *ud);

/* Queues one request message (the encoded protobuf, without the gRPC
 * prefix) on a call made by h2conn_open; it goes out with the next
 * h2conn_flush. -EPIPE when the call is over or not an open one, -ENOMEM. */
int h2stream_send(struct h2stream *st, const uint8_t *msg, size_t len);

/* RST_STREAM(CANCEL); on_end follows (CANCELLED unless the status came
 * first). No message is delivered after it, not even one already read in
 * the same buffer (on_message may cancel). Nothing once the call is over. */
void h2stream_cancel(struct h2stream *st);
bool h2stream_ended(const struct h2stream *st);

/* Parses what was held while paused (on_message may pause it again), then
 * gives the window back. Works after the call ended, too. */
void h2stream_resume(struct h2stream *st);

int h2conn_fd(const struct h2conn *c);
/* Reads what the socket has and runs it; < 0 when the connection is over
 * (every call still open then ended with UNAVAILABLE). */
int h2conn_read(struct h2conn *c);
/* Writes what the session has to send: 1 while some is left (watch the
 * socket for writing), 0 when all is out, < 0 when the connection is over. */
int h2conn_flush(struct h2conn *c);
/* Calls not yet ended. */
size_t h2conn_open_calls(const struct h2conn *c);
/* Closes the socket and frees every stream; no callbacks. */
void h2conn_destroy(struct h2conn *c);

#endif
