/*
 * config: tickfand's options, from one declarative table.
 *
 * Each option has a name (the flag is --name), a type, a default, bounds, an
 * environment variable and help text. Precedence: flags > environment >
 * defaults. Parsed and validated once at start, on the main thread, into an
 * immutable struct config that every other thread only reads.
 */
#ifndef TICKFAN_CONFIG_H
#define TICKFAN_CONFIG_H

#include <stdint.h>
#include <stdio.h>

struct config {
    char *listen;
    char *data_dir;
    int64_t heartbeat_ms;
    char **topics; /* declared topics, NULL-terminated */
    char **feeds;  /* feed specs, NULL-terminated */
    int64_t shards;
    char *io;
    int64_t udp_rcvbuf;
    int64_t log_size;
    char *sync;
    int64_t sync_interval_ms;
    int64_t max_lag_bytes;
    char *overflow;
    int64_t sim_rate;
    char *sim_symbols;
    int64_t sim_seed;
    char *log_level;
    char *metrics_listen;
    int64_t drain_timeout_ms;
    int64_t max_streams;
};

enum config_result {
    CONFIG_OK = 0,
    CONFIG_HELP = 1,    /* --help: usage was printed */
    CONFIG_VERSION = 2, /* --version: version was printed */
};

/* Fills *cfg from defaults, environment and argv. Returns a config_result,
 * or -EINVAL with a message naming the option and the value in err. On
 * failure *cfg holds nothing to free. */
int config_parse(struct config *cfg, int argc, char **argv, const char *const *envp, FILE *out,
                 char *err, size_t errlen);
void config_free(struct config *cfg);
void config_usage(FILE *out);

/* Parses a size with an optional K/M/G suffix (powers of 1024). 0 or -EINVAL. */
int config_parse_size(const char *s, int64_t *out);

#endif
