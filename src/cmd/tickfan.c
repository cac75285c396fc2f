/*
 * tickfan: the command-line client of the tickfan appliance.
 *
 * `tickfan tail TOPIC` streams a topic to stdout, one line per event, human
 * or JSON, through the subscriber library: broken streams resume from the
 * cursor of the last line written. The main thread runs the subscription;
 * SIGINT/SIGTERM cancel it (an async-signal-safe flag the subscriber looks
 * at every TICKFAN_SUB_POLL_MS). gRPC has threads of its own; this program
 * creates none.
 */
#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "muxsub.h"
#include "subscriber.h"
#include "tickfan/admin/v1/admin.pb-c.h"
#include "tickfmt.h"
#include "watchclient.h"
#include "wire.h"

#define DEFAULT_SERVER "localhost:50051"
#define SERVER_ENV "TICKFAN_SERVER"

enum {
    EXIT_DONE = 0,
    EXIT_STREAM_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_INTERRUPTED = 130,
};

static const char main_help[] =
    "NAME\n"
    "    tickfan - command-line client of the tickfan market-data fanout appliance\n"
    "\n"
    "SYNOPSIS\n"
    "    tickfan tail TOPIC... [--server ADDR] [--cursor C] [--cursor-file PATH]\n"
    "                       [--start earliest|live] [--start-time TIME]\n"
    "                       [--kinds K,...] [--keys S,...] [--snapshot] [--count N] [--json]\n"
    "                       [--no-resume] [--heartbeat-timeout-ms MS] [--max-retries N]\n"
    "    tickfan admin subscribers [--server ADDR] [--topic T] [--json]\n"
    "    tickfan COMMAND --help\n"
    "    tickfan --help | --version\n"
    "\n"
    "DESCRIPTION\n"
    "    tickfan talks to a tickfand server over gRPC (events.v1.Watcher). Every\n"
    "    event a server sends carries a cursor; giving that cursor back with\n"
    "    --cursor resumes the stream right after that event, with nothing\n"
    "    skipped and nothing repeated.\n"
    "\n"
    "    tickfan tail does that by itself: when a stream breaks (the server\n"
    "    restarts or drains, a connection resets, the network goes silent for\n"
    "    three heartbeats) it says so on stderr and opens a new stream from the\n"
    "    cursor of the last line it wrote, after a short randomised backoff. The\n"
    "    output goes on as if nothing happened: no line is lost or printed twice.\n"
    "    With --cursor-file the cursor also survives tickfan itself.\n"
    "\n"
    "COMMANDS\n"
    "    tail      Stream the events of one or more topics to stdout, one line\n"
    "              per event.\n"
    "              See 'tickfan tail --help'.\n"
    "\n"
    "OPTIONS\n"
    "    -h, --help    Show this manual.\n"
    "    --version     Show the version.\n"
    "\n"
    "ENVIRONMENT\n"
    "    TICKFAN_SERVER    Server address used when --server is not given\n"
    "                      (default " DEFAULT_SERVER ").\n"
    "\n"
    "EXIT STATUS\n"
    "    0     Done: --count events received, or the server ended the stream\n"
    "          normally.\n"
    "    1     The stream failed with an error that resuming cannot fix: the\n"
    "          cursor is older than what the topic retains (OUT_OF_RANGE: the\n"
    "          earliest available cursor is printed), an unknown topic\n"
    "          (NOT_FOUND), a bad request, or any error with --no-resume or after\n"
    "          --max-retries. The error and the cursor to resume from are printed\n"
    "          on stderr.\n"
    "    2     Bad usage: unknown command or option, or a bad option value.\n"
    "    130   Interrupted by SIGINT or SIGTERM; the cursor to resume from is\n"
    "          printed on stderr.\n"
    "\n"
    "EXAMPLES\n"
    "    Follow every event of the topic \"sim\" on the local server:\n"
    "        tickfan tail sim\n"
    "    Only AAPL and MSFT trades, as JSON, from a remote server:\n"
    "        tickfan tail sim --server md1.example:50051 --kinds trade --keys AAPL,MSFT --json\n"
    "    The latest quote of every symbol, then live quotes:\n"
    "        tickfan tail sim --kinds quote --snapshot\n"
    "    Pick up exactly where an earlier run stopped:\n"
    "        tickfan tail sim --cursor 1-5f3a9c0d12e4b7a1-184467\n"
    "    Keep the place across restarts of tickfan itself (the file is read at\n"
    "    start and rewritten every second and at exit):\n"
    "        tickfan tail sim --json --cursor-file ~/.sim.cursor >> sim.jsonl\n"
    "    Fail at the first break instead of resuming (scripts that resume on\n"
    "    their own):\n"
    "        tickfan tail sim --no-resume --cursor \"$(cat last.cursor)\"\n"
    "    A server that sends heartbeats every second (tickfand --heartbeat-ms\n"
    "    1000): give up on a silent stream after 3 s instead of 15 s:\n"
    "        tickfan tail sim --heartbeat-timeout-ms 3000\n";

