/* ringlog, durable file: reopen after a clean close, recovery from corrupt,
 * torn and truncated tails (newest and oldest lap), idempotent recovery, and
 * when the epoch changes. Each test works on files in its own temporary
 * directory, removed afterwards. Damage is done through pread/pwrite on the
 * file while the log is closed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "crc32c.h"
#include "cursor.h"
#include "ringlog.h"

#define FILE_HDR 4096 /* the ring starts after the 4 KiB file header */

/* Every msync of the code under test comes here (the executable's symbol
 * wins over the C library's): it fails with EIO while msync_fails is set, as
 * on a disk that stopped writing, and is the real one otherwise. */
static bool msync_fails;

int msync(void *addr, size_t len, int flags)
{
    if (msync_fails) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_msync, addr, len, flags);
}
#define NKEYS 7
#define TOPIC "t"

struct fixture {
    char dir[PATH_MAX];
    char path[PATH_MAX + 16];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    snprintf(f->dir, sizeof(f->dir), "%s/ringlog_file_test.XXXXXX", tmp);
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/topic.log", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[PATH_MAX + 256];
            snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- records whose every byte follows from their sequence number -------- */

/* Event sizes: base + (seq * 37) % spread (spread 0: all the same size). */
struct shape {
    size_t base, spread;
};

static const struct shape VARIED = {20, 150};
static const struct shape FIXED = {60, 0}; /* boundaries line up lap after lap */

static size_t event_len_of(const struct shape *s, uint64_t seq)
{
    return s->base + (s->spread ? (seq * 37) % s->spread : 0);
}

/* One kind per key, so the last-value cache has one entry per key. */
static const char *kind_of(uint64_t seq)
{
    return (seq % NKEYS) % 2 ? "trade" : "quote";
}

static size_t key_of(uint64_t seq, char out[8])
{
    return (size_t)snprintf(out, 8, "K%u", (unsigned)(seq % NKEYS));
}

static uint8_t event_byte(uint64_t seq, size_t i)
{
    return (uint8_t)(seq * 31 + i * 7 + 1);
}

static int64_t ingest_of(uint64_t seq)
{
    return 1000 + (int64_t)seq * 10;
}

/* Writes the record with the next sequence number; returns what
 * ringlog_commit returned. */
static int try_append(ringlog_t *log, const struct shape *s)
{
    uint64_t seq = ringlog_head_seq(log) + 1;
    char key[8];
    size_t key_len = key_of(seq, key), event_len = event_len_of(s, seq);
    const char *kind = kind_of(seq);
    struct ringlog_slot slot;
    assert_int_equal(
        ringlog_reserve(log, RINGLOG_DATA, strlen(kind), key_len, event_len, ingest_of(seq), &slot),
        0);
    assert_int_equal(slot.seq, seq);
    memcpy(slot.kind, kind, strlen(kind));
    memcpy(slot.key, key, key_len);
    for (size_t i = 0; i < event_len; i++)
        slot.event[i] = event_byte(seq, i);
    return ringlog_commit(log, &slot);
}

static uint64_t append(ringlog_t *log, const struct shape *s)
{
    uint64_t seq = ringlog_head_seq(log) + 1;
    assert_int_equal(try_append(log, s), 0);
    return seq;
}

static void append_n(ringlog_t *log, const struct shape *s, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        append(log, s);
}

static void assert_record_intact(const struct ringlog_view *v, const struct shape *s)
{
    char key[8];
    size_t key_len = key_of(v->seq, key);
    assert_int_equal(v->type, RINGLOG_DATA);
    assert_int_equal(v->ingest_us, ingest_of(v->seq));
    assert_int_equal(v->kind_len, strlen(kind_of(v->seq)));
    assert_memory_equal(v->kind, kind_of(v->seq), v->kind_len);
    assert_int_equal(v->key_len, key_len);
    assert_memory_equal(v->key, key, key_len);
    assert_int_equal(v->event_len, event_len_of(s, v->seq));
    for (size_t i = 0; i < v->event_len; i++)
        if (v->event[i] != event_byte(v->seq, i))
            fail_msg("seq %llu: event byte %zu is %u, wrote %u", (unsigned long long)v->seq, i,
                     v->event[i], event_byte(v->seq, i));
}

/* Reads every record from first_seq to the head: each intact, sequence
 * numbers contiguous, the last one head_seq. Returns how many. */
static uint64_t read_all(const ringlog_t *log, const struct shape *s)
{
    uint64_t first = ringlog_first_seq(log), head = ringlog_head_seq(log), n = 0;
    struct ringlog_iter it;
    assert_int_equal(ringlog_seek(log, first, &it), 0);
    for (;;) {
        struct ringlog_view v;
        int rc = ringlog_peek(log, &it, &v);
        if (rc == -EAGAIN)
            break;
        assert_int_equal(rc, 0);
        assert_int_equal(v.seq, first + n);
        assert_record_intact(&v, s);
        assert_true(ringlog_view_valid(log, &it));
        ringlog_advance(&it, &v);
        n++;
    }
    assert_int_equal(first + n - 1, head);
    return n;
}

/* Where each retained record lives. */
struct loc {
    uint64_t seq;
    uint64_t off;  /* ring offset */
    uint32_t used; /* header and kind/key/event bytes, covered by the CRC */
};

struct layout {
    struct loc *recs;
    uint64_t n;
    uint64_t first, head, head_off;
    uint64_t newest_first; /* first record of the lap the head is in */
    uint64_t epoch;
    size_t cap;
};

static struct loc *loc_of(struct layout *l, uint64_t seq)
{
    assert_true(seq >= l->first && seq <= l->head);
    return &l->recs[seq - l->first];
}

static void layout_read(const ringlog_t *log, struct layout *l)
{
    l->cap = ringlog_capacity(log);
    l->first = ringlog_first_seq(log);
    l->head = ringlog_head_seq(log);
    l->epoch = ringlog_epoch(log);
    uint64_t head_pos = ringlog_head_pos(log);
    uint64_t lap_start = head_pos ? (head_pos - 1) / l->cap * l->cap : 0;
    l->head_off = head_pos % l->cap;
    l->n = l->head - l->first + 1;
    l->recs = calloc(l->n, sizeof(*l->recs));
    assert_non_null(l->recs);
    l->newest_first = l->first;
    struct ringlog_iter it;
    assert_int_equal(ringlog_seek(log, l->first, &it), 0);
    for (uint64_t i = 0; i < l->n; i++) {
        struct ringlog_view v;
        assert_int_equal(ringlog_peek(log, &it, &v), 0);
        l->recs[i] = (struct loc){v.seq, it.pos % l->cap,
                                  (uint32_t)(40 + v.kind_len + v.key_len + v.event_len)};
        if (it.pos < lap_start)
            l->newest_first = v.seq + 1;
        ringlog_advance(&it, &v);
    }
}

/* ---- the file ----------------------------------------------------------- */

static ringlog_t *open_log(const char *path, size_t cap, struct ringlog_recovery *rep)
{
    struct ringlog_options o = {.capacity = cap};
    char err[512] = "";
    ringlog_t *log = NULL;
    int rc = ringlog_open(&log, path, TOPIC, &o, rep, err, sizeof(err));
    if (rc)
        fail_msg("ringlog_open %s: %d %s", path, rc, err);
    assert_non_null(log);
    return log;
}

static uint8_t *file_read(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void file_write(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, 0), (ssize_t)len);
    close(fd);
}

