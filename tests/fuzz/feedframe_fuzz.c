/*
 * feedframe_fuzz: libFuzzer target for the feed frame decoder (src/ingest/feedframe.h).
 *
 * Every input is used three ways:
 *
 *   datagram  the bytes are walked as ingest walks a datagram: frames back to
 *             back until one cannot be framed. Every decoded frame lies
 *             inside the input, re-encodes to the same bytes (the reserved
 *             field aside), and every proper prefix of it decodes as
 *             NEED_MORE. A skippable error (BAD_TOPIC, BAD_TEXT) claims a length
 *             within the input; no other error claims one.
 *   stream    the bytes arrive in chunks (sizes drawn from a hash of the
 *             input) and are framed as the TCP path frames them: the frames,
 *             errors and their offsets must be those of the whole input at
 *             once.
 *   fields    a frame is built from fields taken from the input (any topic
 *             bytes, any lengths in and out of bounds), encoded, and decoded
 *             back to the same fields; out-of-bounds parts are not encoded,
 *             and a topic with a character outside [A-Za-z0-9._-] decodes as
 *             BAD_TOPIC with its length intact, a kind or key that is not
 *             UTF-8 without NUL as BAD_TEXT.
 *
 * Built with -DFEEDFRAME_FUZZ_MAKE_SEEDS instead, it writes a seed corpus
 * (main(dir)): good frames, datagrams of several, and each kind of damage.
 * Single-threaded.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "feedframe.h"
#include "text.h"
#include "topics.h"

static void die(const char *what)
{
    fprintf(stderr, "feedframe_fuzz: %s\n", what);
    abort();
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            die("check failed: " #cond);                                                           \
    } while (0)

/* What framing made of the bytes at one offset. */
struct step {
    size_t off;
    size_t len; /* frame length, or the length an error claims (0: none) */
    enum feedframe_error e;
};

struct steps {
    struct step *v;
    size_t n, cap;
};

static void push(struct steps *s, size_t off, size_t len, enum feedframe_error e)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v)
            die("out of memory");
    }
    s->v[s->n++] = (struct step){off, len, e};
}

/* The checks every decoded frame must pass; buf holds exactly avail bytes
 * from the frame's start. */
static void check_frame(const uint8_t *buf, size_t avail, const struct feedframe *f, size_t n)
{
    CHECK(n >= FEEDFRAME_HDR && n <= avail && n <= FEEDFRAME_MAX);
    CHECK(feedframe_size(f) == n);
    CHECK(f->topic_len >= 1 && f->topic_len <= TOPIC_NAME_MAX && f->rec.key_len <= 255 &&
          f->rec.kind_len <= 255);
    CHECK((const uint8_t *)f->topic == buf + FEEDFRAME_HDR);
    CHECK(f->rec.body + f->rec.body_len == buf + n);
    CHECK(topics_name_valid(f->topic, f->topic_len));

    uint8_t *again = malloc(n);
    if (!again)
        die("out of memory");
    CHECK(feedframe_encode(f, again) == n);
    CHECK(memcmp(again, buf, 12) == 0); /* bytes 12..15 are the reserved field */
    CHECK(memcmp(again + 16, buf + 16, n - 16) == 0);
    free(again);

    /* every proper prefix waits for more: a sample, all of the header */
    for (size_t k = 0; k < n; k += k < FEEDFRAME_HDR + 8 ? 1 : 1 + (n - k) / 4) {
        struct feedframe g;
        size_t gl = 99;
        CHECK(feedframe_decode(buf, k, &g, &gl) == FEEDFRAME_NEED_MORE);
        CHECK(gl == 0);
    }
}

/* Frames the bytes of a datagram; returns what it found. */
static void walk_datagram(const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        struct feedframe f;
        size_t n = 12345;
        enum feedframe_error e = feedframe_decode(buf + off, len - off, &f, &n);
        CHECK((unsigned)e < FEEDFRAME_NREASONS);
        CHECK(strcmp(feedframe_reason(e), "unknown") != 0);
        if (e == FEEDFRAME_OK) {
            check_frame(buf + off, len - off, &f, n);
        } else if (e == FEEDFRAME_BAD_TOPIC) {
            CHECK(n >= FEEDFRAME_HDR && n <= len - off);
            CHECK(!topics_name_valid(f.topic, f.topic_len));
        } else if (e == FEEDFRAME_BAD_TEXT) {
            CHECK(n >= FEEDFRAME_HDR && n <= len - off);
            CHECK(topics_name_valid(f.topic, f.topic_len));
            CHECK(!text_valid(f.rec.kind, f.rec.kind_len) || !text_valid(f.rec.key, f.rec.key_len));
        } else {
            CHECK(n == 0);
        }
        if (n == 0)
            return;
        off += n;
    }
}

