/*
 * config: the option table, parsing and validation. Main thread, at start.
 */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum opt_type { OPT_STR, OPT_INT, OPT_SIZE, OPT_LIST, OPT_ENUM, OPT_BOOL };

struct opt_def {
    const char *name;
    enum opt_type type;
    const char *defval;  /* NULL: no default (lists start empty) */
    int64_t min, max;    /* OPT_INT / OPT_SIZE bounds */
    const char *choices; /* OPT_ENUM: '|'-separated */
    const char *env;
    size_t offset;
    const char *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct opt_def opts[] = {
    {"config", OPT_STR, NULL, 0, 0, NULL, "TICKFAN_CONFIG", OFF(config_file),
     "INI file with any of these options (name = value) and [topic NAME] sections "
     "(log-size, max-lag-bytes, max-lag-events, overflow, heartbeat-ms); flags and environment "
     "override it"},
    {"listen", OPT_STR, "0.0.0.0:50051", 0, 0, NULL, "TICKFAN_LISTEN", OFF(listen),
     "gRPC listen address, HOST:PORT (port 0 picks a free port, logged at start)"},
    {"data-dir", OPT_STR, "tickfan-data", 0, 0, NULL, "TICKFAN_DATA_DIR", OFF(data_dir),
     "directory for the topic logs (created if missing)"},
    {"heartbeat-ms", OPT_INT, "5000", 10, 300000, NULL, "TICKFAN_HEARTBEAT_MS", OFF(heartbeat_ms),
     "send a heartbeat on a stream idle for this long; clients time out at 3x"},
    {"topic", OPT_LIST, NULL, 0, 0, NULL, "TICKFAN_TOPICS", OFF(topics),
     "declare a topic (repeatable; env: comma-separated)"},
    {"auto-create-topics", OPT_BOOL, "false", 0, 1, NULL, "TICKFAN_AUTO_CREATE_TOPICS",
     OFF(auto_create_topics),
     "create a topic the first time a feed or a Publish call names it (1-128 of A-Z a-z 0-9 . _ "
     "-, at most 1024 topics), and reopen the topic logs found in --data-dir at start; off: such "
     "frames are rejected and counted, Publish gets NOT_FOUND. The flag alone means true"},
    {"feed", OPT_LIST, NULL, 0, 0, NULL, "TICKFAN_FEEDS", OFF(feeds),
     "feed source (repeatable): sim[:TOPIC], udp://ADDR:PORT[?iface=ADDR], tcp://HOST:PORT, "
     "tcp-listen://ADDR:PORT, file:PATH[?rate=N|pace=recorded|pace=max], none; default sim "
     "(the simulator on topic 'sim')"},
    {"io", OPT_ENUM, "auto", 0, 0, "auto|uring|epoll", "TICKFAN_IO", OFF(io),
     "feed I/O: io_uring, or epoll (auto: io_uring, epoll where it cannot be set up)"},
    {"udp-rcvbuf", OPT_SIZE, "8M", 0, (int64_t)1 << 30, NULL, "TICKFAN_UDP_RCVBUF", OFF(udp_rcvbuf),
     "SO_RCVBUF of UDP feed sockets (the kernel caps it at net.core.rmem_max)"},
    {"udp-multishot", OPT_BOOL, "true", 0, 1, NULL, "TICKFAN_UDP_MULTISHOT", OFF(udp_multishot),
     "on io_uring, receive each UDP feed with one multishot recvmsg over a ring of provided "
     "buffers (64 x 64 KiB per socket; Linux 6.0+, else one-shot recvmsg is used by itself); "
     "false: 16 one-shot recvmsg in flight per socket"},
    {"shards", OPT_INT, "0", 0, 256, NULL, "TICKFAN_SHARDS", OFF(shards),
     "worker threads serving streams, each with its own completion queue (0 = 8 per CPU this "
     "process may run on, at most 256)"},
    {"log-size", OPT_SIZE, "64M", 64 * 1024, (int64_t)1 << 40, NULL, "TICKFAN_LOG_SIZE",
     OFF(log_size), "bytes of ring log per topic (K/M/G suffixes); retention is what fits"},
    {"sync", OPT_ENUM, "interval", 0, 0, "interval|every", "TICKFAN_SYNC", OFF(sync),
     "when appended events reach the disk: every --sync-interval-ms, or before each is "
     "published (slow; survives machine crashes with no loss)"},
    {"sync-interval-ms", OPT_INT, "1000", 1, 3600000, NULL, "TICKFAN_SYNC_INTERVAL_MS",
     OFF(sync_interval_ms), "with --sync interval: how often the topic logs are msync'd"},
    {"max-lag-bytes", OPT_SIZE, "0", 0, (int64_t)1 << 40, NULL, "TICKFAN_MAX_LAG_BYTES",
     OFF(max_lag_bytes),
     "lag budget per live subscriber, in log bytes behind the head (0 = half the topic log)"},
    {"max-lag-events", OPT_INT, "100000", 0, (int64_t)1 << 40, NULL, "TICKFAN_MAX_LAG_EVENTS",
     OFF(max_lag_events),
     "lag budget per live subscriber, in events behind the head of its topic, matching its "
     "filter or not (0 = no limit in events: the byte budget alone); over either budget the "
     "overflow policy applies"},
    {"overflow", OPT_ENUM, "drop", 0, 0, "drop|conflate|disconnect", "TICKFAN_OVERFLOW",
     OFF(overflow), "default overflow policy for subscribers over their lag budget"},
    {"max-streams", OPT_INT, "100000", 1, 10000000, NULL, "TICKFAN_MAX_STREAMS", OFF(max_streams),
     "streams served at once, Watch and Subscribe streams alike; beyond it a new stream fails "
     "with RESOURCE_EXHAUSTED"},
    {"max-subscriptions-per-stream", OPT_INT, "10000", 1, 1000000, NULL,
     "TICKFAN_MAX_SUBSCRIPTIONS_PER_STREAM", OFF(max_subs_per_stream),
     "subscriptions one Subscribe stream may hold at once; an add beyond it ends with "
     "SubscriptionEnd RESOURCE_EXHAUSTED"},
    {"max-batch-bytes", OPT_SIZE, "256K", 1024, 4 << 20, NULL, "TICKFAN_MAX_BATCH_BYTES",
     OFF(max_batch_bytes),
     "Subscribe: what one SubscribeResponse carries at most (K/M suffixes; one delivery larger "
     "than that goes alone); keep it under the clients' receive limit (4 MiB by default)"},
    {"write-coalescing", OPT_BOOL, "true", 0, 1, NULL, "TICKFAN_WRITE_COALESCING",
     OFF(write_coalescing),
     "send a stream's message with GRPC_WRITE_BUFFER_HINT when its next one is already queued "
     "(at most 16 in a row), so gRPC writes them together; false: every message is written on "
     "its own (for measuring the difference, see perf/README.md)"},
    {"shard-balance", OPT_ENUM, "stream", 0, 0, "connection|stream", "TICKFAN_SHARD_BALANCE",
     OFF(shard_balance),
     "what is spread evenly over the shards: connections (each connection's streams stay on "
     "one shard, so its completions never cross threads) or streams (one connection's streams "
     "spread over every shard; for clients with many streams on few connections)"},
    {"shard-fill", OPT_INT, "64", 0, 1000000, NULL, "TICKFAN_SHARD_FILL", OFF(shard_fill),
     "with --shard-balance=stream, shards take calls one per CPU at first, and one more shard "
     "starts taking them each time every shard that does serves this many streams (a "
     "Subscribe stream counts one); the others wait without polling gRPC, so a tick wakes "
     "only the threads that serve it. A shard that has started stays. 0: every shard takes "
     "calls from the start"},
    {"cq-thread-cache", OPT_BOOL, "false", 0, 1, NULL, "TICKFAN_CQ_THREAD_CACHE",
     OFF(cq_thread_cache),
     "take a send that completes inside grpc_call_start_batch back on the shard thread from "
     "gRPC's thread-local cache, without the completion queue's push, kick and pop; false: "
     "every completion through the queue, as gRPC does by default (for measuring, see "
     "perf/README.md)"},
    {"grpc-lean-filters", OPT_BOOL, "false", 0, 1, NULL, "TICKFAN_GRPC_LEAN_FILTERS",
     OFF(grpc_lean_filters),
     "leave gRPC's per-message compression, decompression and deadline-check filters out of "
     "every call (tickfan compresses nothing and sets no deadlines; the message-size limit "
     "stays); false: gRPC's default filter stack, the default until measured to pay (see "
     "perf/README.md)"},
    {"grpc-deadlock-detection", OPT_BOOL, "true", 0, 1, NULL, "TICKFAN_GRPC_DEADLOCK_DETECTION",
     OFF(grpc_deadlock_detection),
     "run abseil's Mutex deadlock detector under gRPC (Debian's abseil is a debug build: every "
     "lock and unlock goes through it and one process-wide spinlock), as Debian's abseil does "
     "by default; false turns it off (for measuring, see perf/README.md)"},
    {"sim-rate", OPT_INT, "200", 1, 10000000, NULL, "TICKFAN_SIM_RATE", OFF(sim_rate),
     "built-in simulator: ticks per second over all symbols"},
    {"sim-symbols", OPT_STR, "AAPL,MSFT,GOOG,AMZN,NVDA,TSLA,META,JPM", 0, 0, NULL,
     "TICKFAN_SIM_SYMBOLS", OFF(sim_symbols), "built-in simulator: comma-separated symbols"},
    {"sim-seed", OPT_INT, "1", 0, INT64_MAX, NULL, "TICKFAN_SIM_SEED", OFF(sim_seed),
     "built-in simulator: random seed (same seed, same ticks)"},
    {"metrics-listen", OPT_STR, NULL, 0, 0, NULL, "TICKFAN_METRICS_LISTEN", OFF(metrics_listen),
     "serve Prometheus metrics at http://HOST:PORT/metrics (unset or empty: no metrics endpoint)"},
    {"log-format", OPT_ENUM, "logfmt", 0, 0, "logfmt|json", "TICKFAN_LOG_FORMAT", OFF(log_format),
     "log lines as logfmt (key=value) or one JSON object per line"},
    {"log-level", OPT_ENUM, "info", 0, 0, "error|warn|info|debug", "TICKFAN_LOG_LEVEL",
     OFF(log_level), "log level"},
    {"drain-timeout-ms", OPT_INT, "5000", 0, 600000, NULL, "TICKFAN_DRAIN_TIMEOUT_MS",
     OFF(drain_timeout_ms), "on SIGTERM, how long streams get to receive their final status"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

int config_parse_size(const char *s, int64_t *out)
{
    if (!*s)
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        return -EINVAL;
    int64_t mult = 1;
    if (*end) {
        switch (*end) {
        case 'k':
        case 'K':
            mult = 1024;
            break;
        case 'm':
        case 'M':
            mult = 1024 * 1024;
            break;
        case 'g':
        case 'G':
            mult = 1024 * 1024 * 1024;
            break;
        default:
            return -EINVAL;
        }
        end++;
        if (*end == 'i' || *end == 'I')
            end++;
        if (*end == 'b' || *end == 'B')
            end++;
        if (*end)
            return -EINVAL;
    }
    if (v > INT64_MAX / mult)
        return -EINVAL;
    *out = v * mult;
    return 0;
}

static int list_append(char ***list, const char *value, size_t len)
{
    size_t n = 0;
    while (*list && (*list)[n])
        n++;
    char **grown = realloc(*list, (n + 2) * sizeof(char *));
    if (!grown)
        return -ENOMEM;
    *list = grown;
    grown[n] = strndup(value, len);
    grown[n + 1] = NULL;
    return grown[n] ? 0 : -ENOMEM;
}

static void list_free(char ***list)
{
    for (size_t i = 0; *list && (*list)[i]; i++)
        free((*list)[i]);
    free(*list);
    *list = NULL;
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    for (const char *c = choices; *c;) {
        const char *bar = strchr(c, '|');
        size_t cl = bar ? (size_t)(bar - c) : strlen(c);
        if (cl == vl && strncmp(c, v, vl) == 0)
            return true;
        if (!bar)
            break;
        c = bar + 1;
    }
    return false;
}

/* Where a value comes from, for precedence and for error messages. */
enum source { SRC_DEFAULT, SRC_FILE, SRC_ENV, SRC_FLAG };

/* Sets one option from text. `where` names the source in messages: NULL for
 * a flag, else e.g. "TICKFAN_X" or "tickfan.ini:12". `field` is the place to
 * set (the option's own field, or a topic section's). */
static int set_value(void *field, const struct opt_def *o, const char *v, enum source src,
                     const char *where, char *err, size_t errlen)
{
    char who[300];
    if (where)
        snprintf(who, sizeof(who), "%s (%s)", where, o->name);
    else
        snprintf(who, sizeof(who), "--%s", o->name);

    switch (o->type) {
    case OPT_STR:
    case OPT_ENUM: {
        if (o->type == OPT_ENUM && !choice_ok(o->choices, v)) {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: %s)", who, v, o->choices);
            return -EINVAL;
        }
        if (o->type == OPT_STR && !*v && !o->defval) {
            /* an option that is unset by default is unset by an empty
             * value: how `-e TICKFAN_METRICS_LISTEN=` turns off what an
             * image or unit file set */
            free(*(char **)field);
            *(char **)field = NULL;
            return 0;
        }
        if (o->type == OPT_STR && !*v) {
            snprintf(err, errlen, "%s: empty value", who);
            return -EINVAL;
        }
        char *dup = strdup(v);
        if (!dup)
            return -ENOMEM;
        free(*(char **)field);
        *(char **)field = dup;
        return 0;
    }
    case OPT_BOOL: {
        static const char *const yes[] = {"true", "on", "yes", "1"}, *const no[] = {"false", "off",
                                                                                    "no", "0"};
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
                *(int64_t *)field = strcasecmp(v, yes[i]) == 0;
                return 0;
            }
        }
        snprintf(err, errlen, "%s: invalid value '%s' (expected true or false)", who, v);
        return -EINVAL;
    }
    case OPT_INT:
    case OPT_SIZE: {
        int64_t n;
        int rc;
        if (o->type == OPT_SIZE) {
            rc = config_parse_size(v, &n);
        } else {
            char *end;
            errno = 0;
            long long ll = strtoll(v, &end, 10);
            rc = (errno || end == v || *end) ? -EINVAL : 0;
            n = ll;
        }
        if (rc) {
            snprintf(err, errlen, "%s: invalid value '%s' (expected %s)", who, v,
                     o->type == OPT_SIZE ? "a size such as 65536, 64K or 64M" : "an integer");
            return -EINVAL;
        }
        if (n < o->min || n > o->max) {
            snprintf(err, errlen, "%s: value '%s' out of range [%lld, %lld]", who, v,
                     (long long)o->min, (long long)o->max);
            return -EINVAL;
        }
        *(int64_t *)field = n;
        return 0;
    }
    case OPT_LIST: {
        char ***list = field;
        if (src != SRC_ENV) {
            if (!*v) {
                snprintf(err, errlen, "%s: empty value", who);
                return -EINVAL;
            }
            return list_append(list, v, strlen(v));
        }
        for (const char *p = v; *p;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len && list_append(list, p, len))
                return -ENOMEM;
            if (!comma)
                break;
            p = comma + 1;
        }
        return 0;
    }
    }
    return -EINVAL;
}