static void file_flip_bit(const char *path, uint64_t off, int bit)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= (uint8_t)(1u << bit);
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

/* Overwrites [off, off + len) with zeros, or with noise when noise is set. */
static void file_fill(const char *path, uint64_t off, uint64_t len, bool noise)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t *buf = calloc(1, len ? len : 1);
    assert_non_null(buf);
    uint32_t x = 0x9e3779b9u;
    for (uint64_t i = 0; noise && i < len; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
    assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
    free(buf);
    close(fd);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Creates a log of `cap` bytes holding n records and closes it cleanly;
 * returns where its records are. */
static void make_log(const char *path, size_t cap, const struct shape *s, uint64_t n,
                     struct layout *l)
{
    unlink(path);
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(path, cap, &rep);
    assert_true(rep.created);
    append_n(log, s, n);
    layout_read(log, l);
    ringlog_destroy(log);
}

/* What a recovery must give: first/head, and whether the epoch survives
 * (only when no record up to the old head, all synced at close, is lost). */
static void assert_recovered(const char *path, const struct layout *l, const struct shape *s,
                             uint64_t first, uint64_t head)
{
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(path, l->cap, &rep);
    if (head < first) { /* nothing left */
        first = 1;
        head = 0;
    }
    if (rep.head_seq != head || ringlog_first_seq(log) != first)
        fail_msg("recovered %llu..%llu, expected %llu..%llu",
                 (unsigned long long)ringlog_first_seq(log), (unsigned long long)rep.head_seq,
                 (unsigned long long)first, (unsigned long long)head);
    assert_int_equal(ringlog_head_seq(log), head);
    assert_int_equal(rep.first_seq, first);
    assert_int_equal(rep.records, head - first + 1);
    assert_int_equal(read_all(log, s), head - first + 1);
    assert_false(rep.created);
    bool kept = head >= l->head;
    assert_int_equal(rep.epoch_kept, kept);
    assert_int_equal(ringlog_epoch(log) == l->epoch, kept);
    if (!kept)
        assert_non_null(rep.reason);
    ringlog_destroy(log);
}

/* ---- reopen after a clean close ----------------------------------------- */

static void reopen_after_clean_close_keeps_epoch_records_and_last_values(void **state)
{
    struct fixture *f = *state;
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, 256 * 1024, &rep);
    assert_true(rep.created);
    assert_false(rep.epoch_kept);
    assert_int_equal(rep.records, 0);
    assert_int_equal(file_size(f->path), FILE_HDR + 256 * 1024);
    append_n(log, &VARIED, 500);
    uint64_t epoch = ringlog_epoch(log);
    ringlog_destroy(log);

    log = open_log(f->path, 256 * 1024, &rep);
    assert_false(rep.created);
    assert_true(rep.epoch_kept);
    assert_null(rep.reason);
    assert_int_equal(rep.records, 500);
    assert_int_equal(rep.first_seq, 1);
    assert_int_equal(rep.head_seq, 500);
    assert_int_equal(rep.cut_bytes, 0);
    assert_true(ringlog_epoch(log) == epoch);
    assert_int_equal(read_all(log, &VARIED), 500);

    /* the last-value cache: the latest event of every key */
    lvc_t *lvc = ringlog_lvc(log);
    assert_int_equal(lvc_count(lvc), NKEYS);
    bool seen[NKEYS] = {false};
    for (size_t i = 0; i < NKEYS; i++) {
        struct lvc_value v;
        lvc_read(lvc, i, &v);
        assert_true(v.key_len >= 2 && v.key[0] == 'K');
        unsigned k = (unsigned)atoi(v.key + 1);
        assert_true(k < NKEYS && !seen[k]);
        seen[k] = true;
        uint64_t latest = 500 - (500 - k) % NKEYS;
        assert_int_equal(v.seq, latest);
        assert_string_equal(v.kind, kind_of(latest));
        assert_true(v.inline_event);
        assert_int_equal(v.event_len, event_len_of(&VARIED, latest));
        for (size_t j = 0; j < v.event_len; j++)
            assert_int_equal(v.event[j], event_byte(latest, j));
    }

    /* the writer goes on where it was */
    assert_int_equal(append(log, &VARIED), 501);
    ringlog_destroy(log);
    log = open_log(f->path, 256 * 1024, &rep);
    assert_true(rep.epoch_kept);
    assert_int_equal(read_all(log, &VARIED), 501);
    ringlog_destroy(log);
}

