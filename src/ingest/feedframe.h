/*
 * feedframe: the feed wire format, version 1 (feed/FORMAT.md).
 *
 * Encoding and strict decoding of frames; pure functions, any thread. The
 * decoder never reads outside the bytes it is given.
 */
#ifndef TICKFAN_FEEDFRAME_H
#define TICKFAN_FEEDFRAME_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

#define FEEDFRAME_HDR 40
#define FEEDFRAME_MAX (1u << 20)
#define FEEDFRAME_VERSION 1
#define FEEDFRAME_TYPE_DATA 1
#define FEEDCAP_MAGIC "TKFCAP01"
#define FEEDCAP_HDR 24

struct feedframe {
    uint32_t channel;
    uint64_t source_seq;
    int64_t source_time_us;
    const char *topic;
    size_t topic_len;
    struct record rec;
};

/* Why a frame was rejected. */
enum feedframe_error {
    FEEDFRAME_OK = 0,
    FEEDFRAME_NEED_MORE, /* fewer bytes than the frame says: wait for more (streams) */
    FEEDFRAME_BAD_MAGIC,
    FEEDFRAME_BAD_VERSION,
    FEEDFRAME_BAD_TYPE,
    FEEDFRAME_BAD_LENGTH, /* length does not add up, or a part is out of bounds */
    FEEDFRAME_OVERSIZE,
    FEEDFRAME_BAD_TOPIC,
    FEEDFRAME_BAD_TEXT, /* kind or key not valid UTF-8, or holding a NUL */
    FEEDFRAME_NREASONS,
};

/* Short names for counters and logs: "bad_magic", ... */
const char *feedframe_reason(enum feedframe_error e);

/* Bytes needed to encode f. */
size_t feedframe_size(const struct feedframe *f);
/* Encodes f into out (feedframe_size bytes). Returns the size, or 0 when a
 * part is out of bounds. */
size_t feedframe_encode(const struct feedframe *f, uint8_t *out);

/* Decodes the frame at the start of `len` bytes. On FEEDFRAME_OK *f points
 * into buf and *frame_len is the frame's length. On an error other than
 * NEED_MORE, *frame_len is the length the header claims when it can be
 * trusted to skip the frame (BAD_TOPIC, BAD_TEXT), else 0 (the rest cannot be framed). */
enum feedframe_error feedframe_decode(const uint8_t *buf, size_t len, struct feedframe *f,
                                      size_t *frame_len);

#endif