static int set_opt(struct config *cfg, const struct opt_def *o, const char *v, bool from_env,
                   char *err, size_t errlen)
{
    return set_value((char *)cfg + o->offset, o, v, from_env ? SRC_ENV : SRC_DEFAULT,
                     from_env ? o->env : NULL, err, errlen);
}

static const struct opt_def *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static const char *env_get(const char *const *envp, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; envp && envp[i]; i++)
        if (strncmp(envp[i], name, nl) == 0 && envp[i][nl] == '=')
            return envp[i] + nl + 1;
    return NULL;
}

void config_usage(FILE *out)
{
    fprintf(out, "usage: tickfand [OPTIONS]\n\n"
                 "tickfan market-data fanout server. With no options it serves the built-in\n"
                 "simulated feed on topic 'sim' at 0.0.0.0:50051; watch it with\n"
                 "  tickfan tail sim\n\n"
                 "Options (flags override environment, environment overrides defaults):\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt_def *o = &opts[i];
        const char *arg = o->type == OPT_INT    ? " N"
                          : o->type == OPT_SIZE ? " SIZE"
                          : o->type == OPT_ENUM ? o->choices
                          : o->type == OPT_BOOL ? "[=true|false]"
                                                : " VALUE";
        fprintf(out, "  --%s%s%s\n      %s\n      env %s", o->name, o->type == OPT_ENUM ? " " : "",
                arg, o->help, o->env);
        if (o->defval)
            fprintf(out, ", default %s", o->defval);
        if (o->type == OPT_INT || (o->type == OPT_SIZE))
            fprintf(out, ", range [%lld, %lld]", (long long)o->min, (long long)o->max);
        fputc('\n', out);
    }
    fprintf(out, "  --check-config  validate the configuration and exit (0: valid, 2: not)\n"
                 "  --help     print this help and exit\n"
                 "  --version  print the version and exit\n\n"
                 "SIGHUP re-reads --config and applies log-level, heartbeat-ms, max-lag-bytes,\n"
                 "max-lag-events, overflow and the [topic NAME] settings of those; other\n"
                 "changes are logged as needing a restart.\n\n"
                 "Exit codes: 0 clean shutdown (SIGTERM/SIGINT), 1 runtime failure,\n"
                 "2 bad option or value.\n");
}