static void reopen_after_several_laps_keeps_first_head_and_every_record(void **state)
{
    struct fixture *f = *state;
    const size_t cap = 64 * 1024;
    const struct shape *shapes[] = {&VARIED, &FIXED};
    /* different counts leave the head at different places in the lap */
    const uint64_t counts[] = {1500, 2001, 2345, 3001, 4444};
    for (size_t si = 0; si < 2; si++) {
        for (size_t ci = 0; ci < sizeof(counts) / sizeof(counts[0]); ci++) {
            const struct shape *s = shapes[si];
            struct layout l;
            make_log(f->path, cap, s, counts[ci], &l);
            assert_true(l.first > 1); /* wrapped */

            struct ringlog_recovery rep;
            ringlog_t *log = open_log(f->path, cap, &rep);
            assert_true(rep.epoch_kept);
            assert_int_equal(rep.first_seq, l.first);
            assert_int_equal(rep.head_seq, l.head);
            assert_int_equal(ringlog_first_seq(log), l.first);
            assert_int_equal(rep.records, l.n);
            /* at most the stale rest of the record the head overwrote */
            assert_true(rep.cut_bytes == 0 || rep.cut_offset == l.head_off);
            assert_int_equal(read_all(log, s), l.n);
            /* the index is rebuilt: seeks by sequence and time */
            for (uint64_t seq = l.first; seq <= l.head; seq += 13) {
                struct ringlog_iter it;
                struct ringlog_view v;
                assert_int_equal(ringlog_seek(log, seq, &it), 0);
                assert_int_equal(ringlog_peek(log, &it, &v), 0);
                assert_int_equal(v.seq, seq);
                ringlog_seek_time(log, ingest_of(seq), &it);
                assert_int_equal(ringlog_peek(log, &it, &v), 0);
                assert_int_equal(v.seq, seq);
            }
            /* writing on across the recovered head, then again after a reopen */
            append_n(log, s, 700);
            assert_int_equal(read_all(log, s), ringlog_head_seq(log) - ringlog_first_seq(log) + 1);
            uint64_t first = ringlog_first_seq(log);
            ringlog_destroy(log);
            log = open_log(f->path, cap, &rep);
            assert_true(rep.epoch_kept);
            assert_int_equal(rep.head_seq, l.head + 700);
            assert_int_equal(rep.first_seq, first);
            read_all(log, s);
            ringlog_destroy(log);
            free(l.recs);
        }
    }
}

static int run_child_crash(const char *path, size_t cap, const struct shape *s, uint64_t n,
                           uint64_t *child_epoch)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct ringlog_options o = {.capacity = cap};
        struct ringlog_recovery rep;
        char err[256];
        ringlog_t *log;
        if (ringlog_open(&log, path, TOPIC, &o, &rep, err, sizeof(err)))
            _exit(1);
        for (uint64_t i = 0; i < n; i++) {
            struct ringlog_slot slot;
            uint64_t seq = ringlog_head_seq(log) + 1;
            char key[8];
            size_t key_len = key_of(seq, key), event_len = event_len_of(s, seq);
            if (ringlog_reserve(log, RINGLOG_DATA, 5, key_len, event_len, ingest_of(seq), &slot))
                _exit(1);
            memcpy(slot.kind, kind_of(seq), 5);
            memcpy(slot.key, key, key_len);
            for (size_t j = 0; j < event_len; j++)
                slot.event[j] = event_byte(seq, j);
            ringlog_commit(log, &slot);
        }
        uint64_t e = ringlog_epoch(log);
        if (write(fds[1], &e, sizeof(e)) != (ssize_t)sizeof(e))
            _exit(1);
        _exit(0); /* a crash: no ringlog_destroy, no sync, file not marked clean */
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], child_epoch, sizeof(*child_epoch)), sizeof(*child_epoch));
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void process_crash_loses_no_committed_record_and_keeps_the_epoch(void **state)
{
    struct fixture *f = *state;
    struct layout l;
    make_log(f->path, 64 * 1024, &VARIED, 100, &l);
    uint64_t child_epoch;
    assert_int_equal(run_child_crash(f->path, 64 * 1024, &VARIED, 1000, &child_epoch), 0);
    assert_true(child_epoch == l.epoch);
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, 64 * 1024, &rep);
    assert_true(rep.epoch_kept);
    assert_true(ringlog_epoch(log) == l.epoch);
    assert_int_equal(rep.head_seq, 1100);
    read_all(log, &VARIED);
    ringlog_destroy(log);
    free(l.recs);
}

