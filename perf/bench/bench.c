/*
 * tickfan-bench: load generator and checker for the Watch stream, and for
 * many subscriptions per Subscribe stream (--rpc subscribe).
 *
 * Parses the options, runs benchrun_run() (see benchrun.h), with or without
 * the paced feed sender (benchfeed.h), prints a human summary on stdout and
 * optionally a JSON object (config, machine, figures),
 * and exits 0 when every check held, 1 when one failed, 2 on bad usage, 3
 * when the run could not take place. Main thread only; the workers live in
 * benchrun.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "benchrun.h"
#include "feedgen.h"
#include "events/v1/watcher.pb-c.h"

#define EXIT_CHECK_FAILED 1
#define EXIT_USAGE 2
#define EXIT_RUN_ERROR 3
#define MAX_LIST 64
#define MAX_FAILURES 16

static const char USAGE[] =
    "usage: tickfan-bench [options]\n"
    "\n"
    "Opens --streams Watch streams on one topic over --connections TCP\n"
    "connections, reads and checks every message, and reports throughput,\n"
    "order violations, gaps and latency. With --rpc subscribe, the same\n"
    "--streams subscriptions are carried --subs-per-stream to a Subscribe stream\n"
    "instead, each checked and measured as its own Watch stream would be.\n"
    "\n"
    "With --feed, it also drives the server: once every stream is connected and\n"
    "live, a sender thread sends --rate ticks/s to the server's feed on a fixed\n"
    "schedule, each frame stamped with its scheduled time (tick i at start +\n"
    "i/rate; a late sender sends at once and keeps the stamps). Latency is then\n"
    "now minus that scheduled time (Data.emitted_at_unix_micros), which corrects\n"
    "for coordinated omission; now minus the server's ingest time is reported\n"
    "too. Without --feed it only subscribes, and latency is now minus the ingest\n"
    "time (not corrected).\n"
    "\n"
    "  --server ADDR            server (default $TICKFAN_SERVER, else localhost:50051)\n"
    "  --topic NAME             topic (default sim)\n"
    "  --streams S              normal streams (default 1); with --rpc subscribe,\n"
    "                           subscriptions\n"
    "  --rpc watch|subscribe    one Watch stream per subscription (default), or\n"
    "                           ceil(S / K) Subscribe streams carrying them\n"
    "  --subs-per-stream K      with --rpc subscribe: at most K subscriptions per\n"
    "                           Subscribe stream, spread evenly (default 125)\n"
    "  --client grpc|h2         what reads the Watch or Subscribe streams: gRPC C\n"
    "                           core (default), or HTTP/2 frames parsed in place\n"
    "                           (libnghttp2), which costs the bench far less CPU per\n"
    "                           message and hands the flow-control window back in\n"
    "                           large steps; with h2 connection m belongs to thread\n"
    "                           m mod T\n"
    "  --server-pid PID         also report the CPU time of process PID (the server,\n"
    "                           on this host) over the run window\n"
    "  --connections M          connections for the normal streams, which are spread\n"
    "                           over them round-robin (default 1)\n"
    "  --threads T              client threads, one completion queue each (default 1)\n"
    "  --duration SEC           run window once all streams are connected (default 10;\n"
    "                           with --messages, a time limit: default 300)\n"
    "  --messages N             each normal stream reads N Data events, then ends\n"
    "  --kinds K,...            kinds filter (e.g. quote,trade)\n"
    "  --keys S,...             keys filter (e.g. AAPL,MSFT)\n"
    "  --start live|earliest    start position (default live)\n"
    "  --overflow P             overflow policy of the normal streams:\n"
    "                           default|drop|disconnect|conflate (default: default)\n"
    "  --stall K                K more Watch streams, on connections of their own, that\n"
    "                           read their first message, then stop reading (slow\n"
    "                           consumers)\n"
    "  --stall-resume-after SEC the stalled streams read again SEC after the run\n"
    "                           window opens (default: never)\n"
    "  --stall-overflow P,...   overflow policy per stalled stream, cycled\n"
    "                           (default: --overflow)\n"
    "  --stall-connections N    connections for the stalled streams, which get\n"
    "                           their own, with BDP probing off (default min(K,16))\n"
    "  --connect-timeout SEC    time for all streams to connect (default 30)\n"
    "  --ramp SEC               open the streams evenly over SEC (default 0)\n"
    "  --precision BITS         histogram precision: error <= 2^-BITS (default 7)\n"
    "  --json PATH              also write the results as JSON to PATH (- = stdout)\n"
    "\n"
    "Feed (paced sender; the frames of feed/FORMAT.md, topic --topic):\n"
    "  --feed udp://HOST:PORT   send to this feed (also tcp://HOST:PORT, to a\n"
    "                           tcp-listen feed); default: subscribe only\n"
    "  --rate N                 ticks per second (default 1000)\n"
    "  --payload-bytes N        body size of each tick (default 100; 0 = the bare\n"
    "                           encoded Tick)\n"
    "  --feed-batch K           at most K frames per datagram; ticks due at the\n"
    "                           same time share datagrams (default 0: as many as\n"
    "                           fit 1,472 bytes)\n"
    "  --feed-quantum-us US     the sender wakes at most once per US microseconds\n"
    "                           and sends every tick due by then (stamped with its\n"
    "                           due time, so the wait counts in its latency):\n"
    "                           fewer, fuller datagrams at high rates (default 0:\n"
    "                           a wake for every due time)\n"
    "  --feed-channel C         the frames' channel (default 1); source_seq counts\n"
    "                           1, 2, 3 ... so the server sees any loss as a Gap\n"
    "  --drain SEC              after the window, the feed stops and the streams\n"
    "                           get up to SEC to receive every tick sent, which is\n"
    "                           still measured (default 2)\n"
    "  --help\n"
    "\n"
    "Exit: 0 every check held; 1 a check failed (a normal stream saw an order\n"
    "violation, a Gap, a malformed message or an early end; a stream failed to\n"
    "connect; a stalled stream saw an order violation no Gap explains; --messages\n"
    "not reached); 2 bad usage; 3 the run could not take place.\n";

struct options {
    struct benchrun_config cfg;
    struct benchfeed_config feed;
    bool feed_opt_set;
    char *kinds_buf, *keys_buf;
    char *kinds[MAX_LIST], *keys[MAX_LIST];
    int stall_overflow[MAX_LIST];
    bool duration_set;
    bool stall_connections_set;
    const char *json_path;
};

static const char *const POLICY_NAMES[] = {"default", "drop", "conflate", "disconnect"};
static const char *const STATUS_NAMES[BENCHRUN_STATUS_MAX] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
static const char *const GAP_REASON_NAMES[] = {"GAP_UNSPECIFIED", "GAP_SLOW_CONSUMER",
                                               "GAP_RETENTION", "GAP_UPSTREAM_LOSS"};

static const char *status_name(int code)
{
    if (code < 0)
        return "-";
    return code < BENCHRUN_STATUS_MAX ? STATUS_NAMES[code] : "?";
}

static const char *gap_reason_name(uint32_t r)
{
    return r < 4 ? GAP_REASON_NAMES[r] : "?";
}

static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "tickfan-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(tickfan-bench --help for the options)\n");
    exit(EXIT_USAGE);
}

static uint64_t parse_u64(const char *opt, const char *v, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || x < min || x > max)
        usage_error("%s '%s': expected an integer in %" PRIu64 "..%" PRIu64, opt, v, min, max);
    return x;
}

static double parse_seconds(const char *opt, const char *v, double min)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < min || x > 86400)
        usage_error("%s '%s': expected seconds in %g..86400", opt, v, min);
    return x;
}

static int parse_policy(const char *opt, const char *v)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(v, POLICY_NAMES[i]) == 0)
            return i;
    usage_error("%s '%s': expected default, drop, disconnect or conflate", opt, v);
}

/* An option with two values: va for a, vb for b. */
static int parse_either(const char *opt, const char *v, const char *a, int va, const char *b,
                        int vb)
{
    if (strcmp(v, a) == 0)
        return va;
    if (strcmp(v, b) == 0)
        return vb;
    usage_error("%s '%s': expected %s or %s", opt, v, a, b);
}

