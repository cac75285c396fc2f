/*
 * ringlog: single-writer, many-reader byte ring of encoded events, in memory
 * or in a preallocated mmap'd file.
 *
 * Writer: the ingest thread. Readers: shard threads, lock-free. Opening and
 * closing: the main thread, with no other thread running on the log.
 *
 * Positions are absolute byte offsets that only grow; a record at position p
 * lives at p % capacity. tail_pos is the oldest byte still valid. Before the
 * writer reuses bytes it moves tail_pos past them and issues a release fence;
 * a reader copies what it needs, issues an acquire fence and checks that its
 * position is still >= tail_pos. If it is, nothing it read was overwritten.
 * Ring bytes that a reader may read while the writer overwrites them move
 * only through relaxed atomic word accesses (seqcopy.h) on both sides: the
 * writer builds a record in its private staging buffer and copies it into
 * the ring at commit; readers copy headers, kinds and keys out the same way.
 *
 * A sparse index remembers the position of every INDEX_STRIDE-th sequence
 * number (and its ingest time) so seeks by sequence or time touch at most
 * INDEX_STRIDE records. It has enough slots that an entry outlives the
 * record it points to.
 *
 * File: a 4 KiB header (magic, version, capacity, epoch, topic, boot id,
 * clean flag, CRC) then the ring. Recovery walks the records from ring
 * offset 0 (the writer always restarts there after the end of the ring) up
 * to the first bad one (CRC, bounds, or a break in the sequence): that is
 * the newest lap and its end is the head. Then it looks, after the head, for
 * the oldest lap: the first intact record from which an unbroken run of
 * records reaches the end of the ring and ends one before the first record
 * of the newest lap. What lies between the two is the torn part, cut.
 */
#include "ringlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "seqcopy.h"

#define INDEX_STRIDE 16u
#define FILE_MAGIC "TICKFLOG"
#define FILE_VERSION 1u
#define FILE_HDR_SIZE 4096u
#define STAGE_MIN 4096u /* the staging buffer grows past this for larger records */

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

static inline size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static uint64_t random_epoch(void)
{
    uint64_t e = 0;
    if (getrandom(&e, sizeof(e), 0) != (ssize_t)sizeof(e) || e == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        e = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ 0x9e3779b97f4a7c15ull;
    }
    return e;
}

/* Everything but the ring memory itself. */
static int log_alloc(ringlog_t **out, const char *topic, size_t capacity, size_t lvc_keys)
{
    ringlog_t *log = calloc(1, sizeof(*log));
    if (!log)
        return -ENOMEM;
    log->fd = -1;
    log->cap = capacity;
    log->index_slots = capacity / (sizeof(struct rec_hdr) * INDEX_STRIDE) + 2;
    log->index = calloc(log->index_slots, sizeof(*log->index));
    log->topic = strdup(topic);
    log->stage_cap = STAGE_MIN;
    log->stage = malloc(log->stage_cap);
    int rc = lvc_create(&log->lvc, lvc_keys ? lvc_keys : RINGLOG_LVC_KEYS);
    if (!log->index || !log->topic || !log->stage || rc) {
        ringlog_destroy(log);
        return -ENOMEM;
    }
    atomic_init(&log->head_gen, 0);
    atomic_init(&log->head_pos, 0);
    atomic_init(&log->head_seq, 0);
    atomic_init(&log->tail_pos, 0);
    atomic_init(&log->first_seq, 1);
    *out = log;
    return 0;
}

int ringlog_create(ringlog_t **out, const char *topic, size_t capacity)
{
    *out = NULL;
    capacity &= ~(size_t)7;
    if (capacity < RINGLOG_MIN_CAPACITY)
        return -EINVAL;
    ringlog_t *log;
    int rc = log_alloc(&log, topic, capacity, 0);
    if (rc)
        return rc;
    log->ring = calloc(1, capacity);
    if (!log->ring) {
        ringlog_destroy(log);
        return -ENOMEM;
    }
    log->epoch = random_epoch();
    *out = log;
    return 0;
}

static void file_hdr_seal(struct file_hdr *fh)
{
    fh->crc = crc32c(0, fh, offsetof(struct file_hdr, crc));
}

