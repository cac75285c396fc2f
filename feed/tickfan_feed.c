/*
 * tickfan-feed: synthetic market data in the feed wire format
 * (feed/FORMAT.md), sent to a tickfand feed, recorded to a capture file, or
 * a capture file replayed.
 *
 * One thread. SIGINT/SIGTERM end a run early: what is queued is sent, the
 * summary printed, exit 0.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feedcap.h"
#include "clock.h"
#include "feedframe.h"
#include "feedgen.h"
#include "feedout.h"
#include "feedpace.h"
#include "topics.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define BURST_MAX 4096  /* frames queued before a send even when more are due */
#define CLOCK_EVERY 256 /* as fast as possible: frames between clock reads */
#define MAX_DROPS 4096

static const char MANUAL[] =
    "NAME\n"
    "    tickfan-feed - synthetic market data for tickfand feeds: send, record, replay\n"
    "\n"
    "SYNOPSIS\n"
    "    tickfan-feed send --to DEST --topic T [generator options] [UDP options]\n"
    "    tickfan-feed record --out FILE --topic T --count N [generator options]\n"
    "    tickfan-feed replay FILE --to DEST [--speed max|recorded|RATE] [--count N]\n"
    "                        [UDP options]\n"
    "    tickfan-feed --help | --version\n"
    "\n"
    "DESCRIPTION\n"
    "    Quotes and trades from tickfand's simulator, one frame per tick in the\n"
    "    feed wire format (feed/FORMAT.md): topic T, kind \"quote\" or \"trade\",\n"
    "    key the symbol, body an encoded tickfan.market.v1.Tick whose symbol is\n"
    "    the key. Frames are numbered 1, 2, 3 ... (source_seq) on their\n"
    "    channel. The same seed gives the same ticks.\n"
    "\n"
    "    send     Sends at --rate frames per second on a steady schedule: frame i\n"
    "             is due at start + i/rate; a sender that falls behind catches up\n"
    "             in a burst, it never drifts. Each frame is stamped with its due\n"
    "             time (source_time_us and the Tick's exchange time).\n"
    "    record   Writes a capture file at once, records stamped with the times\n"
    "             the schedule of --rate would have given (--rate 0: the clock).\n"
    "    replay   Sends the frames of a capture file, byte for byte, in order.\n"
    "\n"
    "DESTINATIONS (--to)\n"
    "    udp://HOST:PORT         datagrams of whole frames back to back; a\n"
    "                            224.0.0.0/4 address is multicast\n"
    "    tcp://HOST:PORT         connects to a receiver (tickfand --feed\n"
    "                            tcp-listen://...)\n"
    "    tcp-listen://ADDR:PORT  waits for one receiver to connect (tickfand\n"
    "                            --feed tcp://...), then sends; port 0 picks a\n"
    "                            free port. Prints msg=listening addr=ADDR:PORT\n"
    "                            on stderr once it listens.\n"
    "\n"
    "GENERATOR OPTIONS (send, record)\n"
    "    --topic T          topic of every frame ([A-Za-z0-9._-], 1-128 characters)\n"
    "    --rate N           frames per second (default 1000); 0: as fast as possible\n"
    "    --count N          ticks to generate, dropped ones included (default: no\n"
    "                       limit for send, until SIGINT/SIGTERM; required for record)\n"
    "    --duration SEC     send: stop after SEC seconds (decimals allowed)\n"
    "    --symbols A,B,...  1-64 symbols of 1-16 characters [A-Za-z0-9._-]\n"
    "                       (default AAPL,MSFT,GOOG,AMZN,NVDA,TSLA,META,JPM)\n"
    "    --seed S           simulator seed (default 1)\n"
    "    --channel C        the frames' channel (default 0)\n"
    "    --start-seq N      source_seq of the first tick (default 1)\n"
    "    --drop SEQ,...     ticks with these source_seq values are generated but not\n"
    "                       sent (an upstream loss); items are SEQ or FIRST-LAST\n"
    "    --body-size N      pad each Tick body to N bytes with an unknown field, so it\n"
    "                       still decodes as the same Tick (N+1 when the Tick is one\n"
    "                       byte short of N: a field takes two); 0..60000, default 0\n"
    "\n"
    "UDP OPTIONS (send, replay)\n"
    "    --batch K          at most K frames per datagram, in datagrams of up to\n"
    "                       65,507 bytes; default: as many frames as fit 1,472 bytes.\n"
    "                       A datagram leaves when full or when no more frames are due.\n"
    "    --ttl N            multicast TTL (0-255)\n"
    "    --iface ADDR       multicast: send on the interface with this IPv4 address\n"
    "\n"
    "REPLAY OPTIONS\n"
    "    --speed max        as fast as possible\n"
    "    --speed recorded   the gaps between the records' times (default)\n"
    "    --speed RATE       RATE frames per second\n"
    "    --count N          the first N records only\n"
    "\n"
    "OUTPUT\n"
    "    At the end, one line on stdout:\n"
    "      msg=done command=send to=udp://127.0.0.1:9000 frames=10000 dropped=0\n"
    "      datagrams=1112 bytes=1073514 seconds=10.000 frames_per_s=1000\n"
    "    frames: handed to the kernel (or written); dropped: left out by --drop;\n"
    "    send_errors (UDP): sends refused and retried.\n"
    "\n"
    "EXAMPLES\n"
    "    tickfand --topic md --feed udp://127.0.0.1:9000 &\n"
    "    tickfan-feed send --to udp://127.0.0.1:9000 --topic md --rate 5000 --count 50000\n"
    "\n"
    "    # multicast on the loopback interface\n"
    "    tickfand --topic md --feed 'udp://239.1.1.1:9000?iface=127.0.0.1' &\n"
    "    tickfan-feed send --to udp://239.1.1.1:9000 --iface 127.0.0.1 --ttl 0 --topic md\n"
    "\n"
    "    # tickfand connects to us\n"
    "    tickfan-feed send --to tcp-listen://127.0.0.1:9001 --topic md --count 1000 &\n"
    "    tickfand --topic md --feed tcp://127.0.0.1:9001\n"
    "\n"
    "    # an upstream loss of 3 ticks that tickfand turns into a Gap\n"
    "    tickfan-feed send --to udp://127.0.0.1:9000 --topic md --count 100 --drop 50-52\n"
    "\n"
    "    # record once, replay as often as needed\n"
    "    tickfan-feed record --out day.tkfcap --topic md --rate 2000 --count 100000\n"
    "    tickfand --topic md --feed file:day.tkfcap\n"
    "    tickfan-feed replay day.tkfcap --to udp://127.0.0.1:9000 --speed max\n"
    "\n"
    "    # load: 100-byte bodies, 64 frames per datagram, as fast as possible, 10 s\n"
    "    tickfan-feed send --to udp://127.0.0.1:9000 --topic md --rate 0 --duration 10 \\\n"
    "        --body-size 100 --batch 64\n"
    "\n"
    "EXIT STATUS\n"
    "    0  done (also when stopped by SIGINT/SIGTERM)\n"
    "    1  the destination or a file failed (connection refused or closed, a\n"
    "       capture record that cannot be framed ...)\n"
    "    2  bad usage: unknown command or option, or a bad option value\n";