/* Splits a comma-separated list in place; returns the number of items. */
static size_t split_list(const char *opt, char *buf, char **items)
{
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_LIST)
            usage_error("%s: more than %d items", opt, MAX_LIST);
        items[n++] = tok;
    }
    if (n == 0)
        usage_error("%s: empty list", opt);
    return n;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    enum {
        O_SERVER = 256,
        O_TOPIC,
        O_STREAMS,
        O_CONNECTIONS,
        O_THREADS,
        O_DURATION,
        O_MESSAGES,
        O_KINDS,
        O_KEYS,
        O_START,
        O_OVERFLOW,
        O_STALL,
        O_STALL_RESUME,
        O_STALL_OVERFLOW,
        O_STALL_CONNECTIONS,
        O_CONNECT_TIMEOUT,
        O_RAMP,
        O_PRECISION,
        O_JSON,
        O_FEED,
        O_RATE,
        O_PAYLOAD,
        O_FEED_BATCH,
        O_FEED_QUANTUM,
        O_FEED_CHANNEL,
        O_DRAIN,
        O_RPC,
        O_SUBS_PER_STREAM,
        O_CLIENT,
        O_SERVER_PID,
        O_HELP,
    };
    static const struct option longs[] = {
        {"server", required_argument, NULL, O_SERVER},
        {"topic", required_argument, NULL, O_TOPIC},
        {"streams", required_argument, NULL, O_STREAMS},
        {"connections", required_argument, NULL, O_CONNECTIONS},
        {"threads", required_argument, NULL, O_THREADS},
        {"duration", required_argument, NULL, O_DURATION},
        {"messages", required_argument, NULL, O_MESSAGES},
        {"kinds", required_argument, NULL, O_KINDS},
        {"keys", required_argument, NULL, O_KEYS},
        {"start", required_argument, NULL, O_START},
        {"overflow", required_argument, NULL, O_OVERFLOW},
        {"stall", required_argument, NULL, O_STALL},
        {"stall-resume-after", required_argument, NULL, O_STALL_RESUME},
        {"stall-overflow", required_argument, NULL, O_STALL_OVERFLOW},
        {"stall-connections", required_argument, NULL, O_STALL_CONNECTIONS},
        {"connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT},
        {"ramp", required_argument, NULL, O_RAMP},
        {"precision", required_argument, NULL, O_PRECISION},
        {"json", required_argument, NULL, O_JSON},
        {"feed", required_argument, NULL, O_FEED},
        {"rate", required_argument, NULL, O_RATE},
        {"payload-bytes", required_argument, NULL, O_PAYLOAD},
        {"feed-batch", required_argument, NULL, O_FEED_BATCH},
        {"feed-quantum-us", required_argument, NULL, O_FEED_QUANTUM},
        {"feed-channel", required_argument, NULL, O_FEED_CHANNEL},
        {"drain", required_argument, NULL, O_DRAIN},
        {"rpc", required_argument, NULL, O_RPC},
        {"subs-per-stream", required_argument, NULL, O_SUBS_PER_STREAM},
        {"client", required_argument, NULL, O_CLIENT},
        {"server-pid", required_argument, NULL, O_SERVER_PID},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    struct benchrun_config *c = &o->cfg;
    const char *env = getenv("TICKFAN_SERVER");
    c->server = env && env[0] ? env : "localhost:50051";
    c->topic = "sim";
    c->streams = 1;
    c->connections = 1;
    c->threads = 1;
    c->duration_s = 10;
    c->start = EVENTS__V1__START_POSITION__START_LIVE;
    c->overflow = EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DEFAULT;
    c->stall_resume_after_s = -1;
    c->connect_timeout_s = 30;
    c->hist_precision = 7;
    c->drain_s = 2;
    c->rpc = BENCHRUN_RPC_WATCH;
    c->subs_per_stream = 125;
    bool subs_set = false;
    struct benchfeed_config *fd = &o->feed;
    fd->rate = 1000;
    fd->payload_bytes = 100;
    fd->channel = 1;
    uint64_t stall = 0;

    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        switch (opt) {
        case O_SERVER:
            c->server = optarg;
            break;
        case O_TOPIC:
            c->topic = optarg;
            break;
        case O_STREAMS:
            c->streams = (uint32_t)parse_u64("--streams", optarg, 1, 1000000);
            break;
        case O_CONNECTIONS:
            c->connections = (uint32_t)parse_u64("--connections", optarg, 1, 100000);
            break;
        case O_THREADS:
            c->threads = (uint32_t)parse_u64("--threads", optarg, 1, 256);
            break;
        case O_DURATION:
            c->duration_s = parse_seconds("--duration", optarg, 0.001);
            o->duration_set = true;
            break;
        case O_MESSAGES:
            c->messages = parse_u64("--messages", optarg, 1, UINT64_MAX);
            break;
        case O_KINDS:
            free(o->kinds_buf);
            o->kinds_buf = strdup(optarg);
            c->n_kinds = split_list("--kinds", o->kinds_buf, o->kinds);
            c->kinds = o->kinds;
            break;
        case O_KEYS:
            free(o->keys_buf);
            o->keys_buf = strdup(optarg);
            c->n_keys = split_list("--keys", o->keys_buf, o->keys);
            c->keys = o->keys;
            break;
        case O_START:
            c->start =
                parse_either("--start", optarg, "live", EVENTS__V1__START_POSITION__START_LIVE,
                             "earliest", EVENTS__V1__START_POSITION__START_EARLIEST);
            break;
        case O_OVERFLOW:
            c->overflow = parse_policy("--overflow", optarg);
            break;
        case O_STALL:
            stall = parse_u64("--stall", optarg, 0, 1000000);
            break;
        case O_STALL_RESUME:
            c->stall_resume_after_s = parse_seconds("--stall-resume-after", optarg, 0);
            break;
        case O_STALL_OVERFLOW: {
            char *buf = strdup(optarg), *items[MAX_LIST];
            size_t n = split_list("--stall-overflow", buf, items);
            for (size_t i = 0; i < n; i++)
                o->stall_overflow[i] = parse_policy("--stall-overflow", items[i]);
            c->stall_overflow = o->stall_overflow;
            c->n_stall_overflow = n;
            free(buf);
            break;
        }
        case O_STALL_CONNECTIONS:
            c->stall_connections = (uint32_t)parse_u64("--stall-connections", optarg, 1, 100000);
            o->stall_connections_set = true;
            break;
        case O_CONNECT_TIMEOUT:
            c->connect_timeout_s = parse_seconds("--connect-timeout", optarg, 0.001);
            break;
        case O_RAMP:
            c->ramp_s = parse_seconds("--ramp", optarg, 0);
            break;
        case O_PRECISION:
            c->hist_precision =
                (unsigned)parse_u64("--precision", optarg, HIST_PRECISION_MIN, HIST_PRECISION_MAX);
            break;
        case O_JSON:
            o->json_path = optarg;
            break;
        case O_FEED:
            fd->spec = optarg;
            break;
        case O_RATE:
            fd->rate = parse_u64("--rate", optarg, 1, 100000000);
            o->feed_opt_set = true;
            break;
        case O_PAYLOAD:
            fd->payload_bytes = (size_t)parse_u64("--payload-bytes", optarg, 0, FEEDGEN_BODY_MAX);
            o->feed_opt_set = true;
            break;
        case O_FEED_BATCH:
            fd->batch = (size_t)parse_u64("--feed-batch", optarg, 1, 65535);
            o->feed_opt_set = true;
            break;
        case O_FEED_QUANTUM:
            fd->quantum_ns = (int64_t)parse_u64("--feed-quantum-us", optarg, 0, 1000000) * 1000;
            o->feed_opt_set = true;
            break;
        case O_FEED_CHANNEL:
            fd->channel = (uint32_t)parse_u64("--feed-channel", optarg, 0, UINT32_MAX);
            o->feed_opt_set = true;
            break;
        case O_DRAIN:
            c->drain_s = parse_seconds("--drain", optarg, 0);
            o->feed_opt_set = true;
            break;
        case O_RPC:
            c->rpc = parse_either("--rpc", optarg, "watch", BENCHRUN_RPC_WATCH, "subscribe",
                                  BENCHRUN_RPC_SUBSCRIBE);
            break;
        case O_SUBS_PER_STREAM:
            c->subs_per_stream = (uint32_t)parse_u64("--subs-per-stream", optarg, 1, 1000000);
            subs_set = true;
            break;
        case O_SERVER_PID:
            c->server_pid = (int)parse_u64("--server-pid", optarg, 1, 4194304);
            break;
        case O_CLIENT:
            c->client = parse_either("--client", optarg, "grpc", BENCHRUN_CLIENT_GRPC, "h2",
                                     BENCHRUN_CLIENT_H2);
            if (c->client == BENCHRUN_CLIENT_H2 && !benchrun_has_h2())
                usage_error("--client h2: this tickfan-bench was built without libnghttp2 "
                            "(install libnghttp2-dev and rebuild)");
            break;
        case O_HELP:
            fputs(USAGE, stdout);
            exit(0);
        case ':':
            usage_error("%s needs a value", name);
        default:
            usage_error("unknown option '%s'", name);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (o->feed_opt_set && !fd->spec)
        usage_error(
            "--rate, --payload-bytes, --feed-batch, --feed-channel and --drain need --feed");
    if (fd->spec) {
        fd->topic = c->topic;
        c->feed = fd;
    }
    if (subs_set && c->rpc != BENCHRUN_RPC_SUBSCRIBE)
        usage_error("--subs-per-stream needs --rpc subscribe");
    if (stall && c->rpc == BENCHRUN_RPC_SUBSCRIBE)
        usage_error("--stall: the stalled streams are Watch streams; not with --rpc subscribe");
    if (stall + c->streams > 1000000)
        usage_error("--streams plus --stall: more than 1000000 streams");
    /* --stall adds slow consumers to the --streams normal ones */
    c->stall = (uint32_t)stall;
    c->streams += c->stall;
    if (c->stall && !o->stall_connections_set)
        c->stall_connections = c->stall < 16 ? c->stall : 16;
    if (c->messages && !o->duration_set)
        c->duration_s = 300;
    if (c->stall && c->stall_resume_after_s >= c->duration_s && !c->messages)
        usage_error("--stall-resume-after %g is not before the end of --duration %g",
                    c->stall_resume_after_s, c->duration_s);
}

/* ---- machine ------------------------------------------------------------- */

struct machine {
    long nproc;
    char kernel[160];
    char cpu_model[160];
};

static void machine_read(struct machine *m)
{
    memset(m, 0, sizeof(*m));
    m->nproc = sysconf(_SC_NPROCESSORS_ONLN);
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(m->kernel, sizeof(m->kernel), "%s %s", u.sysname, u.release);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        colon++;
        while (*colon == ' ' || *colon == '\t')
            colon++;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(m->cpu_model, sizeof(m->cpu_model), "%s", colon);
        break;
    }
    fclose(f);
}

/* ---- verdict ------------------------------------------------------------- */

struct verdict {
    char reasons[MAX_FAILURES][200];
    int n;
};

static void fail(struct verdict *v, const char *fmt, ...)
{
    if (v->n == MAX_FAILURES)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->reasons[v->n++], sizeof(v->reasons[0]), fmt, ap);
    va_end(ap);
}