int ringlog_sync(ringlog_t *log)
{
    if (!log->map)
        return 0;
    uint64_t head = ringlog_head_seq(log);
    if (msync(log->ring, log->cap, MS_SYNC))
        return -errno;
    /* Remember how far the disk had it: a recovery that finds less knows
     * that records went missing and must not reuse their numbers. */
    log->fh->synced_seq = head;
    file_hdr_seal(log->fh);
    return msync(log->map, FILE_HDR_SIZE, MS_SYNC) ? -errno : 0;
}

void ringlog_destroy(ringlog_t *log)
{
    if (!log)
        return;
    if (log->map) {
        if (ringlog_sync(log) == 0) {
            log->fh->clean = 1;
            file_hdr_seal(log->fh);
            msync(log->map, FILE_HDR_SIZE, MS_SYNC);
        }
        munmap(log->map, log->map_len);
    } else {
        free(log->ring);
    }
    if (log->fd >= 0)
        close(log->fd);
    lvc_destroy(log->lvc);
    free(log->stage);
    free(log->index);
    free(log->topic);
    free(log);
}

const char *ringlog_topic(const ringlog_t *log)
{
    return log->topic;
}

uint64_t ringlog_epoch(const ringlog_t *log)
{
    return log->epoch;
}

size_t ringlog_capacity(const ringlog_t *log)
{
    return log->cap;
}

lvc_t *ringlog_lvc(const ringlog_t *log)
{
    return log->lvc;
}

uint64_t ringlog_head_seq(const ringlog_t *log)
{
    return atomic_load_explicit(&log->head_seq, memory_order_acquire);
}

uint64_t ringlog_first_seq(const ringlog_t *log)
{
    return atomic_load_explicit(&log->first_seq, memory_order_acquire);
}

uint64_t ringlog_head_pos(const ringlog_t *log)
{
    return atomic_load_explicit(&log->head_pos, memory_order_acquire);
}

static inline struct rec_hdr *hdr_at(const ringlog_t *log, uint64_t pos)
{
    return (struct rec_hdr *)(log->ring + pos % log->cap);
}

/* Fewer bytes than a header before the end of the ring form an implicit pad:
 * the next record starts at the beginning of the ring. */
static inline uint64_t skip_short_tail(const ringlog_t *log, uint64_t pos)
{
    size_t left = log->cap - pos % log->cap;
    return left < sizeof(struct rec_hdr) ? pos + left : pos;
}

static uint32_t record_crc(const struct rec_hdr *h)
{
    struct rec_hdr copy = *h;
    copy.crc = 0;
    uint32_t crc = crc32c(0, &copy, sizeof(copy));
    if (h->type != RINGLOG_PAD)
        crc = crc32c(crc, h + 1, (size_t)h->kind_len + h->key_len + h->event_len);
    return crc;
}

/* Writer: drop the oldest records until [tail, end) fits in the ring. */
static void evict_until(ringlog_t *log, uint64_t end)
{
    uint64_t tail = atomic_load_explicit(&log->tail_pos, memory_order_relaxed);
    uint64_t first = atomic_load_explicit(&log->first_seq, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&log->head_pos, memory_order_relaxed);
    bool moved = false;
    while (end - tail > log->cap && tail < head) {
        uint64_t skipped = skip_short_tail(log, tail);
        if (skipped != tail) {
            tail = skipped;
            moved = true;
            continue;
        }
        const struct rec_hdr *h = hdr_at(log, tail);
        if (h->type != RINGLOG_PAD)
            first = h->seq + 1;
        tail += h->len;
        moved = true;
    }
    if (tail >= head && end - tail > log->cap)
        tail = end - log->cap; /* nothing retained: tail jumps to the new record */
    if (moved || tail != atomic_load_explicit(&log->tail_pos, memory_order_relaxed)) {
        atomic_store_explicit(&log->first_seq, first, memory_order_relaxed);
        atomic_store_explicit(&log->tail_pos, tail, memory_order_relaxed);
        /* Readers that see any byte written after this fence see the new tail. */
        atomic_thread_fence(memory_order_release);
    }
}

