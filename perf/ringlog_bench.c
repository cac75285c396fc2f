/*
 * ringlog_bench: how fast the ingest thread can append to a topic log, and
 * one reader can scan it.
 *
 * For an in-memory log (ringlog_create) and a durable file log (ringlog_open
 * in --data-dir, synced every --sync-interval-ms by a second thread, as
 * tickfand does with --sync interval; never msync per record) it measures:
 *   - append throughput: records/s of reserve + copy kind/key/event + commit
 *     (CRC32C and the last-value cache update included), in steady state:
 *     the ring is filled once before timing, so evictions are included;
 *   - append latency: clock_gettime(CLOCK_MONOTONIC) around every single
 *     append (percentiles, each including one clock read; the clock's own
 *     cost is measured and printed), and the mean over batches of
 *     --batch appends timed together, which is free of clock overhead;
 *   - read throughput: one reader scanning every retained record with
 *     ringlog_peek + ringlog_view_valid + ringlog_advance.
 *
 * Single-threaded except for the sync thread; the measuring thread pins
 * itself to --cpu (default 1 when the machine has two CPUs or more).
 * Prints a human summary, then one JSON line.
 */
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ringlog.h"

#define LAT_BUCKETS 100000 /* 1 ns each; slower appends count in `over` */

struct opts {
    uint64_t records;
    uint64_t latency_records;
    size_t event_bytes;
    size_t capacity;
    size_t keys;
    unsigned batch;
    unsigned sync_interval_ms;
    const char *data_dir;
    int cpu;
    bool mem, file;
};

struct lat {
    uint32_t *counts; /* LAT_BUCKETS */
    uint64_t n, over, max;
};