static void judge(const struct benchrun_config *c, const struct benchrun_results *r,
                  struct verdict *v)
{
    uint64_t order = r->order_gaps + r->order_repeats + r->order_reorders + r->gap_mismatches;
    if (r->failed)
        fail(v, "%u of %u streams failed to connect", r->failed, c->streams);
    if (r->ended_early)
        fail(v, "%u normal streams were ended by the server during the run", r->ended_early);
    if (c->messages && r->incomplete)
        fail(v, "%u normal streams did not receive %" PRIu64 " Data events", r->incomplete,
             c->messages);
    if (order)
        fail(v, "%" PRIu64 " order violations on normal streams", order);
    if (r->gaps)
        fail(v, "%" PRIu64 " Gap events on normal streams (%" PRIu64 " events missed)", r->gaps,
             r->gap_missed);
    if (r->bad_messages)
        fail(v, "%" PRIu64 " malformed messages", r->bad_messages);
    if (r->unknown_ids)
        fail(v, "%" PRIu64 " deliveries for ids no subscription of their stream has",
             r->unknown_ids);
    if (r->after_end)
        fail(v, "%" PRIu64 " deliveries for subscriptions after their SubscriptionEnd",
             r->after_end);
    if (r->fed && r->feed.error)
        fail(v, "the feed sender stopped: %s", r->feed.error_text);
    else if (c->feed && (!r->fed || r->feed.ticks == 0))
        fail(v, "the feed sent no tick");
    for (size_t i = 0; i < r->n_stalled; i++)
        if (r->stalled[i].violations)
            fail(v, "stalled stream %u: %" PRIu64 " order violations no Gap explains",
                 r->stalled[i].index, r->stalled[i].violations);
}

