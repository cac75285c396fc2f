/*
 * wire: WatchEvent encoding and byte-buffer helpers. Any thread.
 */
#include "wire.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <string.h>

/* protobuf-c wants NUL-terminated strings; kind and key come from frames. */
#define data_msg wire_data_msg

static void data_msg_init(struct data_msg *m, const struct wire_data *d, struct cursor c)
{
    events__v1__watch_event__init(&m->ev);
    events__v1__data__init(&m->data);
    memcpy(m->kind, d->kind, d->kind_len);
    m->kind[d->kind_len] = 0;
    memcpy(m->key, d->key, d->key_len);
    m->key[d->key_len] = 0;
    cursor_format(c, m->cursor);
    m->data.kind = m->kind;
    m->data.key = m->key;
    m->data.body.data = (uint8_t *)d->body;
    m->data.body.len = d->body_len;
    m->data.emitted_at_unix_micros = d->emitted_us;
    m->data.ingested_at_unix_micros = d->ingested_us;
    m->data.seq = d->seq;
    m->data.snapshot = d->snapshot;
    m->ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA;
    m->ev.data = &m->data;
    m->ev.cursor = m->cursor;
}

size_t wire_data_msg_init(struct wire_data_msg *m, const struct wire_data *d, struct cursor c)
{
    data_msg_init(m, d, c);
    return events__v1__watch_event__get_packed_size(&m->ev);
}

void wire_data_msg_pack(const struct wire_data_msg *m, uint8_t *out)
{
    events__v1__watch_event__pack(&m->ev, out);
}

grpc_byte_buffer *wire_buffer(const void *data, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Packs a control event with cursor c into buf (cap bytes); its size, or 0
 * if it does not fit (control events are far smaller than any buffer used). */
static size_t pack_event_into(Events__V1__WatchEvent *ev, struct cursor c, uint8_t *buf, size_t cap)
{
    char text[CURSOR_TEXT_MAX];
    cursor_format(c, text);
    ev->cursor = text;
    size_t n = events__v1__watch_event__get_packed_size(ev);
    if (n > cap)
        return 0;
    events__v1__watch_event__pack(ev, buf);
    return n;
}

static grpc_byte_buffer *pack_event(Events__V1__WatchEvent *ev, struct cursor c)
{
    uint8_t buf[256];
    size_t n = pack_event_into(ev, c, buf, sizeof(buf));
    return n ? wire_buffer(buf, n) : NULL;
}

grpc_byte_buffer *wire_heartbeat(struct cursor c, int64_t now_us)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__Heartbeat hb = EVENTS__V1__HEARTBEAT__INIT;
    hb.server_unix_micros = now_us;
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_HEARTBEAT;
    ev.heartbeat = &hb;
    return pack_event(&ev, c);
}

grpc_byte_buffer *wire_end_of_backlog(struct cursor c)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__EndOfBacklog eob = EVENTS__V1__END_OF_BACKLOG__INIT;
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_END_OF_BACKLOG;
    ev.end_of_backlog = &eob;
    return pack_event(&ev, c);
}

size_t wire_gap_pack(struct cursor c, uint64_t missed, Events__V1__GapReason reason,
                     struct cursor from, uint8_t *buf, size_t cap)
{
    Events__V1__WatchEvent ev = EVENTS__V1__WATCH_EVENT__INIT;
    Events__V1__Gap gap = EVENTS__V1__GAP__INIT;
    char from_text[CURSOR_TEXT_MAX];
    cursor_format(from, from_text);
    gap.missed = missed;
    gap.reason = reason;
    gap.from_cursor = from_text;
    ev.payload_case = EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP;
    ev.gap = &gap;
    return pack_event_into(&ev, c, buf, cap);
}

grpc_byte_buffer *wire_gap(struct cursor c, uint64_t missed, Events__V1__GapReason reason,
                           struct cursor from)
{
    uint8_t buf[256];
    size_t n = wire_gap_pack(c, missed, reason, from, buf, sizeof(buf));
    return n ? wire_buffer(buf, n) : NULL;
}

int wire_read_all(grpc_byte_buffer *bb, grpc_slice *out)
{
    grpc_byte_buffer_reader reader;
    if (!bb || !grpc_byte_buffer_reader_init(&reader, bb))
        return -EBADMSG;
    *out = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    return 0;
}

int wire_read_request(grpc_byte_buffer *bb, Events__V1__WatchRequest **out)
{
    *out = NULL;
    grpc_slice s;
    if (wire_read_all(bb, &s))
        return -EBADMSG;
    *out = events__v1__watch_request__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return *out ? 0 : -EBADMSG;
}

const char *wire_status_name(grpc_status_code code)
{
    static const char *const names[] = {
        [GRPC_STATUS_OK] = "OK",
        [GRPC_STATUS_CANCELLED] = "CANCELLED",
        [GRPC_STATUS_UNKNOWN] = "UNKNOWN",
        [GRPC_STATUS_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
        [GRPC_STATUS_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
        [GRPC_STATUS_NOT_FOUND] = "NOT_FOUND",
        [GRPC_STATUS_ALREADY_EXISTS] = "ALREADY_EXISTS",
        [GRPC_STATUS_PERMISSION_DENIED] = "PERMISSION_DENIED",
        [GRPC_STATUS_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
        [GRPC_STATUS_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
        [GRPC_STATUS_ABORTED] = "ABORTED",
        [GRPC_STATUS_OUT_OF_RANGE] = "OUT_OF_RANGE",
        [GRPC_STATUS_UNIMPLEMENTED] = "UNIMPLEMENTED",
        [GRPC_STATUS_INTERNAL] = "INTERNAL",
        [GRPC_STATUS_UNAVAILABLE] = "UNAVAILABLE",
        [GRPC_STATUS_DATA_LOSS] = "DATA_LOSS",
        [GRPC_STATUS_UNAUTHENTICATED] = "UNAUTHENTICATED",
    };
    if ((unsigned)code < sizeof(names) / sizeof(names[0]) && names[code] != NULL)
        return names[code];
    return "UNKNOWN_STATUS";
}