/* ---- corrupt records ---------------------------------------------------- */

/* Flips one bit of record `seq` (inside what its CRC covers) in a fresh copy
 * of the file, then checks what recovery keeps: up to the record before it
 * when it is in the newest lap; when it is in the oldest lap, the newest lap
 * and the records after it (a run that still reaches the end of the ring). */
static void check_flip(const char *path, const uint8_t *pristine, size_t len, struct layout *l,
                       const struct shape *s, uint64_t seq, unsigned salt)
{
    file_write(path, pristine, len);
    struct loc *r = loc_of(l, seq);
    file_flip_bit(path, FILE_HDR + r->off + (salt * 13u) % r->used, (int)(salt % 8));
    uint64_t first = l->first, head = l->head;
    if (seq >= l->newest_first)
        head = seq - 1;
    else if (seq + 1 < l->newest_first)
        first = seq + 1;
    else
        first = l->newest_first; /* the oldest lap's last record: nothing of it reaches the end */
    assert_recovered(path, l, s, first, head);
}

static void bit_flip_in_a_recent_record_cuts_the_log_just_before_it(void **state)
{
    struct fixture *f = *state;
    const struct shape *shapes[] = {&VARIED, &FIXED};
    const uint64_t counts[] = {300, 2345}; /* one lap; several laps */
    for (size_t si = 0; si < 2; si++) {
        for (size_t ci = 0; ci < 2; ci++) {
            struct layout l;
            make_log(f->path, 64 * 1024, shapes[si], counts[ci], &l);
            size_t len;
            uint8_t *pristine = file_read(f->path, &len);
            for (uint64_t k = 0; k < 24; k++)
                check_flip(f->path, pristine, len, &l, shapes[si], l.head - k, (unsigned)k);
            /* the first record of the newest lap, at ring offset 0 */
            check_flip(f->path, pristine, len, &l, shapes[si], l.newest_first, 5);
            free(pristine);
            free(l.recs);
        }
    }
}

static void bit_flip_in_the_oldest_lap_keeps_the_newest_lap_and_what_follows_it(void **state)
{
    struct fixture *f = *state;
    const struct shape *shapes[] = {&VARIED, &FIXED};
    for (size_t si = 0; si < 2; si++) {
        struct layout l;
        make_log(f->path, 64 * 1024, shapes[si], 2345, &l);
        assert_true(l.newest_first - l.first > 20);
        size_t len;
        uint8_t *pristine = file_read(f->path, &len);
        uint64_t mid = (l.first + l.newest_first) / 2;
        const uint64_t seqs[] = {l.first, l.first + 1, mid, l.newest_first - 2, l.newest_first - 1};
        for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++)
            check_flip(f->path, pristine, len, &l, shapes[si], seqs[i], (unsigned)(i * 3 + 1));
        free(pristine);
        free(l.recs);
    }
}

static void damage_in_the_newest_lap_never_brings_back_overwritten_records(void **state)
{
    struct fixture *f = *state;
    /* Same-size records: every old-lap record boundary after the cut lines up
     * with one of the newest lap, the easiest to mistake for a continuation. */
    const struct shape *shapes[] = {&FIXED, &VARIED};
    for (size_t si = 0; si < 2; si++) {
        const struct shape *s = shapes[si];
        struct layout l;
        make_log(f->path, 64 * 1024, s, 1500, &l);
        assert_true(l.head - l.newest_first > 40);
        size_t len;
        uint8_t *pristine = file_read(f->path, &len);
        const uint64_t damaged[] = {l.newest_first + 1, (l.newest_first + l.head) / 2, l.head - 3};
        for (size_t i = 0; i < 3; i++) {
            uint64_t d = damaged[i];
            /* a flipped bit, then a zeroed header */
            for (int how = 0; how < 2; how++) {
                file_write(f->path, pristine, len);
                if (how == 0)
                    file_flip_bit(f->path, FILE_HDR + loc_of(&l, d)->off + 20, 3);
                else
                    file_fill(f->path, FILE_HDR + loc_of(&l, d)->off, 40, false);
                struct ringlog_recovery rep;
                ringlog_t *log = open_log(f->path, l.cap, &rep);
                assert_int_equal(rep.head_seq, d - 1);
                assert_int_equal(rep.first_seq, l.first);
                assert_int_equal(read_all(log, s), d - l.first);
                /* write past where the cut records were, crash-free close, reopen */
                uint64_t more = (l.head - d + 1) + 5;
                append_n(log, s, more);
                uint64_t first = ringlog_first_seq(log);
                ringlog_destroy(log);
                log = open_log(f->path, l.cap, &rep);
                assert_true(rep.epoch_kept);
                assert_int_equal(rep.head_seq, d - 1 + more);
                assert_int_equal(rep.first_seq, first);
                assert_int_equal(read_all(log, s), d - 1 + more - first + 1);
                ringlog_destroy(log);
            }
        }
        free(pristine);
        free(l.recs);
    }
}

/* ---- torn and truncated tails -------------------------------------------- */