/* ---- human summary ------------------------------------------------------- */

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void print_latency(FILE *out, const char *title, const hist_t *h, uint64_t negative,
                          const char *from)
{
    fprintf(out, "%s, %" PRIu64 " samples\n", title, hist_count(h));
    fprintf(out,
            "            p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us  "
            "(mean %.1f us, error <= %.2f %%)\n",
            us(hist_value_at(h, 50)), us(hist_value_at(h, 90)), us(hist_value_at(h, 99)),
            us(hist_value_at(h, 99.9)), us(hist_max(h)), hist_mean(h) / 1000.0,
            100.0 * hist_relative_error(h));
    if (negative)
        fprintf(out, "            %" PRIu64 " samples before %s (clock step?)\n", negative, from);
}

static void print_summary(FILE *out, const struct benchrun_config *c,
                          const struct benchrun_results *r, const struct verdict *v)
{
    fprintf(out, "tickfan-bench: %s topic=%s streams=%u (%u normal, %u stalled) connections=%u",
            c->server, c->topic, c->streams, r->normal_streams, c->stall, c->connections);
    if (c->stall)
        fprintf(out, "+%u", c->stall_connections);
    fprintf(out, " threads=%u start=%s", c->threads,
            c->start == EVENTS__V1__START_POSITION__START_LIVE ? "live" : "earliest");
    if (c->rpc == BENCHRUN_RPC_SUBSCRIBE)
        fprintf(out, " rpc=subscribe subs-per-stream=%u", c->subs_per_stream);
    fprintf(out, "\n");
    if (c->rpc == BENCHRUN_RPC_SUBSCRIBE)
        fprintf(out,
                "subscribe:  %u subscriptions over %u Subscribe streams (%u ended before any "
                "message); a \"stream\" below is a subscription\n",
                r->normal_streams, r->grpc_streams, r->grpc_streams_failed);
    fprintf(out, "streams:    %u connected, %u failed, %u ended early (%.2f s to connect)\n",
            r->connected, r->failed, r->ended_early, r->connect_s);
    if (r->first_failure[0])
        fprintf(out, "            first: %s\n", r->first_failure);
    double rate = r->window_s > 0 ? (double)r->data_window / r->window_s : 0;
    fprintf(out,
            "messages:   %" PRIu64 " Data in the %.2f s window: %.0f msgs/s (%.1f per stream)\n",
            r->data_window, r->window_s, rate, r->normal_streams ? rate / r->normal_streams : 0.0);
    fprintf(out, "per stream: min %" PRIu64 " / avg %.1f / max %" PRIu64 " Data (whole run)\n",
            r->data_min, r->data_avg, r->data_max);
    if (r->seq_streams)
        fprintf(out,
                "seq:        first %" PRIu64 "..%" PRIu64 ", last %" PRIu64 "..%" PRIu64
                " over %u unfiltered streams\n",
                r->first_seq_min, r->first_seq_max, r->last_seq_min, r->last_seq_max,
                r->seq_streams);
    fprintf(out,
            "order:      %" PRIu64 " gaps, %" PRIu64 " repeats, %" PRIu64 " reorders, %" PRIu64
            " Gap/seq mismatches, %" PRIu64 " malformed\n",
            r->order_gaps, r->order_repeats, r->order_reorders, r->gap_mismatches, r->bad_messages);
    if (r->first_violation[0])
        fprintf(out, "            first: %s\n", r->first_violation);
    double wire_rate = r->window_s > 0 ? (double)r->grpc_messages_window / r->window_s : 0;
    fprintf(out,
            "wire:       %" PRIu64 " gRPC messages (%" PRIu64 " in the window: %.0f/s), %" PRIu64
            " bytes; %" PRIu64 " delivery records, %" PRIu64 " deliveries of events: "
            "%.2f deliveries per message, %.2f per record (at most %u)\n",
            r->grpc_messages, r->grpc_messages_window, wire_rate, r->grpc_message_bytes,
            r->delivery_records, r->deliveries,
            r->grpc_messages ? (double)r->deliveries / (double)r->grpc_messages : 0.0,
            r->delivery_records ? (double)r->deliveries / (double)r->delivery_records : 0.0,
            r->max_ids_per_record);
    if (c->rpc == BENCHRUN_RPC_SUBSCRIBE)
        fprintf(out,
                "            %" PRIu64 " SubscriptionEnd deliveries, %" PRIu64
                " for unknown ids, %" PRIu64 " after an end\n",
                r->subscription_ends, r->unknown_ids, r->after_end);
    fprintf(out,
            "events:     %" PRIu64 " Gap (%" PRIu64 " missed), %" PRIu64 " heartbeats, %" PRIu64
            " EndOfBacklog, %" PRIu64 " snapshot values\n",
            r->gaps, r->gap_missed, r->heartbeats, r->end_of_backlogs, r->snapshots);
    if (r->fed) {
        const struct benchfeed_stats *f = &r->feed;
        fprintf(out,
                "feed:       %s: %" PRIu64 " ticks sent in %.2f s (%.0f ticks/s, asked %" PRIu64
                "), %" PRIu64 " datagrams, %" PRIu64 " send errors\n",
                c->feed->spec, f->ticks, f->send_s,
                f->send_s > 0 ? (double)f->ticks / f->send_s : 0.0, c->feed->rate, f->datagrams,
                f->send_errors);
        fprintf(out,
                "            behind schedule: max %.1f us, %" PRIu64
                " ticks sent more than %.0f ms "
                "late (sender at nice %d)\n",
                us((uint64_t)(f->max_lag_ns > 0 ? f->max_lag_ns : 0)), f->late_ticks,
                BENCHFEED_LATE_NS / 1e6, f->nice);
        fprintf(out,
                "            %" PRIu64
                " received on normal streams; after %.2f s of drain, %" PRIu64
                " not yet received (in the latency figures at their age then)\n",
                r->feed_received, r->drain_s, r->feed_undelivered);
        if (f->error)
            fprintf(out, "            sender stopped: %s\n", f->error_text);
        print_latency(out,
                      "latency:    now - scheduled emit time (emitted_at_unix_micros), ticks "
                      "this run sent, live normal streams (corrected for coordinated omission)",
                      r->latency_ns, r->latency_negative, "their scheduled emit time");
        print_latency(out,
                      "            now - ingest time (ingested_at_unix_micros), the same "
                      "ticks",
                      r->latency_ingest_ns, r->latency_ingest_negative, "their ingest time");
    } else {
        print_latency(out,
                      "latency:    now - ingest time, live Data of normal streams in the "
                      "window (not corrected for coordinated omission)",
                      r->latency_ns, r->latency_negative, "their ingest time");
    }
    fprintf(out, "client cpu: %.2f s user + %.2f s sys in the window (%.0f %% of one core)\n",
            r->cpu_user_s, r->cpu_sys_s,
            r->window_s > 0 ? 100.0 * (r->cpu_user_s + r->cpu_sys_s) / r->window_s : 0.0);
    if (r->server_cpu_read) {
        double srv = r->server_cpu_user_s + r->server_cpu_sys_s;
        fprintf(out,
                "server cpu: %.2f s user + %.2f s sys in the window (%.0f %% of one core; "
                "%.3f s per million Data)\n",
                r->server_cpu_user_s, r->server_cpu_sys_s,
                r->window_s > 0 ? 100.0 * srv / r->window_s : 0.0,
                r->data_window ? srv / (double)r->data_window * 1e6 : 0.0);
    }
    for (size_t i = 0; i < r->n_stalled; i++) {
        const struct benchrun_stalled *s = &r->stalled[i];
        fprintf(out,
                "stalled %u (%s): %s; %" PRIu64 " Data before resume, %" PRIu64
                " before the first Gap, %" PRIu64 " in all; %" PRIu64 " Gap",
                s->index, POLICY_NAMES[s->overflow], s->resumed ? "resumed" : "never resumed",
                s->data_before_resume, s->data_before_gap, s->data, s->gaps);
        if (s->gaps)
            fprintf(out, " (first: %s missed %" PRIu64 ", seq jump %" PRIu64 ")",
                    gap_reason_name(s->first_gap_reason), s->first_gap_missed, s->first_gap_jump);
        if (s->ended)
            fprintf(out, "; ended %s \"%s\" tickfan-cursor=%s", status_name(s->status), s->details,
                    s->cursor_trailer[0] ? s->cursor_trailer : "-");
        fprintf(out, "\n");
    }
    if (v->n == 0) {
        fprintf(out, "RESULT: PASS\n");
    } else {
        fprintf(out, "RESULT: FAIL\n");
        for (int i = 0; i < v->n; i++)
            fprintf(out, "  - %s\n", v->reasons[i]);
    }
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_list(FILE *f, char **items, size_t n)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        json_str(f, items[i]);
    }
    fputc(']', f);
}

