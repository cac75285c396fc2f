/*
 * ring_layout: what the ring (ringlog.c) and its file backing and recovery
 * (ringlog_file.c) share: the record and file headers, struct ringlog, and
 * the helpers both use. Private to src/store/ringlog*.c; not installed.
 * The ring calls its backing only through log->backing: ringlog_file.c
 * builds on ringlog.c, never the other way round.
 */
#ifndef TICKFAN_RING_LAYOUT_H
#define TICKFAN_RING_LAYOUT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crc32c.h"
#include "ringlog.h"

#define INDEX_STRIDE 16u

struct rec_hdr {
    uint32_t len; /* whole record, header and padding included */
    uint32_t crc; /* CRC32C of the header (this field as 0) and kind/key/event */
    uint64_t seq; /* topic sequence number; 0 for pad records */
    int64_t ingest_us;
    uint8_t type;
    uint8_t reserved0;
    uint16_t kind_len;
    uint16_t key_len;
    uint16_t reserved1;
    uint32_t event_len;
    uint32_t reserved2;
};
_Static_assert(sizeof(struct rec_hdr) == 40, "record header is part of the log format");

#define RINGLOG_SEQ_LIMIT ((uint64_t)1 << 63) /* a record's seq is below this */

/* The file's first page (ringlog_file.c). */
struct file_hdr {
    char magic[8];
    uint32_t version;
    uint32_t hdr_size;
    uint64_t capacity;
    uint64_t epoch;
    int64_t created_unix_us;
    char topic[136];
    char boot_id[40]; /* kernel boot id of the last open */
    uint32_t clean;   /* 1: closed cleanly (synced) */
    uint32_t sync_every;
    uint64_t synced_seq; /* every record up to this one was on disk once */
    uint32_t reserved;
    uint32_t crc; /* CRC32C of everything above */
};

/* What keeps the ring beyond memory: NULL for a log in memory only, the
 * file for a durable one (ringlog_file.c). */
struct ringlog_backing {
    /* The ring bytes [from, to) (absolute positions, at most one lap) are
     * on the disk: 0, or -errno of the first msync that failed. */
    int (*sync_range)(struct ringlog *log, uint64_t from, uint64_t to);
    /* Syncs, marks the file cleanly closed if that worked, unmaps it. */
    void (*close)(struct ringlog *log);
};

struct index_entry {
    _Atomic uint64_t pos;
    _Atomic int64_t ingest_us;
};

struct ringlog {
    /* read-mostly */
    uint8_t *ring;
    size_t cap;
    uint64_t epoch;
    struct index_entry *index;
    size_t index_slots;
    char *topic;
    lvc_t *lvc;

    /* durable log */
    const struct ringlog_backing *backing; /* NULL: memory only */
    uint8_t *map;
    size_t map_len;
    int fd;
    struct file_hdr *fh;
    bool sync_every;

    /* writer only: the end of what it has written (committed or not), and
     * the record being written, copied into the ring at commit */
    uint64_t w_pos;
    uint64_t w_seq;
    uint8_t *stage;
    size_t stage_cap;

    /* written by the writer, read by readers; on their own cache line */
    _Alignas(64) _Atomic uint64_t head_gen; /* odd while head_pos/head_seq change */
    _Atomic uint64_t head_pos;
    _Atomic uint64_t head_seq;
    _Atomic uint64_t tail_pos;
    _Atomic uint64_t first_seq;
};

static inline size_t ringlog_align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static inline struct rec_hdr *ringlog_hdr_at(const ringlog_t *log, uint64_t pos)
{
    return (struct rec_hdr *)(log->ring + pos % log->cap);
}

/* Fewer bytes than a header before the end of the ring form an implicit pad:
 * the next record starts at the beginning of the ring. */
static inline uint64_t ringlog_skip_short_tail(const ringlog_t *log, uint64_t pos)
{
    size_t left = log->cap - pos % log->cap;
    return left < sizeof(struct rec_hdr) ? pos + left : pos;
}

static inline uint32_t ringlog_record_crc(const struct rec_hdr *h)
{
    struct rec_hdr copy = *h;
    copy.crc = 0;
    uint32_t crc = crc32c(0, &copy, sizeof(copy));
    if (h->type != RINGLOG_PAD)
        crc = crc32c(crc, h + 1, (size_t)h->kind_len + h->key_len + h->event_len);
    return crc;
}

static inline void ringlog_index_record(ringlog_t *log, uint64_t seq, uint64_t pos,
                                        int64_t ingest_us)
{
    if (seq % INDEX_STRIDE == 0) {
        struct index_entry *e = &log->index[(seq / INDEX_STRIDE) % log->index_slots];
        atomic_store_explicit(&e->pos, pos, memory_order_relaxed);
        atomic_store_explicit(&e->ingest_us, ingest_us, memory_order_relaxed);
    }
}

/* ringlog.c */

/* A fresh random epoch for a new log (from the clock where getrandom fails). */
uint64_t ringlog_random_epoch(void);
/* Everything but the ring memory itself. 0 or -ENOMEM. */
int ringlog_alloc(ringlog_t **out, const char *topic, size_t capacity, size_t lvc_keys);

#endif