/* Cuts the written region at ring offset `off` (inside record `seq`, or at
 * its start): zeros from there to the end of what was written, or a file
 * physically truncated there. */
static void check_tear(const char *path, const uint8_t *pristine, size_t len, struct layout *l,
                       const struct shape *s, uint64_t seq, uint64_t off, bool truncate_file)
{
    file_write(path, pristine, len);
    uint64_t first = l->first;
    if (truncate_file) {
        assert_int_equal(truncate(path, (off_t)(FILE_HDR + off)), 0);
        first = l->newest_first; /* the older lap went with the truncated part */
    } else {
        file_fill(path, FILE_HDR + off, l->head_off - off, false);
    }
    assert_recovered(path, l, s, first, seq - 1);
    assert_int_equal(file_size(path), FILE_HDR + l->cap); /* extended again */
}

static void torn_or_truncated_tail_recovers_up_to_the_last_whole_record(void **state)
{
    struct fixture *f = *state;
    const uint64_t counts[] = {300, 2345};
    for (size_t ci = 0; ci < 2; ci++) {
        struct layout l;
        make_log(f->path, 64 * 1024, &VARIED, counts[ci], &l);
        assert_true(l.head_off > 0);
        size_t len;
        uint8_t *pristine = file_read(f->path, &len);
        uint64_t from = l.head > 30 && l.head - 30 > l.newest_first ? l.head - 30 : l.newest_first;
        for (uint64_t seq = from; seq <= l.head; seq++) {
            struct loc *r = loc_of(&l, seq);
            for (int truncate_file = 0; truncate_file < 2; truncate_file++) {
                check_tear(f->path, pristine, len, &l, &VARIED, seq, r->off, truncate_file);
                check_tear(f->path, pristine, len, &l, &VARIED, seq, r->off + r->used / 2,
                           truncate_file);
            }
        }
        /* torn exactly at the head: nothing lost */
        file_write(f->path, pristine, len);
        assert_int_equal(truncate(f->path, (off_t)(FILE_HDR + l.head_off)), 0);
        assert_recovered(f->path, &l, &VARIED, l.newest_first, l.head);
        free(pristine);
        free(l.recs);
    }
}

static void file_truncated_inside_its_header_starts_a_new_empty_log(void **state)
{
    struct fixture *f = *state;
    struct layout l;
    make_log(f->path, 64 * 1024, &VARIED, 100, &l);
    assert_int_equal(truncate(f->path, 100), 0);
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, 64 * 1024, &rep);
    assert_false(rep.epoch_kept);
    assert_non_null(rep.reason);
    assert_int_equal(rep.head_seq, 0);
    assert_true(ringlog_epoch(log) != l.epoch);
    assert_int_equal(file_size(f->path), FILE_HDR + 64 * 1024);
    ringlog_destroy(log);
    free(l.recs);
}

/* ---- idempotent recovery ------------------------------------------------- */

static void recovery_is_idempotent_and_leaves_the_same_file(void **state)
{
    struct fixture *f = *state;
    const uint64_t counts[] = {300, 2345};
    for (size_t ci = 0; ci < 2; ci++) {
        for (int how = 0; how < 3; how++) {
            struct layout l;
            make_log(f->path, 64 * 1024, &VARIED, counts[ci], &l);
            struct loc *r = loc_of(&l, l.head - 10);
            if (how == 0) /* a flipped bit */
                file_flip_bit(f->path, FILE_HDR + r->off + 41, 6);
            else if (how == 1) /* a torn tail of noise */
                file_fill(f->path, FILE_HDR + r->off + 16, l.head_off - r->off - 16, true);
            else /* a flipped bit in the oldest lap (none in a single lap) */
                file_flip_bit(f->path, FILE_HDR + loc_of(&l, l.first + 3)->off + 50, 1);

            struct ringlog_recovery rep1, rep2;
            ringlog_t *log = open_log(f->path, l.cap, &rep1);
            ringlog_destroy(log);
            size_t len1, len2;
            uint8_t *after1 = file_read(f->path, &len1);
            log = open_log(f->path, l.cap, &rep2);
            ringlog_destroy(log);
            uint8_t *after2 = file_read(f->path, &len2);

            assert_int_equal(rep2.first_seq, rep1.first_seq);
            assert_int_equal(rep2.head_seq, rep1.head_seq);
            assert_int_equal(rep2.records, rep1.records);
            assert_true(rep2.epoch_kept);
            assert_int_equal(len2, len1);
            assert_memory_equal(after1, after2, len1);
            free(after1);
            free(after2);
            free(l.recs);
        }
    }
}

/* ---- epochs ------------------------------------------------------------- */