enum command { CMD_SEND = 1, CMD_RECORD = 2, CMD_REPLAY = 4 };

enum opt_id {
    O_TO,
    O_OUT,
    O_TOPIC,
    O_RATE,
    O_COUNT,
    O_DURATION,
    O_SYMBOLS,
    O_SEED,
    O_CHANNEL,
    O_START_SEQ,
    O_DROP,
    O_BODY_SIZE,
    O_BATCH,
    O_TTL,
    O_IFACE,
    O_SPEED,
};

/* Every option, and the commands that take it. */
static const struct {
    const char *name;
    enum opt_id id;
    unsigned commands;
} OPTIONS[] = {
    {"--to", O_TO, CMD_SEND | CMD_REPLAY},
    {"--out", O_OUT, CMD_RECORD},
    {"--topic", O_TOPIC, CMD_SEND | CMD_RECORD},
    {"--rate", O_RATE, CMD_SEND | CMD_RECORD},
    {"--count", O_COUNT, CMD_SEND | CMD_RECORD | CMD_REPLAY},
    {"--duration", O_DURATION, CMD_SEND},
    {"--symbols", O_SYMBOLS, CMD_SEND | CMD_RECORD},
    {"--seed", O_SEED, CMD_SEND | CMD_RECORD},
    {"--channel", O_CHANNEL, CMD_SEND | CMD_RECORD},
    {"--start-seq", O_START_SEQ, CMD_SEND | CMD_RECORD},
    {"--drop", O_DROP, CMD_SEND | CMD_RECORD},
    {"--body-size", O_BODY_SIZE, CMD_SEND | CMD_RECORD},
    {"--batch", O_BATCH, CMD_SEND | CMD_REPLAY},
    {"--ttl", O_TTL, CMD_SEND | CMD_REPLAY},
    {"--iface", O_IFACE, CMD_SEND | CMD_REPLAY},
    {"--speed", O_SPEED, CMD_REPLAY},
};

