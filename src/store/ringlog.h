/*
 * ringlog: one topic's log of encoded events, a fixed-size byte ring.
 *
 * Threading: exactly one writer thread (the ingest thread) calls
 * ringlog_reserve/ringlog_commit; any number of reader threads (shards) call
 * the read functions concurrently, without locks. A reader that the writer
 * laps finds out before it trusts a byte of the overwritten record: it reads
 * through a view, then asks ringlog_view_valid() whether the bytes it used
 * were still intact (seqlock-style validation against the tail position).
 * Readers take bytes out of the ring only through a view (header, kind and
 * key are copied into it) and ringlog_copy_event: both read with relaxed
 * atomic accesses, as the writer writes, so a lapped read is a torn value
 * that validation rejects, never a data race.
 *
 * Records are 8-byte aligned and never split across the end of the ring (a
 * pad record fills the rest). Each record carries the topic sequence number
 * (1, 2, 3 ... contiguous), the ingest time, the Data kind and key (for
 * filtering without decoding) and the fully encoded WatchEvent, cursor
 * included: events are encoded once, at ingest.
 *
 * Durability: ringlog_open keeps the ring in a preallocated file, mmap'd
 * shared, so a crash of the process loses nothing that was committed (the
 * page cache has it). Each record carries a CRC32C; at open the log is
 * recovered by walking the records and cutting a torn or corrupt tail. The
 * file header holds the epoch, which changes only when the log is created
 * or cannot be trusted (bad header, or an unclean machine restart without
 * sync-every, since records after the last msync may then be lost).
 * ringlog_create keeps the same layout in anonymous memory (tests, tools).
 *
 * Last values: the log owns its topic's last-value cache and updates it in
 * ringlog_commit before the record is published (see lvc.h).
 */
#ifndef TICKFAN_RINGLOG_H
#define TICKFAN_RINGLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lvc.h"
#include "seqcopy.h"

typedef struct ringlog ringlog_t;

enum ringlog_type {
    RINGLOG_PAD = 0,  /* filler to the end of the ring; never seen by readers */
    RINGLOG_DATA = 1, /* a Data event */
    RINGLOG_GAP = 2,  /* an upstream Gap event: every subscriber gets it */
};

/* Bounds on one record's parts. */
#define RINGLOG_MAX_KIND 255
#define RINGLOG_MAX_KEY 255
#define RINGLOG_MAX_EVENT (1u << 20)
#define RINGLOG_MIN_CAPACITY (64u * 1024)

#define RINGLOG_LVC_KEYS 65536 /* default distinct keys in the last-value cache */

/* Creates an empty in-memory log of `capacity` bytes (rounded down to 8)
 * with a fresh random epoch. Returns 0 or -EINVAL (capacity below
 * RINGLOG_MIN_CAPACITY), -ENOMEM. *out is NULL on failure. */
int ringlog_create(ringlog_t **out, const char *topic, size_t capacity);

struct ringlog_options {
    size_t capacity;     /* ring bytes; must match an existing file */
    size_t lvc_max_keys; /* 0: RINGLOG_LVC_KEYS */
    bool sync_every;     /* msync every record before it is published */
};

/* What ringlog_open found. */
struct ringlog_recovery {
    bool created;       /* new file */
    bool epoch_kept;    /* false: a new epoch (reason says why) */
    const char *reason; /* static text, why a new epoch; NULL if kept */
    uint64_t records;   /* records recovered */
    uint64_t first_seq, head_seq;
    uint64_t cut_offset; /* ring offset where a torn/corrupt tail was cut */
    uint64_t cut_bytes;  /* 0: nothing cut */
    char moved_to[4200]; /* a damaged file was renamed to this (else empty) */
};

/* Opens (creating if missing) the durable log of `topic` at `path`. Every
 * block of the file is reserved before it is mapped, on every open (a new
 * file, a short one, or one with holes), so a full disk fails here
 * (-ENOSPC; an existing file keeps its contents), never later as SIGBUS.
 * Returns 0, or -errno with a message in err (naming the path and what is
 * wrong, e.g. a capacity different from the file's). */
int ringlog_open(ringlog_t **out, const char *path, const char *topic,
                 const struct ringlog_options *opts, struct ringlog_recovery *rep, char *err,
                 size_t errlen);
/* Writes dirty pages to the disk (msync MS_SYNC). Any thread. 0 or -errno. */
int ringlog_sync(ringlog_t *log);
/* Syncs, marks the file cleanly closed, unmaps and frees. */
void ringlog_destroy(ringlog_t *log);

/* The topic's last-value cache, owned by the log. */
lvc_t *ringlog_lvc(const ringlog_t *log);

const char *ringlog_topic(const ringlog_t *log);
uint64_t ringlog_epoch(const ringlog_t *log);
size_t ringlog_capacity(const ringlog_t *log);

