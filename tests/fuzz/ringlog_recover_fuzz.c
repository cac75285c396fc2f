/*
 * ringlog_recover_fuzz: libFuzzer target for the recovery of a log file.
 *
 * Each input becomes a log file (4 KiB header + a 64 KiB ring) that
 * ringlog_open recovers; then every record from first_seq to head_seq must
 * read back intact (its CRC holds) and in order, with no duplicate and no
 * gap, the last-value cache must hold only retained records, the writer must
 * go on appending, and a second open after a clean close must keep the epoch
 * and find what the first left.
 *
 * Input: one mode byte, then the header section, then the ring section.
 *   mode bits 0-1, header: 0 as written; 1 patched then resealed (valid CRC,
 *     odd fields: synced_seq, clean flag, boot id, capacity, topic ...);
 *     2 patched, CRC left stale; 3 raw bytes from the input.
 *   mode bits 2-3, ring: 0 written by the real writer (ringlog_reserve/
 *     commit) then damaged (bit flips, zeroed or noisy ranges, a truncated
 *     file, copied ranges); 1 an image taken from the input (mutations of a
 *     real log); 2 laid out record by record with valid CRCs (any sequence
 *     numbers, sizes, pads and places); 3 as 0.
 *   mode bit 4: sync_every.
 *
 * Built with -DRINGLOG_FUZZ_MAKE_SEEDS instead, it is the seed corpus
 * generator: main(dir) writes seeds in this input format, some of them
 * images of real logs.
 *
 * Single-threaded. Files live in one temporary directory (/dev/shm when
 * writable: msync is then cheap), removed at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "ringlog.h"

#define CAP (64u * 1024)
#define FILE_HDR 4096u
#define IMAGE (FILE_HDR + CAP)
#define HDR_BYTES 240u  /* the header fields; the rest of the 4 KiB is zero */
#define HDR_CRC_OFF 236 /* CRC32C of bytes [0, 236) is stored here */
#define TOPIC "fuzz"
#define LVC_KEYS 64

enum { HDR_AS_IS, HDR_RESEALED, HDR_STALE_CRC, HDR_RAW };
enum { RING_WRITER, RING_IMAGE, RING_LAYOUT };

/* The record header as it is in the file (see ring_layout.h); checked against a
 * real log at start-up. */
struct rec_hdr {
    uint32_t len;
    uint32_t crc;
    uint64_t seq;
    int64_t ingest_us;
    uint8_t type;
    uint8_t reserved0;
    uint16_t kind_len;
    uint16_t key_len;
    uint16_t reserved1;
    uint32_t event_len;
    uint32_t reserved2;
};
_Static_assert(sizeof(struct rec_hdr) == 40, "record header size");