static void json_latency(FILE *f, const char *from, bool corrected, const hist_t *h,
                         uint64_t negative, uint64_t censored)
{
    fprintf(f,
            "{\"measured_from\":\"%s\",\"coordinated_omission_corrected\":%s,\"count\":%" PRIu64
            ",\"min\":%.1f,\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
            "\"max\":%.1f,\"negative\":%" PRIu64 ",\"censored\":%" PRIu64 ",\"relative_error\":%g}",
            from, corrected ? "true" : "false", hist_count(h), us(hist_min(h)),
            hist_mean(h) / 1000.0, us(hist_value_at(h, 50)), us(hist_value_at(h, 90)),
            us(hist_value_at(h, 99)), us(hist_value_at(h, 99.9)), us(hist_max(h)), negative,
            censored, hist_relative_error(h));
}

static void write_json(FILE *f, const struct benchrun_config *c, const struct benchrun_results *r,
                       const struct machine *m, const struct verdict *v)
{
    double rate = r->window_s > 0 ? (double)r->data_window / r->window_s : 0;
    fprintf(f, "{\"tool\":\"tickfan-bench\",\"version\":\"%s\",\n", TICKFAN_VERSION);
    fprintf(f, "\"config\":{\"server\":");
    json_str(f, c->server);
    fprintf(f, ",\"topic\":");
    json_str(f, c->topic);
    fprintf(f,
            ",\"streams\":%u,\"normal_streams\":%u,\"connections\":%u,\"threads\":%u,"
            "\"duration_s\":%g,\"messages\":%" PRIu64 ",\"kinds\":",
            c->streams, r->normal_streams, c->connections, c->threads, c->duration_s, c->messages);
    json_list(f, c->kinds, c->n_kinds);
    fprintf(f, ",\"keys\":");
    json_list(f, c->keys, c->n_keys);
    fprintf(f,
            ",\"start\":\"%s\",\"overflow\":\"%s\",\"stall\":%u,\"stall_resume_after_s\":%g,"
            "\"stall_connections\":%u,\"connect_timeout_s\":%g,\"ramp_s\":%g,"
            "\"hist_precision\":%u,\"rpc\":\"%s\",\"subs_per_stream\":%u,\"client\":\"%s\","
            "\"feed\":",
            c->start == EVENTS__V1__START_POSITION__START_LIVE ? "live" : "earliest",
            POLICY_NAMES[c->overflow], c->stall, c->stall_resume_after_s, c->stall_connections,
            c->connect_timeout_s, c->ramp_s, c->hist_precision,
            c->rpc == BENCHRUN_RPC_SUBSCRIBE ? "subscribe" : "watch",
            c->rpc == BENCHRUN_RPC_SUBSCRIBE ? c->subs_per_stream : 1,
            c->client == BENCHRUN_CLIENT_H2 ? "h2" : "grpc");
    if (c->feed) {
        fprintf(f, "{\"spec\":");
        json_str(f, c->feed->spec);
        fprintf(f,
                ",\"rate\":%" PRIu64 ",\"payload_bytes\":%zu,\"batch\":%zu,\"channel\":%u,"
                "\"quantum_us\":%" PRId64 ",\"drain_s\":%g}",
                c->feed->rate, c->feed->payload_bytes, c->feed->batch, c->feed->channel,
                c->feed->quantum_ns / 1000, c->drain_s);
    } else {
        fprintf(f, "null");
    }
    fprintf(f, "},\n");
    fprintf(f, "\"machine\":{\"nproc\":%ld,\"kernel\":", m->nproc);
    json_str(f, m->kernel);
    fprintf(f, ",\"cpu_model\":");
    json_str(f, m->cpu_model);
    fprintf(f, "},\n\"results\":{\n");
    fprintf(f,
            "\"streams\":{\"requested\":%u,\"normal\":%u,\"stalled\":%u,\"connected\":%u,"
            "\"failed\":%u,\"ended_early\":%u,\"incomplete\":%u},\n",
            c->streams, r->normal_streams, c->stall, r->connected, r->failed, r->ended_early,
            r->incomplete);
    fprintf(f, "\"failure_statuses\":{");
    bool first = true;
    for (int i = 0; i < BENCHRUN_STATUS_MAX; i++) {
        if (!r->status_counts[i])
            continue;
        fprintf(f, "%s\"%s\":%u", first ? "" : ",", STATUS_NAMES[i], r->status_counts[i]);
        first = false;
    }
    fprintf(f, "},\"first_failure\":");
    json_str(f, r->first_failure);
    fprintf(f, ",\n\"connect_s\":%.3f,\"window_s\":%.3f,\n", r->connect_s, r->window_s);
    fprintf(f,
            "\"messages\":{\"total\":%" PRIu64 ",\"window\":%" PRIu64
            ",\"msgs_per_s\":%.1f,\"per_stream_msgs_per_s\":%.2f,\"per_stream_min\":%" PRIu64
            ",\"per_stream_avg\":%.2f,\"per_stream_max\":%" PRIu64 "},\n",
            r->data_total, r->data_window, rate, r->normal_streams ? rate / r->normal_streams : 0.0,
            r->data_min, r->data_avg, r->data_max);
    fprintf(f,
            "\"wire\":{\"rpc\":\"%s\",\"grpc_streams\":%u,\"grpc_streams_failed\":%u,"
            "\"grpc_messages\":%" PRIu64 ",\"grpc_messages_window\":%" PRIu64
            ",\"grpc_messages_per_s\":%.1f,\"bytes\":%" PRIu64 ",\"delivery_records\":%" PRIu64
            ",\"deliveries\":%" PRIu64 ",\"deliveries_per_message\":%.3f,"
            "\"deliveries_per_record\":%.3f,\"max_ids_per_record\":%u,"
            "\"subscription_ends\":%" PRIu64 ",\"unknown_ids\":%" PRIu64 ",\"after_end\":%" PRIu64
            "},\n",
            c->rpc == BENCHRUN_RPC_SUBSCRIBE ? "subscribe" : "watch", r->grpc_streams,
            r->grpc_streams_failed, r->grpc_messages, r->grpc_messages_window,
            r->window_s > 0 ? (double)r->grpc_messages_window / r->window_s : 0.0,
            r->grpc_message_bytes, r->delivery_records, r->deliveries,
            r->grpc_messages ? (double)r->deliveries / (double)r->grpc_messages : 0.0,
            r->delivery_records ? (double)r->deliveries / (double)r->delivery_records : 0.0,
            r->max_ids_per_record, r->subscription_ends, r->unknown_ids, r->after_end);
    fprintf(f,
            "\"events\":{\"gaps\":%" PRIu64 ",\"gap_missed\":%" PRIu64 ",\"heartbeats\":%" PRIu64
            ",\"end_of_backlogs\":%" PRIu64 ",\"snapshots\":%" PRIu64 "},\n",
            r->gaps, r->gap_missed, r->heartbeats, r->end_of_backlogs, r->snapshots);
    fprintf(f,
            "\"order_violations\":{\"gaps\":%" PRIu64 ",\"repeats\":%" PRIu64
            ",\"reorders\":%" PRIu64 ",\"gap_mismatches\":%" PRIu64 ",\"malformed\":%" PRIu64
            ",\"first\":",
            r->order_gaps, r->order_repeats, r->order_reorders, r->gap_mismatches, r->bad_messages);
    json_str(f, r->first_violation);
    fprintf(f, "},\n");
    fprintf(f,
            "\"seq\":{\"streams\":%u,\"first_min\":%" PRIu64 ",\"first_max\":%" PRIu64
            ",\"last_min\":%" PRIu64 ",\"last_max\":%" PRIu64 "},\n",
            r->seq_streams, r->first_seq_min, r->first_seq_max, r->last_seq_min, r->last_seq_max);
    fprintf(f, "\"latency_us\":");
    json_latency(f, r->fed ? "emitted_at_unix_micros" : "ingested_at_unix_micros", r->fed,
                 r->latency_ns, r->latency_negative, r->fed ? r->feed_undelivered : 0);
    fprintf(f, ",\n\"latency_from_ingest_us\":");
    json_latency(f, "ingested_at_unix_micros", false, r->latency_ingest_ns,
                 r->latency_ingest_negative, 0);
    fprintf(f, ",\n\"feed\":");
    if (r->fed) {
        const struct benchfeed_stats *fs = &r->feed;
        fprintf(f,
                "{\"ticks_sent\":%" PRIu64 ",\"datagrams\":%" PRIu64 ",\"send_errors\":%" PRIu64
                ",\"send_s\":%.3f,\"ticks_per_s\":%.1f,\"max_lag_us\":%.1f,\"late_ticks\":%" PRIu64
                ",\"late_threshold_us\":%d,\"sender_nice\":%d,\"first_stamp_us\":%" PRId64
                ",\"last_stamp_us\":%" PRId64 ",\"received\":%" PRIu64 ",\"undelivered\":%" PRIu64
                ",\"drain_s\":%.3f,\"error\":",
                fs->ticks, fs->datagrams, fs->send_errors, fs->send_s,
                fs->send_s > 0 ? (double)fs->ticks / fs->send_s : 0.0,
                (fs->max_lag_ns > 0 ? (double)fs->max_lag_ns : 0.0) / 1000.0, fs->late_ticks,
                BENCHFEED_LATE_NS / 1000, fs->nice, fs->first_stamp_us, fs->last_stamp_us,
                r->feed_received, r->feed_undelivered, r->drain_s);
        json_str(f, fs->error ? fs->error_text : "");
        fprintf(f, "}");
    } else {
        fprintf(f, "null");
    }
    fprintf(f, ",\n");
    fprintf(f, "\"client_cpu\":{\"user_s\":%.3f,\"sys_s\":%.3f},\"fd_limit\":%" PRIu64 ",\n",
            r->cpu_user_s, r->cpu_sys_s, r->fd_limit);
    if (r->server_cpu_read)
        fprintf(f, "\"server_cpu\":{\"pid\":%d,\"user_s\":%.3f,\"sys_s\":%.3f},\n", c->server_pid,
                r->server_cpu_user_s, r->server_cpu_sys_s);
    fprintf(f, "\"stalled\":[");
    for (size_t i = 0; i < r->n_stalled; i++) {
        const struct benchrun_stalled *s = &r->stalled[i];
        fprintf(
            f,
            "%s\n {\"index\":%u,\"overflow\":\"%s\",\"resumed\":%s,"
            "\"data_before_resume\":%" PRIu64 ",\"data_before_gap\":%" PRIu64 ",\"data\":%" PRIu64
            ",\"last_seq\":%" PRIu64 ",\"gaps\":%" PRIu64 ",\"gap_missed\":%" PRIu64
            ",\"first_gap_missed\":%" PRIu64 ",\"first_gap_reason\":\"%s\","
            "\"first_gap_jump\":",
            i ? "," : "", s->index, POLICY_NAMES[s->overflow], s->resumed ? "true" : "false",
            s->data_before_resume, s->data_before_gap, s->data, s->last_seq, s->gaps, s->gap_missed,
            s->first_gap_missed, s->gaps ? gap_reason_name(s->first_gap_reason) : "");
        if (s->jump_seen)
            fprintf(f, "%" PRIu64, s->first_gap_jump);
        else
            fprintf(f, "null");
        fprintf(f, ",\"violations\":%" PRIu64 ",\"ended\":%s,\"status\":\"%s\",\"details\":",
                s->violations, s->ended ? "true" : "false", status_name(s->status));
        json_str(f, s->details);
        fprintf(f, ",\"tickfan_cursor\":");
        json_str(f, s->cursor_trailer);
        fprintf(f, "}");
    }
    fprintf(f, "]},\n\"pass\":%s,\"failures\":[", v->n ? "false" : "true");
    for (int i = 0; i < v->n; i++) {
        if (i)
            fputc(',', f);
        json_str(f, v->reasons[i]);
    }
    fprintf(f, "]}\n");
}

