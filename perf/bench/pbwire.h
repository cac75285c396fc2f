/*
 * pbwire: the protobuf wire-format primitives the bench's readers share
 * (evparse.c, subparse.c): varints and field headers, bounds-checked, no
 * allocation. Header-only (static inline); pure functions.
 */
#ifndef TICKFAN_PBWIRE_H
#define TICKFAN_PBWIRE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

enum { PBWIRE_VARINT = 0, PBWIRE_I64 = 1, PBWIRE_LEN = 2, PBWIRE_I32 = 5 };

struct pbwire_reader {
    const uint8_t *p;
    const uint8_t *end;
};

static inline int pbwire_varint(struct pbwire_reader *r, uint64_t *out)
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
 * (*body, *len; *value is the length); a varint field's value goes to
 * *value; fixed-width fields are skipped. -EBADMSG for field number 0 or
 * above 2^29 - 1, wire types 3, 4, 6, 7, or anything truncated. */
static inline int pbwire_field(struct pbwire_reader *r, uint32_t *number, uint32_t *type,
                               uint64_t *value, const uint8_t **body, size_t *len)
{
    uint64_t key;
    if (pbwire_varint(r, &key))
        return -EBADMSG;
    *number = (uint32_t)(key >> 3);
    *type = (uint32_t)(key & 7);
    if (*number == 0 || (key >> 3) > 0x1fffffff)
        return -EBADMSG;
    switch (*type) {
    case PBWIRE_VARINT:
        return pbwire_varint(r, value);
    case PBWIRE_I64:
        if (r->end - r->p < 8)
            return -EBADMSG;
        r->p += 8;
        return 0;
    case PBWIRE_I32:
        if (r->end - r->p < 4)
            return -EBADMSG;
        r->p += 4;
        return 0;
    case PBWIRE_LEN:
        if (pbwire_varint(r, value) || *value > (uint64_t)(r->end - r->p))
            return -EBADMSG;
        *body = r->p;
        *len = (size_t)*value;
        r->p += *len;
        return 0;
    default:
        return -EBADMSG;
    }
}

#endif