static void die(const char *what)
{
    fprintf(stderr, "ringlog_recover_fuzz: %s\n", what);
    abort();
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            die("check failed: " #cond);                                                           \
    } while (0)

/* ---- input reader: exhausted input reads as zeros ----------------------- */

struct in {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static uint16_t u16(struct in *in)
{
    uint16_t v = u8(in);
    return (uint16_t)(v | (uint16_t)u8(in) << 8);
}

static uint32_t u32(struct in *in)
{
    uint32_t v = u16(in);
    return v | (uint32_t)u16(in) << 16;
}

static uint64_t u64(struct in *in)
{
    uint64_t v = u32(in);
    return v | (uint64_t)u32(in) << 32;
}

/* ---- records ------------------------------------------------------------ */

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
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

static int64_t ingest_of(uint64_t seq)
{
    return (int64_t)(seq * 10u); /* wraps for huge crafted sequence numbers */
}

/* Record contents are slices of one fixed noise buffer chosen by the
 * sequence number: filled and checked with memcpy/memcmp, which keeps the
 * fuzzer's comparison tracing out of per-byte loops. */
static uint8_t noise[4096];

static void noise_init(void)
{
    uint32_t x = 0x2545f491u;
    for (size_t i = 0; i < sizeof(noise); i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        noise[i] = (uint8_t)x;
    }
}

static const uint8_t *kind_of(uint64_t seq)
{
    return noise + seq % 997;
}

static const uint8_t *key_of(uint64_t seq)
{
    return noise + 1024 + seq % 991;
}

static const uint8_t *event_of(uint64_t seq)
{
    return noise + 2048 + seq % 1021; /* events up to 1024 bytes */
}

/* Appends one record whose every byte follows from its sequence number. */
static int append(ringlog_t *log, size_t base, size_t spread)
{
    uint64_t seq = ringlog_head_seq(log) + 1;
    size_t kind_len = 1 + seq % 5, key_len = 1 + seq % 9;
    size_t event_len = base + (spread ? (seq * 37) % spread : 0);
    struct ringlog_slot slot;
    int rc = ringlog_reserve(log, seq % 11 ? RINGLOG_DATA : RINGLOG_GAP, kind_len, key_len,
                             event_len, ingest_of(seq), &slot);
    if (rc)
        return rc;
    CHECK(slot.seq == seq);
    memcpy(slot.kind, kind_of(seq), kind_len);
    memcpy(slot.key, key_of(seq), key_len);
    memcpy(slot.event, event_of(seq), event_len);
    ringlog_commit(log, &slot);
    return 0;
}

static bool content_ok(const struct ringlog_view *v)
{
    return v->kind_len == 1 + v->seq % 5 && v->key_len == 1 + v->seq % 9 &&
           v->ingest_us == ingest_of(v->seq) && v->event_len <= 1024 &&
           memcmp(v->kind, kind_of(v->seq), v->kind_len) == 0 &&
           memcmp(v->key, key_of(v->seq), v->key_len) == 0 &&
           memcmp(v->event, event_of(v->seq), v->event_len) == 0;
}

/* ---- files -------------------------------------------------------------- */

static char dir[PATH_MAX];
static char path[PATH_MAX + 16];
static uint8_t tmpl[FILE_HDR]; /* the header of a fresh, cleanly closed log */
static uint8_t image[IMAGE];

static void make_dir(void)
{
    const char *bases[] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};
    for (size_t i = 0; i < 3; i++) {
        if (!bases[i] || !*bases[i] || access(bases[i], W_OK) != 0)
            continue;
        snprintf(dir, sizeof(dir), "%s/ringlog_fuzz.XXXXXX", bases[i]);
        if (mkdtemp(dir)) {
            snprintf(path, sizeof(path), "%s/topic.log", dir);
            return;
        }
    }
    die("cannot make a temporary directory");
}

static void remove_dir(void)
{
    unlink(path);
    rmdir(dir);
}

static void file_put(const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, buf, len) == (ssize_t)len);
    close(fd);
}

static void file_get(uint8_t *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    CHECK(pread(fd, buf, len, 0) == (ssize_t)len);
    close(fd);
}

static ringlog_t *open_log(bool sync_every, struct ringlog_recovery *rep, int *rc)
{
    struct ringlog_options o = {
        .capacity = CAP, .lvc_max_keys = LVC_KEYS, .sync_every = sync_every};
    char err[512];
    ringlog_t *log = NULL;
    *rc = ringlog_open(&log, path, TOPIC, &o, rep, err, sizeof(err));
    if (*rc && *rc != -EINVAL) {
        fprintf(stderr, "ringlog_open: %d %s\n", *rc, err);
        die("open failed other than by refusing the file");
    }
    CHECK((*rc == 0) == (log != NULL));
    return log;
}

/* ---- the checks --------------------------------------------------------- */

/* Every record from first to head: intact, in order, no gap or duplicate.
 * Just after a recovery the last-value cache holds retained records only
 * (later it also keeps the last values of evicted records). Returns head. */