enum speed { SPEED_MAX, SPEED_RECORDED, SPEED_RATE };

struct options {
    enum command cmd;
    const char *cmd_name;
    const char *to, *out, *file, *topic, *symbols, *iface;
    uint64_t rate, count, seed, channel, start_seq, body_size, batch;
    int64_t duration_ns; /* 0: none */
    int ttl;
    enum speed speed;
    uint64_t speed_rate;
    struct feedgen_range drops[MAX_DROPS];
    size_t ndrops;
};

static volatile sig_atomic_t stop;

static void on_signal(int signo)
{
    (void)signo;
    stop = 1;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("tickfan-feed: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see 'tickfan-feed --help')\n", stderr);
    return -EINVAL;
}

/* A decimal integer in [min, max]. */
static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (s[0] < '0' || s[0] > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int opt_u64(const char *name, const char *value, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!parse_u64(value, min, max, out))
        return usage_error("%s: '%s' is not an integer in %" PRIu64 "..%" PRIu64, name, value, min,
                           max);
    return 0;
}

/* "SEQ,FIRST-LAST,..." */
static int parse_drops(struct options *o, const char *value)
{
    char buf[64];
    const char *p = value;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof(buf))
            return usage_error("--drop: bad item in '%s' (expected SEQ or FIRST-LAST, ...)", value);
        memcpy(buf, p, len);
        buf[len] = 0;
        char *dash = strchr(buf, '-');
        struct feedgen_range r;
        if (dash)
            *dash = 0;
        if (!parse_u64(buf, 1, UINT64_MAX - 1, &r.lo) ||
            (dash && !parse_u64(dash + 1, 1, UINT64_MAX - 1, &r.hi)))
            return usage_error("--drop: '%.*s' in '%s' is not a sequence number >= 1 or a range "
                               "FIRST-LAST",
                               (int)len, p, value);
        if (!dash)
            r.hi = r.lo;
        if (r.lo > r.hi)
            return usage_error("--drop: range '%.*s' in '%s' ends before it starts", (int)len, p,
                               value);
        if (o->ndrops == MAX_DROPS)
            return usage_error("--drop: more than %d items", MAX_DROPS);
        o->drops[o->ndrops++] = r;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static int set_option(struct options *o, enum opt_id id, const char *name, const char *v)
{
    uint64_t n;
    switch (id) {
    case O_TO:
        o->to = v;
        return 0;
    case O_OUT:
        if (!v[0])
            return usage_error("--out: empty path");
        o->out = v;
        return 0;
    case O_TOPIC:
        if (!v[0] || strlen(v) > TOPIC_NAME_MAX || !topics_name_valid(v, strlen(v)))
            return usage_error("--topic: '%s' is not a topic name ([A-Za-z0-9._-], 1-%d "
                               "characters)",
                               v, TOPIC_NAME_MAX);
        o->topic = v;
        return 0;
    case O_RATE:
        return opt_u64(name, v, 0, 100000000, &o->rate);
    case O_COUNT:
        return opt_u64(name, v, 1, UINT64_MAX, &o->count);
    case O_DURATION: {
        char *end;
        double sec = strtod(v, &end);
        if (end == v || *end || !(sec > 0) || sec > 1e6)
            return usage_error("--duration: '%s' is not a number of seconds in (0, 1000000]", v);
        o->duration_ns = (int64_t)(sec * 1e9);
        return 0;
    }
    case O_SYMBOLS:
        o->symbols = v;
        return 0;
    case O_SEED:
        return opt_u64(name, v, 0, UINT64_MAX, &o->seed);
    case O_CHANNEL:
        return opt_u64(name, v, 0, UINT32_MAX, &o->channel);
    case O_START_SEQ:
        return opt_u64(name, v, 1, UINT64_MAX / 2, &o->start_seq);
    case O_DROP:
        return parse_drops(o, v);
    case O_BODY_SIZE:
        return opt_u64(name, v, 0, FEEDGEN_BODY_MAX, &o->body_size);
    case O_BATCH:
        return opt_u64(name, v, 1, 65535, &o->batch);
    case O_TTL:
        if (opt_u64(name, v, 0, 255, &n))
            return -EINVAL;
        o->ttl = (int)n;
        return 0;
    case O_IFACE:
        o->iface = v;
        return 0;
    case O_SPEED:
        if (strcmp(v, "max") == 0) {
            o->speed = SPEED_MAX;
        } else if (strcmp(v, "recorded") == 0) {
            o->speed = SPEED_RECORDED;
        } else if (parse_u64(v, 1, 100000000, &o->speed_rate)) {
            o->speed = SPEED_RATE;
        } else {
            return usage_error("--speed: '%s' is not max, recorded or a rate in 1..100000000", v);
        }
        return 0;
    }
    return -EINVAL;
}

