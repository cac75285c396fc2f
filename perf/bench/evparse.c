/*
 * evparse: minimal protobuf reader for WatchEvent. See evparse.h.
 */
#include "evparse.h"
#include "pbwire.h"

#include <errno.h>
#include <string.h>

static int parse_data(const uint8_t *p, size_t n, struct evparse_event *ev)
{
    struct pbwire_reader r = {p, p + n};
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body;
        size_t len;
        if (pbwire_field(&r, &num, &type, &v, &body, &len))
            return -EBADMSG;
        if (type != PBWIRE_VARINT)
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
    struct pbwire_reader r = {p, p + n};
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body;
        size_t len;
        if (pbwire_field(&r, &num, &type, &v, &body, &len))
            return -EBADMSG;
        if (type != PBWIRE_VARINT)
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
    struct pbwire_reader r = {p, p + n};
    memset(ev, 0, sizeof(*ev));
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body = NULL;
        size_t len = 0;
        if (pbwire_field(&r, &num, &type, &v, &body, &len))
            return -EBADMSG;
        if (type != PBWIRE_LEN)
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
