/*
 * feedframe: encode and decode feed frames. Pure functions, any thread.
 */
#include "feedframe.h"

#include <string.h>

#include "text.h"
#include "topics.h"

static const char *const reasons[FEEDFRAME_NREASONS] = {
    "ok",         "truncated", "bad_magic", "bad_version", "bad_type",
    "bad_length", "oversize",  "bad_topic", "bad_text",
};

const char *feedframe_reason(enum feedframe_error e)
{
    return (unsigned)e < FEEDFRAME_NREASONS ? reasons[e] : "unknown";
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

size_t feedframe_size(const struct feedframe *f)
{
    return FEEDFRAME_HDR + f->topic_len + f->rec.kind_len + f->rec.key_len + f->rec.body_len;
}

size_t feedframe_encode(const struct feedframe *f, uint8_t *out)
{
    size_t n = feedframe_size(f);
    if (f->topic_len == 0 || f->topic_len > TOPIC_NAME_MAX || f->rec.kind_len > 255 ||
        f->rec.key_len > 255 || n > FEEDFRAME_MAX)
        return 0;
    out[0] = 0x54;
    out[1] = 0x46;
    out[2] = FEEDFRAME_VERSION;
    out[3] = FEEDFRAME_TYPE_DATA;
    put32(out + 4, (uint32_t)n);
    put32(out + 8, f->channel);
    put32(out + 12, 0);
    put64(out + 16, f->source_seq);
    put64(out + 24, (uint64_t)f->source_time_us);
    out[32] = (uint8_t)f->topic_len;
    out[33] = (uint8_t)f->rec.kind_len;
    put16(out + 34, (uint16_t)f->rec.key_len);
    put32(out + 36, (uint32_t)f->rec.body_len);
    uint8_t *p = out + FEEDFRAME_HDR;
    memcpy(p, f->topic, f->topic_len);
    p += f->topic_len;
    memcpy(p, f->rec.kind, f->rec.kind_len);
    p += f->rec.kind_len;
    memcpy(p, f->rec.key, f->rec.key_len);
    p += f->rec.key_len;
    if (f->rec.body_len)
        memcpy(p, f->rec.body, f->rec.body_len);
    return n;
}

enum feedframe_error feedframe_decode(const uint8_t *buf, size_t len, struct feedframe *f,
                                      size_t *frame_len)
{
    *frame_len = 0;
    if (len >= 1 && buf[0] != 0x54)
        return FEEDFRAME_BAD_MAGIC;
    if (len >= 2 && buf[1] != 0x46)
        return FEEDFRAME_BAD_MAGIC;
    if (len >= 3 && buf[2] != FEEDFRAME_VERSION)
        return FEEDFRAME_BAD_VERSION;
    if (len >= 4 && buf[3] != FEEDFRAME_TYPE_DATA)
        return FEEDFRAME_BAD_TYPE;
    if (len < FEEDFRAME_HDR)
        return FEEDFRAME_NEED_MORE;
    uint32_t n = get32(buf + 4);
    size_t topic_len = buf[32], kind_len = buf[33], key_len = get16(buf + 34);
    size_t body_len = get32(buf + 36);
    if (n > FEEDFRAME_MAX)
        return FEEDFRAME_OVERSIZE;
    if (key_len > 255 || topic_len == 0 || topic_len > TOPIC_NAME_MAX ||
        (uint64_t)FEEDFRAME_HDR + topic_len + kind_len + key_len + body_len != n)
        return FEEDFRAME_BAD_LENGTH;
    if (len < n)
        return FEEDFRAME_NEED_MORE;
    const uint8_t *p = buf + FEEDFRAME_HDR;
    f->channel = get32(buf + 8);
    f->source_seq = get64(buf + 16);
    f->source_time_us = (int64_t)get64(buf + 24);
    f->topic = (const char *)p;
    f->topic_len = topic_len;
    f->rec.kind = (const char *)p + topic_len;
    f->rec.kind_len = kind_len;
    f->rec.key = f->rec.kind + kind_len;
    f->rec.key_len = key_len;
    f->rec.body = (const uint8_t *)f->rec.key + key_len;
    f->rec.body_len = body_len;
    *frame_len = n;
    if (!topics_name_valid(f->topic, topic_len))
        return FEEDFRAME_BAD_TOPIC;
    /* kind and key become protobuf strings in every event sent */
    if (!text_valid(f->rec.kind, kind_len) || !text_valid(f->rec.key, key_len))
        return FEEDFRAME_BAD_TEXT;
    return FEEDFRAME_OK;
}