int ringlog_reserve(ringlog_t *log, enum ringlog_type type, size_t kind_len, size_t key_len,
                    size_t event_len, int64_t ingest_us, struct ringlog_slot *slot)
{
    if (kind_len > RINGLOG_MAX_KIND || key_len > RINGLOG_MAX_KEY || event_len > RINGLOG_MAX_EVENT)
        return -EMSGSIZE;
    size_t len = align8(sizeof(struct rec_hdr) + kind_len + key_len + event_len);
    if (len > log->cap / 2)
        return -EMSGSIZE;

    if (len > log->stage_cap) {
        /* cold: the largest record so far */
        uint8_t *grown = realloc(log->stage, len);
        if (!grown)
            return -ENOMEM;
        log->stage = grown;
        log->stage_cap = len;
    }

    slot->from = log->w_pos;
    uint64_t head = skip_short_tail(log, log->w_pos);
    size_t off = head % log->cap;
    if (off + len > log->cap) {
        /* Pad to the end of the ring; the pad becomes visible with the record. */
        uint32_t pad = (uint32_t)(log->cap - off);
        evict_until(log, head + pad);
        struct rec_hdr p;
        memset(&p, 0, sizeof(p));
        p.len = pad;
        p.type = RINGLOG_PAD;
        p.crc = record_crc(&p);
        seqcopy_to(hdr_at(log, head), &p, sizeof(p));
        head += pad;
    }
    evict_until(log, head + len);

    struct rec_hdr *h = (struct rec_hdr *)log->stage;
    uint64_t seq = log->w_seq + 1;
    memset(h, 0, sizeof(*h));
    h->len = (uint32_t)len;
    h->seq = seq;
    h->ingest_us = ingest_us;
    h->type = (uint8_t)type;
    h->kind_len = (uint16_t)kind_len;
    h->key_len = (uint16_t)key_len;
    h->event_len = (uint32_t)event_len;
    /* zero the alignment padding so the file's bytes are deterministic */
    size_t used = sizeof(*h) + kind_len + key_len + event_len;
    memset((uint8_t *)h + used, 0, len - used);

    uint8_t *body = (uint8_t *)(h + 1);
    slot->seq = seq;
    slot->kind = (char *)body;
    slot->key = (char *)body + kind_len;
    slot->event = body + kind_len + key_len;
    slot->pos = head;
    slot->len = (uint32_t)len;
    log->w_pos = head + len;
    log->w_seq = seq;
    return 0;
}

/* msync the ring bytes [from, to) (absolute positions, at most one lap).
 * Returns 0 or -errno of the first msync that failed. */
static int sync_range(ringlog_t *log, uint64_t from, uint64_t to)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    while (from < to) {
        uint64_t off = from % log->cap;
        uint64_t n = to - from < log->cap - off ? to - from : log->cap - off;
        uint64_t start = FILE_HDR_SIZE + off, aligned = start & ~(page - 1);
        if (msync(log->map + aligned, start + n - aligned, MS_SYNC))
            return -errno;
        from += n;
    }
    return 0;
}

static void index_record(ringlog_t *log, uint64_t seq, uint64_t pos, int64_t ingest_us)
{
    if (seq % INDEX_STRIDE == 0) {
        struct index_entry *e = &log->index[(seq / INDEX_STRIDE) % log->index_slots];
        atomic_store_explicit(&e->pos, pos, memory_order_relaxed);
        atomic_store_explicit(&e->ingest_us, ingest_us, memory_order_relaxed);
    }
}

/* Publishes everything written up to (end_pos, end_seq). */
static void publish(ringlog_t *log, uint64_t end_pos, uint64_t end_seq)
{
    uint64_t gen = atomic_load_explicit(&log->head_gen, memory_order_relaxed);
    atomic_store_explicit(&log->head_gen, gen + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&log->head_seq, end_seq, memory_order_relaxed);
    atomic_store_explicit(&log->head_pos, end_pos, memory_order_release);
    atomic_store_explicit(&log->head_gen, gen + 2, memory_order_release);
}

int ringlog_commit(ringlog_t *log, struct ringlog_slot *slot)
{
    struct rec_hdr *h = (struct rec_hdr *)log->stage;
    h->crc = record_crc(h);
    /* Lapped readers may still be reading these bytes: atomic word stores. */
    seqcopy_to(hdr_at(log, slot->pos), log->stage, slot->len);
    if (log->sync_every) {
        int rc = sync_range(log, slot->from, slot->pos + slot->len);
        if (rc) {
            /* Not on the disk: never published. Its header is cleared so a
             * recovery cannot find it, and the next reservation takes its
             * place and its sequence number. */
            struct rec_hdr none;
            memset(&none, 0, sizeof(none));
            seqcopy_to(hdr_at(log, slot->pos), &none, sizeof(none));
            log->w_pos = slot->from;
            log->w_seq = slot->seq - 1;
            return rc;
        }
    }
    index_record(log, slot->seq, slot->pos, h->ingest_us);
    /* The cache before the head: whatever a reader can see in the log is in it. */
    if (h->type == RINGLOG_DATA)
        lvc_update(log->lvc, slot->key, h->key_len, slot->kind, h->kind_len, slot->seq, slot->pos,
                   slot->event, h->event_len);
    if (atomic_load_explicit(&log->head_seq, memory_order_relaxed) == 0)
        atomic_store_explicit(&log->first_seq, slot->seq, memory_order_relaxed);
    publish(log, slot->pos + slot->len, slot->seq);
    return 0;
}