static uint64_t check_log(const ringlog_t *log, bool written_by_writer, bool recovered)
{
    uint64_t first = ringlog_first_seq(log), head = ringlog_head_seq(log);
    CHECK(first >= 1 && first <= head + 1);
    struct ringlog_iter it;
    CHECK(ringlog_seek(log, first, &it) == 0);
    for (uint64_t seq = first; seq <= head; seq++) {
        struct ringlog_view v;
        CHECK(ringlog_peek(log, &it, &v) == 0);
        CHECK(v.seq == seq);
        CHECK(v.type == RINGLOG_DATA || v.type == RINGLOG_GAP);
        /* event points into the ring; kind and key are the view's copies */
        const char *body = (const char *)v.event - v.key_len - v.kind_len;
        const struct rec_hdr *h = (const struct rec_hdr *)body - 1;
        CHECK(h->seq == seq && h->len == v.len && h->len % 8 == 0);
        CHECK(sizeof(*h) + v.kind_len + v.key_len + v.event_len <= v.len);
        CHECK(record_crc(h) == h->crc);
        CHECK(h->kind_len == v.kind_len && h->key_len == v.key_len);
        CHECK(v.kind + v.kind_len == v.key && memcmp(v.kind, body, v.kind_len) == 0 &&
              memcmp(v.key, body + v.kind_len, v.key_len) == 0);
        if (written_by_writer)
            CHECK(content_ok(&v));
        CHECK(ringlog_view_valid(log, &it));
        ringlog_advance(&it, &v);
    }
    struct ringlog_view v;
    CHECK(ringlog_peek(log, &it, &v) == -EAGAIN);
    CHECK(ringlog_seek(log, head + 1, &it) == 0);
    CHECK(ringlog_seek(log, head + 2, &it) == -ERANGE);
    if (first > 1)
        CHECK(ringlog_seek(log, first - 1, &it) == -ERANGE);
    for (uint64_t seq = first; seq <= head && seq >= first; seq += 7) {
        CHECK(ringlog_seek(log, seq, &it) == 0);
        CHECK(ringlog_peek(log, &it, &v) == 0 && v.seq == seq);
    }
    ringlog_seek_time(log, (int64_t)((first / 2 + head / 2) * 10u), &it);
    CHECK(it.seq >= first || it.seq == 0);

    lvc_t *lvc = ringlog_lvc(log);
    size_t n = lvc_count(lvc);
    CHECK(n <= LVC_KEYS);
    for (size_t i = 0; i < n; i++) {
        struct lvc_value lv;
        lvc_read(lvc, i, &lv);
        CHECK(lv.seq <= head && (lv.seq >= first || !recovered));
    }
    return head;
}

/* ---- building the file from the input ----------------------------------- */

struct patch {
    uint8_t off, val;
};

/* Writes records through the real writer into a file with the template
 * header, closes it cleanly and loads it into image. */
static void ring_by_writer(struct in *in, bool sync_every)
{
    unsigned n = u16(in) % 3000;
    size_t base = u8(in), spread = u8(in);
    unsigned sync_at = u16(in) % 3000;
    memset(image, 0, sizeof(image));
    memcpy(image, tmpl, FILE_HDR);
    file_put(image, IMAGE);
    struct ringlog_recovery rep;
    int rc;
    ringlog_t *log = open_log(sync_every, &rep, &rc);
    CHECK(log && rep.epoch_kept);
    for (unsigned i = 0; i < n; i++) {
        CHECK(append(log, base, spread) == 0);
        if (i == sync_at)
            CHECK(ringlog_sync(log) == 0);
    }
    ringlog_destroy(log);
    file_get(image, IMAGE);
}

/* Damage to a written log. Returns false when a copy made the file
 * something the writer could not have left (recovery is then only held to
 * serving intact, ordered records). */
static bool damage(struct in *in, size_t *file_len)
{
    bool plausible = true;
    unsigned ops = u8(in) % 8;
    uint8_t *ring = image + FILE_HDR;
    for (unsigned i = 0; i < ops; i++) {
        uint8_t op = u8(in);
        uint32_t off = u32(in) % CAP, len = u16(in) % 4096;
        if (len > CAP - off)
            len = CAP - off;
        switch (op % 5) {
        case 0:
            ring[off] ^= (uint8_t)(1u << (op >> 5));
            break;
        case 1:
            memset(ring + off, 0, len);
            break;
        case 2: {
            uint32_t x = u32(in) | 1;
            for (uint32_t j = 0; j < len; j++) {
                x ^= x << 13, x ^= x >> 17, x ^= x << 5;
                ring[off + j] = (uint8_t)x;
            }
            break;
        }
        case 3: /* a file cut short, possibly inside the header */
            *file_len = op & 0x80 ? u16(in) % FILE_HDR : FILE_HDR + off;
            break;
        case 4: {
            uint32_t to = (u32(in) % CAP) & ~7u;
            if (len > CAP - to)
                len = CAP - to;
            memmove(ring + to, ring + (off & ~7u), len);
            plausible = false;
            break;
        }
        }
    }
    return plausible;
}

