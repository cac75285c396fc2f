/*
 * ringlog: single-writer, many-reader byte ring of encoded events: reserve,
 * commit, seek and peek. The ring lives in memory here (ringlog_create) or
 * in a mapped file (ringlog_file.c: open, sync, recovery).
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
 */
#include "ring_layout.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "seqcopy.h"

#define STAGE_MIN 4096u /* the staging buffer grows past this for larger records */

uint64_t ringlog_random_epoch(void)
{
    uint64_t e = 0;
    if (getrandom(&e, sizeof(e), 0) != (ssize_t)sizeof(e) || e == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        e = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ 0x9e3779b97f4a7c15ull;
    }
    return e;
}

int ringlog_alloc(ringlog_t **out, const char *topic, size_t capacity, size_t lvc_keys)
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
    int rc = ringlog_alloc(&log, topic, capacity, 0);
    if (rc)
        return rc;
    log->ring = calloc(1, capacity);
    if (!log->ring) {
        ringlog_destroy(log);
        return -ENOMEM;
    }
    log->epoch = ringlog_random_epoch();
    *out = log;
    return 0;
}

void ringlog_destroy(ringlog_t *log)
{
    if (!log)
        return;
    if (log->backing)
        log->backing->close(log);
    else
        free(log->ring);
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

/* Writer: drop the oldest records until [tail, end) fits in the ring. */
static void evict_until(ringlog_t *log, uint64_t end)
{
    uint64_t tail = atomic_load_explicit(&log->tail_pos, memory_order_relaxed);
    uint64_t first = atomic_load_explicit(&log->first_seq, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&log->head_pos, memory_order_relaxed);
    bool moved = false;
    while (end - tail > log->cap && tail < head) {
        uint64_t skipped = ringlog_skip_short_tail(log, tail);
        if (skipped != tail) {
            tail = skipped;
            moved = true;
            continue;
        }
        const struct rec_hdr *h = ringlog_hdr_at(log, tail);
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
    size_t len = ringlog_align8(sizeof(struct rec_hdr) + kind_len + key_len + event_len);
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
    uint64_t head = ringlog_skip_short_tail(log, log->w_pos);
    size_t off = head % log->cap;
    if (off + len > log->cap) {
        /* Pad to the end of the ring; the pad becomes visible with the record. */
        uint32_t pad = (uint32_t)(log->cap - off);
        evict_until(log, head + pad);
        struct rec_hdr p;
        memset(&p, 0, sizeof(p));
        p.len = pad;
        p.type = RINGLOG_PAD;
        p.crc = ringlog_record_crc(&p);
        seqcopy_to(ringlog_hdr_at(log, head), &p, sizeof(p));
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
    h->crc = ringlog_record_crc(h);
    /* Lapped readers may still be reading these bytes: atomic word stores. */
    seqcopy_to(ringlog_hdr_at(log, slot->pos), log->stage, slot->len);
    if (log->sync_every) {
        int rc = log->backing->sync_range(log, slot->from, slot->pos + slot->len);
        if (rc) {
            /* Not on the disk: never published. Its header is cleared so a
             * recovery cannot find it, and the next reservation takes its
             * place and its sequence number. */
            struct rec_hdr none;
            memset(&none, 0, sizeof(none));
            seqcopy_to(ringlog_hdr_at(log, slot->pos), &none, sizeof(none));
            log->w_pos = slot->from;
            log->w_seq = slot->seq - 1;
            return rc;
        }
    }
    ringlog_index_record(log, slot->seq, slot->pos, h->ingest_us);
    /* The cache before the head: whatever a reader can see in the log is in it. */
    if (h->type == RINGLOG_DATA)
        lvc_update(log->lvc, slot->key, h->key_len, slot->kind, h->kind_len, slot->seq, slot->pos,
                   slot->event, h->event_len);
    if (atomic_load_explicit(&log->head_seq, memory_order_relaxed) == 0)
        atomic_store_explicit(&log->first_seq, slot->seq, memory_order_relaxed);
    publish(log, slot->pos + slot->len, slot->seq);
    return 0;
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
        uint64_t skipped = ringlog_skip_short_tail(log, it->pos);
        if (skipped != it->pos) {
            it->pos = skipped;
            continue;
        }
        size_t off = it->pos % log->cap;
        const struct rec_hdr *h = ringlog_hdr_at(log, it->pos);
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
        seqcopy_words_from(view->kind_key, h + 1,
                           ringlog_align8((size_t)copy.kind_len + copy.key_len) / 8);
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
    if (ringlog_skip_short_tail(log, pos) != pos)
        return false;
    struct rec_hdr h;
    seqcopy_words_from(&h, ringlog_hdr_at(log, pos), sizeof(h) / 8);
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

void ringlog_seek_oldest(const ringlog_t *log, struct ringlog_iter *it)
{
    for (int i = 0; i < 64; i++)
        if (ringlog_seek(log, ringlog_first_seq(log), it) == 0)
            return;
    ringlog_seek_head(log, it);
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