/* ---- the durable file ---------------------------------------------------- */

static void read_boot_id(char out[40])
{
    memset(out, 0, 40);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return;
    if (fgets(out, 40, f))
        out[strcspn(out, "\n")] = 0;
    fclose(f);
}

/* A plausible, intact record at ring offset `off` (not a pad unless
 * allow_pad)? Fills *h with its header. */
static bool record_ok(const ringlog_t *log, uint64_t off, bool allow_pad, struct rec_hdr *h)
{
    if (off + sizeof(struct rec_hdr) > log->cap)
        return false;
    memcpy(h, log->ring + off, sizeof(*h));
    if (h->len < sizeof(struct rec_hdr) || h->len % 8 || off + h->len > log->cap)
        return false;
    if (h->type == RINGLOG_PAD) {
        if (!allow_pad || off + h->len != log->cap || h->seq != 0)
            return false;
    } else if (h->type == RINGLOG_DATA || h->type == RINGLOG_GAP) {
        size_t used = sizeof(*h) + (size_t)h->kind_len + h->key_len + h->event_len;
        /* seq >= 2^63 is no record this writer made (292,000 years at a
         * million a second): damage or a crafted file, which would make
         * the walk wrap */
        if (h->seq == 0 || h->seq >= RINGLOG_SEQ_LIMIT || used > h->len || h->len - used >= 8)
            return false;
    } else {
        return false;
    }
    return record_crc((const struct rec_hdr *)(log->ring + off)) == h->crc;
}

/* Walks an unbroken run of records from ring offset `off`, whose first must
 * have sequence `expect` (0: any). Stops at the first bad record or at the
 * end of the ring. Returns the offset where it stopped; first, last and n tell
 * the sequence numbers walked (n = 0: none). *to_end: the run reached the end
 * of the ring (exactly, by a pad, or with less than a header left). */
static uint64_t walk(const ringlog_t *log, uint64_t off, uint64_t expect, uint64_t *first,
                     uint64_t *last, uint64_t *n, bool *to_end)
{
    *n = 0;
    *to_end = false;
    for (;;) {
        if (log->cap - off < sizeof(struct rec_hdr)) {
            *to_end = true;
            return off;
        }
        struct rec_hdr h;
        if (!record_ok(log, off, *n > 0 || expect == 0, &h))
            return off;
        if (h.type == RINGLOG_PAD) {
            *to_end = true;
            return off + h.len;
        }
        if (expect && h.seq != expect)
            return off;
        if (*n == 0)
            *first = h.seq;
        *last = h.seq;
        (*n)++;
        expect = h.seq + 1;
        off += h.len;
    }
}

/* Rebuilds the in-memory state (positions, index, last values) from the
 * records in the ring. Returns what was cut in *rep. */