/* Lays records out one by one with valid CRCs: any sequence numbers, sizes,
 * types, pads and offsets the input asks for. */
static void ring_by_layout(struct in *in)
{
    memset(image, 0, sizeof(image));
    memcpy(image, tmpl, FILE_HDR);
    uint8_t *ring = image + FILE_HDR;
    uint64_t off = 0, seq = 1 + u16(in);
    unsigned ops = u8(in);
    for (unsigned i = 0; i < ops && in->n; i++) {
        uint8_t op = u8(in);
        switch (op % 8) {
        case 0:
        case 1:
        case 2: { /* a record, next in sequence unless told */
            size_t kind_len = u8(in) % 16, key_len = u8(in) % 16, event_len = u16(in) % 3000;
            int8_t delta = (int8_t)u8(in);
            uint64_t jump = seq + (uint64_t)(int64_t)delta;
            seq = delta == 0 || op % 8 != 2 || jump >> 62 ? seq + 1 : jump;
            size_t used = sizeof(struct rec_hdr) + kind_len + key_len + event_len;
            size_t len = align8(used) + (op & 0x80 ? 8 : 0); /* sometimes too long */
            if (off + len > CAP)
                break;
            struct rec_hdr *h = (struct rec_hdr *)(ring + off);
            memset(h, 0, len);
            *h = (struct rec_hdr){.len = (uint32_t)len,
                                  .seq = seq,
                                  .ingest_us = (int64_t)seq,
                                  .type = op & 0x40 ? RINGLOG_GAP : RINGLOG_DATA,
                                  .kind_len = (uint16_t)kind_len,
                                  .key_len = (uint16_t)key_len,
                                  .event_len = (uint32_t)event_len};
            memset(h + 1, op, used - sizeof(*h));
            h->crc = record_crc(h);
            off += len;
            if (CAP - off < sizeof(struct rec_hdr))
                off = 0;
            break;
        }
        case 3: /* a pad to the end of the ring (or from anywhere) */
            if (CAP - off >= sizeof(struct rec_hdr)) {
                struct rec_hdr *h = (struct rec_hdr *)(ring + off);
                *h = (struct rec_hdr){.len = op & 0x80 ? (uint32_t)(u16(in) & ~7u)
                                                       : (uint32_t)(CAP - off)};
                h->crc = record_crc(h);
            }
            off = 0;
            break;
        case 4:
            off = (u16(in) * 8u) % CAP;
            break;
        case 5: /* a jump; below 2^62, as no writer gets near 2^64 */
            seq = op & 0x80 ? u64(in) >> 2 : u32(in);
            break;
        case 6:
            ring[u16(in) % CAP] ^= (uint8_t)(1u << (op >> 5));
            break;
        case 7: {
            uint32_t from = (u16(in) * 8u) % CAP, to = (u16(in) * 8u) % CAP, n = u16(in) % 4096;
            if (n > CAP - from)
                n = CAP - from;
            if (n > CAP - to)
                n = CAP - to;
            memmove(ring + to, ring + from, n);
            break;
        }
        }
    }
}