static const char tail_help[] =
    "NAME\n"
    "    tickfan tail - stream the events of one or more topics to stdout\n"
    "\n"
    "SYNOPSIS\n"
    "    tickfan tail TOPIC [options]\n"
    "    tickfan tail TOPIC TOPIC... [options]\n"
    "\n"
    "DESCRIPTION\n"
    "    Opens one Watch stream on TOPIC and prints one line per event, flushed\n"
    "    as it arrives so the output can be piped. Without --cursor the stream\n"
    "    starts at the oldest retained event (or live, with --start live); it\n"
    "    reaches the live head, says so with an end-of-backlog line, and then\n"
    "    follows the topic until interrupted. Heartbeats arrive while the topic\n"
    "    is quiet; their cursor moves too.\n"
    "\n"
    "    A broken stream is resumed from the cursor of the last line written,\n"
    "    on a new connection, after a backoff (see RESUMING); the output goes\n"
    "    on with the next event, none lost, none repeated.\n"
    "\n"
    "    With several topics, tail opens one Subscribe stream carrying one\n"
    "    subscription per topic, every filter option applying to each, and\n"
    "    every line says its topic (see OUTPUT). Each topic keeps its own\n"
    "    cursor: a broken stream is reopened and every topic re-added from its\n"
    "    own last line. A topic that cannot go on (unknown, a cursor older than\n"
    "    its retention ...) ends the tail with exit status 1, as with one topic.\n"
    "\n"
    "OPTIONS\n"
    "    --server ADDR       Server address, host:port or a gRPC target URI.\n"
    "                        Default: $TICKFAN_SERVER, else " DEFAULT_SERVER ".\n"
    "    --cursor C          Resume right after the event that carried cursor C\n"
    "                        (as printed by an earlier run). Cursors are opaque;\n"
    "                        copy them exactly. An empty C means no cursor.\n"
    "                        With several topics: --cursor TOPIC=C, once per\n"
    "                        topic to resume (as printed on interrupt).\n"
    "    --cursor-file PATH  Keep the cursor in PATH: read at start when --cursor\n"
    "                        is not given (a missing file means \"no cursor\"),\n"
    "                        rewritten atomically every second, when a stream\n"
    "                        breaks and at exit. A restarted tail then continues\n"
    "                        after the last line the previous one wrote, give or\n"
    "                        take the lines of its last second (see RESUMING).\n"
    "                        With several topics, one file per topic:\n"
    "                        PATH.TOPIC.\n"
    "    --start earliest|live\n"
    "                        Where to start without a cursor: the oldest event\n"
    "                        the topic still retains (default), or only new\n"
    "                        events. Ignored when --cursor is given.\n"
    "    --start-time TIME   Start at the first event ingested at or after TIME:\n"
    "                        RFC 3339 UTC (2026-11-24T06:35:00Z, up to 6 fraction\n"
    "                        digits) or Unix microseconds. Ignored with --cursor.\n"
    "    --kinds K,...       Only data events of these kinds (e.g. quote,trade).\n"
    "    --keys S,...        Only data events of these keys (symbols).\n"
    "                        --kinds and --keys may be repeated; lists add up.\n"
    "    --snapshot          First the latest event of every matching kind and\n"
    "                        key as of the start (marked \"snapshot\"), then the\n"
    "                        events from the start on.\n"
    "    --count N           Stop after N data events (heartbeats and other\n"
    "                        control events do not count; with several topics,\n"
    "                        of all of them) and exit 0.\n"
    "    --json              One JSON object per line instead of text.\n"
    "    --no-resume         Do not resume: the first break ends tail with exit\n"
    "                        status 1 and the cursor to resume from.\n"
    "    --heartbeat-timeout-ms MS\n"
    "                        A stream with no event and no heartbeat for MS is\n"
    "                        dead: drop it and resume. Default 15000, three times\n"
    "                        the server's default heartbeat (5 s); keep it at\n"
    "                        3x tickfand --heartbeat-ms. 0 turns it off.\n"
    "    --max-retries N     Give up (exit 1) after N resumes in a row that got\n"
    "                        no event through. Default 0: never give up.\n"
    "    -h, --help          Show this manual.\n"
    "\n"
    "OUTPUT\n"
    "    Text (times are UTC; prices exact, with the tick's decimals):\n"
    "      2026-11-24T10:00:01.123456Z quote AAPL  bid 189.1200 x 300  ask 189.1300 x 200  "
    "seq=12 cursor=C\n"
    "      2026-11-24T10:00:01.123456Z trade MSFT  512.3400 x 100 BUY  seq=13 cursor=C\n"
    "      2026-11-24T10:00:06.000000Z heartbeat cursor=C\n"
    "      end-of-backlog (caught up, live from here) cursor=C\n"
    "      gap: missed 42 events, reason GAP_SLOW_CONSUMER, from_cursor=B cursor=C\n"
    "    Data of other kinds show their size and first bytes in hex.\n"
    "    JSON (--json), one object per line, \"type\" first:\n"
    "      {\"type\":\"data\",\"cursor\":\"C\",\"seq\":12,\"kind\":\"quote\",\"key\":\"AAPL\",\n"
    "       \"emitted_at_unix_micros\":N,\"ingested_at_unix_micros\":N,\"snapshot\":false,\n"
    "       "
    "\"quote\":{\"bid\":\"189.1200\",\"bid_size\":300,\"ask\":\"189.1300\",\"ask_size\":200},\n"
    "       \"exchange_time_unix_nanos\":N,\"venue\":\"XNAS\"}\n"
    "      a trade has \"trade\":{\"price\":\"512.3400\",\"size\":100,\"side\":\"SIDE_BUY\"};\n"
    "      other bodies have \"body_base64\" instead of the tick fields\n"
    "      {\"type\":\"heartbeat\",\"cursor\":\"C\",\"server_unix_micros\":N}\n"
    "      {\"type\":\"end_of_backlog\",\"cursor\":\"C\"}\n"
    "      {\"type\":\"gap\",\"cursor\":\"C\",\"missed\":42,\"reason\":\"GAP_SLOW_CONSUMER\",\n"
    "       \"from_cursor\":\"B\"}\n"
    "    Prices are strings so that no digit is lost.\n"
    "    With several topics, a text line has topic=T right before cursor=:\n"
    "      2026-11-24T10:00:01.123456Z trade MSFT  512.3400 x 100 BUY  seq=13 "
    "topic=fx cursor=C\n"
    "      end-of-backlog (caught up, live from here) topic=fx cursor=C\n"
    "    and a JSON object \"topic\" right after \"type\":\n"
    "      {\"type\":\"heartbeat\",\"topic\":\"fx\",\"cursor\":\"C\",\"server_unix_micros\":N}\n"
    "    With one topic, lines have no topic field.\n"
    "\n"
    "RESUMING\n"
    "    Resumed: the server draining or restarting (UNAVAILABLE), connections\n"
    "    refused or reset, stream resets (INTERNAL, UNKNOWN), a slow consumer\n"
    "    disconnected with its cursor (RESOURCE_EXHAUSTED), a connection gRPC\n"
    "    closed for another stream's oversize metadata (RESOURCE_EXHAUSTED\n"
    "    \"received initial metadata size exceeds limit\"), and a stream silent\n"
    "    for --heartbeat-timeout-ms. Each resume is one line on stderr:\n"
    "        tickfan: stream broken (UNAVAILABLE: Socket closed); resuming from\n"
    "                 cursor C in 230 ms\n"
    "    The backoff is random between 0 and a cap that starts at 100 ms and\n"
    "    doubles per failed attempt up to 5 s; it starts over once a stream has\n"
    "    worked for 10 s.\n"
    "    Not resumed (exit 1): OUT_OF_RANGE (the cursor is older than what the\n"
    "    topic retains, or from an earlier life of its log), NOT_FOUND,\n"
    "    INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED, UNIMPLEMENTED.\n"
    "    With --cursor-file, a tail killed with SIGKILL loses at most the last\n"
    "    second of cursor updates: restarted, it prints those lines again.\n"
    "\n"
    "ERRORS\n"
    "    On SIGINT/SIGTERM the stream is cancelled and stderr says\n"
    "        tickfan: interrupted; resume with --cursor C\n"
    "    (with several topics: --cursor T1=C1 --cursor T2=C2 ...)\n"
    "    When the stream ends with an error that is not resumed, stderr says\n"
    "        tickfan: STATUS: details\n"
    "    followed by either the cursor to resume from or, when the requested\n"
    "    cursor is older than what the topic retains (OUT_OF_RANGE), the\n"
    "    earliest cursor still available:\n"
    "        tickfan: earliest available cursor: E\n"
    "\n"
    "EXIT STATUS\n"
    "    0 done (--count reached, or the server ended the stream normally);\n"
    "    1 stream error that is not resumed (see RESUMING); 2 bad usage;\n"
    "    130 interrupted.\n"
    "\n"
    "EXAMPLES\n"
    "    tickfan tail sim --count 5\n"
    "    tickfan tail sim --start live --kinds trade --json | jq -r .trade.price\n"
    "    tickfan tail sim --keys AAPL --snapshot\n"
    "    tickfan tail sim --cursor 1-5f3a9c0d12e4b7a1-184467\n"
    "    tickfan tail sim --kinds trade --json --cursor-file trades.cursor >> trades.jsonl\n"
    "    tickfan tail sim --no-resume --count 100\n"
    "    tickfan tail sim fx --keys AAPL,MSFT --json\n"
    "    tickfan tail sim fx --cursor sim=1-5f3a9c0d12e4b7a1-184467 --cursor fx=1-...\n";