static void damaged_header_is_kept_aside_and_a_new_log_starts(void **state)
{
    struct fixture *f = *state;
    const uint64_t where[] = {0, 30, 150}; /* magic; fields under the header CRC */
    for (size_t i = 0; i < 3; i++) {
        struct layout l;
        make_log(f->path, 64 * 1024, &VARIED, 200, &l);
        file_flip_bit(f->path, where[i], 2);
        size_t damaged_len;
        uint8_t *damaged = file_read(f->path, &damaged_len);
        struct ringlog_recovery rep;
        ringlog_t *log = open_log(f->path, 64 * 1024, &rep);
        /* the damaged file is not destroyed: it is renamed, byte for byte */
        assert_true(rep.moved_to[0] != 0);
        size_t aside_len;
        uint8_t *aside = file_read(rep.moved_to, &aside_len);
        assert_int_equal(aside_len, damaged_len);
        assert_memory_equal(aside, damaged, damaged_len);
        unlink(rep.moved_to);
        free(aside);
        free(damaged);
        assert_true(rep.created);
        assert_false(rep.epoch_kept);
        assert_non_null(rep.reason);
        assert_int_equal(rep.records, 0);
        assert_int_equal(rep.head_seq, 0);
        assert_int_equal(ringlog_first_seq(log), 1);
        assert_true(ringlog_epoch(log) != l.epoch);
        struct ringlog_iter it;
        struct ringlog_view v;
        ringlog_seek_head(log, &it);
        assert_int_equal(it.seq, 1);
        assert_int_equal(ringlog_peek(log, &it, &v), -EAGAIN);
        assert_int_equal(append(log, &VARIED), 1);
        uint64_t epoch = ringlog_epoch(log);
        ringlog_destroy(log);
        log = open_log(f->path, 64 * 1024, &rep);
        assert_true(rep.epoch_kept);
        assert_true(ringlog_epoch(log) == epoch);
        assert_int_equal(read_all(log, &VARIED), 1);
        ringlog_destroy(log);
        free(l.recs);
    }
}

static void a_log_of_another_format_version_is_refused_and_left_alone(void **state)
{
    struct fixture *f = *state;
    struct layout l;
    make_log(f->path, 64 * 1024, &VARIED, 20, &l);
    /* a header of a future format: version 2, correctly sealed (the version
     * is at offset 8, the header CRC covers bytes 0..235 and sits at 236) */
    int fd = open(f->path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t hdr[240];
    assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    uint32_t version = 2;
    memcpy(hdr + 8, &version, 4);
    uint32_t crc = crc32c(0, hdr, 236);
    memcpy(hdr + 236, &crc, 4);
    assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    close(fd);
    size_t len0, len1;
    uint8_t *before = file_read(f->path, &len0);
    struct ringlog_options o = {.capacity = 64 * 1024};
    struct ringlog_recovery rep;
    char err[512] = "";
    ringlog_t *log = NULL;
    assert_int_equal(ringlog_open(&log, f->path, TOPIC, &o, &rep, err, sizeof(err)), -EINVAL);
    assert_null(log);
    assert_non_null(strstr(err, "format version 2"));
    assert_non_null(strstr(err, f->path));
    uint8_t *after = file_read(f->path, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    free(l.recs);
}

static void different_capacity_or_topic_is_refused_naming_the_file(void **state)
{
    struct fixture *f = *state;
    struct layout l;
    make_log(f->path, 128 * 1024, &VARIED, 50, &l);
    size_t len0, len1;
    uint8_t *before = file_read(f->path, &len0);
    const size_t caps[] = {64 * 1024, 256 * 1024};
    for (size_t i = 0; i < 2; i++) {
        struct ringlog_options o = {.capacity = caps[i]};
        struct ringlog_recovery rep;
        char err[512] = "";
        ringlog_t *log = (ringlog_t *)1;
        assert_int_equal(ringlog_open(&log, f->path, TOPIC, &o, &rep, err, sizeof(err)), -EINVAL);
        assert_null(log);
        assert_non_null(strstr(err, f->path));
    }
    struct ringlog_options o = {.capacity = 128 * 1024};
    struct ringlog_recovery rep;
    char err[512] = "";
    ringlog_t *log = (ringlog_t *)1;
    assert_int_equal(ringlog_open(&log, f->path, "other", &o, &rep, err, sizeof(err)), -EINVAL);
    assert_null(log);
    assert_non_null(strstr(err, f->path));
    /* the refused opens left the file alone */
    uint8_t *after = file_read(f->path, &len1);
    assert_int_equal(len1, len0);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    free(l.recs);
}

static void synced_records_missing_give_a_new_epoch(void **state)
{
    struct fixture *f = *state;
    struct layout l;
    make_log(f->path, 64 * 1024, &VARIED, 100, &l); /* closed: all 100 synced */
    struct loc *r = loc_of(&l, 91);
    file_fill(f->path, FILE_HDR + r->off, l.head_off - r->off, false);
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, 64 * 1024, &rep);
    assert_int_equal(rep.head_seq, 90);
    assert_false(rep.epoch_kept);
    assert_non_null(rep.reason);
    assert_true(ringlog_epoch(log) != l.epoch);
    assert_int_equal(read_all(log, &VARIED), 90);
    ringlog_destroy(log);
    free(l.recs);
}

static void process_crash_soon_after_a_new_epoch_keeps_that_epoch(void **state)
{
    struct fixture *f = *state;
    struct layout l;
    make_log(f->path, 64 * 1024, &VARIED, 100, &l);
    struct loc *r = loc_of(&l, 91);
    file_fill(f->path, FILE_HDR + r->off, l.head_off - r->off, false);
    /* The child recovers 90 records under a new epoch, adds 5 and crashes
     * before any sync: nothing that epoch ever synced is missing. */
    uint64_t child_epoch;
    assert_int_equal(run_child_crash(f->path, 64 * 1024, &VARIED, 5, &child_epoch), 0);
    assert_true(child_epoch != l.epoch);
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, 64 * 1024, &rep);
    assert_int_equal(rep.head_seq, 95);
    assert_true(rep.epoch_kept);
    assert_true(ringlog_epoch(log) == child_epoch);
    assert_int_equal(read_all(log, &VARIED), 95);
    ringlog_destroy(log);
    free(l.recs);
}