static void recover(ringlog_t *log, struct ringlog_recovery *rep)
{
    uint64_t a_first = 0, a_last = 0, a_n = 0, b_first = 0, b_last = 0, b_n = 0;
    bool a_end, b_end = false;
    uint64_t a_stop = walk(log, 0, 0, &a_first, &a_last, &a_n, &a_end);
    uint64_t b_off = 0;
    if (!a_end) {
        /* the oldest lap: after the head, the first run that reaches the end
         * of the ring and ends right before the newest lap */
        for (uint64_t off = align8(a_stop); off + sizeof(struct rec_hdr) <= log->cap;) {
            struct rec_hdr h;
            if (!record_ok(log, off, false, &h) || (a_n && h.seq >= a_first)) {
                off += 8;
                continue;
            }
            uint64_t stop = walk(log, off, 0, &b_first, &b_last, &b_n, &b_end);
            if (b_n && b_end && (!a_n || b_last + 1 == a_first)) {
                b_off = off;
                break;
            }
            b_n = 0;
            /* Every later record of this run ends where it does and fails the
             * same way: go on from where it stopped (else the search is
             * quadratic in the records of a damaged oldest lap). */
            off = stop > off ? stop : off + 8;
        }
    }
    uint64_t tail, head, first_seq, head_seq;
    if (b_n) {
        tail = b_off;
        head = log->cap + a_stop;
        first_seq = b_first;
        head_seq = a_n ? a_last : b_last;
        if (!a_n)
            head = log->cap; /* the newest record ends the ring */
        rep->cut_offset = a_stop;
        rep->cut_bytes = b_off - a_stop;
    } else {
        tail = 0;
        head = a_stop;
        first_seq = a_n ? a_first : 1;
        head_seq = a_n ? a_last : 0;
        rep->cut_offset = a_stop;
        /* anything non-zero after the head is a torn or stale tail */
        uint64_t end = log->cap;
        while (end > a_stop && log->ring[end - 1] == 0)
            end--;
        rep->cut_bytes = end > a_stop ? end - a_stop : 0;
    }
    /* Zero the cut part so a later recovery cannot mistake it for records. */
    if (rep->cut_bytes && !a_end)
        memset(log->ring + a_stop, 0, rep->cut_bytes);

    log->w_pos = head;
    log->w_seq = head_seq;
    atomic_store(&log->tail_pos, tail);
    atomic_store(&log->first_seq, head_seq ? first_seq : head_seq + 1);
    atomic_store(&log->head_pos, head);
    atomic_store(&log->head_seq, head_seq);
    rep->records = a_n + b_n;
    rep->first_seq = head_seq ? first_seq : 1;
    rep->head_seq = head_seq;

    /* index and last values, oldest first */
    for (uint64_t pos = tail; pos < head;) {
        pos = skip_short_tail(log, pos);
        if (pos >= head)
            break;
        const struct rec_hdr *h = hdr_at(log, pos);
        if (h->type != RINGLOG_PAD) {
            index_record(log, h->seq, pos, h->ingest_us);
            if (h->type == RINGLOG_DATA) {
                const char *kind = (const char *)(h + 1);
                lvc_update(log->lvc, kind + h->kind_len, h->key_len, kind, h->kind_len, h->seq, pos,
                           (const uint8_t *)kind + h->kind_len + h->key_len, h->event_len);
            }
        }
        pos += h->len;
    }
    /* A pair's first record in what is left need not be its first value. */
    if (rep->first_seq > 1)
        lvc_forget_births(log->lvc);
}

