/*
 * evparse: minimal protobuf reader for WatchEvent. See evparse.h.
 */
#include "evparse.h"

#include <errno.h>
#include <string.h>

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

struct reader {
    const uint8_t *p;
    const uint8_t *end;
};

static int read_varint(struct reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p == r->end)
            return -EBADMSG;
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -EBADMSG;
}

/* Reads one field header and, for a length-delimited field, its bounds
 * (*body, *len); other fields are read into *value or skipped. */
static int read_field(struct reader *r, uint32_t *number, uint32_t *type, uint64_t *value,
                      const uint8_t **body, size_t *len)
{
    uint64_t key;
    if (read_varint(r, &key))
        return -EBADMSG;
    *number = (uint32_t)(key >> 3);
    *type = (uint32_t)(key & 7);
    if (*number == 0 || (key >> 3) > 0x1fffffff)
        return -EBADMSG;
    switch (*type) {
    case WT_VARINT:
        return read_varint(r, value);
    case WT_I64:
        if (r->end - r->p < 8)
            return -EBADMSG;
        r->p += 8;
        return 0;
    case WT_I32:
        if (r->end - r->p < 4)
            return -EBADMSG;
        r->p += 4;
        return 0;
    case WT_LEN:
        if (read_varint(r, value) || *value > (uint64_t)(r->end - r->p))
            return -EBADMSG;
        *body = r->p;
        *len = (size_t)*value;
        r->p += *len;
        return 0;
    default:
        return -EBADMSG;
    }
}

static int parse_data(const uint8_t *p, size_t n, struct evparse_event *ev)
{
    struct reader r = {p, p + n};
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body;
        size_t len;
        if (read_field(&r, &num, &type, &v, &body, &len))
            return -EBADMSG;
        if (type != WT_VARINT)
            continue;
        if (num == 5)
            ev->seq = v;
        else if (num == 6)
            ev->ingested_us = (int64_t)v;
        else if (num == 3)
            ev->emitted_us = (int64_t)v;
        else if (num == 7)
            ev->snapshot = v != 0;
    }
    return 0;
}

static int parse_gap(const uint8_t *p, size_t n, struct evparse_event *ev)
{
    struct reader r = {p, p + n};
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body;
        size_t len;
        if (read_field(&r, &num, &type, &v, &body, &len))
            return -EBADMSG;
        if (type != WT_VARINT)
            continue;
        if (num == 1)
            ev->gap_missed = v;
        else if (num == 2)
            ev->gap_reason = (uint32_t)v;
    }
    return 0;
}

int evparse_watch_event(const uint8_t *p, size_t n, struct evparse_event *ev)
{
    struct reader r = {p, p + n};
    memset(ev, 0, sizeof(*ev));
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body = NULL;
        size_t len = 0;
        if (read_field(&r, &num, &type, &v, &body, &len))
            return -EBADMSG;
        if (type != WT_LEN)
            continue;
        switch (num) {
        case 1:
            ev->kind = EVPARSE_DATA;
            ev->seq = 0;
            ev->ingested_us = ev->emitted_us = 0;
            ev->snapshot = false;
            if (parse_data(body, len, ev))
                return -EBADMSG;
            break;
        case 2:
            ev->kind = EVPARSE_HEARTBEAT;
            break;
        case 3:
            ev->kind = EVPARSE_END_OF_BACKLOG;
            break;
        case 4:
            ev->kind = EVPARSE_GAP;
            ev->gap_missed = 0;
            ev->gap_reason = 0;
            if (parse_gap(body, len, ev))
                return -EBADMSG;
            break;
        case 10:
            ev->cursor = body;
            ev->cursor_len = len;
            break;
        default:
            break;
        }
    }
    return 0;
}