struct result {
    const char *name;
    double append_per_s;
    double batch_ns;
    uint64_t p50, p99, p999, max;
    double read_per_s;
    uint64_t read_records;
    uint64_t syncs;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- what is appended ---------------------------------------------------- */

struct input {
    uint8_t *event;
    char (*keys)[16];
    uint8_t *key_lens;
    size_t nkeys;
};

static int input_make(struct input *in, const struct opts *o)
{
    in->event = malloc(o->event_bytes);
    in->keys = calloc(o->keys, sizeof(*in->keys));
    in->key_lens = calloc(o->keys, 1);
    if (!in->event || !in->keys || !in->key_lens)
        return -ENOMEM;
    for (size_t i = 0; i < o->event_bytes; i++)
        in->event[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < o->keys; i++)
        in->key_lens[i] = (uint8_t)snprintf(in->keys[i], sizeof(in->keys[i]), "SYM%05zu", i);
    in->nkeys = o->keys;
    return 0;
}

static void input_free(struct input *in)
{
    free(in->event);
    free(in->keys);
    free(in->key_lens);
}

/* One append as the ingest thread does it: the event is encoded in place
 * (here: copied), the key and kind beside it. */
static inline void append(ringlog_t *log, const struct input *in, size_t event_bytes, uint64_t i)
{
    size_t k = i % in->nkeys;
    struct ringlog_slot slot;
    if (ringlog_reserve(log, RINGLOG_DATA, 5, in->key_lens[k], event_bytes, (int64_t)i, &slot) != 0)
        abort();
    memcpy(slot.kind, "quote", 5);
    memcpy(slot.key, in->keys[k], in->key_lens[k]);
    memcpy(slot.event, in->event, event_bytes);
    ringlog_commit(log, &slot);
}

/* ---- the sync thread (file log) ------------------------------------------ */

struct syncer {
    ringlog_t *log;
    unsigned interval_ms;
    atomic_bool stop;
    atomic_uint_fast64_t syncs;
    pthread_t th;
};

static void *sync_main(void *p)
{
    struct syncer *s = p;
    while (!atomic_load(&s->stop)) {
        struct timespec ts = {s->interval_ms / 1000, (long)(s->interval_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        if (ringlog_sync(s->log) == 0)
            atomic_fetch_add(&s->syncs, 1);
    }
    return NULL;
}

/* ---- measurements --------------------------------------------------------- */

static uint64_t lat_at(const struct lat *l, double pct)
{
    uint64_t want = (uint64_t)((double)l->n * pct / 100.0 + 0.999999);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (uint64_t v = 0; v < LAT_BUCKETS; v++) {
        seen += l->counts[v];
        if (seen >= want)
            return v;
    }
    return l->max;
}

static void measure_latency(ringlog_t *log, const struct input *in, const struct opts *o,
                            uint64_t *seq, struct lat *l)
{
    memset(l->counts, 0, LAT_BUCKETS * sizeof(*l->counts));
    l->n = l->over = l->max = 0;
    for (uint64_t i = 0; i < o->latency_records; i++) {
        uint64_t t0 = now_ns();
        append(log, in, o->event_bytes, (*seq)++);
        uint64_t d = now_ns() - t0;
        if (d < LAT_BUCKETS)
            l->counts[d]++;
        else
            l->over++;
        if (d > l->max)
            l->max = d;
        l->n++;
    }
}

static double measure_batches(ringlog_t *log, const struct input *in, const struct opts *o,
                              uint64_t *seq)
{
    /* the fastest of many batches: the cost of an append when nothing
     * else (interrupts, the other tenant) gets in the way */
    double best = 1e18;
    uint64_t batches = o->latency_records / o->batch;
    for (uint64_t b = 0; b < batches; b++) {
        uint64_t t0 = now_ns();
        for (unsigned i = 0; i < o->batch; i++)
            append(log, in, o->event_bytes, (*seq)++);
        double per = (double)(now_ns() - t0) / o->batch;
        if (per < best)
            best = per;
    }
    return best;
}

static double measure_read(const ringlog_t *log, uint64_t *records)
{
    uint64_t best_ns = UINT64_MAX, n = 0, sink = 0;
    for (int round = 0; round < 5; round++) {
        struct ringlog_iter it;
        if (ringlog_seek(log, ringlog_first_seq(log), &it) != 0)
            abort();
        n = 0;
        uint64_t t0 = now_ns();
        for (;;) {
            struct ringlog_view v;
            if (ringlog_peek(log, &it, &v) != 0)
                break;
            sink += v.event[0] + v.key_len;
            if (!ringlog_view_valid(log, &it))
                abort();
            ringlog_advance(&it, &v);
            n++;
        }
        uint64_t d = now_ns() - t0;
        if (d < best_ns)
            best_ns = d;
    }
    if (sink == 42) /* keeps the reads */
        fputc(' ', stderr);
    *records = n;
    return (double)n * 1e9 / (double)best_ns;
}

static int run(ringlog_t *log, const char *name, const struct input *in, const struct opts *o,
               struct lat *l, struct result *r)
{
    memset(r, 0, sizeof(*r));
    r->name = name;
    uint64_t seq = 0;
    /* warm up: one lap of the ring, so every page is touched and the
     * timed appends evict as in steady state */
    uint64_t warm = o->capacity / (40 + 5 + 8 + o->event_bytes) + 1000;
    for (uint64_t i = 0; i < warm; i++)
        append(log, in, o->event_bytes, seq++);

    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < o->records; i++)
        append(log, in, o->event_bytes, seq++);
    r->append_per_s = (double)o->records * 1e9 / (double)(now_ns() - t0);

    measure_latency(log, in, o, &seq, l);
    r->p50 = lat_at(l, 50);
    r->p99 = lat_at(l, 99);
    r->p999 = lat_at(l, 99.9);
    r->max = l->max;
    r->batch_ns = measure_batches(log, in, o, &seq);
    r->read_per_s = measure_read(log, &r->read_records);
    return 0;
}

static uint64_t clock_overhead_ns(void)
{
    /* median of back-to-back reads */
    uint64_t d[1001];
    for (int i = 0; i < 1001; i++) {
        uint64_t a = now_ns();
        d[i] = now_ns() - a;
    }
    for (int i = 1; i < 1001; i++)
        for (int j = i; j > 0 && d[j - 1] > d[j]; j--) {
            uint64_t t = d[j];
            d[j] = d[j - 1];
            d[j - 1] = t;
        }
    return d[500];
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [options]\n"
            "  --records N           timed appends for the throughput (default 5000000)\n"
            "  --latency-records N   appends timed one by one (default 1000000)\n"
            "  --batch N             appends per batch for the batch mean (default 100)\n"
            "  --event-bytes N       encoded event size (default 100)\n"
            "  --capacity BYTES      ring size (default 67108864, tickfand's default)\n"
            "  --keys N              distinct keys, i.e. last-value cache entries (default 1000)\n"
            "  --data-dir DIR        where the file log goes (default /tmp)\n"
            "  --sync-interval-ms N  file log: ringlog_sync period (default 1000)\n"
            "  --cpu N               pin the measuring thread to CPU N; -1: do not pin\n"
            "                        (default 1 when there are two CPUs or more)\n"
            "  --only mem|file       run one of the two logs\n",
            argv0);
}

static int parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.records = 5000000,
                       .latency_records = 1000000,
                       .event_bytes = 100,
                       .capacity = 64u << 20,
                       .keys = 1000,
                       .batch = 100,
                       .sync_interval_ms = 1000,
                       .data_dir = "/tmp",
                       .cpu = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 1 : -1,
                       .mem = true,
                       .file = true};
    static const struct option long_opts[] = {
        {"records", required_argument, NULL, 'n'},
        {"latency-records", required_argument, NULL, 'l'},
        {"batch", required_argument, NULL, 'b'},
        {"event-bytes", required_argument, NULL, 'e'},
        {"capacity", required_argument, NULL, 'c'},
        {"keys", required_argument, NULL, 'k'},
        {"data-dir", required_argument, NULL, 'd'},
        {"sync-interval-ms", required_argument, NULL, 's'},
        {"cpu", required_argument, NULL, 'p'},
        {"only", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        char *end = NULL;
        long long v = optarg ? strtoll(optarg, &end, 10) : 0;
        bool num_ok = optarg && *optarg && end && *end == 0;
        switch (c) {
        case 'n':
        case 'l':
        case 'b':
        case 'e':
        case 'c':
        case 'k':
        case 's':
            if (!num_ok || v <= 0) {
                const char *name = "?";
                for (const struct option *lo = long_opts; lo->name; lo++)
                    if (lo->val == c)
                        name = lo->name;
                fprintf(stderr, "--%s: expected a positive number, got '%s'\n", name, optarg);
                return -EINVAL;
            }
            if (c == 'n')
                o->records = (uint64_t)v;
            else if (c == 'l')
                o->latency_records = (uint64_t)v;
            else if (c == 'b')
                o->batch = (unsigned)v;
            else if (c == 'e')
                o->event_bytes = (size_t)v;
            else if (c == 'c')
                o->capacity = (size_t)v;
            else if (c == 'k')
                o->keys = (size_t)v;
            else
                o->sync_interval_ms = (unsigned)v;
            break;
        case 'p':
            if (!num_ok || v < -1) {
                fprintf(stderr, "--cpu: expected a CPU number or -1, got '%s'\n", optarg);
                return -EINVAL;
            }
            o->cpu = (int)v;
            break;
        case 'd':
            o->data_dir = optarg;
            break;
        case 'o':
            if (strcmp(optarg, "mem") && strcmp(optarg, "file")) {
                fprintf(stderr, "--only: expected mem or file, got '%s'\n", optarg);
                return -EINVAL;
            }
            o->mem = strcmp(optarg, "mem") == 0;
            o->file = !o->mem;
            break;
        case 'h':
            usage(stdout, argv[0]);
            exit(0);
        default:
            usage(stderr, argv[0]);
            return -EINVAL;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        return -EINVAL;
    }
    if (o->event_bytes > RINGLOG_MAX_EVENT || o->capacity < RINGLOG_MIN_CAPACITY) {
        fprintf(stderr, "--event-bytes %zu or --capacity %zu out of bounds\n", o->event_bytes,
                o->capacity);
        return -EINVAL;
    }
    if (o->latency_records < o->batch)
        o->latency_records = o->batch;
    return 0;
}

static void print_result(const struct result *r)
{
    printf("%-5s append %6.2f M records/s   latency p50 %llu ns  p99 %llu ns  p99.9 %llu ns  "
           "max %llu ns   batch mean %.1f ns/append\n",
           r->name, r->append_per_s / 1e6, (unsigned long long)r->p50, (unsigned long long)r->p99,
           (unsigned long long)r->p999, (unsigned long long)r->max, r->batch_ns);
    printf("%-5s read   %6.2f M records/s   (%llu retained records, one reader)\n", r->name,
           r->read_per_s / 1e6, (unsigned long long)r->read_records);
}

static void json_result(const struct result *r, bool comma)
{
    printf("\"%s\":{\"append_per_s\":%.0f,\"append_ns\":{\"p50\":%llu,\"p99\":%llu,"
           "\"p999\":%llu,\"max\":%llu},\"batch_mean_ns\":%.2f,\"read_per_s\":%.0f,"
           "\"read_records\":%llu,\"syncs\":%llu}%s",
           r->name, r->append_per_s, (unsigned long long)r->p50, (unsigned long long)r->p99,
           (unsigned long long)r->p999, (unsigned long long)r->max, r->batch_ns, r->read_per_s,
           (unsigned long long)r->read_records, (unsigned long long)r->syncs, comma ? "," : "");
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse(argc, argv, &o))
        return 2;
    struct input in;
    struct lat lat = {.counts = calloc(LAT_BUCKETS, sizeof(uint32_t))};
    if (input_make(&in, &o) || !lat.counts) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    struct result results[2];
    int nres = 0, rc = 0;

    /* The file log and its sync thread first, so the thread is created
     * before the measuring thread pins itself (threads inherit affinity). */
    ringlog_t *flog = NULL;
    char path[4096];
    struct syncer syncer = {.interval_ms = o.sync_interval_ms};
    atomic_init(&syncer.stop, false);
    atomic_init(&syncer.syncs, 0);
    if (o.file) {
        snprintf(path, sizeof(path), "%s/ringlog_bench.%ld.log", o.data_dir, (long)getpid());
        struct ringlog_options lo = {.capacity = o.capacity, .lvc_max_keys = o.keys + 16};
        struct ringlog_recovery rep;
        char err[512];
        int orc = ringlog_open(&flog, path, "bench", &lo, &rep, err, sizeof(err));
        if (orc) {
            fprintf(stderr, "ringlog_bench: %s\n", err);
            return 1;
        }
        syncer.log = flog;
        if (pthread_create(&syncer.th, NULL, sync_main, &syncer)) {
            fprintf(stderr, "ringlog_bench: cannot start the sync thread\n");
            ringlog_destroy(flog);
            unlink(path);
            return 1;
        }
    }
    bool pinned = false;
    if (o.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(o.cpu, &set);
        pinned = sched_setaffinity(0, sizeof(set), &set) == 0;
        if (!pinned)
            fprintf(stderr, "ringlog_bench: cannot pin to CPU %d: %s (running unpinned)\n", o.cpu,
                    strerror(errno));
    }
    uint64_t clock_ns = clock_overhead_ns();
    printf(
        "ringlog_bench: %llu appends of %zu-byte events (kind 5 B, key 8 B, %zu keys, last-value "
        "cache on), ring %zu MiB, CPU %s%d, clock_gettime %llu ns\n",
        (unsigned long long)o.records, o.event_bytes, o.keys, o.capacity >> 20,
        pinned ? "" : "unpinned ", pinned ? o.cpu : -1, (unsigned long long)clock_ns);

    if (o.mem) {
        ringlog_t *mlog;
        if (ringlog_create(&mlog, "bench", o.capacity)) {
            fprintf(stderr, "ringlog_bench: cannot create a %zu-byte log\n", o.capacity);
            rc = 1;
            goto out;
        }
        run(mlog, "mem", &in, &o, &lat, &results[nres]);
        print_result(&results[nres++]);
        ringlog_destroy(mlog);
    }
    if (o.file) {
        run(flog, "file", &in, &o, &lat, &results[nres]);
        atomic_store(&syncer.stop, true);
        pthread_join(syncer.th, NULL);
        results[nres].syncs = atomic_load(&syncer.syncs);
        print_result(&results[nres]);
        printf("file   %s, ringlog_sync every %u ms: %llu syncs during the run\n", path,
               o.sync_interval_ms, (unsigned long long)results[nres].syncs);
        nres++;
    }
    printf("latencies: one clock_gettime pair around each append (includes ~%llu ns of clock); "
           "batch mean: fastest batch of %u appends / %u\n",
           (unsigned long long)clock_ns, o.batch, o.batch);

    printf("{\"bench\":\"ringlog\",\"records\":%llu,\"latency_records\":%llu,\"event_bytes\":%zu,"
           "\"keys\":%zu,\"capacity\":%zu,\"cpu\":%d,\"clock_ns\":%llu,",
           (unsigned long long)o.records, (unsigned long long)o.latency_records, o.event_bytes,
           o.keys, o.capacity, pinned ? o.cpu : -1, (unsigned long long)clock_ns);
    for (int i = 0; i < nres; i++)
        json_result(&results[i], i + 1 < nres);
    printf("}\n");
out:
    if (flog) {
        if (!atomic_load(&syncer.stop)) {
            atomic_store(&syncer.stop, true);
            pthread_join(syncer.th, NULL);
        }
        ringlog_destroy(flog);
        unlink(path);
    }
    free(lat.counts);
    input_free(&in);
    return rc;
}