/* Options a [topic NAME] section may set, and where they go. */
static const struct {
    const char *name;
    size_t offset;
} topic_keys[] = {
    {"log-size", offsetof(struct topic_conf, log_size)},
    {"max-lag-bytes", offsetof(struct topic_conf, max_lag_bytes)},
    {"max-lag-events", offsetof(struct topic_conf, max_lag_events)},
    {"overflow", offsetof(struct topic_conf, overflow)},
    {"heartbeat-ms", offsetof(struct topic_conf, heartbeat_ms)},
};

struct file_state {
    struct config *cfg;
    const char *path;
    FILE *f;
    int line; /* lines read so far: the handler's line */
    int line_of_error;
    int rc;
    char *err;
    size_t errlen;
    bool list_from_file[NOPTS];
};

static struct topic_conf *topic_conf_get(struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->ntopic_confs; i++)
        if (strcmp(cfg->topic_confs[i].name, name) == 0)
            return &cfg->topic_confs[i];
    struct topic_conf *grown =
        realloc(cfg->topic_confs, (cfg->ntopic_confs + 1) * sizeof(*cfg->topic_confs));
    if (!grown)
        return NULL;
    cfg->topic_confs = grown;
    struct topic_conf *tc = &grown[cfg->ntopic_confs];
    memset(tc, 0, sizeof(*tc));
    tc->log_size = tc->max_lag_bytes = tc->max_lag_events = tc->heartbeat_ms = -1;
    tc->name = strdup(name);
    if (!tc->name)
        return NULL;
    cfg->ntopic_confs++;
    return tc;
}

