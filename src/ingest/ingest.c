/*
 * ingest: the life cycle of the feed thread, the single writer of the topic
 * logs: the feed specs parsed and opened, the engine chosen (io_uring, or
 * epoll where it cannot run), the thread started, stopped and freed. The
 * loop's steps, the engines and the sources have their own files (see
 * feed_thread.h).
 *
 * Thread: the main thread, with the ingest thread not running, except
 * ingest_get_stats (any thread; relaxed counters).
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "feed_thread.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void *ingest_main(void *p)
{
    struct ingest *in = p;
    return in->engine->run(in);
}

/* ---- life cycle ----------------------------------------------------------- */

static int source_add(struct ingest *in, const char *spec, const struct ingest_options *o,
                      const struct topics_options *topts, char *err, size_t errlen)
{
    struct source *s = NULL;
    int rc = 0;
    if (strcmp(spec, "sim") == 0 || strncmp(spec, "sim:", 4) == 0) {
        const char *topic = spec[3] ? spec + 4 : "sim";
        rc = topics_add(in->topics, topic, topts, err, errlen);
        if (rc)
            return rc;
        s = source_new(in, SRC_SIM, spec);
        if (!s)
            return -ENOMEM;
        s->rate = o->sim_rate;
        s->topic = topics_find(in->topics, topic, strlen(topic));
        /* each simulator its own seed: two topics do not carry the same ticks */
        size_t nsims = 0;
        for (struct source *x = in->sources; x; x = x->next)
            nsims += x->type == SRC_SIM;
        rc = sim_create(&s->sim, o->sim_symbols, o->sim_seed + nsims);
        if (rc)
            snprintf(err, errlen,
                     "--sim-symbols '%s': expected 1-64 comma-separated symbols of 1-16 "
                     "characters [A-Za-z0-9._-]",
                     o->sim_symbols);
    } else if (strncmp(spec, "udp://", 6) == 0) {
        s = source_new(in, SRC_UDP, spec);
        rc = s ? udp_open(s, spec + 6, o, err, errlen) : -ENOMEM;
    } else if (strncmp(spec, "tcp://", 6) == 0) {
        s = source_new(in, SRC_TCP, spec);
        rc = s ? parse_host_port(spec + 6, SOCK_STREAM, &s->addr, &s->addrlen, err, errlen, spec)
               : -ENOMEM;
    } else if (strncmp(spec, "tcp-listen://", 13) == 0) {
        s = source_new(in, SRC_LISTEN, spec);
        rc = s ? tcp_listen_open(s, spec + 13, err, errlen) : -ENOMEM;
    } else if (strncmp(spec, "file:", 5) == 0) {
        s = source_new(in, SRC_FILE, spec);
        rc = s ? file_open(s, spec + 5, err, errlen) : -ENOMEM;
    } else {
        snprintf(err, errlen,
                 "--feed '%s': unknown feed (expected sim, sim:TOPIC, udp://ADDR:PORT, "
                 "tcp://HOST:PORT, tcp-listen://ADDR:PORT, file:PATH or none)",
                 spec);
        return -EINVAL;
    }
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (rc) {
        source_free(s);
        return rc;
    }
    s->next = in->sources;
    in->sources = s;
    return 0;
}

/* A UDP source's receive buffers, and how it is read: one multishot
 * recvmsg where io_uring has provided buffer rings, else one-shot recvmsg
 * (io_uring) or recvmsg on readiness (epoll). 0 or -ENOMEM. */
static int udp_receive_setup(struct ingest *in, struct source *s, const struct ingest_options *opts,
                             int *nbgid)
{
    if (udp_buffers(s))
        return -ENOMEM;
    const char *mode = "epoll", *why = NULL;
    char why_buf[96];
    if (in->ring_ok && opts->udp_no_multishot) {
        mode = "recvmsg";
        why = "--udp-multishot=false";
    } else if (in->ring_ok) {
        int rc = uring_udp_setup(in, s, (*nbgid)++);
        if (rc == -ENOMEM)
            return rc;
        mode = rc ? "recvmsg" : "multishot";
        if (rc) {
            /* the kernel's own answer: old kernels say EINVAL */
            snprintf(why_buf, sizeof(why_buf), "provided buffer ring: %s", strerror(-rc));
            why = why_buf;
        }
    }
    udp_log_bound(s, mode, why);
    return 0;
}