struct strlist {
    char **items;
    size_t n;
};

struct tail_opts {
    const char *topic; /* the first of topics */
    struct strlist topics;
    const char *server;
    const char *cursor;
    struct strlist cursors; /* every --cursor, for several topics (TOPIC=C) */
    Events__V1__StartPosition start;
    int64_t start_unix_micros;
    struct strlist kinds;
    struct strlist keys;
    bool snapshot;
    uint64_t count; /* 0: no limit */
    bool json;
    bool no_resume;
    const char *cursor_file;
    int64_t heartbeat_timeout_ms;
    uint64_t max_retries;
};

static volatile sig_atomic_t interrupted;
/* The running subscription, for the signal handler; see release_signals(). */
static _Atomic(tickfan_sub_t *) signal_sub;
static _Atomic(tickfan_mux_t *) signal_mux;
static atomic_int in_signal_handler;

/* May run on any thread (gRPC's too): only atomics and the async-signal-safe cancel. */
static void on_signal(int signo)
{
    atomic_fetch_add(&in_signal_handler, 1);
    interrupted = signo;
    tickfan_sub_t *s = atomic_load(&signal_sub);
    if (s != NULL)
        tickfan_sub_cancel(s);
    tickfan_mux_t *m = atomic_load(&signal_mux);
    if (m != NULL)
        tickfan_mux_cancel(m);
    atomic_fetch_sub(&in_signal_handler, 1);
}

/* Prints "tickfan tail: <message>" and a pointer to the manual; returns -EINVAL. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("tickfan tail: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see 'tickfan tail --help')\n", stderr);
    return -EINVAL;
}

static void strlist_free(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* Appends the comma-separated items of value; an empty item is a usage error. */
static int strlist_add_csv(struct strlist *l, const char *option, const char *value)
{
    const char *p = value;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0)
            return usage_error("%s: empty item in '%s'", option, value);
        char **items = realloc(l->items, (l->n + 1) * sizeof(*items));
        if (items == NULL)
            return -ENOMEM;
        l->items = items;
        l->items[l->n] = strndup(p, len);
        if (l->items[l->n] == NULL)
            return -ENOMEM;
        l->n++;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