static int on_ini(void *user, const char *section, const char *name, const char *value)
{
    struct file_state *fs = user;
    int lineno = fs->line;
    char where[300];
    snprintf(where, sizeof(where), "%s:%d", fs->path, lineno);
    if (!section[0]) {
        const struct opt_def *o = find_opt(name, strlen(name));
        if (!o || strcmp(name, "config") == 0) {
            snprintf(fs->err, fs->errlen, "%s: unknown option '%s' (see --help)", where, name);
            fs->rc = -EINVAL;
            return 0;
        }
        if (o->type == OPT_LIST && !fs->list_from_file[o - opts]) {
            list_free((char ***)((char *)fs->cfg + o->offset));
            fs->list_from_file[o - opts] = true;
        }
        fs->rc =
            set_value((char *)fs->cfg + o->offset, o, value, SRC_FILE, where, fs->err, fs->errlen);
        return fs->rc == 0;
    }
    if (strncmp(section, "topic ", 6) != 0 || !section[6]) {
        snprintf(fs->err, fs->errlen, "%s: unknown section [%s] (expected [topic NAME])", where,
                 section);
        fs->rc = -EINVAL;
        return 0;
    }
    struct topic_conf *tc = topic_conf_get(fs->cfg, section + 6);
    if (!tc) {
        fs->rc = -ENOMEM;
        return 0;
    }
    for (size_t i = 0; i < sizeof(topic_keys) / sizeof(topic_keys[0]); i++) {
        if (strcmp(name, topic_keys[i].name) != 0)
            continue;
        const struct opt_def *o = find_opt(name, strlen(name));
        fs->rc = set_value((char *)tc + topic_keys[i].offset, o, value, SRC_FILE, where, fs->err,
                           fs->errlen);
        return fs->rc == 0;
    }
    snprintf(fs->err, fs->errlen,
             "%s: '%s' cannot be set per topic (log-size, max-lag-bytes, max-lag-events, overflow, "
             "heartbeat-ms can)",
             where, name);
    fs->rc = -EINVAL;
    return 0;
}

