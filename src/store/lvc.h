/*
 * lvc: last-value cache, the latest Data event of every (kind, key) of one
 * topic: for market data, the last quote and the last trade of every symbol.
 *
 * Threading: one writer (the ingest thread, the topic's log writer) calls
 * lvc_update for every Data event *before* the log publishes it (in
 * ringlog_commit), so any event a reader can see in the log is already in
 * the cache. Any number of
 * readers (shards, on subscribe) copy entries lock-free: every entry is a
 * seqlock, and entries are never moved or freed while the cache lives.
 *
 * Values up to LVC_VALUE_MAX bytes are copied into the entry; a larger one
 * is remembered only by its log position and is lost from the cache once the
 * log no longer retains it (a snapshot then counts it as lost).
 *
 * Each entry also remembers when its pair first appeared (`born`), so a
 * snapshot as of an older position can tell a pair that did not exist yet
 * from one whose value as of then the cache no longer holds.
 */
#ifndef TICKFAN_LVC_H
#define TICKFAN_LVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lvc lvc_t;

#define LVC_VALUE_MAX 320 /* encoded WatchEvent bytes kept inline */
#define LVC_KEY_MAX 255

/* max_keys: distinct (kind, key) pairs kept; beyond it new ones are not
 * cached (counted in lvc_rejected).
 * Returns 0, -EINVAL or -ENOMEM. */
int lvc_create(lvc_t **out, size_t max_keys);
void lvc_destroy(lvc_t *c);

/* Writer: the latest event of (kind, key) is now `seq`, encoded as `event`
 * (at log position `pos`). Returns false when the pair is new and the cache
 * is full. */
bool lvc_update(lvc_t *c, const char *key, size_t key_len, const char *kind, size_t kind_len,
                uint64_t seq, uint64_t pos, const uint8_t *event, size_t event_len);

/* A copied entry. */
struct lvc_value {
    uint64_t seq;
    uint64_t pos;
    uint64_t born; /* seq of the pair's first value; 0: unknown (lvc_forget_births) */
    size_t key_len, kind_len, event_len;
    bool inline_event; /* false: only `pos` is known (event too large) */
    char key[LVC_KEY_MAX + 1];
    char kind[LVC_KEY_MAX + 1];
    uint8_t event[LVC_VALUE_MAX];
};

/* Number of entries; entries 0..n-1 can be read. */
size_t lvc_count(const lvc_t *c);
/* Reader: copies entry i consistently. */
void lvc_read(const lvc_t *c, size_t i, struct lvc_value *out);

/* Writer, before any reader: the births recorded so far are not known to be
 * the first values of their pairs (a cache rebuilt from a log that had
 * already dropped its oldest records). */
void lvc_forget_births(lvc_t *c);

uint64_t lvc_rejected(const lvc_t *c); /* new keys refused (cache full) */

#endif