/* A decimal integer in [min, max] for option name. */
static int parse_uint(const char *name, const char *value, uint64_t min, uint64_t max,
                      uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = value[0] >= '0' && value[0] <= '9' ? strtoull(value, &end, 10) : 0;
    if (value[0] < '0' || value[0] > '9' || errno != 0 || *end != '\0' || n < min || n > max)
        return usage_error("%s: '%s' is not an integer in %" PRIu64 "..%" PRIu64, name, value, min,
                           max);
    *out = n;
    return 0;
}

static int parse_count(const char *value, uint64_t *out)
{
    char *end;
    if (value[0] < '0' || value[0] > '9')
        return usage_error("--count: '%s' is not a positive integer", value);
    errno = 0;
    unsigned long long n = strtoull(value, &end, 10);
    if (errno != 0 || *end != '\0' || n == 0)
        return usage_error("--count: '%s' is not a positive integer", value);
    *out = n;
    return 0;
}

/*
 * Parses the arguments after "tail". Returns 0, 1 when --help was shown,
 * -EINVAL after printing a usage error, or -ENOMEM.
 */
static int parse_tail(int argc, char **argv, struct tail_opts *o)
{
    bool only_positional = false;
    const char *env = getenv(SERVER_ENV);

    o->server = env && env[0] ? env : DEFAULT_SERVER;
    o->start = EVENTS__V1__START_POSITION__START_EARLIEST;
    o->heartbeat_timeout_ms = -1; /* the library's default */
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (arg[0] == '\0')
                return usage_error("TOPIC is empty");
            for (size_t k = 0; k < o->topics.n; k++)
                if (strcmp(o->topics.items[k], arg) == 0)
                    return usage_error("topic '%s' given twice", arg);
            if (strchr(arg, ',') != NULL)
                return usage_error("TOPIC '%s': topics are separate arguments", arg);
            int rc = strlist_add_csv(&o->topics, "TOPIC", arg);
            if (rc < 0)
                return rc;
            o->topic = o->topics.items[0];
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            fputs(tail_help, stdout);
            return 1;
        }

        /* --name, --name=value or --name value */
        char name[32];
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (arg[1] != '-' || nlen >= sizeof(name))
            return usage_error("unknown option '%s'", arg);
        memcpy(name, arg, nlen);
        name[nlen] = '\0';

        if (strcmp(name, "--snapshot") == 0 || strcmp(name, "--json") == 0 ||
            strcmp(name, "--no-resume") == 0) {
            if (eq)
                return usage_error("%s takes no value (got '%s')", name, eq + 1);
            if (strcmp(name, "--snapshot") == 0)
                o->snapshot = true;
            else if (strcmp(name, "--json") == 0)
                o->json = true;
            else
                o->no_resume = true;
            continue;
        }
        if (strcmp(name, "--server") != 0 && strcmp(name, "--cursor") != 0 &&
            strcmp(name, "--start") != 0 && strcmp(name, "--kinds") != 0 &&
            strcmp(name, "--keys") != 0 && strcmp(name, "--count") != 0 &&
            strcmp(name, "--start-time") != 0 && strcmp(name, "--cursor-file") != 0 &&
            strcmp(name, "--heartbeat-timeout-ms") != 0 && strcmp(name, "--max-retries") != 0)
            return usage_error("unknown option '%s'", name);
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return usage_error("%s needs a value", name);
        }

        int rc = 0;
        if (strcmp(name, "--server") == 0) {
            if (value[0] == '\0')
                return usage_error("--server: empty address");
            o->server = value;
        } else if (strcmp(name, "--cursor") == 0) {
            o->cursor = value;
            if (value[0] != '\0') {
                /* Kept whole: a cursor may hold a comma. */
                char **items = realloc(o->cursors.items, (o->cursors.n + 1) * sizeof(*items));
                if (items == NULL)
                    return -ENOMEM;
                o->cursors.items = items;
                o->cursors.items[o->cursors.n] = strdup(value);
                if (o->cursors.items[o->cursors.n] == NULL)
                    return -ENOMEM;
                o->cursors.n++;
            }
        } else if (strcmp(name, "--start") == 0) {
            if (strcmp(value, "earliest") == 0)
                o->start = EVENTS__V1__START_POSITION__START_EARLIEST;
            else if (strcmp(value, "live") == 0)
                o->start = EVENTS__V1__START_POSITION__START_LIVE;
            else
                return usage_error("--start: '%s' is not one of earliest, live", value);
        } else if (strcmp(name, "--start-time") == 0) {
            if (tickfmt_parse_time(value, &o->start_unix_micros) != 0 || o->start_unix_micros <= 0)
                return usage_error("--start-time: '%s' is not an RFC 3339 UTC time "
                                   "(2026-11-24T06:35:00Z) or Unix microseconds",
                                   value);
            o->start = EVENTS__V1__START_POSITION__START_AT_TIME;
        } else if (strcmp(name, "--kinds") == 0) {
            rc = strlist_add_csv(&o->kinds, name, value);
        } else if (strcmp(name, "--keys") == 0) {
            rc = strlist_add_csv(&o->keys, name, value);
        } else if (strcmp(name, "--cursor-file") == 0) {
            if (value[0] == '\0')
                return usage_error("--cursor-file: empty path");
            o->cursor_file = value;
        } else if (strcmp(name, "--heartbeat-timeout-ms") == 0) {
            uint64_t ms;
            rc = parse_uint(name, value, 0, 86400000, &ms);
            o->heartbeat_timeout_ms = (int64_t)ms;
        } else if (strcmp(name, "--max-retries") == 0) {
            rc = parse_uint(name, value, 0, UINT32_MAX, &o->max_retries);
        } else {
            rc = parse_count(value, &o->count);
        }
        if (rc < 0)
            return rc;
    }
    if (o->topic == NULL)
        return usage_error("missing TOPIC");
    /* Several topics: every --cursor names its topic. */
    for (size_t i = 0; o->topics.n > 1 && i < o->cursors.n; i++) {
        const char *c = o->cursors.items[i];
        const char *eq = strchr(c, '=');
        bool known = false;
        for (size_t k = 0; eq != NULL && k < o->topics.n; k++)
            known |= strlen(o->topics.items[k]) == (size_t)(eq - c) &&
                     strncmp(o->topics.items[k], c, (size_t)(eq - c)) == 0;
        if (eq == NULL || eq[1] == '\0')
            return usage_error("--cursor '%s': with several topics, give TOPIC=CURSOR", c);
        if (!known)
            return usage_error("--cursor '%s': '%.*s' is not one of the topics", c, (int)(eq - c),
                               c);
    }
    return 0;
}

