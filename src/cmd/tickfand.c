/*
 * tickfand: the tickfan server.
 *
 * Main thread: parse and validate the configuration, build the topics and
 * feeds, start the server and the ingest thread, then wait for signals.
 * SIGTERM/SIGINT: stop ingest, drain (every stream ends with UNAVAILABLE and
 * its cursor), stop, exit 0. A second SIGTERM/SIGINT exits at once (1).
 */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <errno.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef TICKFAN_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include "abslmutex.h"
#include "clock.h"
#include "config.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "topics.h"

#define EXIT_USAGE 2

#ifndef TICKFAN_GRPC_NDEBUG
#define TICKFAN_GRPC_NDEBUG "unknown"
#endif

/* The file the gRPC core was loaded from: the loader may not take the one
 * the build linked (LD_LIBRARY_PATH, a missing RPATH target). */
static const char *grpc_library_path(void)
{
    Dl_info info;
    if (dladdr((void *)grpc_version_string, &info) && info.dli_fname)
        return info.dli_fname;
    return "unknown";
}

#ifdef TICKFAN_HAVE_JEMALLOC
/*
 * jemalloc's compiled-in options, read at its first allocation. It must be
 * defined in the executable itself: libjemalloc.so defines a default of
 * its own, which a definition in a static library would not replace (no
 * object of the archive would be pulled in for it). MALLOC_CONF at run
 * time is read after it and overrides it, option by option.
 *
 * By default jemalloc returns freed pages only while the arena that holds
 * them keeps allocating: after an attack (rapid resets, thousands of
 * connections) an idle server kept its peak RSS for good. A background
 * thread purges on time instead. Dirty pages (freed, still mapped) go back
 * after about a second: long enough for a burst of gRPC's allocations to
 * reuse them, short enough that an attack's leftovers are gone within
 * seconds. muzzy_decay_ms:0 gives them back with MADV_DONTNEED at once
 * rather than MADV_FREE, whose pages stay in RSS until the kernel is short
 * of memory: RSS then says what the process really holds.
 */
const char *malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
#endif

/* The ingest is created before the server (it may add topics the server
 * must know); it notifies through this pointer once the server exists. */
static void server_notify_late(void *arg)
{
    struct server *srv = *(struct server *const volatile *)arg;
    if (srv)
        server_notify(srv);
}

/* --check-config: what can be checked without opening anything. */
static int check_config(const struct config *cfg)
{
    for (size_t i = 0; cfg->topics && cfg->topics[i]; i++)
        if (!topics_name_valid(cfg->topics[i], strlen(cfg->topics[i]))) {
            fprintf(stderr, "tickfand: --topic '%s': invalid topic name\n", cfg->topics[i]);
            return -1;
        }
    for (size_t i = 0; i < cfg->ntopic_confs; i++)
        if (!topics_name_valid(cfg->topic_confs[i].name, strlen(cfg->topic_confs[i].name))) {
            fprintf(stderr, "tickfand: [topic %s]: invalid topic name\n", cfg->topic_confs[i].name);
            return -1;
        }
    static const char *const kinds[] = {"sim",           "sim:",  "udp://", "tcp://",
                                        "tcp-listen://", "file:", "none"};
    for (size_t i = 0; cfg->feeds && cfg->feeds[i]; i++) {
        bool ok = false;
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
            ok |= strncmp(cfg->feeds[i], kinds[k], strlen(kinds[k])) == 0;
        if (!ok) {
            fprintf(stderr, "tickfand: --feed '%s': unknown feed\n", cfg->feeds[i]);
            return -1;
        }
    }
    printf("tickfand: configuration OK%s%s%s\n", cfg->config_path ? " (" : "",
           cfg->config_path ? cfg->config_path : "", cfg->config_path ? ")" : "");
    return 0;
}

/* SIGHUP: re-read the configuration (the file may have changed; flags and
 * environment are as at start) and apply what can change at run time. */