static void apply_header(unsigned mode, const struct patch *p, unsigned np, const uint8_t *raw)
{
    if (mode == HDR_RAW) {
        memset(image, 0, FILE_HDR);
        memcpy(image, raw, HDR_BYTES);
        return;
    }
    for (unsigned i = 0; i < np; i++)
        image[p[i].off % HDR_BYTES] = p[i].val;
    if (mode == HDR_RESEALED) {
        uint32_t crc = crc32c(0, image, HDR_CRC_OFF);
        memcpy(image + HDR_CRC_OFF, &crc, sizeof(crc));
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    uint8_t mode = u8(&in);
    unsigned hdr_mode = mode & 3, ring_mode = (mode >> 2) & 3;
    bool sync_every = mode & 0x10;

    struct patch patches[8];
    unsigned np = 0;
    uint8_t raw[HDR_BYTES] = {0};
    if (hdr_mode == HDR_RESEALED || hdr_mode == HDR_STALE_CRC) {
        np = u8(&in) % 8;
        for (unsigned i = 0; i < np; i++)
            patches[i] = (struct patch){u8(&in), u8(&in)};
    } else if (hdr_mode == HDR_RAW) {
        for (unsigned i = 0; i < HDR_BYTES; i++)
            raw[i] = u8(&in);
    }

    size_t file_len = IMAGE;
    bool plausible = true, by_writer = false;
    if (ring_mode == RING_IMAGE) {
        memset(image, 0, sizeof(image));
        memcpy(image, tmpl, FILE_HDR);
        uint32_t at = (u16(&in) * 8u) % CAP;
        size_t n = in.n < CAP - at ? in.n : CAP - at;
        memcpy(image + FILE_HDR + at, in.p, n);
        in.p += n;
        in.n -= n;
        plausible = false;
    } else if (ring_mode == RING_LAYOUT) {
        ring_by_layout(&in);
        plausible = false;
    } else {
        ring_by_writer(&in, sync_every);
        by_writer = true;
        plausible = damage(&in, &file_len);
    }
    apply_header(hdr_mode, patches, np, raw);
    if (hdr_mode != HDR_AS_IS)
        plausible = false;
    file_put(image, file_len);

    struct ringlog_recovery rep;
    int rc;
    ringlog_t *log = open_log(sync_every, &rep, &rc);
    bool same_content = by_writer && plausible;
    if (!log) { /* refused (another capacity or topic): what was there is left alone */
        static uint8_t back[IMAGE];
        file_get(back, file_len);
        CHECK(memcmp(back, image, file_len) == 0);
        return 0;
    }
    uint64_t head = check_log(log, same_content, true);
    CHECK(rep.head_seq == head);
    if (head) {
        CHECK(rep.first_seq == ringlog_first_seq(log));
        CHECK(rep.records == head - rep.first_seq + 1);
    } else {
        CHECK(rep.records == 0 && rep.first_seq == 1);
    }
    if (!rep.epoch_kept)
        CHECK(rep.reason != NULL);

    /* the writer goes on from what was recovered */
    unsigned more = u8(&in) % 200;
    for (unsigned i = 0; i < more; i++)
        CHECK(append(log, 30, 120) == 0);
    head = check_log(log, same_content, false);
    uint64_t first = ringlog_first_seq(log), epoch = ringlog_epoch(log);
    ringlog_destroy(log);

    /* recovering a cleanly closed log finds it as it was left */
    log = open_log(sync_every, &rep, &rc);
    CHECK(log != NULL);
    CHECK(rep.epoch_kept && ringlog_epoch(log) == epoch);
    CHECK(check_log(log, same_content, true) == head);
    if (plausible)
        CHECK(ringlog_first_seq(log) == first);
    ringlog_destroy(log);
    return 0;
}

/* A log written by the real writer, to learn the header and check that
 * struct rec_hdr still describes the file. */
static void learn_format(void)
{
    noise_init();
    unlink(path);
    struct ringlog_recovery rep;
    int rc;
    ringlog_t *log = open_log(false, &rep, &rc);
    CHECK(log && rep.created);
    CHECK(append(log, 10, 0) == 0);
    ringlog_destroy(log);
    static uint8_t file[IMAGE];
    file_get(file, IMAGE);
    const struct rec_hdr *h = (const struct rec_hdr *)(file + FILE_HDR);
    if (h->seq != 1 || h->len != align8(sizeof(*h) + 2 + 2 + 10) || record_crc(h) != h->crc)
        die("the record format changed: update struct rec_hdr here");
    uint32_t crc;
    memcpy(&crc, file + HDR_CRC_OFF, sizeof(crc));
    if (crc != crc32c(0, file, HDR_CRC_OFF))
        die("the file header format changed: update HDR_CRC_OFF here");

    /* the template: an empty log, cleanly closed */
    unlink(path);
    log = open_log(false, &rep, &rc);
    CHECK(log);
    ringlog_destroy(log);
    file_get(tmpl, FILE_HDR);
}

#ifndef RINGLOG_FUZZ_MAKE_SEEDS

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    make_dir();
    atexit(remove_dir);
    learn_format();
    return 0;
}

#else /* the seed corpus generator */

static const char *seed_dir;