static char *read_line(char *str, int num, void *stream)
{
    struct file_state *fs = stream;
    char *r = fgets(str, num, fs->f);
    if (r)
        fs->line++;
    return r;
}

/* The --config path from flags or environment, before anything else. */
static const char *find_config_path(int argc, char **argv, const char *const *envp)
{
    const char *path = env_get(envp, "TICKFAN_CONFIG");
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--config") == 0 && a + 1 < argc)
            path = argv[a + 1];
        else if (strncmp(argv[a], "--config=", 9) == 0)
            path = argv[a] + 9;
    }
    return path;
}

int config_parse(struct config *cfg, int argc, char **argv, const char *const *envp, FILE *out,
                 char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    int rc = 0;
    for (size_t i = 0; i < NOPTS; i++) {
        if (opts[i].defval && (rc = set_opt(cfg, &opts[i], opts[i].defval, false, err, errlen)))
            goto out_free;
    }
    /* The file, then the environment, then flags: each overrides the one
     * before; a list from a later source replaces the list wholesale. */
    const char *path = find_config_path(argc, argv, envp);
    if (path && *path) { /* empty: no file, as unset */
        struct file_state fs = {.cfg = cfg, .path = path, .err = err, .errlen = errlen};
        fs.f = fopen(path, "r");
        if (!fs.f) {
            snprintf(err, errlen, "--config '%s': cannot open: %s", path, strerror(errno));
            rc = -EINVAL;
            goto out_free;
        }
        int line = ini_parse_stream(read_line, &fs, on_ini, &fs);
        fclose(fs.f);
        if (line != 0 || fs.rc) {
            if (!fs.rc)
                snprintf(err, errlen, "%s:%d: cannot parse this line", path, line);
            rc = fs.rc ? fs.rc : -EINVAL;
            goto out_free;
        }
        cfg->config_path = strdup(path);
    }
    bool list_from_env[NOPTS];
    memset(list_from_env, 0, sizeof(list_from_env));
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = env_get(envp, opts[i].env);
        if (!v)
            continue;
        if (opts[i].type == OPT_LIST) {
            list_free((char ***)((char *)cfg + opts[i].offset));
            list_from_env[i] = true;
        }
        if ((rc = set_opt(cfg, &opts[i], v, true, err, errlen)))
            goto out_free;
    }
    bool list_from_flags[NOPTS];
    memset(list_from_flags, 0, sizeof(list_from_flags));
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            config_usage(out);
            config_free(cfg);
            return CONFIG_HELP;
        }
        if (strcmp(arg, "--version") == 0) {
            fprintf(out, "tickfand %s\n", TICKFAN_VERSION);
            config_free(cfg);
            return CONFIG_VERSION;
        }
        if (strcmp(arg, "--options-markdown") == 0) {
            config_options_markdown(out);
            config_free(cfg);
            return CONFIG_HELP;
        }
        if (strcmp(arg, "--check-config") == 0) {
            cfg->check_only = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (options start with --)", arg);
            rc = -EINVAL;
            goto out_free;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt_def *o = find_opt(name, nlen);
        if (!o) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)nlen, name);
            rc = -EINVAL;
            goto out_free;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (o->type == OPT_BOOL) {
            v = "true"; /* --flag alone; a value needs --flag=VALUE */
        } else if (a + 1 < argc) {
            v = argv[++a];
        } else {
            snprintf(err, errlen, "--%s: missing value", o->name);
            rc = -EINVAL;
            goto out_free;
        }
        if (o->type == OPT_LIST && !list_from_flags[o - opts]) {
            list_free((char ***)((char *)cfg + o->offset));
            list_from_flags[o - opts] = true;
        }
        if ((rc = set_opt(cfg, o, v, false, err, errlen)))
            goto out_free;
    }
    return CONFIG_OK;