static void reload(struct config *cfg, struct topics *topics, int argc, char **argv, char **envp)
{
    struct config next;
    char err[512];
    if (config_parse(&next, argc, argv, (const char *const *)envp, stdout, err, sizeof(err)) !=
        CONFIG_OK) {
        log_error("msg=reload_failed error=\"%s\" detail=\"kept the running configuration\"", err);
        return;
    }
    char changed[1024], topics_changed[1024], restart[1024] = "";
    config_changed(cfg, &next, changed, sizeof(changed));
    static const char *const live[] = {"log-level", "heartbeat-ms", "max-lag-bytes",
                                       "max-lag-events", "overflow"};
    /* everything else that changed needs a restart */
    for (char *name = strtok(changed, ","); name; name = strtok(NULL, ",")) {
        bool is_live = false;
        for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
            is_live |= strcmp(name, live[i]) == 0;
        if (!is_live) {
            size_t used = strlen(restart);
            snprintf(restart + used, sizeof(restart) - used, "%s%s", used ? "," : "", name);
        }
    }
    enum log_level level;
    if (log_parse_level(next.log_level, &level) == 0)
        log_set_level(level);
    topics_apply_settings(topics, &next, topics_changed, sizeof(topics_changed));
    log_info("msg=reloaded log_level=%s changed=\"%s\" restart_needed=\"%s\"", next.log_level,
             topics_changed, restart);
    config_free(&next);
}

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

/* Each topic log holds a file descriptor and each client connection one: a
 * soft limit of 1024 would cap a box holding thousands of connections. */
static void raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            log_debug("msg=nofile_limit_raised from=%llu to=%llu", (unsigned long long)was,
                      (unsigned long long)rl.rlim_max);
    }
}

/* One line with the allocator's settings as they took effect (MALLOC_CONF
 * may have changed them); a warning if the background thread is not on. */