int ringlog_open(ringlog_t **out, const char *path, const char *topic,
                 const struct ringlog_options *opts, struct ringlog_recovery *rep, char *err,
                 size_t errlen)
{
    *out = NULL;
    memset(rep, 0, sizeof(*rep));
    size_t cap = opts->capacity & ~(size_t)7;
    if (cap < RINGLOG_MIN_CAPACITY) {
        snprintf(err, errlen, "log capacity %zu below the minimum %u", opts->capacity,
                 RINGLOG_MIN_CAPACITY);
        return -EINVAL;
    }
    ringlog_t *log;
    int rc = log_alloc(&log, topic, cap, opts->lvc_max_keys);
    if (rc) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    log->sync_every = opts->sync_every;
    log->map_len = FILE_HDR_SIZE + cap;
    log->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (log->fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto out_free;
    }
    struct stat st;
    if (fstat(log->fd, &st)) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out_free;
    }
    rep->created = st.st_size == 0;
    if (!rep->created) {
        struct file_hdr fh;
        bool sealed = pread(log->fd, &fh, sizeof(fh), 0) == (ssize_t)sizeof(fh) &&
                      memcmp(fh.magic, FILE_MAGIC, 8) == 0 &&
                      fh.crc == crc32c(0, &fh, offsetof(struct file_hdr, crc));
        if (sealed && fh.version != FILE_VERSION) {
            snprintf(err, errlen,
                     "%s: the log is in format version %u and this tickfand reads version %u; "
                     "run the tickfand that wrote it, or move the file away to start a new log",
                     path, fh.version, FILE_VERSION);
            rc = -EINVAL;
            goto out_free;
        }
        if (!sealed) {
            /* A damaged header: nothing in the file can be trusted, but it is
             * not ours to destroy. Keep it aside and start a new log. */
            snprintf(rep->moved_to, sizeof(rep->moved_to), "%s.damaged-%lld", path,
                     (long long)time(NULL));
            if (rename(path, rep->moved_to)) {
                rc = -errno;
                snprintf(err, errlen, "%s: damaged header, and cannot move it aside: %s", path,
                         strerror(errno));
                goto out_free;
            }
            close(log->fd);
            log->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (log->fd < 0 || fstat(log->fd, &st)) {
                rc = -errno;
                snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
                goto out_free;
            }
            rep->created = true;
        }
    }
    if (!rep->created) {
        /* The header, not the file size, says what the log was made with: a
         * file cut short (a partial copy) is extended with zeros and
         * recovered up to its last intact record. */
        struct file_hdr fh;
        if (pread(log->fd, &fh, sizeof(fh), 0) == (ssize_t)sizeof(fh) && fh.capacity != cap) {
            snprintf(err, errlen,
                     "%s: the log was made with a log size of %llu bytes but the configured "
                     "log size is %zu; use the same size, or move the file away to start a "
                     "new log",
                     path, (unsigned long long)fh.capacity, cap);
            rc = -EINVAL;
            goto out_free;
        }
        if ((uint64_t)st.st_size > log->map_len) {
            snprintf(err, errlen, "%s: file is larger (%lld bytes) than a log of %zu bytes", path,
                     (long long)st.st_size, cap);
            rc = -EINVAL;
            goto out_free;
        }
    }
    /* Reserve every block on every open, before anything is mapped: a file
     * of full length can still have holes (a sparse copy, a disk that filled
     * while it was written), and touching a hole of the map on a full
     * filesystem raises SIGBUS, in recovery or later in the hot path. For
     * blocks already allocated this is a no-op. posix_fallocate returns the
     * error number; it does not set errno. */
    rc = posix_fallocate(log->fd, 0, (off_t)log->map_len);
    if (rc) {
        snprintf(err, errlen,
                 "%s: cannot reserve the %zu bytes of the log on disk: %s (free space on its "
                 "filesystem)",
                 path, log->map_len, strerror(rc));
        if (rep->created)
            unlink(path);
        rc = -rc;
        goto out_free;
    }
    log->map = mmap(NULL, log->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, log->fd, 0);
    if (log->map == MAP_FAILED) {
        log->map = NULL;
        rc = -errno;
        snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        goto out_free;
    }
    log->fh = (struct file_hdr *)log->map;
    log->ring = log->map + FILE_HDR_SIZE;

    char boot_id[40];
    read_boot_id(boot_id);
    struct file_hdr *fh = log->fh;
    bool header_ok = !rep->created && memcmp(fh->magic, FILE_MAGIC, 8) == 0 &&
                     fh->version == FILE_VERSION && fh->hdr_size == FILE_HDR_SIZE &&
                     fh->capacity == cap &&
                     fh->crc == crc32c(0, fh, offsetof(struct file_hdr, crc));
    if (header_ok && strncmp(fh->topic, topic, sizeof(fh->topic)) != 0) {
        snprintf(err, errlen, "%s: the log belongs to topic '%.128s', not '%s'", path, fh->topic,
                 topic);
        rc = -EINVAL;
        goto out_free;
    }
    if (header_ok) {
        recover(log, rep);
        if (fh->clean)
            rep->cut_bytes =
                0; /* closed cleanly: what follows the head is slack, not a torn write */
        bool machine_restart = strncmp(fh->boot_id, boot_id, sizeof(fh->boot_id)) != 0;
        if (rep->head_seq < fh->synced_seq) {
            rep->reason = "records that had been synced to disk are missing or corrupt";
            fh->epoch = random_epoch();
        } else if (machine_restart && !fh->clean && !fh->sync_every) {
            /* Records after the last msync may be gone while subscribers had
             * them; a new epoch makes their cursors fail loudly instead of
             * pointing at different events. */
            rep->reason = "the machine restarted without a clean shutdown; events after the "
                          "last sync may have been lost";
            fh->epoch = random_epoch();
        } else {
            rep->epoch_kept = true;
        }
    } else {
        rep->reason =
            rep->moved_to[0] ? "the header was damaged; the old file was kept aside" : "new log";
        memset(log->map, 0, log->map_len);
        memcpy(fh->magic, FILE_MAGIC, 8);
        fh->version = FILE_VERSION;
        fh->hdr_size = FILE_HDR_SIZE;
        fh->capacity = cap;
        fh->epoch = random_epoch();
        fh->created_unix_us = (int64_t)time(NULL) * 1000000;
        snprintf(fh->topic, sizeof(fh->topic), "%s", topic);
        rep->first_seq = 1;
    }
    if (!rep->epoch_kept)
        fh->synced_seq = 0; /* the new epoch has synced nothing yet */
    log->epoch = fh->epoch;
    memcpy(fh->boot_id, boot_id, sizeof(fh->boot_id));
    fh->clean = 0;
    fh->sync_every = opts->sync_every;
    file_hdr_seal(fh);
    if (msync(log->map, FILE_HDR_SIZE, MS_SYNC)) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot sync: %s", path, strerror(errno));
        goto out_free;
    }
    *out = log;
    return 0;