/* The cursor to resume from (malloc'd), NULL if there is none. */
static char *resume_cursor(tickfan_sub_t *sub)
{
    size_t n = tickfan_sub_cursor(sub, NULL, 0);
    char *c = n ? malloc(n + 1) : NULL;
    if (c != NULL)
        tickfan_sub_cursor(sub, c, n + 1);
    return c;
}

static void print_resume(const char *prefix, const char *cursor)
{
    fprintf(stderr, "tickfan: %s", prefix);
    if (cursor != NULL) {
        fputs("; resume with --cursor ", stderr);
        tickfmt_safe_string(stderr, cursor);
    }
    fputc('\n', stderr);
}

static int report_interrupted(const char *last)
{
    if (last != NULL)
        print_resume("interrupted", last);
    else
        fputs("tickfan: interrupted before the first event\n", stderr);
    return EXIT_INTERRUPTED;
}

/* The status line of a stream that ended with an error, then where to go on. */
static int report_status(tickfan_sub_t *sub, const char *last)
{
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    const char *details = "";
    tickfan_sub_status(sub, &code, &details);

    fprintf(stderr, "tickfan: %s", wire_status_name(code));
    if (details[0] != '\0') {
        fputs(": ", stderr);
        tickfmt_safe_string(stderr, details);
    }
    fputc('\n', stderr);

    const char *earliest = tickfan_sub_earliest_cursor(sub);
    if (earliest != NULL) {
        fputs("tickfan: earliest available cursor: ", stderr);
        tickfmt_safe_string(stderr, earliest);
        fputc('\n', stderr);
    } else if (last != NULL) {
        fputs("tickfan: resume with --cursor ", stderr);
        tickfmt_safe_string(stderr, last);
        fputc('\n', stderr);
    }
    return EXIT_STREAM_ERROR;
}

/* What on_event needs; the handler's failure is -errno of writing stdout. */
struct tail_state {
    const struct tail_opts *o;
    tickfan_sub_t *sub;
    uint64_t data_seen;
    bool count_reached;
};

/* Prints one line for ev (with its topic when several are tailed: topic not
 * NULL) and counts Data lines against --count. Returns <0 when stdout
 * fails, 1 when --count was just reached, else 0. */
static int print_line(const struct tail_opts *o, const char *topic,
                      const Events__V1__WatchEvent *ev, uint64_t *data_seen)
{
    int rc =
        o->json ? tickfmt_json_topic(stdout, topic, ev) : tickfmt_human_topic(stdout, topic, ev);
    if (rc == 0 && fflush(stdout) != 0)
        rc = -errno;
    if (rc < 0)
        return rc;
    return ev->payload_case == EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA && o->count != 0 &&
           ++*data_seen >= o->count;
}

static int print_event(const Events__V1__WatchEvent *ev, void *arg)
{
    struct tail_state *t = arg;
    int rc = print_line(t->o, NULL, ev, &t->data_seen);
    if (rc == 1) {
        t->count_reached = true;
        tickfan_sub_cancel(t->sub);
    }
    return rc < 0 ? rc : 0;
}

