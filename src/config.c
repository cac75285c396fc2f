/*
 * config: the option table, parsing and validation. Main thread, at start.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum opt_type { OPT_STR, OPT_INT, OPT_SIZE, OPT_LIST, OPT_ENUM };

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
    {"listen", OPT_STR, "0.0.0.0:50051", 0, 0, NULL, "TICKFAN_LISTEN", OFF(listen),
     "gRPC listen address, HOST:PORT (port 0 picks a free port, logged at start)"},
    {"data-dir", OPT_STR, "tickfan-data", 0, 0, NULL, "TICKFAN_DATA_DIR", OFF(data_dir),
     "directory for the topic logs (created if missing)"},
    {"heartbeat-ms", OPT_INT, "5000", 10, 300000, NULL, "TICKFAN_HEARTBEAT_MS", OFF(heartbeat_ms),
     "send a heartbeat on a stream idle for this long; clients time out at 3x"},
    {"topic", OPT_LIST, NULL, 0, 0, NULL, "TICKFAN_TOPICS", OFF(topics),
     "declare a topic (repeatable; env: comma-separated)"},
    {"feed", OPT_LIST, NULL, 0, 0, NULL, "TICKFAN_FEEDS", OFF(feeds),
     "feed source (repeatable): sim[:TOPIC], udp://ADDR:PORT[?iface=ADDR], tcp://HOST:PORT, "
     "tcp-listen://ADDR:PORT, file:PATH[?rate=N|pace=recorded|pace=max], none; default sim "
     "(the simulator on topic 'sim')"},
    {"io", OPT_ENUM, "auto", 0, 0, "auto|uring|epoll", "TICKFAN_IO", OFF(io),
     "feed I/O: io_uring, or epoll (auto: io_uring, epoll where it cannot be set up)"},
    {"udp-rcvbuf", OPT_SIZE, "8M", 0, (int64_t)1 << 30, NULL, "TICKFAN_UDP_RCVBUF", OFF(udp_rcvbuf),
     "SO_RCVBUF of UDP feed sockets (the kernel caps it at net.core.rmem_max)"},
    {"shards", OPT_INT, "0", 0, 256, NULL, "TICKFAN_SHARDS", OFF(shards),
     "worker threads serving streams, each with its own completion queue (0 = online CPUs)"},
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
    {"overflow", OPT_ENUM, "drop", 0, 0, "drop|conflate|disconnect", "TICKFAN_OVERFLOW",
     OFF(overflow), "default overflow policy for subscribers over their lag budget"},
    {"max-streams", OPT_INT, "100000", 1, 10000000, NULL, "TICKFAN_MAX_STREAMS", OFF(max_streams),
     "streams served at once; beyond it Watch fails with RESOURCE_EXHAUSTED"},
    {"sim-rate", OPT_INT, "200", 1, 10000000, NULL, "TICKFAN_SIM_RATE", OFF(sim_rate),
     "built-in simulator: ticks per second over all symbols"},
    {"sim-symbols", OPT_STR, "AAPL,MSFT,GOOG,AMZN,NVDA,TSLA,META,JPM", 0, 0, NULL,
     "TICKFAN_SIM_SYMBOLS", OFF(sim_symbols), "built-in simulator: comma-separated symbols"},
    {"sim-seed", OPT_INT, "1", 0, INT64_MAX, NULL, "TICKFAN_SIM_SEED", OFF(sim_seed),
     "built-in simulator: random seed (same seed, same ticks)"},
    {"metrics-listen", OPT_STR, NULL, 0, 0, NULL, "TICKFAN_METRICS_LISTEN", OFF(metrics_listen),
     "serve Prometheus metrics at http://HOST:PORT/metrics (unset: no metrics endpoint)"},
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

/* Sets one option from text. `from` names where the value came from. */
static int set_opt(struct config *cfg, const struct opt_def *o, const char *v, bool from_env,
                   char *err, size_t errlen)
{
    void *field = (char *)cfg + o->offset;
    const char *src = from_env ? o->env : NULL;
    char who[96];
    if (src)
        snprintf(who, sizeof(who), "%s (--%s)", src, o->name);
    else
        snprintf(who, sizeof(who), "--%s", o->name);

    switch (o->type) {
    case OPT_STR:
    case OPT_ENUM: {
        if (o->type == OPT_ENUM && !choice_ok(o->choices, v)) {
            snprintf(err, errlen, "%s: invalid value '%s' (allowed: %s)", who, v, o->choices);
            return -EINVAL;
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
        if (!from_env) {
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
        const char *arg = o->type == OPT_INT    ? "N"
                          : o->type == OPT_SIZE ? "SIZE"
                          : o->type == OPT_ENUM ? o->choices
                                                : "VALUE";
        fprintf(out, "  --%s %s\n      %s\n      env %s", o->name, arg, o->help, o->env);
        if (o->defval)
            fprintf(out, ", default %s", o->defval);
        if (o->type == OPT_INT || (o->type == OPT_SIZE))
            fprintf(out, ", range [%lld, %lld]", (long long)o->min, (long long)o->max);
        fputc('\n', out);
    }
    fprintf(out, "  --help     print this help and exit\n"
                 "  --version  print the version and exit\n\n"
                 "Exit codes: 0 clean shutdown (SIGTERM/SIGINT), 1 runtime failure,\n"
                 "2 bad option or value.\n");
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
    /* Environment. A list from env is replaced wholesale by list flags. */
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = env_get(envp, opts[i].env);
        if (v && (rc = set_opt(cfg, &opts[i], v, true, err, errlen)))
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

void config_free(struct config *cfg)
{
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