static void cursor_from_before_a_forced_new_epoch_no_longer_names_the_log(void **state)
{
    struct fixture *f = *state;
    struct layout l;
    make_log(f->path, 64 * 1024, &VARIED, 100, &l);
    struct cursor held = {.epoch = l.epoch, .seq = 100};

    /* a clean reopen: the cursor still names the log */
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, 64 * 1024, &rep);
    assert_true(ringlog_epoch(log) == held.epoch);
    ringlog_destroy(log);

    /* synced records lost: same sequence numbers, other events to come */
    struct loc *r = loc_of(&l, 51);
    file_fill(f->path, FILE_HDR + r->off, l.head_off - r->off, false);
    log = open_log(f->path, 64 * 1024, &rep);
    uint64_t second = ringlog_epoch(log);
    assert_true(second != held.epoch);
    append_n(log, &VARIED, 60); /* seq 51..110 again, under the new epoch */
    ringlog_destroy(log);

    /* a damaged header */
    file_flip_bit(f->path, 30, 0);
    log = open_log(f->path, 64 * 1024, &rep);
    assert_true(ringlog_epoch(log) != held.epoch);
    assert_true(ringlog_epoch(log) != second);
    ringlog_destroy(log);
    free(l.recs);
}

/* ---- --sync every: a record the disk did not take ------------------------- */

static void sync_every_record_the_disk_refused_is_not_published_and_its_seq_is_reused(void **state)
{
    struct fixture *f = *state;
    const size_t cap = 64 * 1024;
    struct ringlog_options o = {.capacity = cap, .sync_every = true};
    char err[512] = "";
    struct ringlog_recovery rep;
    ringlog_t *log = NULL;
    assert_int_equal(ringlog_open(&log, f->path, TOPIC, &o, &rep, err, sizeof(err)), 0);
    append_n(log, &VARIED, 10);
    msync_fails = true;
    int rc = try_append(log, &VARIED);
    msync_fails = false;
    assert_int_equal(rc, -EIO);
    /* readers never see it, nor does the cache have it */
    assert_int_equal(ringlog_head_seq(log), 10);
    assert_int_equal(read_all(log, &VARIED), 10);
    lvc_t *lvc = ringlog_lvc(log);
    for (size_t i = 0; i < lvc_count(lvc); i++) {
        struct lvc_value v;
        lvc_read(lvc, i, &v);
        assert_true(v.seq <= 10);
    }
    /* a crash now (the page cache has what was written): recovered without it */
    char copy[PATH_MAX + 32];
    snprintf(copy, sizeof(copy), "%s/copy.log", f->dir);
    size_t len;
    uint8_t *bytes = file_read(f->path, &len);
    file_write(copy, bytes, len);
    free(bytes);
    ringlog_t *crashed = NULL;
    assert_int_equal(ringlog_open(&crashed, copy, TOPIC, &o, &rep, err, sizeof(err)), 0);
    assert_int_equal(rep.head_seq, 10);
    assert_int_equal(read_all(crashed, &VARIED), 10);
    ringlog_destroy(crashed);
    /* the next record takes its place and its sequence number */
    assert_int_equal(append(log, &VARIED), 11);
    assert_int_equal(read_all(log, &VARIED), 11);
    ringlog_destroy(log);
    log = open_log(f->path, cap, &rep);
    assert_int_equal(rep.head_seq, 11);
    assert_int_equal(read_all(log, &VARIED), 11);
    ringlog_destroy(log);
}

/* ---- a file with holes --------------------------------------------------- */

/* Rewrites `path` as a file of the same length holding only its non-zero
 * 4 KiB blocks, the rest holes (what cp --sparse=always makes). */
static void file_make_sparse(const char *path)
{
    size_t len;
    uint8_t *buf = file_read(path, &len);
    static const uint8_t zero[4096];
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof(tmp), "%s.sparse", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    for (size_t off = 0; off < len; off += sizeof(zero)) {
        size_t n = len - off < sizeof(zero) ? len - off : sizeof(zero);
        if (memcmp(buf + off, zero, n) != 0)
            assert_int_equal(pwrite(fd, buf + off, n, (off_t)off), (ssize_t)n);
    }
    close(fd);
    free(buf);
    assert_int_equal(rename(tmp, path), 0);
}

static uint64_t file_allocated(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

/* On a full disk the first touch of a hole in the map is SIGBUS; open
 * reserves every block before it reads one. */
static void sparse_full_length_file_is_allocated_before_it_is_read(void **state)
{
    struct fixture *f = *state;
    const size_t cap = 256 * 1024;
    struct layout l;
    make_log(f->path, cap, &VARIED, 200, &l);
    off_t size = file_size(f->path);
    file_make_sparse(f->path);
    assert_int_equal(file_size(f->path), size);
    if (file_allocated(f->path) >= (uint64_t)size / 2) {
        print_message("SKIPPED LOUDLY: %s cannot hold a sparse file (%llu of %lld bytes "
                      "allocated); this case was NOT run\n",
                      f->dir, (unsigned long long)file_allocated(f->path), (long long)size);
        skip();
    }
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, cap, &rep);
    if (file_allocated(f->path) < (uint64_t)size)
        fail_msg("after open %llu of the file's %lld bytes are allocated",
                 (unsigned long long)file_allocated(f->path), (long long)size);
    assert_int_equal(rep.head_seq, l.head);
    assert_int_equal(read_all(log, &VARIED), l.head - l.first + 1);
    ringlog_destroy(log);
    free(l.recs);
}

