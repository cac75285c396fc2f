/*
 * cursor: the opaque resume token carried by every WatchEvent.
 *
 * A cursor names a position in one topic's log: the log's epoch (random,
 * new whenever a log is created from scratch) and the sequence number of the
 * last event the holder has seen (0 = before the first event). Resuming from
 * it delivers events with seq > cursor.seq. Text form: "1-<epoch:16 hex>-<seq
 * decimal>", version first so the form can change without ambiguity.
 * Pure functions, any thread.
 */
#ifndef TICKFAN_CURSOR_H
#define TICKFAN_CURSOR_H

#include <stddef.h>
#include <stdint.h>

struct cursor {
    uint64_t epoch;
    uint64_t seq;
};

/* Longest text form plus NUL. */
#define CURSOR_TEXT_MAX 40

/* Writes the text form into buf (CURSOR_TEXT_MAX bytes); returns its length. */
size_t cursor_format(struct cursor c, char *buf);

/* Parses len bytes of text. Returns 0 or -EINVAL for anything malformed. */
int cursor_parse(const char *text, size_t len, struct cursor *out);

#endif
