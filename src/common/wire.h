/*
 * wire: protobuf encoding of WatchEvents and gRPC byte buffers.
 *
 * Pure functions, any thread. Data events are encoded once, by the ingest
 * thread, straight into the topic log; control events (heartbeat,
 * EndOfBacklog, Gap) are small and encoded per stream by its shard.
 */
#ifndef TICKFAN_WIRE_H
#define TICKFAN_WIRE_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cursor.h"
#include "events/v1/watcher.pb-c.h"
#include "record.h"

/* A Data event's fields. */
struct wire_data {
    struct record rec;
    int64_t emitted_us;
    int64_t ingested_us;
    uint64_t seq;
    bool snapshot;
};

/* A Data WatchEvent ready to encode (the cursor formatted once): init
 * returns its encoded size, pack writes exactly that many bytes. The
 * message points into `d` and into itself: keep both alive until packed. */
struct wire_data_msg {
    Events__V1__WatchEvent ev;
    Events__V1__Data data;
    char kind[256];
    char key[256];
    char cursor[CURSOR_TEXT_MAX];
};
size_t wire_data_msg_init(struct wire_data_msg *m, const struct wire_data *d, struct cursor c);
void wire_data_msg_pack(const struct wire_data_msg *m, uint8_t *out);

/* A byte buffer holding a copy of `len` bytes. The caller owns the result
 * (grpc_byte_buffer_destroy); gRPC does not free it when a send completes. */
grpc_byte_buffer *wire_buffer(const void *data, size_t len);

/* Control events, as byte buffers owned by the caller. */
grpc_byte_buffer *wire_heartbeat(struct cursor c, int64_t now_us);
grpc_byte_buffer *wire_end_of_backlog(struct cursor c);
grpc_byte_buffer *wire_gap(struct cursor c, uint64_t missed, Events__V1__GapReason reason,
                           struct cursor from);

/* Gap{missed, reason, from_cursor = from} with cursor c, packed into buf
 * (cap bytes). Returns its size, or 0 if it does not fit. */
size_t wire_gap_pack(struct cursor c, uint64_t missed, Events__V1__GapReason reason,
                     struct cursor from, uint8_t *buf, size_t cap);

/* The whole message in bb as one slice (the caller unrefs it). 0, or
 * -EBADMSG when bb is NULL or unreadable. */
int wire_read_all(grpc_byte_buffer *bb, grpc_slice *out);

/* Unpacks a WatchRequest after wire_check_text(). Returns 0; -EILSEQ (a
 * string field that is not valid UTF-8 or holds a NUL) or -EBADMSG, with a
 * message for the client in why. Free *out with
 * events__v1__watch_request__free_unpacked(*out, NULL). */
int wire_read_request(grpc_byte_buffer *bb, Events__V1__WatchRequest **out, char *why, size_t cap);

/* Unpacks a SubscribeRequest, its strings checked as wire_read_request does
 * (the nested WatchRequest's included). Same returns; free *out with
 * events__v1__subscribe_request__free_unpacked(*out, NULL). */
int wire_read_subscribe(grpc_byte_buffer *bb, Events__V1__SubscribeRequest **out, char *why,
                        size_t cap);

/* A packed SubscriptionEnd (empty strings for NULL), owned by the caller. */
grpc_slice wire_subscription_end(grpc_status_code code, const char *message, const char *cursor,
                                 const char *earliest);

/* Checks every `string` field of the protobuf message in buf (fields of
 * desc, sub-messages included, repeated entries each) with text_valid().
 * Returns 0; -EILSEQ with the field named in why ("keys holds a NUL byte",
 * "request.topic is not valid UTF-8"); or -EBADMSG when the bytes do not
 * frame as protobuf. protobuf-c checks neither, so every request whose
 * strings tickfan stores, matches or sends passes through here first. */
int wire_check_text(const ProtobufCMessageDescriptor *desc, const void *buf, size_t len, char *why,
                    size_t cap);

/* A protobuf varint: its size, and written at p (returns the byte after). */
size_t wire_varint_len(uint64_t v);
uint8_t *wire_put_varint(uint8_t *p, uint64_t v);

/* "NOT_FOUND" etc. for a status code; "UNKNOWN_STATUS" for others. */
const char *wire_status_name(grpc_status_code code);

#endif