static void install_signals(tickfan_sub_t *sub, tickfan_mux_t *mux)
{
    struct sigaction sa;
    atomic_store(&signal_sub, sub);
    atomic_store(&signal_mux, mux);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* A second signal takes the default action: exit at once. */
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* After this, no signal handler can be touching the subscription. */
static void release_signals(void)
{
    atomic_store(&signal_sub, NULL);
    atomic_store(&signal_mux, NULL);
    while (atomic_load(&in_signal_handler) != 0)
        ;
}

/* Maps how the subscription ended to a message on stderr and an exit code. */
static int report_end(tickfan_sub_t *sub, const struct tail_state *t, int rc)
{
    char *last = resume_cursor(sub);
    int code = EXIT_STREAM_ERROR;

    if (t->count_reached && rc == 0) {
        code = EXIT_DONE;
    } else if (interrupted && rc == 0) {
        code = report_interrupted(last);
    } else if (rc == 0) {
        print_resume("the server ended the stream", last);
        code = EXIT_DONE;
    } else if (rc == -ERANGE || rc == -EPIPE) {
        code = report_status(sub, last);
    } else if (rc == -ETIMEDOUT) {
        print_resume("no event and no heartbeat within --heartbeat-timeout-ms", last);
    } else if (rc == -ECANCELED) {
        fprintf(stderr, "tickfan: cannot write to stdout: %s\n",
                strerror(-tickfan_sub_handler_result(sub)));
    } else if (rc == -EBADMSG) {
        print_resume("the server sent a message that is not a WatchEvent", last);
    } else {
        fprintf(stderr, "tickfan: stream failed: %s\n", strerror(-rc));
        print_resume("stopped", last);
    }
    free(last);
    return code;
}

static int run_tail(const struct tail_opts *o)
{
    Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
    struct tickfan_sub_options so;
    struct tail_state t = {.o = o};
    int code = EXIT_STREAM_ERROR;

    req.topic = (char *)o->topic;
    if (o->cursor != NULL)
        req.cursor = (char *)o->cursor;
    req.start = o->start;
    req.start_unix_micros = o->start_unix_micros;
    req.n_kinds = o->kinds.n;
    req.kinds = o->kinds.items;
    req.n_keys = o->keys.n;
    req.keys = o->keys.items;
    req.snapshot = o->snapshot;

    tickfan_sub_options_init(&so);
    so.target = o->server;
    so.request = &req;
    so.on_event = print_event;
    so.arg = &t;
    so.resume = !o->no_resume;
    so.cursor_file = o->cursor_file;
    so.max_retries = (uint32_t)o->max_retries;
    if (o->heartbeat_timeout_ms >= 0)
        so.heartbeat_timeout_ms = o->heartbeat_timeout_ms;
    int rc = tickfan_sub_create(&t.sub, &so);
    if (rc < 0) {
        /* The library said what was wrong with the cursor file. */
        if (rc == -ENOMEM)
            fputs("tickfan: out of memory\n", stderr);
        return EXIT_STREAM_ERROR;
    }
    install_signals(t.sub, NULL);
    rc = tickfan_sub_run(t.sub);
    release_signals();
    code = report_end(t.sub, &t, rc);
    tickfan_sub_destroy(t.sub);
    return code;
}

/* ---- tail with several topics: one Subscribe stream ---------------------------- */

/* One topic of a multi-topic tail. */
struct mux_topic {
    struct mux_state *t;
    const char *topic;
    uint32_t id;
    char *file; /* its cursor file, PATH.TOPIC */
    bool ended;
    grpc_status_code code;
    char *message;
    char *earliest;
};

struct mux_state {
    const struct tail_opts *o;
    tickfan_mux_t *mux;
    struct mux_topic *topics;
    size_t n;
    uint64_t data_seen;
    bool count_reached;
    struct mux_topic *failed; /* the first that ended with an error */
};

static int mux_print_event(uint32_t id, const Events__V1__WatchEvent *ev, void *arg)
{
    struct mux_topic *mt = arg;
    struct mux_state *t = mt->t;
    int rc = print_line(t->o, mt->topic, ev, &t->data_seen);
    if (rc == 1) {
        t->count_reached = true;
        tickfan_mux_cancel(t->mux);
    }
    return rc < 0 ? rc : 0;
}

/* A topic that cannot go on ends the tail, as with one topic. */
static void mux_topic_end(uint32_t id, const struct tickfan_mux_end *end, void *arg)
{
    struct mux_topic *mt = arg;
    mt->ended = true;
    mt->code = end->code;
    mt->message = strdup(end->message);
    mt->earliest = end->earliest_cursor[0] ? strdup(end->earliest_cursor) : NULL;
    if (end->code != GRPC_STATUS_OK && mt->t->failed == NULL) {
        mt->t->failed = mt;
        tickfan_mux_cancel(mt->t->mux);
    }
}

/* "tickfan: PREFIX; resume with --cursor T1=C1 --cursor T2=C2" (topics
 * without a cursor yet are left out), or PREFIX alone. */
static void print_mux_resume(const struct mux_state *t, const char *prefix)
{
    bool any = false;
    fprintf(stderr, "tickfan: %s", prefix);
    for (size_t i = 0; i < t->n; i++) {
        char buf[1100];
        if (t->topics[i].ended && t->topics[i].code != GRPC_STATUS_OK)
            continue;
        if (tickfan_mux_cursor(t->mux, t->topics[i].id, buf, sizeof(buf)) <= 0)
            continue;
        fputs(any ? " --cursor " : "; resume with --cursor ", stderr);
        tickfmt_safe_string(stderr, t->topics[i].topic);
        fputc('=', stderr);
        tickfmt_safe_string(stderr, buf);
        any = true;
    }
    fputc('\n', stderr);
}

static int report_mux_end(const struct mux_state *t, int rc)
{
    if (t->count_reached && rc == 0)
        return EXIT_DONE;
    if (t->failed != NULL) {
        const struct mux_topic *mt = t->failed;
        fputs("tickfan: topic ", stderr);
        tickfmt_safe_string(stderr, mt->topic);
        fprintf(stderr, ": %s", wire_status_name(mt->code));
        if (mt->message != NULL && mt->message[0] != '\0') {
            fputs(": ", stderr);
            tickfmt_safe_string(stderr, mt->message);
        }
        fputc('\n', stderr);
        if (mt->earliest != NULL) {
            fputs("tickfan: topic ", stderr);
            tickfmt_safe_string(stderr, mt->topic);
            fputs(": earliest available cursor: ", stderr);
            tickfmt_safe_string(stderr, mt->earliest);
            fputc('\n', stderr);
        }
        print_mux_resume(t, "stopped");
        return EXIT_STREAM_ERROR;
    }
    if (interrupted && rc == 0) {
        print_mux_resume(t, "interrupted");
        return EXIT_INTERRUPTED;
    }
    if (rc == -EPIPE) {
        grpc_status_code code = GRPC_STATUS_UNKNOWN;
        const char *details = "";
        tickfan_mux_status(t->mux, &code, &details);
        fprintf(stderr, "tickfan: %s", wire_status_name(code));
        if (details[0] != '\0') {
            fputs(": ", stderr);
            tickfmt_safe_string(stderr, details);
        }
        fputc('\n', stderr);
        print_mux_resume(t, "stopped");
    } else if (rc == -ETIMEDOUT) {
        print_mux_resume(t, "no event and no heartbeat within --heartbeat-timeout-ms");
    } else if (rc == -ECANCELED) {
        fprintf(stderr, "tickfan: cannot write to stdout: %s\n",
                strerror(-tickfan_mux_handler_result(t->mux, NULL)));
    } else if (rc == -EBADMSG) {
        print_mux_resume(t, "the server sent a message that is not a SubscribeResponse");
    } else {
        fprintf(stderr, "tickfan: stream failed: %s\n", strerror(-rc));
        print_mux_resume(t, "stopped");
    }
    return EXIT_STREAM_ERROR;
}

/* The --cursor TOPIC=C given for topic, or NULL (the last one wins). */
static const char *cursor_for(const struct tail_opts *o, const char *topic)
{
    const char *found = NULL;
    size_t len = strlen(topic);
    for (size_t i = 0; i < o->cursors.n; i++)
        if (strncmp(o->cursors.items[i], topic, len) == 0 && o->cursors.items[i][len] == '=')
            found = o->cursors.items[i] + len + 1;
    return found;
}

static int run_tail_mux(const struct tail_opts *o)
{
    struct tickfan_mux_options mo;
    struct mux_state t = {.o = o, .n = o->topics.n};
    int code = EXIT_STREAM_ERROR;
    int rc;

    tickfan_mux_options_init(&mo);
    mo.target = o->server;
    mo.resume = !o->no_resume;
    mo.max_retries = (uint32_t)o->max_retries;
    if (o->heartbeat_timeout_ms >= 0)
        mo.heartbeat_timeout_ms = o->heartbeat_timeout_ms;
    t.topics = calloc(t.n, sizeof(*t.topics));
    if (t.topics == NULL || tickfan_mux_create(&t.mux, &mo) < 0) {
        fputs("tickfan: out of memory\n", stderr);
        free(t.topics);
        return EXIT_STREAM_ERROR;
    }
    for (size_t i = 0; i < t.n; i++) {
        Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
        struct tickfan_mux_sub_options so = {0};
        struct mux_topic *mt = &t.topics[i];
        mt->t = &t;
        mt->topic = o->topics.items[i];
        req.topic = (char *)mt->topic;
        const char *cursor = cursor_for(o, mt->topic);
        if (cursor != NULL)
            req.cursor = (char *)cursor;
        req.start = o->start;
        req.start_unix_micros = o->start_unix_micros;
        req.n_kinds = o->kinds.n;
        req.kinds = o->kinds.items;
        req.n_keys = o->keys.n;
        req.keys = o->keys.items;
        req.snapshot = o->snapshot;
        if (o->cursor_file != NULL) {
            mt->file = malloc(strlen(o->cursor_file) + strlen(mt->topic) + 2);
            if (mt->file == NULL)
                goto out_destroy;
            sprintf(mt->file, "%s.%s", o->cursor_file, mt->topic);
        }
        so.request = &req;
        so.on_event = mux_print_event;
        so.on_end = mux_topic_end;
        so.arg = mt;
        so.cursor_file = mt->file;
        rc = tickfan_mux_add(t.mux, &so, &mt->id);
        if (rc < 0) {
            /* The library said what was wrong with the cursor file. */
            if (rc == -ENOMEM)
                fputs("tickfan: out of memory\n", stderr);
            goto out_destroy;
        }
    }
    install_signals(NULL, t.mux);
    rc = tickfan_mux_run(t.mux);
    release_signals();
    code = report_mux_end(&t, rc);

out_destroy:
    tickfan_mux_destroy(t.mux);
    for (size_t i = 0; i < t.n; i++) {
        free(t.topics[i].file);
        free(t.topics[i].message);
        free(t.topics[i].earliest);
    }
    free(t.topics);
    return code;
}

static int cmd_tail(int argc, char **argv)
{
    struct tail_opts o;
    memset(&o, 0, sizeof(o));
    int rc = parse_tail(argc, argv, &o);
    int code;
    if (rc == 1)
        code = EXIT_DONE;
    else if (rc == -ENOMEM)
        code = EXIT_STREAM_ERROR;
    else if (rc < 0)
        code = EXIT_USAGE;
    else
        code = o.topics.n > 1 ? run_tail_mux(&o) : run_tail(&o);
    strlist_free(&o.topics);
    strlist_free(&o.cursors);
    strlist_free(&o.kinds);
    strlist_free(&o.keys);
    return code;
}

static void short_usage(FILE *out)
{
    fputs("usage: tickfan tail TOPIC... [options]\n"
          "       tickfan --help | --version\n",
          out);
}

/* ---- admin subscribers ----------------------------------------------------- */

static const char admin_help[] =
    "usage: tickfan admin subscribers [--server ADDR] [--topic T] [--json]\n"
    "\n"
    "Lists the Watch streams the server has open: id, peer, topic, filters,\n"
    "lag (events and bytes behind the head), data sent, events dropped, since\n"
    "when, shard, cursor and state (replaying, live, ending). As of each shard's\n"
    "last tick (within 250 ms). --json: one JSON object per stream.\n"
    "Exit codes: 0 listed, 1 the server could not be asked, 2 bad usage.\n";

static int cmd_admin(int argc, char **argv)
{
    const char *server = getenv("TICKFAN_SERVER") ? getenv("TICKFAN_SERVER") : DEFAULT_SERVER;
    const char *topic = "";
    bool json = false;
    if (argc < 2 || strcmp(argv[1], "subscribers") != 0) {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            fputs(admin_help, stdout);
            return EXIT_DONE;
        }
        return usage_error("admin: expected 'subscribers' (see tickfan admin --help)");
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
            server = argv[++i];
        else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc)
            topic = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(admin_help, stdout);
            return EXIT_DONE;
        } else
            return usage_error("admin subscribers: unknown option or missing value '%s'", argv[i]);
    }
    Tickfan__Admin__V1__ListSubscribersRequest req =
        TICKFAN__ADMIN__V1__LIST_SUBSCRIBERS_REQUEST__INIT;
    req.topic = (char *)topic;
    uint8_t buf[256];
    size_t n = tickfan__admin__v1__list_subscribers_request__pack(&req, buf);
    grpc_byte_buffer *reply = NULL;
    grpc_status_code code;
    char *details = NULL;
    int rc = watchclient_unary(server, "/tickfan.admin.v1.Admin/ListSubscribers", buf, n, 10000,
                               &reply, &code, &details);
    if (rc || code != GRPC_STATUS_OK) {
        fprintf(stderr, "tickfan: %s: %s\n", rc ? "error" : wire_status_name(code),
                details ? details : strerror(-rc));
        free(details);
        if (reply)
            grpc_byte_buffer_destroy(reply);
        return EXIT_STREAM_ERROR;
    }
    free(details);
    grpc_slice s;
    int unreadable = wire_read_all(reply, &s);
    if (reply)
        grpc_byte_buffer_destroy(reply);
    if (unreadable) {
        fprintf(stderr, "tickfan: the server answered OK without a ListSubscribersResponse\n");
        return EXIT_STREAM_ERROR;
    }
    Tickfan__Admin__V1__ListSubscribersResponse *resp =
        tickfan__admin__v1__list_subscribers_response__unpack(NULL, GRPC_SLICE_LENGTH(s),
                                                              GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (!resp) {
        fprintf(stderr, "tickfan: malformed ListSubscribersResponse\n");
        return EXIT_STREAM_ERROR;
    }
    if (!json)
        printf("%-6s %-24s %-10s %-8s %10s %12s %10s %8s %5s %s\n", "ID", "PEER", "TOPIC", "STATE",
               "LAG", "LAG_BYTES", "SENT", "DROPPED", "SHARD", "FILTER");
    for (size_t i = 0; i < resp->n_subscribers; i++) {
        Tickfan__Admin__V1__Subscriber *x = resp->subscribers[i];
        char filter[512] = "";
        size_t used = 0;
        for (size_t k = 0; k < x->n_kinds && used < sizeof(filter); k++)
            used += (size_t)snprintf(filter + used, sizeof(filter) - used, "%skind=%s",
                                     used ? " " : "", x->kinds[k]);
        for (size_t k = 0; k < x->n_keys && used < sizeof(filter); k++)
            used += (size_t)snprintf(filter + used, sizeof(filter) - used, "%skey=%s",
                                     used ? " " : "", x->keys[k]);
        if (json) {
            printf("{\"id\":%" PRIu64 ",\"peer\":\"%s\",\"topic\":\"%s\",\"state\":\"%s\","
                   "\"lag_events\":%" PRIu64 ",\"lag_bytes\":%" PRIu64 ",\"sent\":%" PRIu64
                   ",\"dropped\":%" PRIu64 ",\"since_unix_micros\":%" PRId64
                   ",\"shard\":%u,\"cursor\":\"%s\",\"filter\":\"%s\"}\n",
                   x->id, x->peer, x->topic, x->state, x->lag_events, x->lag_bytes, x->sent,
                   x->dropped, x->since_unix_micros, x->shard, x->cursor, filter);
        } else {
            printf("%-6" PRIu64 " %-24s %-10s %-8s %10" PRIu64 " %12" PRIu64 " %10" PRIu64
                   " %8" PRIu64 " %5u %s\n",
                   x->id, x->peer, x->topic, x->state, x->lag_events, x->lag_bytes, x->sent,
                   x->dropped, x->shard, filter[0] ? filter : "-");
        }
    }
    tickfan__admin__v1__list_subscribers_response__free_unpacked(resp, NULL);
    return EXIT_DONE;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        short_usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        fputs(main_help, stdout);
        return EXIT_DONE;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("tickfan %s\n", TICKFAN_VERSION);
        return EXIT_DONE;
    }
    if (strcmp(cmd, "help") == 0) {
        if (argc > 2 && strcmp(argv[2], "tail") == 0)
            fputs(tail_help, stdout);
        else
            fputs(main_help, stdout);
        return EXIT_DONE;
    }
    if (strcmp(cmd, "tail") == 0)
        return cmd_tail(argc - 1, argv + 1);
    if (strcmp(cmd, "admin") == 0)
        return cmd_admin(argc - 1, argv + 1);

    fprintf(stderr, "tickfan: unknown command '%s'\n", cmd);
    short_usage(stderr);
    return EXIT_USAGE;
}
