/*
 * tickfand: the tickfan server.
 *
 * Main thread: parse and validate the configuration, build the topics and
 * feeds, start the server and the ingest thread, then wait for signals.
 * SIGTERM/SIGINT: stop ingest, drain (every stream ends with UNAVAILABLE and
 * its cursor), stop, exit 0. A second SIGTERM/SIGINT exits at once (1).
 */
#include <errno.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef TICKFAN_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include "config.h"
#include "ingest.h"
#include "log.h"
#include "server.h"
#include "sim.h"
#include "topics.h"

#define EXIT_USAGE 2

/* mkdir -p */
static int make_dirs(const char *path)
{
    char buf[4096];
    if (strlen(path) >= sizeof(buf))
        return -ENAMETOOLONG;
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(buf, &st))
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* The listen address with the port actually bound (for --listen HOST:0). */
static void bound_address(const char *listen, int port, char *out, size_t outlen)
{
    const char *colon = strrchr(listen, ':');
    int hostlen = colon ? (int)(colon - listen) : (int)strlen(listen);
    snprintf(out, outlen, "%.*s:%d", hostlen, listen, port);
}

int main(int argc, char **argv, char **envp)
{
    struct config cfg;
    char err[512];
    int rc = config_parse(&cfg, argc, argv, (const char *const *)envp, stdout, err, sizeof(err));
    if (rc == CONFIG_HELP || rc == CONFIG_VERSION)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "tickfand: %s\n", err);
        return EXIT_USAGE;
    }
    enum log_level level = LOG_INFO;
    log_parse_level(cfg.log_level, &level);
    log_set_level(level);

    int exit_code = 1;
    struct topics topics = {0};
    struct ingest_feed feeds[64];
    size_t nfeeds = 0;
    bool feed_none = false;
    struct server *srv = NULL;
    ingest_t *ingest = NULL;

    rc = make_dirs(cfg.data_dir);
    if (rc) {
        fprintf(stderr, "tickfand: --data-dir '%s': cannot create: %s\n", cfg.data_dir,
                strerror(-rc));
        exit_code = EXIT_USAGE;
        goto out;
    }
    struct topics_options topts = {.data_dir = cfg.data_dir,
                                   .log_size = (size_t)cfg.log_size,
                                   .sync_every = strcmp(cfg.sync, "every") == 0};
    for (size_t i = 0; cfg.topics && cfg.topics[i]; i++) {
        rc = topics_add(&topics, cfg.topics[i], &topts, err, sizeof(err));
        if (rc) {
            fprintf(stderr, "tickfand: --topic '%s': %s\n", cfg.topics[i], err);
            exit_code = rc == -EINVAL && !topics_name_valid(cfg.topics[i], strlen(cfg.topics[i]))
                            ? EXIT_USAGE
                            : 1;
            goto out;
        }
    }

    /* Feeds: sim (topic "sim"), sim:TOPIC, none. Default: sim. */
    static char *default_feeds[] = {"sim", NULL};
    char **feed_specs = cfg.feeds ? cfg.feeds : default_feeds;
    for (size_t i = 0; feed_specs[i]; i++) {
        const char *spec = feed_specs[i];
        if (strcmp(spec, "none") == 0) {
            feed_none = true;
            continue;
        }
        const char *topic = NULL;
        if (strcmp(spec, "sim") == 0)
            topic = "sim";
        else if (strncmp(spec, "sim:", 4) == 0)
            topic = spec + 4;
        if (!topic) {
            fprintf(stderr,
                    "tickfand: --feed '%s': unknown feed (this version supports sim, "
                    "sim:TOPIC, none)\n",
                    spec);
            exit_code = EXIT_USAGE;
            goto out_sims;
        }
        if (nfeeds == sizeof(feeds) / sizeof(feeds[0])) {
            fprintf(stderr, "tickfand: --feed: at most 64 feeds\n");
            exit_code = EXIT_USAGE;
            goto out_sims;
        }
        rc = topics_add(&topics, topic, &topts, err, sizeof(err));
        if (rc) {
            fprintf(stderr, "tickfand: --feed '%s': %s\n", spec, err);
            exit_code = rc == -EINVAL && !topics_name_valid(topic, strlen(topic)) ? EXIT_USAGE : 1;
            goto out_sims;
        }
        sim_t *sim;
        rc = sim_create(&sim, cfg.sim_symbols, (uint64_t)cfg.sim_seed + nfeeds);
        if (rc) {
            fprintf(stderr, "tickfand: --sim-symbols '%s': %s\n", cfg.sim_symbols,
                    rc == -EINVAL ? "expected 1-64 comma-separated symbols of 1-16 characters "
                                    "[A-Za-z0-9._-]"
                                  : strerror(-rc));
            exit_code = EXIT_USAGE;
            goto out_sims;
        }
        feeds[nfeeds++] = (struct ingest_feed){.sim = sim, .rate = cfg.sim_rate};
    }
    if (feed_none && nfeeds) {
        fprintf(stderr, "tickfand: --feed none: cannot be combined with other feeds\n");
        exit_code = EXIT_USAGE;
        goto out_sims;
    }
    /* topics_add may have moved the array: resolve feed topics now */
    for (size_t i = 0, k = 0; feed_specs[i]; i++) {
        if (strcmp(feed_specs[i], "none") == 0)
            continue;
        const char *topic = strcmp(feed_specs[i], "sim") == 0 ? "sim" : feed_specs[i] + 4;
        feeds[k++].topic = topics_find(&topics, topic, strlen(topic));
    }
    if (topics.count == 0) {
        fprintf(stderr, "tickfand: no topics: declare one with --topic NAME or add a --feed\n");
        exit_code = EXIT_USAGE;
        goto out_sims;
    }

    /* Signals are taken synchronously by this thread; every thread started
     * from here on inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (strcmp(cfg.sync, "interval") == 0 && topics_sync_start(&topics, cfg.sync_interval_ms)) {
        fprintf(stderr, "tickfand: cannot start the log syncer thread\n");
        goto out_sims;
    }

    grpc_init();
    rc = server_create(&srv, &cfg, &topics, err, sizeof(err));
    if (rc) {
        log_error("msg=start_failed error=\"%s\"", err);
        fprintf(stderr, "tickfand: %s\n", err);
        goto out_grpc;
    }
    rc = ingest_create(&ingest, feeds, nfeeds, server_notify, srv);
    if (rc == 0)
        nfeeds = 0; /* the ingest owns the simulators now */
    if (rc == 0)
        rc = ingest_start(ingest);
    if (rc) {
        log_error("msg=start_failed error=\"ingest: %s\"", strerror(-rc));
        goto out_server;
    }

    char addr[300];
    bound_address(cfg.listen, srv->port, addr, sizeof(addr));
    char topic_list[512] = "";
    for (size_t i = 0, off = 0; i < topics.count && off < sizeof(topic_list) - 1; i++)
        off += (size_t)snprintf(topic_list + off, sizeof(topic_list) - off, "%s%s", i ? "," : "",
                                topics.items[i].name);
    log_info("msg=listening addr=%s shards=%zu topics=%s heartbeat_ms=%lld version=%s", addr,
             srv->nshards, topic_list, (long long)cfg.heartbeat_ms, TICKFAN_VERSION);

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&sigs, &si);
        if (sig == SIGHUP) {
            log_warn("msg=reload_unsupported detail=\"SIGHUP ignored: this version reloads "
                     "nothing at run time\"");
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            log_info("msg=draining signal=%s streams_live=%lld",
                     sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)server_streams_live(srv));
            break;
        }
    }

    ingest_stop(ingest);
    server_drain_begin(srv);
    int64_t deadline = log_now_mono_us() + cfg.drain_timeout_ms * 1000;
    while (server_streams_live(srv) > 0 && log_now_mono_us() < deadline) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000};
        siginfo_t si;
        int sig = sigtimedwait(&sigs, &si, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            log_warn("msg=exit_now reason=\"second signal during drain\" streams_live=%lld",
                     (long long)server_streams_live(srv));
            _exit(1);
        }
    }
    if (server_streams_live(srv) > 0)
        log_warn("msg=drain_timeout streams_cancelled=%lld", (long long)server_streams_live(srv));
    exit_code = 0;

out_server:
    if (srv)
        server_stop(srv);
    ingest_destroy(ingest);
    server_destroy(srv);
out_grpc:
    grpc_shutdown();
out_sims:
    for (size_t i = 0; i < nfeeds; i++)
        sim_destroy(feeds[i].sim);
out:
    topics_destroy(&topics);
    if (exit_code == 0)
        log_info("msg=stopped");
    config_free(&cfg);
    return exit_code;
}