out_free:
    if (log->map) {
        munmap(log->map, log->map_len);
        log->map = NULL;  /* do not mark a file we did not open cleanly */
        log->ring = NULL; /* it pointed into the map, not to the heap */
    }
    ringlog_destroy(log);
    return rc;
}

/* A consistent (head_pos, head_seq) pair. */
static void load_head(const ringlog_t *log, uint64_t *pos, uint64_t *seq)
{
    for (;;) {
        uint64_t g1 = atomic_load_explicit(&log->head_gen, memory_order_acquire);
        *pos = atomic_load_explicit(&log->head_pos, memory_order_acquire);
        *seq = atomic_load_explicit(&log->head_seq, memory_order_acquire);
        atomic_thread_fence(memory_order_acquire);
        if (!(g1 & 1) && g1 == atomic_load_explicit(&log->head_gen, memory_order_relaxed))
            return;
    }
}

/* ---- readers ----------------------------------------------------------- */

bool ringlog_view_valid(const ringlog_t *log, const struct ringlog_iter *it)
{
    atomic_thread_fence(memory_order_acquire);
    return it->pos >= atomic_load_explicit(&log->tail_pos, memory_order_relaxed);
}

int ringlog_peek(const ringlog_t *log, struct ringlog_iter *it, struct ringlog_view *view)
{
    for (;;) {
        uint64_t head = atomic_load_explicit(&log->head_pos, memory_order_acquire);
        if (it->pos >= head)
            return -EAGAIN;
        if (it->pos < atomic_load_explicit(&log->tail_pos, memory_order_acquire))
            return -ESTALE;
        uint64_t skipped = skip_short_tail(log, it->pos);
        if (skipped != it->pos) {
            it->pos = skipped;
            continue;
        }
        size_t off = it->pos % log->cap;
        const struct rec_hdr *h = hdr_at(log, it->pos);
        struct rec_hdr copy;
        seqcopy_words_from(&copy, h, sizeof(copy) / 8);
        if (!ringlog_view_valid(log, it))
            return -ESTALE;
        if (copy.type == RINGLOG_PAD) {
            it->pos += log->cap - off;
            continue;
        }
        /* The header was intact when read, so its fields are the writer's
         * and the lengths are within bounds; the kind and key copied now may
         * still be torn, which the caller's ringlog_view_valid tells. */
        view->seq = copy.seq;
        view->ingest_us = copy.ingest_us;
        view->type = (enum ringlog_type)copy.type;
        seqcopy_words_from(view->kind_key, h + 1, align8((size_t)copy.kind_len + copy.key_len) / 8);
        view->kind = view->kind_key;
        view->kind_len = copy.kind_len;
        view->key = view->kind_key + copy.kind_len;
        view->key_len = copy.key_len;
        view->event = (const uint8_t *)(h + 1) + copy.kind_len + copy.key_len;
        view->event_len = copy.event_len;
        view->len = copy.len;
        return 0;
    }
}

/* Reads the header at pos into *seq / *ingest_us; false if pos is no longer
 * valid, not yet written, or a pad. */
static bool read_hdr(const ringlog_t *log, uint64_t pos, uint64_t *seq, int64_t *ingest_us,
                     uint32_t *len, uint8_t *type)
{
    if (pos >= atomic_load_explicit(&log->head_pos, memory_order_acquire))
        return false;
    if (skip_short_tail(log, pos) != pos)
        return false;
    struct rec_hdr h;
    seqcopy_words_from(&h, hdr_at(log, pos), sizeof(h) / 8);
    *seq = h.seq;
    *ingest_us = h.ingest_us;
    *len = h.len;
    *type = h.type;
    atomic_thread_fence(memory_order_acquire);
    return pos >= atomic_load_explicit(&log->tail_pos, memory_order_relaxed);
}