/* Returns 0, 1 when --help or --version was handled, or -EINVAL. */
static int parse_args(struct options *o, int argc, char **argv)
{
    *o = (struct options){
        .symbols = "AAPL,MSFT,GOOG,AMZN,NVDA,TSLA,META,JPM",
        .rate = 1000,
        .seed = 1,
        .start_seq = 1,
        .ttl = -1,
        .speed = SPEED_RECORDED,
    };
    if (argc < 2)
        return usage_error("missing command (send, record or replay)");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(MANUAL, stdout);
        return 1;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("tickfan-feed %s (feed format version %d)\n", TICKFAN_VERSION, FEEDFRAME_VERSION);
        return 1;
    }
    if (strcmp(cmd, "send") == 0)
        o->cmd = CMD_SEND;
    else if (strcmp(cmd, "record") == 0)
        o->cmd = CMD_RECORD;
    else if (strcmp(cmd, "replay") == 0)
        o->cmd = CMD_REPLAY;
    else
        return usage_error("unknown command '%s' (expected send, record or replay)", cmd);
    o->cmd_name = cmd;

    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(MANUAL, stdout);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (o->cmd == CMD_REPLAY && !o->file) {
                o->file = arg;
                continue;
            }
            return usage_error("%s: unexpected argument '%s'", cmd, arg);
        }
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        size_t k;
        for (k = 0; k < sizeof(OPTIONS) / sizeof(OPTIONS[0]); k++)
            if (strlen(OPTIONS[k].name) == nlen && strncmp(OPTIONS[k].name, arg, nlen) == 0)
                break;
        if (k == sizeof(OPTIONS) / sizeof(OPTIONS[0]))
            return usage_error("unknown option '%.*s'", (int)nlen, arg);
        const char *name = OPTIONS[k].name;
        if (!(OPTIONS[k].commands & o->cmd))
            return usage_error("%s: not an option of '%s'", name, cmd);
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value)
            return usage_error("%s needs a value", name);
        if (set_option(o, OPTIONS[k].id, name, value))
            return -EINVAL;
    }

    if (o->cmd == CMD_REPLAY && !o->file)
        return usage_error("replay: missing FILE");
    if (o->cmd != CMD_RECORD && !o->to)
        return usage_error("%s: missing --to DEST", cmd);
    if (o->cmd == CMD_RECORD && !o->out)
        return usage_error("record: missing --out FILE");
    if (o->cmd != CMD_REPLAY && !o->topic)
        return usage_error("%s: missing --topic T", cmd);
    if (o->cmd == CMD_RECORD && !o->count)
        return usage_error("record: missing --count N");
    return 0;
}

/* What the run loop sends next. */
struct run {
    const struct options *o;
    feedgen_t *gen;
    feedcap_reader_t *cap;
    feedout_t *out;
    int64_t start_ns, start_us;
    int64_t now_ns; /* the last clock reading */
    uint64_t produced, dropped, bad_topic, bad_text;
    int64_t first_rec_us;
    char err[512];
};

