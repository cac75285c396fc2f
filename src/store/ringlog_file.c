/*
 * ringlog_file: a topic log kept in a file, and its recovery at open.
 *
 * Threads: ringlog_open and ringlog_file_close (from ringlog_destroy) with
 * no other thread on the log; ringlog_sync on the syncer thread (topics.c)
 * while the writer appends; ringlog_file_sync_range on the writer, in
 * ringlog_commit with --sync every.
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
#include "ring_layout.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILE_MAGIC "TICKFLOG"
#define FILE_VERSION 1u
#define FILE_HDR_SIZE 4096u

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

static void ringlog_file_close(ringlog_t *log)
{
    if (ringlog_sync(log) == 0) {
        log->fh->clean = 1;
        file_hdr_seal(log->fh);
        msync(log->map, FILE_HDR_SIZE, MS_SYNC);
    }
    munmap(log->map, log->map_len);
}

static int ringlog_file_sync_range(ringlog_t *log, uint64_t from, uint64_t to)
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

static const struct ringlog_backing file_backing = {
    .sync_range = ringlog_file_sync_range,
    .close = ringlog_file_close,
};

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
    return ringlog_record_crc((const struct rec_hdr *)(log->ring + off)) == h->crc;
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
        for (uint64_t off = ringlog_align8(a_stop); off + sizeof(struct rec_hdr) <= log->cap;) {
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
        pos = ringlog_skip_short_tail(log, pos);
        if (pos >= head)
            break;
        const struct rec_hdr *h = ringlog_hdr_at(log, pos);
        if (h->type != RINGLOG_PAD) {
            ringlog_index_record(log, h->seq, pos, h->ingest_us);
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
    int rc = ringlog_alloc(&log, topic, cap, opts->lvc_max_keys);
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
    log->backing = &file_backing;

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
            fh->epoch = ringlog_random_epoch();
        } else if (machine_restart && !fh->clean && !fh->sync_every) {
            /* Records after the last msync may be gone while subscribers had
             * them; a new epoch makes their cursors fail loudly instead of
             * pointing at different events. */
            rep->reason = "the machine restarted without a clean shutdown; events after the "
                          "last sync may have been lost";
            fh->epoch = ringlog_random_epoch();
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
        fh->epoch = ringlog_random_epoch();
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
        log->map = NULL; /* do not mark a file we did not open cleanly */
        log->backing = NULL;
        log->ring = NULL; /* it pointed into the map, not to the heap */
    }
    ringlog_destroy(log);
    return rc;
}