int main(int argc, char **argv)
{
    struct options o;
    struct benchrun_results r;
    struct machine m;
    struct verdict v;

    memset(&o, 0, sizeof(o));
    memset(&v, 0, sizeof(v));
    parse_options(argc, argv, &o);
    machine_read(&m);
    int rc = benchrun_run(&o.cfg, &r);
    if (rc) {
        fprintf(stderr, "tickfan-bench: the run could not take place: %s\n", strerror(-rc));
        benchrun_results_free(&r);
        return EXIT_RUN_ERROR;
    }
    judge(&o.cfg, &r, &v);
    print_summary(stdout, &o.cfg, &r, &v);
    fflush(stdout);
    if (o.json_path) {
        FILE *f = strcmp(o.json_path, "-") == 0 ? stdout : fopen(o.json_path, "w");
        if (f == NULL) {
            fprintf(stderr, "tickfan-bench: --json %s: %s\n", o.json_path, strerror(errno));
            rc = -errno;
        } else {
            write_json(f, &o.cfg, &r, &m, &v);
            if (f != stdout && fclose(f) != 0) {
                fprintf(stderr, "tickfan-bench: --json %s: %s\n", o.json_path, strerror(errno));
                rc = -EIO;
            }
        }
    }
    benchrun_results_free(&r);
    free(o.kinds_buf);
    free(o.keys_buf);
    if (rc)
        return EXIT_RUN_ERROR;
    return v.n ? EXIT_CHECK_FAILED : 0;
}
