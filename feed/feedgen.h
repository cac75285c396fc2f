/*
 * feedgen: synthetic market data as feed frames (feed/FORMAT.md).
 *
 * Quotes and trades from the built-in simulator (src/ingest/sim.h), one frame per
 * tick, numbered per channel from a start sequence. Chosen sequence numbers
 * can be left out (an upstream loss made on purpose) and bodies padded to a
 * fixed size. The output depends only on the options and on the timestamps
 * passed in. One thread at a time per generator.
 */
#ifndef TICKFAN_FEEDGEN_H
#define TICKFAN_FEEDGEN_H

#include <stddef.h>
#include <stdint.h>

#define FEEDGEN_BODY_MAX 60000 /* --body-size at most: a frame must fit a datagram */

typedef struct feedgen feedgen_t;

/* An inclusive range of sequence numbers. */
struct feedgen_range {
    uint64_t lo, hi;
};

struct feedgen_options {
    const char *topic;   /* [A-Za-z0-9._-]{1,128} */
    const char *symbols; /* comma-separated, as sim_create takes them */
    uint64_t seed;
    uint32_t channel;
    uint64_t start_seq;                /* >= 1: the first frame's source_seq */
    const struct feedgen_range *drops; /* sequence numbers not to send (any order) */
    size_t ndrops;
    size_t body_size; /* 0: the encoded Tick as it is; else padded up to this size */
};

/* Copies what it needs from o. Returns 0, -EINVAL (a bad topic, symbol list
 * or body size) or -ENOMEM. */
int feedgen_create(feedgen_t **out, const struct feedgen_options *o);
void feedgen_destroy(feedgen_t *g);

/*
 * Generates the next tick, stamped `time_us` (microseconds since the Unix
 * epoch: the frame's source_time_us and the Tick's exchange time), and
 * encodes its frame. Returns the frame's length with *frame pointing into
 * the generator (valid until the next call), or 0 when the tick's sequence
 * number is one to drop: the tick is made and thrown away, so what follows
 * is the same with or without drops.
 */
size_t feedgen_next(feedgen_t *g, int64_t time_us, const uint8_t **frame);

/* The source_seq the next call will use. */
uint64_t feedgen_next_seq(const feedgen_t *g);

/* The largest frame the generator can make (for datagram sizing). */
size_t feedgen_max_frame(const feedgen_t *g);

/*
 * Appends to `body` (holding `len` bytes of an encoded protobuf message,
 * room for `size`) an unknown field that brings it to `size` bytes, so that
 * it still decodes as the same message (room: size + 1 bytes). A field takes
 * at least two bytes:
 * when `len` is one short of `size` the body grows to size + 1. Returns the
 * new length (len itself when it is not below size).
 */
size_t feedgen_pad(uint8_t *body, size_t len, size_t size);

#endif