/* Sequence number of the newest committed record; 0 when empty. */
uint64_t ringlog_head_seq(const ringlog_t *log);
/* Sequence number of the oldest retained record; head_seq + 1 when empty. */
uint64_t ringlog_first_seq(const ringlog_t *log);
/* Byte position just past the newest committed record (monotonic). */
uint64_t ringlog_head_pos(const ringlog_t *log);

/* ---- writer ------------------------------------------------------------ */

/* A record being written: the writer fills kind, key and event in place.
 * They point into the log's staging buffer (not the ring), valid until
 * ringlog_commit copies the record into the ring. */
struct ringlog_slot {
    uint64_t seq; /* the sequence number this record gets */
    char *kind;
    char *key;
    uint8_t *event;
    /* private */
    uint64_t pos;
    uint64_t from; /* where this reservation started writing (pad included) */
    uint32_t len;
};

/* Reserves room for a record, evicting the oldest records as needed, and
 * tells its sequence number (so the writer can encode the cursor into the
 * event). Nothing is visible to readers until ringlog_commit. Returns 0,
 * -EMSGSIZE when the parts exceed their bounds or half the capacity, or
 * -ENOMEM when a record larger than any before needs a larger staging
 * buffer and none can be had. Writer thread only; at most one reservation
 * open at a time. */
int ringlog_reserve(ringlog_t *log, enum ringlog_type type, size_t kind_len, size_t key_len,
                    size_t event_len, int64_t ingest_us, struct ringlog_slot *slot);
/* Publishes the reserved record to readers. Returns 0, or with sync_every
 * the -errno of an msync that failed: the record is then not published (no
 * reader sees it, a recovery does not find it) and the next reservation
 * reuses its place and sequence number. */
int ringlog_commit(ringlog_t *log, struct ringlog_slot *slot);

/* ---- readers ----------------------------------------------------------- */

/* A reader's position: the byte position and the sequence number of the next
 * record it will read. Plain data, owned by the reader. */
struct ringlog_iter {
    uint64_t pos;
    uint64_t seq;
};

/* One record as seen through the ring. kind and key point into the view's
 * own copy (do not copy a view by value); event points into the ring: read
 * its bytes with ringlog_copy_event while the writer may run. What was read
 * is to be trusted only if ringlog_view_valid() says so afterwards. */
struct ringlog_view {
    uint64_t seq;
    int64_t ingest_us;
    enum ringlog_type type;
    const char *kind;
    size_t kind_len;
    const char *key;
    size_t key_len;
    const uint8_t *event;
    size_t event_len;
    uint32_t len; /* whole record, for ringlog_advance */
    _Alignas(8) char kind_key[(RINGLOG_MAX_KIND + RINGLOG_MAX_KEY + 7) / 8 * 8];
};

/* Positions `it` at the record with sequence number `seq` (head_seq + 1 means
 * "at the live head"). Returns 0, or -ERANGE when seq is older than the oldest
 * retained record or beyond head_seq + 1. */
int ringlog_seek(const ringlog_t *log, uint64_t seq, struct ringlog_iter *it);
/* Positions `it` at the live head. */
void ringlog_seek_head(const ringlog_t *log, struct ringlog_iter *it);
/* Positions `it` at the oldest record the log holds; the writer may move
 * that on meanwhile: after 64 tries, at the live head. */
void ringlog_seek_oldest(const ringlog_t *log, struct ringlog_iter *it);
/* Positions `it` at the first record ingested at or after `unix_us`
 * (the live head when none). */
void ringlog_seek_time(const ringlog_t *log, int64_t unix_us, struct ringlog_iter *it);

/* Reads the record at `it`. `it` does not move past it (ringlog_advance
 * does), but it may move forward over the pad or short tail at the end of
 * the ring to where the record starts. Returns 0, -EAGAIN when `it` is at
 * the live head, or -ESTALE when the writer has overwritten the record (the
 * reader was lapped; ringlog_first_seq tells what is left). */
int ringlog_peek(const ringlog_t *log, struct ringlog_iter *it, struct ringlog_view *view);
/* True when the bytes of the record at `it` were not overwritten up to now:
 * call after using view bytes, before trusting what was read. */
bool ringlog_view_valid(const ringlog_t *log, const struct ringlog_iter *it);
/* Copies the event bytes of `view` (view->event_len of them) to `dst`. */
static inline void ringlog_copy_event(const struct ringlog_view *view, void *dst)
{
    seqcopy_from(dst, view->event, view->event_len);
}
/* Moves `it` past the record `view` came from. */
static inline void ringlog_advance(struct ringlog_iter *it, const struct ringlog_view *view)
{
    it->pos += view->len;
    it->seq = view->seq + 1;
}

#endif