int ingest_create(ingest_t **out, char **specs, const struct ingest_options *opts,
                  struct topics *topics, const struct topics_options *topts,
                  void (*notify)(void *arg), void *arg, char *err, size_t errlen)
{
    *out = NULL;
    struct ingest *in = calloc(1, sizeof(*in));
    if (!in) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    in->topics = topics;
    in->notify = notify;
    in->arg = arg;
    in->epfd = -1;
    in->unknown_rl = (struct log_ratelimit){.interval_us = 1000000, .burst = 5};
    atomic_init(&in->stop, false);
    mpsc_init(&in->jobs);
    in->wake_op = (struct op){.kind = OP_WAKE};
    in->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int wake_err = in->wake_fd < 0 ? errno : 0;
    in->wake_src = calloc(1, sizeof(*in->wake_src));
    if (in->wake_fd < 0 || !in->wake_src) {
        int rc = wake_err ? -wake_err : -ENOMEM;
        snprintf(err, errlen, "eventfd: %s", strerror(-rc));
        if (in->wake_fd >= 0)
            close(in->wake_fd);
        free(in->wake_src);
        free(in);
        return rc;
    }
    in->wake_src->type = SRC_WAKE;
    in->wake_src->fd = -1;

    static char *default_specs[] = {"sim", NULL};
    char **list = specs && specs[0] ? specs : default_specs;
    bool none = false;
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; list[i]; i++) {
        if (strcmp(list[i], "none") == 0) {
            none = true;
            continue;
        }
        n++;
        rc = source_add(in, list[i], opts, topts, err, errlen);
        if (rc)
            goto out_free;
    }
    if (none && n) {
        snprintf(err, errlen, "--feed none: cannot be combined with other feeds");
        rc = -EINVAL;
        goto out_free;
    }

    if (opts->io != INGEST_IO_EPOLL) {
        rc = ingest_uring_open(in);
        if (rc == 0) {
            in->engine = &ingest_engine_uring;
        } else if (opts->io == INGEST_IO_URING) {
            snprintf(err, errlen, "--io uring: io_uring is not available: %s", strerror(-rc));
            goto out_free;
        } else {
            log_warn("msg=io_uring_unavailable error=\"%s\" fallback=epoll", strerror(-rc));
        }
    }
    if (!in->engine) {
        rc = ingest_epoll_open(in);
        if (rc) {
            snprintf(err, errlen, "epoll: %s", strerror(-rc));
            goto out_free;
        }
        in->engine = &ingest_engine_epoll;
    }
    int nbgid = 0;
    for (struct source *s = in->sources; s; s = s->next)
        if (s->type == SRC_UDP && udp_receive_setup(in, s, opts, &nbgid))
            goto out_nomem;
    *out = in;
    return 0;

out_nomem:
    snprintf(err, errlen, "out of memory");
    rc = -ENOMEM;
out_free:
    ingest_destroy(in);
    return rc;
}

int ingest_start(ingest_t *in)
{
    int rc = pthread_create(&in->thread, NULL, ingest_main, in);
    if (rc)
        return -rc;
    pthread_setname_np(in->thread, "tf-ingest"); /* top -H, ps -L, perf */
    in->started = true;
    return 0;
}

void ingest_stop(ingest_t *in)
{
    if (!in || !in->started)
        return;
    atomic_store(&in->stop, true);
    pthread_join(in->thread, NULL);
    in->started = false;
}

void ingest_destroy(ingest_t *in)
{
    if (!in)
        return;
    ingest_stop(in);
    if (in->engine)
        in->engine->close(in); /* io_uring: cancels what is in flight */
    while (in->sources) {
        struct source *s = in->sources;
        in->sources = s->next;
        source_free(s);
    }
    close(in->wake_fd);
    free(in->wake_src);
    free(in);
}

const char *ingest_io_name(const ingest_t *in)
{
    return in->engine->name;
}

void ingest_get_stats(const ingest_t *in, struct ingest_stats *out)
{
    out->frames = atomic_load_explicit(&in->frames, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&in->rejected, memory_order_relaxed);
    out->unknown_topic = atomic_load_explicit(&in->unknown_topic, memory_order_relaxed);
    out->gaps = atomic_load_explicit(&in->gaps, memory_order_relaxed);
    out->missed = atomic_load_explicit(&in->missed, memory_order_relaxed);
    out->duplicates = atomic_load_explicit(&in->duplicates, memory_order_relaxed);
    out->rxq_ovfl = atomic_load_explicit(&in->rxq_ovfl, memory_order_relaxed);
    out->append_failed = atomic_load_explicit(&in->append_failed, memory_order_relaxed);
    for (size_t i = 0; i < FEEDFRAME_NREASONS; i++)
        out->rejected_by_reason[i] = counter_get(&in->reasons[i]);
}