static void log_allocator(void)
{
#ifdef TICKFAN_HAVE_JEMALLOC
    const char *version = "?";
    bool opt_bg = false, bg = false;
    ssize_t dirty = -2, muzzy = -2;
    size_t len = sizeof(version);
    mallctl("version", &version, &len, NULL, 0);
    len = sizeof(opt_bg);
    mallctl("opt.background_thread", &opt_bg, &len, NULL, 0);
    len = sizeof(bg);
    mallctl("background_thread", &bg, &len, NULL, 0);
    len = sizeof(dirty);
    mallctl("opt.dirty_decay_ms", &dirty, &len, NULL, 0);
    len = sizeof(muzzy);
    mallctl("opt.muzzy_decay_ms", &muzzy, &len, NULL, 0);
    const char *env = getenv("MALLOC_CONF");
    log_info("msg=allocator name=jemalloc version=%s background_thread=%s dirty_decay_ms=%zd "
             "muzzy_decay_ms=%zd compiled_in=\"%s\" malloc_conf_env=\"%s\"",
             version, bg ? "true" : "false", dirty, muzzy, malloc_conf, env ? env : "");
    if (!opt_bg || !bg)
        log_warn("msg=allocator_background_thread_off opt=%s running=%s detail=\"freed memory "
                 "goes back to the system only while the server allocates\"",
                 opt_bg ? "true" : "false", bg ? "true" : "false");
#else
    log_info("msg=allocator name=libc detail=\"built without jemalloc (or with a sanitizer)\"");
#endif
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
    log_set_json(strcmp(cfg.log_format, "json") == 0);
    if (cfg.check_only) {
        int bad = check_config(&cfg);
        config_free(&cfg);
        return bad ? EXIT_USAGE : 0;
    }

    int exit_code = 1;
    log_allocator();
    raise_nofile_limit();
    static struct topics topics; /* large; lives until exit */
    topics_init(&topics);
    struct server *srv = NULL;
    ingest_t *ingest = NULL;
    metrics_t *metrics = NULL;

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
    if (cfg.auto_create_topics && topics_auto_create_enable(&topics, &topts)) {
        fprintf(stderr, "tickfand: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < cfg.ntopic_confs; i++) {
        topts.log_size = topics_log_size(&cfg, cfg.topic_confs[i].name);
        rc = topics_add(&topics, cfg.topic_confs[i].name, &topts, err, sizeof(err));
        if (rc) {
            fprintf(stderr, "tickfand: [topic %s]: %s\n", cfg.topic_confs[i].name, err);
            exit_code = rc == -EINVAL ? EXIT_USAGE : 1;
            goto out;
        }
    }
    for (size_t i = 0; cfg.topics && cfg.topics[i]; i++) {
        topts.log_size = topics_log_size(&cfg, cfg.topics[i]);
        rc = topics_add(&topics, cfg.topics[i], &topts, err, sizeof(err));
        if (rc) {
            fprintf(stderr, "tickfand: --topic '%s': %s\n", cfg.topics[i], err);
            exit_code = rc == -EINVAL && !topics_name_valid(cfg.topics[i], strlen(cfg.topics[i]))
                            ? EXIT_USAGE
                            : 1;
            goto out;
        }
    }

    /* Feeds: opens their sockets and files now, so a bad spec or a port in
     * use stops the start; simulator topics join the declared ones. */
    struct ingest_options iopts = {
        .io = strcmp(cfg.io, "uring") == 0   ? INGEST_IO_URING
              : strcmp(cfg.io, "epoll") == 0 ? INGEST_IO_EPOLL
                                             : INGEST_IO_AUTO,
        .sim_rate = cfg.sim_rate,
        .sim_symbols = cfg.sim_symbols,
        .sim_seed = (uint64_t)cfg.sim_seed,
        .udp_rcvbuf = cfg.udp_rcvbuf,
        .udp_no_multishot = !cfg.udp_multishot,
    };
    topts.log_size = (size_t)cfg.log_size; /* simulator topics without a section */
    rc = ingest_create(&ingest, cfg.feeds, &iopts, &topics, &topts, server_notify_late, &srv, err,
                       sizeof(err));
    if (rc) {
        fprintf(stderr, "tickfand: %s\n", err);
        exit_code = rc == -EINVAL ? EXIT_USAGE : 1;
        goto out;
    }
    /* With auto-create, the logs a feed created before a restart come back
     * now, so their subscribers can resume before the feed names them. */
    rc = topics_auto_reopen(&topics, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "tickfand: --auto-create-topics: %s\n", err);
        goto out;
    }
    if (topics_count(&topics) == 0 && !cfg.auto_create_topics) {
        fprintf(stderr, "tickfand: no topics: declare one with --topic NAME, add a --feed, or "
                        "turn on --auto-create-topics\n");
        exit_code = EXIT_USAGE;
        goto out;
    }
    char applied[1024];
    topics_apply_settings(&topics, &cfg, applied, sizeof(applied));

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
        goto out;
    }

    /* before gRPC's own threads start taking absl::Mutex locks */
    abslmutex_deadlock_detection(cfg.grpc_deadlock_detection);
    grpc_init();
    rc = server_create(&srv, &cfg, &topics, ingest, err, sizeof(err));
    if (rc) {
        log_error("msg=start_failed error=\"%s\"", err);
        fprintf(stderr, "tickfand: %s\n", err);
        goto out_grpc;
    }
    if (cfg.metrics_listen) {
        rc = metrics_start(&metrics, cfg.metrics_listen, srv, &topics, ingest, err, sizeof(err));
        if (rc) {
            log_error("msg=start_failed error=\"%s\"", err);
            fprintf(stderr, "tickfand: %s\n", err);
            goto out_server;
        }
        log_info("msg=metrics_listening port=%d path=/metrics", metrics_port(metrics));
    }
    rc = ingest_start(ingest);
    if (rc) {
        log_error("msg=start_failed error=\"ingest: %s\"", strerror(-rc));
        goto out_server;
    }

    char addr[300];
    bound_address(cfg.listen, srv->port, addr, sizeof(addr));
    char topic_list[512] = "";
    for (size_t i = 0, off = 0, n = topics_count(&topics); i < n && off < sizeof(topic_list) - 1;
         i++)
        off += (size_t)snprintf(topic_list + off, sizeof(topic_list) - off, "%s%s", i ? "," : "",
                                topics.items[i]->name);
    log_info("msg=listening addr=%s shards=%zu shards_active=%zu shard_fill=%lld topics=%s "
             "auto_create_topics=%s heartbeat_ms=%lld "
             "io=%s version=%s grpc=%s grpc_ndebug=%s grpc_lib=%s",
             addr, srv->nshards, atomic_load(&srv->shards_active), (long long)srv->shard_fill,
             topic_list, cfg.auto_create_topics ? "true" : "false", (long long)cfg.heartbeat_ms,
             ingest_io_name(ingest), TICKFAN_VERSION, grpc_version_string(), TICKFAN_GRPC_NDEBUG,
             grpc_library_path());

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&sigs, &si);
        if (sig == SIGHUP) {
            reload(&cfg, &topics, argc, argv, envp);
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            log_info("msg=draining signal=%s streams_live=%lld",
                     sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)server_streams_live(srv));
            break;
        }
    }

    /* The ingest keeps running while streams drain: Publish calls get what
     * they sent appended before they end. */
    server_drain_begin(srv);
    int64_t deadline = clock_mono_us() + cfg.drain_timeout_ms * 1000;
    while (server_streams_live(srv) > 0 && clock_mono_us() < deadline) {
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
    metrics_stop(metrics);
    ingest_stop(ingest);
    if (srv)
        server_stop(srv);
    server_destroy(srv);
out_grpc:
    grpc_shutdown();
out:
    ingest_destroy(ingest);
    topics_destroy(&topics);
    if (exit_code == 0)
        log_info("msg=stopped");
    config_free(&cfg);
    return exit_code;
}