/* The stream framer: decodes what is buffered until it needs more bytes or
 * cannot frame any more. Returns false when the stream is over. */
static bool frame_stream(const uint8_t *buf, size_t len, size_t base, size_t *used,
                         struct steps *out)
{
    size_t off = 0;
    while (off < len) {
        struct feedframe f;
        size_t n;
        enum feedframe_error e = feedframe_decode(buf + off, len - off, &f, &n);
        if (e == FEEDFRAME_NEED_MORE)
            break;
        push(out, base + off, n, e);
        if (n == 0) {
            *used = len;
            return false;
        }
        off += n;
    }
    *used = off;
    return true;
}

static uint64_t mix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void stream_in_chunks(const uint8_t *data, size_t size)
{
    struct steps whole = {0}, chunked = {0};
    size_t used = 0;
    bool open = frame_stream(data, size, 0, &used, &whole);
    if (open && used < size)
        push(&whole, used, 0, FEEDFRAME_NEED_MORE); /* cut short by the end */

    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size && i < 64; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    uint8_t *buf = malloc(size + 1);
    if (!buf)
        die("out of memory");
    size_t have = 0, fed = 0, base = 0;
    open = true;
    while (fed < size && open) {
        uint64_t r = mix(&h);
        size_t chunk = r & 1 ? 1 + r % 7 : 1 + (size_t)(r >> 8) % 300;
        if (chunk > size - fed)
            chunk = size - fed;
        memcpy(buf + have, data + fed, chunk);
        have += chunk;
        fed += chunk;
        open = frame_stream(buf, have, base, &used, &chunked);
        memmove(buf, buf + used, have - used);
        have -= used;
        base += used;
    }
    if (open && have)
        push(&chunked, base, 0, FEEDFRAME_NEED_MORE);
    free(buf);

    CHECK(whole.n == chunked.n);
    for (size_t i = 0; i < whole.n; i++) {
        CHECK(whole.v[i].off == chunked.v[i].off);
        CHECK(whole.v[i].len == chunked.v[i].len);
        CHECK(whole.v[i].e == chunked.v[i].e);
    }
    free(whole.v);
    free(chunked.v);
}

static uint64_t take(const uint8_t **p, size_t *left, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = 0; i < bytes && *left; i++, (*p)++, (*left)--)
        v |= (uint64_t) * *p << (8 * i);
    return v;
}