out_free:
    config_free(cfg);
    return rc == -ENOMEM ? (snprintf(err, errlen, "out of memory"), -ENOMEM) : rc;
}

void config_options_markdown(FILE *out)
{
    fprintf(out, "| option | env | default | meaning |\n| --- | --- | --- | --- |\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt_def *o = &opts[i];
        fprintf(out, "| `--%s` | `%s` | ", o->name, o->env);
        if (o->defval)
            fprintf(out, "`%s`", o->defval);
        else
            fprintf(out, "unset");
        if (o->type == OPT_INT || o->type == OPT_SIZE)
            fprintf(out, " (%lld..%lld)", (long long)o->min, (long long)o->max);
        if (o->type == OPT_ENUM)
            fprintf(out, " (`%s`)", o->choices);
        if (o->type == OPT_BOOL)
            fprintf(out, " (`true`/`false`)");
        fprintf(out, " | %s |\n", o->help);
    }
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->ntopic_confs; i++) {
        free(cfg->topic_confs[i].name);
        free(cfg->topic_confs[i].overflow);
    }
    free(cfg->topic_confs);
    cfg->topic_confs = NULL;
    cfg->ntopic_confs = 0;
    free(cfg->config_path);
    cfg->config_path = NULL;
    for (size_t i = 0; i < NOPTS; i++) {
        void *field = (char *)cfg + opts[i].offset;
        if (opts[i].type == OPT_LIST)
            list_free(field);
        else if (opts[i].type == OPT_STR || opts[i].type == OPT_ENUM) {
            free(*(char **)field);
            *(char **)field = NULL;
        }
    }
}

static bool list_equal(char **a, char **b)
{
    size_t i = 0;
    for (; a && b && a[i] && b[i]; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return (!a || !a[i]) && (!b || !b[i]);
}

void config_changed(const struct config *a, const struct config *b, char *out, size_t len)
{
    out[0] = 0;
    for (size_t i = 0; i < NOPTS; i++) {
        const void *fa = (const char *)a + opts[i].offset, *fb = (const char *)b + opts[i].offset;
        bool same;
        switch (opts[i].type) {
        case OPT_INT:
        case OPT_SIZE:
        case OPT_BOOL:
            same = *(const int64_t *)fa == *(const int64_t *)fb;
            break;
        case OPT_LIST:
            same = list_equal(*(char **const *)fa, *(char **const *)fb);
            break;
        default: {
            const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
            same = (!sa && !sb) || (sa && sb && strcmp(sa, sb) == 0);
        }
        }
        if (!same) {
            size_t used = strlen(out);
            snprintf(out + used, len - used, "%s%s", used ? "," : "", opts[i].name);
        }
    }
}