struct pending {
    int64_t due_ns;
    int64_t time_us;
    const uint8_t *frame;
    size_t len;
};

/* Generator: the next tick not dropped. Returns 1, or 0 at the end. */
static int next_generated(struct run *r, struct pending *p)
{
    const struct options *o = r->o;
    for (;;) {
        if (o->count && r->produced == o->count)
            return 0;
        uint64_t i = r->produced;
        if (o->cmd == CMD_RECORD) {
            p->due_ns = INT64_MIN;
            p->time_us = o->rate
                             ? r->start_us + (int64_t)((unsigned __int128)i * 1000000u / o->rate)
                             : clock_unix_us();
        } else if (o->rate) {
            p->due_ns = feedpace_due_ns(r->start_ns, o->rate, i);
            p->time_us = r->start_us + (p->due_ns - r->start_ns) / 1000;
            if (o->duration_ns && p->due_ns - r->start_ns >= o->duration_ns)
                return 0;
        } else {
            if (i % CLOCK_EVERY == 0)
                r->now_ns = clock_mono_ns();
            if (o->duration_ns && r->now_ns - r->start_ns >= o->duration_ns)
                return 0;
            p->due_ns = INT64_MIN;
            p->time_us = clock_unix_us();
        }
        r->produced++;
        p->len = feedgen_next(r->gen, p->time_us, &p->frame);
        if (p->len)
            return 1;
        r->dropped++;
    }
}

/* Capture file: the next record. Returns 1, 0 at the end, or -errno. */
static int next_recorded(struct run *r, struct pending *p)
{
    const struct options *o = r->o;
    if (o->count && r->produced == o->count)
        return 0;
    struct feedcap_record rec;
    int rc = feedcap_next(r->cap, &rec, r->err, sizeof(r->err));
    if (rc <= 0)
        return rc;
    if (r->produced == 0)
        r->first_rec_us = rec.recv_time_us;
    if (o->speed == SPEED_RATE)
        p->due_ns = feedpace_due_ns(r->start_ns, o->speed_rate, r->produced);
    else if (o->speed == SPEED_RECORDED)
        p->due_ns = r->start_ns + (rec.recv_time_us - r->first_rec_us) * 1000;
    else
        p->due_ns = INT64_MIN;
    p->time_us = rec.recv_time_us;
    p->frame = rec.frame;
    p->len = rec.len;
    r->bad_topic += rec.status == FEEDFRAME_BAD_TOPIC;
    r->bad_text += rec.status == FEEDFRAME_BAD_TEXT;
    r->produced++;
    return 1;
}

static int next_frame(struct run *r, struct pending *p)
{
    return r->gen ? next_generated(r, p) : next_recorded(r, p);
}

/* Sends every frame when it is due. Returns 0 or -errno (said in r->err). */
static int run_loop(struct run *r)
{
    struct pending p;
    size_t burst = 0;
    int rc = next_frame(r, &p);
    while (rc > 0 && !stop) {
        if (p.due_ns > r->now_ns) {
            r->now_ns = clock_mono_ns();
            if (p.due_ns > r->now_ns) {
                rc = feedout_flush(r->out, r->err, sizeof(r->err));
                if (rc)
                    return rc;
                burst = 0;
                feedpace_sleep_until(p.due_ns);
                rc = 1;
                continue;
            }
        }
        rc = feedout_put(r->out, p.frame, p.len, p.time_us, r->err, sizeof(r->err));
        if (rc)
            return rc;
        if (++burst == BURST_MAX) {
            rc = feedout_flush(r->out, r->err, sizeof(r->err));
            if (rc)
                return rc;
            burst = 0;
        }
        rc = next_frame(r, &p);
    }
    return rc < 0 ? rc : 0; /* the end, or stopped by a signal */
}

