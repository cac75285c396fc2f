/*
 * subparse: reads an events.v1.SubscribeResponse straight from its protobuf
 * wire bytes, one Delivery at a time: no allocation, no copy, unknown fields
 * skipped. A delivery's WatchEvent is handed back as its bytes (for
 * evparse_watch_event, once, however many subscriptions it is for) and its
 * ids are decoded into the caller's array. Pure functions; any thread.
 *
 * Field numbers are those of proto/events/v1/watcher.proto:
 * SubscribeResponse {deliveries=1}; Delivery {event=1, end=3, ids=2
 * (packed; the unpacked encoding is read too, and several runs of either
 * are concatenated, as protobuf does)}; SubscriptionEnd {code=1, message=2,
 * cursor=3, earliest_cursor=4}.
 *
 * Where protobuf would merge a message field that occurs twice, this
 * reader keeps the last occurrence (the server writes each once); the last
 * payload field (event or end) wins, as in protobuf's oneof. An id beyond
 * 32 bits is malformed here (protobuf would truncate it to its low 32).
 */
#ifndef TICKFAN_SUBPARSE_H
#define TICKFAN_SUBPARSE_H

#include <stddef.h>
#include <stdint.h>

enum subparse_kind {
    SUBPARSE_NONE = 0, /* no payload set (or one this version does not know) */
    SUBPARSE_EVENT,
    SUBPARSE_END,
};

struct subparse_delivery {
    enum subparse_kind kind;
    /* SUBPARSE_EVENT: the WatchEvent, byte for byte what Watch would send */
    const uint8_t *event;
    size_t event_len;
    /* SUBPARSE_END: SubscriptionEnd's fields (strings not terminated) */
    int32_t end_code;
    const uint8_t *end_message;
    size_t end_message_len;
    const uint8_t *end_cursor;
    size_t end_cursor_len;
    const uint8_t *end_earliest_cursor;
    size_t end_earliest_cursor_len;
    /* the ids, in wire order, in the array given to subparse_next */
    const uint32_t *ids;
    size_t n_ids;
};

/* Position in one SubscribeResponse's bytes; they must outlive it and
 * every delivery read from it (the pointers above point into them). */
struct subparse_response {
    const uint8_t *p;
    const uint8_t *end;
};

void subparse_init(struct subparse_response *it, const uint8_t *p, size_t n);

/*
 * Reads the next Delivery into *d (fully overwritten), its ids into
 * ids[0..cap). Returns 1 with a delivery, 0 when there is none left,
 * -EBADMSG for bytes that are not well-formed protobuf (as
 * evparse_watch_event; also a truncated packed id or an id beyond 32 bits),
 * or -ENOSPC when the delivery carries more than cap ids. After a negative
 * return the rest of the message is not to be read.
 */
int subparse_next(struct subparse_response *it, struct subparse_delivery *d, uint32_t *ids,
                  size_t cap);

/*
 * The two requests the bench sends, written by hand as well:
 * SubscribeRequest{add{id, request}} with `request` an encoded WatchRequest
 * (its n bytes copied), and SubscribeRequest{remove{id}}. Each returns the
 * length, and writes it only when it fits in cap (call with cap 0 to size).
 */
size_t subparse_encode_add(uint8_t *buf, size_t cap, uint32_t id, const uint8_t *request, size_t n);
size_t subparse_encode_remove(uint8_t *buf, size_t cap, uint32_t id);

#endif