/* ---- recovery cost ------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void damage_late_in_the_oldest_lap_is_recovered_in_linear_time(void **state)
{
    struct fixture *f = *state;
    /* ~230k small records a lap: a search that re-walks the oldest lap from
     * each of its records would take hours here, a linear one milliseconds. */
    const size_t cap = 16u << 20;
    const struct shape tiny = {16, 0};
    struct layout l;
    make_log(f->path, cap, &tiny, 350000, &l);
    uint64_t d = l.newest_first - 2;
    file_flip_bit(f->path, FILE_HDR + loc_of(&l, d)->off + 45, 4);
    double t0 = now_s();
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, cap, &rep);
    double took = now_s() - t0;
    print_message("recovery of a %zu MiB log took %.3f s\n", cap >> 20, took);
    assert_true(took < 20.0);
    assert_int_equal(rep.head_seq, l.head);
    assert_int_equal(rep.first_seq, d + 1);
    ringlog_destroy(log);
    free(l.recs);
}

/* Rewrites every record's sequence number to base + i with a valid CRC: a
 * file no writer of this version could have made. */
static void file_renumber(const char *path, const struct layout *l, uint64_t base)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    for (uint64_t i = 0; i < l->n; i++) {
        const struct loc *r = &l->recs[i];
        uint8_t *rec = malloc(r->used);
        assert_non_null(rec);
        assert_int_equal(pread(fd, rec, r->used, (off_t)(FILE_HDR + r->off)), (ssize_t)r->used);
        uint64_t seq = base + i;
        memcpy(rec + 8, &seq, 8); /* rec_hdr.seq */
        memset(rec + 4, 0, 4);    /* rec_hdr.crc, 0 while the CRC is computed */
        uint32_t crc = crc32c(0, rec, 40);
        crc = crc32c(crc, rec + 40, r->used - 40);
        memcpy(rec + 4, &crc, 4);
        assert_int_equal(pwrite(fd, rec, r->used, (off_t)(FILE_HDR + r->off)), (ssize_t)r->used);
        free(rec);
    }
    close(fd);
}

static void sequence_numbers_near_the_top_of_the_range_are_damage(void **state)
{
    struct fixture *f = *state;
    struct layout l;
    make_log(f->path, 64 * 1024, &VARIED, 300, &l);
    /* intact CRCs, contiguous numbers that would wrap past 2^64 */
    file_renumber(f->path, &l, UINT64_MAX - 150);
    struct ringlog_recovery rep;
    ringlog_t *log = open_log(f->path, l.cap, &rep);
    assert_int_equal(rep.head_seq, 0); /* none of them kept */
    assert_int_equal(rep.records, 0);
    assert_false(rep.epoch_kept);
    assert_non_null(rep.reason);
    /* and the log goes on from seq 1, also after another reopen */
    assert_int_equal(append(log, &VARIED), 1);
    assert_int_equal(append(log, &VARIED), 2);
    ringlog_destroy(log);
    log = open_log(f->path, l.cap, &rep);
    assert_int_equal(rep.first_seq, 1);
    assert_int_equal(rep.head_seq, 2);
    assert_int_equal(read_all(log, &VARIED), 2);
    ringlog_destroy(log);

    /* at 2^63 already: refused too */
    free(l.recs);
    make_log(f->path, 64 * 1024, &VARIED, 300, &l);
    file_renumber(f->path, &l, (uint64_t)1 << 63);
    log = open_log(f->path, l.cap, &rep);
    assert_int_equal(rep.head_seq, 0);
    ringlog_destroy(log);
    free(l.recs);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(reopen_after_clean_close_keeps_epoch_records_and_last_values),
        T(reopen_after_several_laps_keeps_first_head_and_every_record),
        T(process_crash_loses_no_committed_record_and_keeps_the_epoch),
        T(bit_flip_in_a_recent_record_cuts_the_log_just_before_it),
        T(bit_flip_in_the_oldest_lap_keeps_the_newest_lap_and_what_follows_it),
        T(damage_in_the_newest_lap_never_brings_back_overwritten_records),
        T(torn_or_truncated_tail_recovers_up_to_the_last_whole_record),
        T(file_truncated_inside_its_header_starts_a_new_empty_log),
        T(recovery_is_idempotent_and_leaves_the_same_file),
        T(damaged_header_is_kept_aside_and_a_new_log_starts),
        T(a_log_of_another_format_version_is_refused_and_left_alone),
        T(different_capacity_or_topic_is_refused_naming_the_file),
        T(synced_records_missing_give_a_new_epoch),
        T(process_crash_soon_after_a_new_epoch_keeps_that_epoch),
        T(cursor_from_before_a_forced_new_epoch_no_longer_names_the_log),
        T(damage_late_in_the_oldest_lap_is_recovered_in_linear_time),
        T(sequence_numbers_near_the_top_of_the_range_are_damage),
        T(sparse_full_length_file_is_allocated_before_it_is_read),
        T(sync_every_record_the_disk_refused_is_not_published_and_its_seq_is_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