static void seed(const char *name, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", seed_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen) || fclose(f))
        die("cannot write a seed");
}

/* An image seed: the ring of a real log of n records. */
static void image_seed(const char *name, unsigned n, uint8_t base, uint8_t spread)
{
    uint8_t args[] = {0, (uint8_t)n, (uint8_t)(n >> 8), base, spread, 0xff, 0xff};
    struct in in = {args + 1, sizeof(args) - 1};
    ring_by_writer(&in, false);
    uint8_t head[] = {RING_IMAGE << 2, 0, 0};
    seed(name, head, sizeof(head), image + FILE_HDR, CAP);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    seed_dir = argv[1];
    if (mkdir(seed_dir, 0755) && errno != EEXIST)
        die("cannot make the seed directory");
    make_dir();
    learn_format();

    image_seed("image-one-lap", 300, 40, 100);
    image_seed("image-wrapped", 2500, 20, 150);
    image_seed("image-wrapped-fixed", 2345, 60, 0);

    /* the writer: n (u16), base, spread, sync_at (u16), damage ops, appends */
    const uint8_t w_clean[] = {RING_WRITER << 2, 0xc4, 0x09, 20, 150, 0xff, 0xff, 0, 50};
    const uint8_t w_flip[] = {
        RING_WRITER << 2, 0xc4, 0x09, 20, 150, 0x10, 0x00, 1, 0x60, 0x00, 0x10, 0, 0, 0, 0, 10};
    const uint8_t w_zero[] = {
        RING_WRITER << 2, 0x2c, 0x01, 60, 0, 0xff, 0xff, 1, 1, 0x00, 0x40, 0, 0, 0x00, 0x10, 5};
    const uint8_t w_trunc[] = {
        RING_WRITER << 2, 0xc4, 0x09, 20, 150, 0xff, 0xff, 1, 3, 0x00, 0x20, 0, 0, 0, 0, 5};
    const uint8_t w_resealed[] = {
        RING_WRITER << 2 | HDR_RESEALED, 1, 200, 0x55, 0xc4, 0x09, 20, 150, 0xff, 0xff, 0, 5};
    /* header patched to another boot id (byte 176) and not clean (byte 216) */
    const uint8_t w_restart[] = {RING_WRITER << 2 | HDR_RESEALED,
                                 2,
                                 176,
                                 'x',
                                 216,
                                 0,
                                 0xc4,
                                 0x09,
                                 20,
                                 150,
                                 0x00,
                                 0x04,
                                 0,
                                 5};
    const uint8_t w_sync_every[] = {RING_WRITER << 2 | 0x10, 0x64, 0x00, 20, 150, 0xff, 0xff, 0, 5};
    seed("writer-clean", w_clean, sizeof(w_clean), NULL, 0);
    seed("writer-flip", w_flip, sizeof(w_flip), NULL, 0);
    seed("writer-zero", w_zero, sizeof(w_zero), NULL, 0);
    seed("writer-truncated", w_trunc, sizeof(w_trunc), NULL, 0);
    seed("writer-header-resealed", w_resealed, sizeof(w_resealed), NULL, 0);
    seed("writer-machine-restart", w_restart, sizeof(w_restart), NULL, 0);
    seed("writer-sync-every", w_sync_every, sizeof(w_sync_every), NULL, 0);

    /* a layout: 40 records in sequence, a pad, then 10 from offset 0 */
    uint8_t layout[1 + 2 + 1 + 60 * 6];
    size_t n = 0;
    layout[n++] = RING_LAYOUT << 2;
    layout[n++] = 0;
    layout[n++] = 0;
    layout[n++] = 52;
    for (int i = 0; i < 40; i++) {
        const uint8_t rec[] = {0, 5, 4, (uint8_t)(100 + i * 13), 0x05, 0};
        memcpy(layout + n, rec, sizeof(rec));
        n += sizeof(rec);
    }
    layout[n++] = 3;
    for (int i = 0; i < 10; i++) {
        const uint8_t rec[] = {0, 5, 4, 200, 0, 0};
        memcpy(layout + n, rec, sizeof(rec));
        n += sizeof(rec);
    }
    seed("layout-wrapped", layout, n, NULL, 0);
    remove_dir();
    return 0;
}

#endif