static void fields_round_trip(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t left = size;
    struct feedframe f = {0};
    f.channel = (uint32_t)take(&p, &left, 4);
    f.source_seq = take(&p, &left, 8);
    f.source_time_us = (int64_t)take(&p, &left, 8);
    size_t topic_len = take(&p, &left, 1); /* 0..255: out of bounds above 128 */
    size_t kind_len = take(&p, &left, 1);
    size_t key_len = take(&p, &left, 2) % 300; /* out of bounds above 255 */
    size_t body_len = take(&p, &left, 2) & 0xfff;
    /* the parts are taken from what is left, repeated as needed */
    size_t total = topic_len + kind_len + key_len + body_len;
    uint8_t *parts = malloc(total + 1);
    if (!parts)
        die("out of memory");
    for (size_t i = 0; i < total;) {
        size_t chunk = left && left < total - i ? left : total - i;
        if (left)
            memcpy(parts + i, p, chunk);
        else
            memset(parts + i, 'a', chunk);
        i += chunk;
    }
    f.topic = (const char *)parts;
    f.topic_len = topic_len;
    f.rec.kind = (const char *)parts + topic_len;
    f.rec.kind_len = kind_len;
    f.rec.key = f.rec.kind + kind_len;
    f.rec.key_len = key_len;
    f.rec.body = (const uint8_t *)f.rec.key + key_len;
    f.rec.body_len = body_len;

    size_t n = feedframe_size(&f);
    CHECK(n == FEEDFRAME_HDR + total);
    uint8_t *out = malloc(n);
    if (!out)
        die("out of memory");
    size_t got = feedframe_encode(&f, out);
    bool in_bounds = topic_len >= 1 && topic_len <= TOPIC_NAME_MAX && key_len <= 255;
    if (!in_bounds) {
        CHECK(got == 0);
        goto out_free;
    }
    CHECK(got == n);
    struct feedframe g;
    size_t glen;
    enum feedframe_error e = feedframe_decode(out, n, &g, &glen);
    CHECK(glen == n);
    CHECK(e == (!topics_name_valid(f.topic, topic_len) ? FEEDFRAME_BAD_TOPIC
                : !text_valid(f.rec.kind, kind_len) || !text_valid(f.rec.key, key_len)
                    ? FEEDFRAME_BAD_TEXT
                    : FEEDFRAME_OK));
    CHECK(g.channel == f.channel && g.source_seq == f.source_seq &&
          g.source_time_us == f.source_time_us);
    CHECK(g.topic_len == topic_len && memcmp(g.topic, f.topic, topic_len) == 0);
    CHECK(g.rec.kind_len == kind_len && memcmp(g.rec.kind, f.rec.kind, kind_len) == 0);
    CHECK(g.rec.key_len == key_len && memcmp(g.rec.key, f.rec.key, key_len) == 0);
    CHECK(g.rec.body_len == body_len && memcmp(g.rec.body, f.rec.body, body_len) == 0);
    if (e == FEEDFRAME_OK)
        check_frame(out, n, &g, n);
out_free:
    free(out);
    free(parts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    walk_datagram(data, size);
    stream_in_chunks(data, size);
    fields_round_trip(data, size);
    return 0;
}

#ifdef FEEDFRAME_FUZZ_MAKE_SEEDS

static const char *seed_dir;
static uint8_t dgram[65536];
static size_t dlen;

static void add_frame(const char *topic, const char *kind, const char *key, size_t body_len,
                      uint64_t seq)
{
    static uint8_t body[2048];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)(i * 7);
    struct feedframe f = {.channel = 1,
                          .source_seq = seq,
                          .source_time_us = 1795502100000000LL + (int64_t)seq,
                          .topic = topic,
                          .topic_len = strlen(topic),
                          .rec = {.kind = kind,
                                  .kind_len = strlen(kind),
                                  .key = key,
                                  .key_len = strlen(key),
                                  .body = body,
                                  .body_len = body_len}};
    size_t n = feedframe_encode(&f, dgram + dlen);
    if (!n)
        die("cannot encode a seed frame");
    dlen += n;
}

static void seed(const char *name)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", seed_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(dgram, 1, dlen, f) != dlen || fclose(f))
        die("cannot write a seed");
    dlen = 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    seed_dir = argv[1];
    if (mkdir(seed_dir, 0755) && errno != EEXIST)
        die("cannot create the seed directory");

    add_frame("md", "quote", "AAPL", 40, 1);
    seed("one_frame");
    for (uint64_t i = 0; i < 9; i++)
        add_frame("md", i % 5 ? "quote" : "trade", i % 2 ? "MSFT" : "AAPL", 100, i + 1);
    seed("datagram_of_nine");
    add_frame("a.b-c_D9", "", "", 0, 0);
    add_frame("md", "trade", "IBM", 0, 2);
    seed("empty_parts");
    add_frame("md", "quote", "AAPL", 30, 1);
    add_frame("bad topic", "quote", "X", 3, 2);
    add_frame("md", "quote", "MSFT", 30, 3);
    seed("bad_topic_between");
    add_frame("md", "quote", "AAPL", 30, 1);
    add_frame("md", "quote", "M\xffSFT", 3, 2); /* a key that is not UTF-8 */
    add_frame("md", "quote", "MSFT", 30, 3);
    seed("bad_text_between");
    add_frame("md", "quote", "AAPL", 30, 1);
    add_frame("md", "quote", "CUT", 30, 2);
    dlen -= 20;
    seed("last_frame_cut");
    add_frame("md", "quote", "AAPL", 30, 1);
    dgram[4] ^= 0x01; /* length off by one */
    seed("bad_length");
    add_frame("md", "quote", "AAPL", 30, 1);
    dgram[2] = 2;
    seed("bad_version");
    add_frame("md", "quote", "AAPL", 30, 1);
    dgram[7] = 0x10; /* beyond 1 MiB */
    seed("oversize");
    memcpy(dgram, "garbage, not a frame", 20);
    dlen = 20;
    seed("garbage");
    return 0;
}

#endif
