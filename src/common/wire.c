/*
 * wire: WatchEvent encoding and byte-buffer helpers. Any thread.
 */
#include "wire.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <stdio.h>
#include <string.h>

#include "text.h"

/* protobuf-c wants NUL-terminated strings; kind and key come from frames. */
#define data_msg wire_data_msg

static void data_msg_init(struct data_msg *m, const struct wire_data *d, struct cursor c)
{
    events__v1__watch_event__init(&m->ev);
    events__v1__data__init(&m->data);
    memcpy(m->kind, d->rec.kind, d->rec.kind_len);
    m->kind[d->rec.kind_len] = 0;
    memcpy(m->key, d->rec.key, d->rec.key_len);
    m->key[d->rec.key_len] = 0;
    cursor_format(c, m->cursor);
    m->data.kind = m->kind;
    m->data.key = m->key;
    m->data.body.data = (uint8_t *)d->rec.body;
    m->data.body.len = d->rec.body_len;
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

int wire_read_request(grpc_byte_buffer *bb, Events__V1__WatchRequest **out, char *why, size_t cap)
{
    *out = NULL;
    grpc_slice s;
    if (wire_read_all(bb, &s))
        return -EBADMSG;
    char what[200];
    int rc = wire_check_text(&events__v1__watch_request__descriptor, GRPC_SLICE_START_PTR(s),
                             GRPC_SLICE_LENGTH(s), what, sizeof(what));
    if (!rc) {
        *out =
            events__v1__watch_request__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
        rc = *out ? 0 : -EBADMSG;
    }
    grpc_slice_unref(s);
    if (rc == -EILSEQ)
        snprintf(why, cap, "invalid WatchRequest: %s", what);
    else if (rc)
        snprintf(why, cap, "malformed WatchRequest");
    return rc;
}

int wire_read_subscribe(grpc_byte_buffer *bb, Events__V1__SubscribeRequest **out, char *why,
                        size_t cap)
{
    *out = NULL;
    grpc_slice s;
    if (wire_read_all(bb, &s)) {
        snprintf(why, cap, "malformed SubscribeRequest");
        return -EBADMSG;
    }
    char what[200];
    int rc = wire_check_text(&events__v1__subscribe_request__descriptor, GRPC_SLICE_START_PTR(s),
                             GRPC_SLICE_LENGTH(s), what, sizeof(what));
    if (!rc) {
        *out = events__v1__subscribe_request__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                     GRPC_SLICE_START_PTR(s));
        rc = *out ? 0 : -EBADMSG;
    }
    grpc_slice_unref(s);
    if (rc == -EILSEQ)
        snprintf(why, cap, "invalid SubscribeRequest: %s", what);
    else if (rc)
        snprintf(why, cap, "malformed SubscribeRequest");
    return rc;
}

grpc_slice wire_subscription_end(grpc_status_code code, const char *message, const char *cursor,
                                 const char *earliest)
{
    Events__V1__SubscriptionEnd end = EVENTS__V1__SUBSCRIPTION_END__INIT;
    end.code = code;
    end.message = (char *)(message ? message : "");
    end.cursor = (char *)(cursor ? cursor : "");
    end.earliest_cursor = (char *)(earliest ? earliest : "");
    size_t n = events__v1__subscription_end__get_packed_size(&end);
    grpc_slice s = grpc_slice_malloc(n);
    events__v1__subscription_end__pack(&end, GRPC_SLICE_START_PTR(s));
    return s;
}

size_t wire_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

uint8_t *wire_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Reads a varint at *p (before end); false when truncated or over 10 bytes. */
static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 70 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

#define TEXT_DEPTH_MAX 8

static int check_text(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end,
                      int depth, const char *outer, char *why, size_t cap)
{
    if (depth > TEXT_DEPTH_MAX)
        return -EBADMSG;
    while (p < end) {
        uint64_t key, n;
        if (!read_varint(&p, end, &key))
            return -EBADMSG;
        switch (key & 7) {
        case 0:
            if (!read_varint(&p, end, &n))
                return -EBADMSG;
            continue;
        case 1:
        case 5:
            n = (key & 7) == 1 ? 8 : 4;
            if ((uint64_t)(end - p) < n)
                return -EBADMSG;
            p += n;
            continue;
        case 2:
            break;
        default: /* groups do not exist in proto3; 6 and 7 are not wire types */
            return -EBADMSG;
        }
        if (!read_varint(&p, end, &n) || n > (uint64_t)(end - p))
            return -EBADMSG;
        const uint8_t *v = p;
        p += n;
        const ProtobufCFieldDescriptor *f =
            key >> 3 <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3))
                : NULL;
        if (!f)
            continue; /* an unknown field: protobuf-c keeps it, nobody reads it */
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            int rc = check_text(f->descriptor, v, v + n, depth + 1, f->name, why, cap);
            if (rc)
                return rc;
        } else if (f->type == PROTOBUF_C_TYPE_STRING && !text_valid((const char *)v, n)) {
            snprintf(why, cap, "%s%s%s %s", outer ? outer : "", outer ? "." : "", f->name,
                     memchr(v, 0, n) ? "holds a NUL byte" : "is not valid UTF-8");
            return -EILSEQ;
        }
    }
    return 0;
}

int wire_check_text(const ProtobufCMessageDescriptor *desc, const void *buf, size_t len, char *why,
                    size_t cap)
{
    const uint8_t *p = buf;
    if (cap)
        why[0] = 0;
    return check_text(desc, p, p + len, 0, NULL, why, cap);
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