static void print_summary(const struct run *r, const struct feedout_stats *st, int64_t end_ns)
{
    const struct options *o = r->o;
    double secs = (double)(end_ns - r->start_ns) / 1e9;
    const char *dest = o->cmd == CMD_RECORD ? o->out : o->to;
    printf("msg=done command=%s %s=%s frames=%" PRIu64 " dropped=%" PRIu64, o->cmd_name,
           o->cmd == CMD_RECORD ? "out" : "to", dest, st->frames, r->dropped);
    if (o->cmd == CMD_REPLAY)
        printf(" bad_topic=%" PRIu64 " bad_text=%" PRIu64, r->bad_topic, r->bad_text);
    if (o->to && strncmp(o->to, "udp://", 6) == 0)
        printf(" datagrams=%" PRIu64 " send_errors=%" PRIu64, st->datagrams, st->send_errors);
    printf(" bytes=%" PRIu64 " seconds=%.3f frames_per_s=%.0f\n", st->bytes, secs,
           secs > 0 ? (double)st->frames / secs : 0.0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static struct options o;
    int rc = parse_args(&o, argc, argv);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: sleeps end early */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct run r = {.o = &o};
    int exit_code = EXIT_FAILED;
    if (o.cmd != CMD_REPLAY) {
        struct feedgen_options go = {
            .topic = o.topic,
            .symbols = o.symbols,
            .seed = o.seed,
            .channel = (uint32_t)o.channel,
            .start_seq = o.start_seq,
            .drops = o.drops,
            .ndrops = o.ndrops,
            .body_size = o.body_size,
        };
        rc = feedgen_create(&r.gen, &go);
        if (rc == -EINVAL) {
            usage_error("--symbols: '%s' is not 1-64 comma-separated symbols of 1-16 characters "
                        "[A-Za-z0-9._-]",
                        o.symbols);
            return EXIT_USAGE;
        }
        if (rc) {
            fprintf(stderr, "tickfan-feed: %s\n", strerror(-rc));
            return EXIT_FAILED;
        }
    } else {
        rc = feedcap_reader_open(&r.cap, o.file, r.err, sizeof(r.err));
        if (rc) {
            fprintf(stderr, "tickfan-feed: replay: %s\n", r.err);
            return rc == -EINVAL ? EXIT_USAGE : EXIT_FAILED;
        }
    }

    r.start_us = clock_unix_us();
    if (o.cmd == CMD_RECORD) {
        rc = feedout_open_file(&r.out, o.out, r.start_us, r.err, sizeof(r.err));
    } else {
        struct feedout_options fo = {
            .batch = o.batch, .ttl = o.ttl, .iface = o.iface, .notice = stderr, .stop = &stop};
        rc = feedout_open(&r.out, o.to, &fo, r.err, sizeof(r.err));
    }
    if (rc) {
        fprintf(stderr, "tickfan-feed: %s\n", r.err);
        exit_code = rc == -EINVAL ? EXIT_USAGE : rc == -EINTR ? 0 : EXIT_FAILED;
        goto out_source;
    }
    if (r.gen && feedgen_max_frame(r.gen) > feedout_max_frame(r.out)) {
        usage_error("--body-size: %" PRIu64 " makes frames of up to %zu bytes, larger than a "
                    "datagram of %zu (a larger --batch allows 65,507)",
                    o.body_size, feedgen_max_frame(r.gen), feedout_max_frame(r.out));
        exit_code = EXIT_USAGE;
        feedout_close(r.out, r.err, sizeof(r.err));
        goto out_source;
    }

    /* the schedule starts once the destination is ready */
    if (o.cmd != CMD_RECORD)
        r.start_us = clock_unix_us();
    r.start_ns = r.now_ns = clock_mono_ns();
    rc = run_loop(&r);
    if (!rc)
        rc = feedout_flush(r.out, r.err, sizeof(r.err));
    struct feedout_stats st;
    feedout_get_stats(r.out, &st);
    char cerr[512];
    int crc = feedout_close(r.out, cerr, sizeof(cerr));
    print_summary(&r, &st, clock_mono_ns());
    if (rc) {
        fprintf(stderr, "tickfan-feed: %s\n", r.err);
    } else if (crc) {
        fprintf(stderr, "tickfan-feed: %s\n", cerr);
        rc = crc;
    }
    exit_code = rc ? EXIT_FAILED : 0;

out_source:
    feedgen_destroy(r.gen);
    feedcap_reader_close(r.cap);
    return exit_code;
}