/* A position at or before the record with sequence `seq`, from the index when
 * its entry still describes a retained record, else the tail. */
static void start_near(const ringlog_t *log, uint64_t seq, struct ringlog_iter *it)
{
    uint64_t base = seq - seq % INDEX_STRIDE;
    if (base >= INDEX_STRIDE) {
        const struct index_entry *e = &log->index[(base / INDEX_STRIDE) % log->index_slots];
        uint64_t pos = atomic_load_explicit(&e->pos, memory_order_relaxed);
        uint64_t s;
        int64_t t;
        uint32_t len;
        uint8_t type;
        if (read_hdr(log, pos, &s, &t, &len, &type) && type != RINGLOG_PAD && s == base) {
            it->pos = pos;
            it->seq = base;
            return;
        }
    }
    it->pos = atomic_load_explicit(&log->tail_pos, memory_order_acquire);
    it->seq = 0; /* unknown until the first record is read */
}

int ringlog_seek(const ringlog_t *log, uint64_t seq, struct ringlog_iter *it)
{
    for (int attempt = 0; attempt < 64; attempt++) {
        uint64_t head_pos, head_seq;
        load_head(log, &head_pos, &head_seq);
        if (seq > head_seq + 1)
            return -ERANGE;
        if (seq < atomic_load_explicit(&log->first_seq, memory_order_acquire))
            return -ERANGE;
        if (seq == head_seq + 1) {
            it->pos = head_pos;
            it->seq = seq;
            return 0;
        }
        struct ringlog_iter cur;
        start_near(log, seq, &cur);
        for (;;) {
            struct ringlog_view v;
            int rc = ringlog_peek(log, &cur, &v);
            if (rc == -EAGAIN && cur.seq == seq) {
                *it = cur;
                return 0;
            }
            if (rc != 0)
                break; /* lapped while walking, or head moved: retry */
            if (v.seq == seq) {
                it->pos = cur.pos;
                it->seq = v.seq;
                return 0;
            }
            if (v.seq > seq)
                break;
            ringlog_advance(&cur, &v);
        }
    }
    return -ERANGE;
}

void ringlog_seek_head(const ringlog_t *log, struct ringlog_iter *it)
{
    uint64_t pos, seq;
    load_head(log, &pos, &seq);
    it->pos = pos;
    it->seq = seq + 1;
}

void ringlog_seek_time(const ringlog_t *log, int64_t unix_us, struct ringlog_iter *it)
{
    for (int attempt = 0; attempt < 64; attempt++) {
        uint64_t first = atomic_load_explicit(&log->first_seq, memory_order_acquire);
        uint64_t head = atomic_load_explicit(&log->head_seq, memory_order_acquire);
        /* Binary search over the index entries of retained records for the
         * last one ingested before unix_us; then walk at most one stride. */
        uint64_t lo = (first + INDEX_STRIDE - 1) / INDEX_STRIDE;
        uint64_t hi = head / INDEX_STRIDE;
        uint64_t start_seq = first;
        while (lo <= hi && lo > 0) {
            uint64_t mid = lo + (hi - lo) / 2;
            const struct index_entry *e = &log->index[mid % log->index_slots];
            uint64_t s;
            int64_t t;
            uint32_t len;
            uint8_t type;
            uint64_t pos = atomic_load_explicit(&e->pos, memory_order_relaxed);
            if (!read_hdr(log, pos, &s, &t, &len, &type) || s != mid * INDEX_STRIDE) {
                lo = mid + 1; /* evicted meanwhile: search newer entries */
                continue;
            }
            if (t < unix_us) {
                start_seq = s;
                lo = mid + 1;
            } else {
                if (mid == 0)
                    break;
                hi = mid - 1;
            }
        }
        struct ringlog_iter cur;
        if (ringlog_seek(log, start_seq, &cur) != 0)
            continue;
        for (;;) {
            struct ringlog_view v;
            int rc = ringlog_peek(log, &cur, &v);
            if (rc == -EAGAIN) {
                *it = cur;
                return;
            }
            if (rc != 0)
                break;
            if (v.ingest_us >= unix_us) {
                it->pos = cur.pos;
                it->seq = v.seq;
                return;
            }
            ringlog_advance(&cur, &v);
        }
    }
    ringlog_seek_head(log, it);
}
