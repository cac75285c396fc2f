/*
 * subparse: minimal protobuf reader for SubscribeResponse. See subparse.h.
 */
#include "subparse.h"
#include "pbwire.h"

#include <errno.h>
#include <string.h>

void subparse_init(struct subparse_response *it, const uint8_t *p, size_t n)
{
    it->p = p;
    it->end = p + n;
}

static int parse_end(const uint8_t *p, size_t n, struct subparse_delivery *d)
{
    struct pbwire_reader r = {p, p + n};
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body = NULL;
        size_t len = 0;
        if (pbwire_field(&r, &num, &type, &v, &body, &len))
            return -EBADMSG;
        if (num == 1 && type == PBWIRE_VARINT) {
            d->end_code = (int32_t)(uint32_t)v; /* int32: negatives are sign-extended */
        } else if (type == PBWIRE_LEN) {
            if (num == 2) {
                d->end_message = body;
                d->end_message_len = len;
            } else if (num == 3) {
                d->end_cursor = body;
                d->end_cursor_len = len;
            } else if (num == 4) {
                d->end_earliest_cursor = body;
                d->end_earliest_cursor_len = len;
            }
        }
    }
    return 0;
}

static int add_id(uint64_t v, uint32_t *ids, size_t cap, size_t *n)
{
    if (v > UINT32_MAX)
        return -EBADMSG;
    if (*n == cap)
        return -ENOSPC;
    ids[(*n)++] = (uint32_t)v;
    return 0;
}

static int parse_delivery(const uint8_t *p, size_t n, struct subparse_delivery *d, uint32_t *ids,
                          size_t cap)
{
    struct pbwire_reader r = {p, p + n};
    size_t n_ids = 0;
    int rc;
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body = NULL;
        size_t len = 0;
        if (pbwire_field(&r, &num, &type, &v, &body, &len))
            return -EBADMSG;
        if (num == 2 && type == PBWIRE_VARINT) {
            if ((rc = add_id(v, ids, cap, &n_ids)))
                return rc;
        } else if (num == 2 && type == PBWIRE_LEN) {
            struct pbwire_reader packed = {body, body + len};
            while (packed.p < packed.end) {
                uint64_t id;
                if (pbwire_varint(&packed, &id))
                    return -EBADMSG;
                if ((rc = add_id(id, ids, cap, &n_ids)))
                    return rc;
            }
        } else if (num == 1 && type == PBWIRE_LEN) {
            d->kind = SUBPARSE_EVENT;
            d->event = body;
            d->event_len = len;
        } else if (num == 3 && type == PBWIRE_LEN) {
            d->kind = SUBPARSE_END;
            d->end_code = 0;
            d->end_message = d->end_cursor = d->end_earliest_cursor = NULL;
            d->end_message_len = d->end_cursor_len = d->end_earliest_cursor_len = 0;
            if (parse_end(body, len, d))
                return -EBADMSG;
        }
    }
    d->ids = ids;
    d->n_ids = n_ids;
    return 0;
}

int subparse_next(struct subparse_response *it, struct subparse_delivery *d, uint32_t *ids,
                  size_t cap)
{
    memset(d, 0, sizeof(*d));
    d->ids = ids;
    struct pbwire_reader r = {it->p, it->end};
    while (r.p < r.end) {
        uint32_t num, type;
        uint64_t v = 0;
        const uint8_t *body = NULL;
        size_t len = 0;
        if (pbwire_field(&r, &num, &type, &v, &body, &len)) {
            it->p = it->end;
            return -EBADMSG;
        }
        if (num != 1 || type != PBWIRE_LEN)
            continue; /* unknown field of SubscribeResponse */
        it->p = r.p;
        int rc = parse_delivery(body, len, d, ids, cap);
        if (rc) {
            it->p = it->end;
            return rc;
        }
        return 1;
    }
    it->p = it->end;
    return 0;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

size_t subparse_encode_add(uint8_t *buf, size_t cap, uint32_t id, const uint8_t *request, size_t n)
{
    /* SubscriptionAdd: 1 id (varint; 0 is the default, left out), 2 request */
    size_t inner = (id ? 1 + varint_len(id) : 0) + 1 + varint_len(n) + n;
    size_t total = 1 + varint_len(inner) + inner;
    if (total > cap)
        return total;
    uint8_t *p = buf;
    *p++ = 0x0a; /* SubscribeRequest.add */
    p = put_varint(p, inner);
    if (id) {
        *p++ = 0x08;
        p = put_varint(p, id);
    }
    *p++ = 0x12;
    p = put_varint(p, n);
    if (n)
        memcpy(p, request, n);
    return total;
}

size_t subparse_encode_remove(uint8_t *buf, size_t cap, uint32_t id)
{
    size_t inner = id ? 1 + varint_len(id) : 0;
    size_t total = 1 + varint_len(inner) + inner;
    if (total > cap)
        return total;
    uint8_t *p = buf;
    *p++ = 0x12; /* SubscribeRequest.remove */
    p = put_varint(p, inner);
    if (id) {
        *p++ = 0x08;
        put_varint(p, id);
    }
    return total;
}
