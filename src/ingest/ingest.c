/*
 * ingest: the feed thread and the single writer of the topic logs: its life
 * cycle, the loop's steps, appending, and the published batches. The I/O
 * engines and the sources have their own files (see ingest_impl.h).
 *
 * Thread: everything here runs on the ingest thread, except create/start/
 * stop/destroy (main thread, with the ingest thread not running) and
 * ingest_get_stats (any thread; relaxed counters).
 *
 * The loop: wait for I/O completions (io_uring) or readiness (epoll), at
 * most until the next timer (simulator pacing, file replay pacing, TCP
 * reconnects); process what arrived; run the timers; if anything was
 * appended, notify the shards once for the whole batch.
 */
#include "ingest_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---- appending ----------------------------------------------------------- */

int ingest_append(struct topic *t, struct wire_data *d)
{
    ringlog_t *log = t->log;
    struct cursor c = {.epoch = ringlog_epoch(log), .seq = ringlog_head_seq(log) + 1};
    d->seq = c.seq;
    struct wire_data_msg m; /* built once: sized, then packed straight into the log */
    size_t n = wire_data_msg_init(&m, d, c);
    struct ringlog_slot slot;
    int rc = ringlog_reserve(log, RINGLOG_DATA, d->rec.kind_len, d->rec.key_len, n, d->ingested_us,
                             &slot);
    if (rc)
        return rc;
    memcpy(slot.kind, d->rec.kind, d->rec.kind_len);
    memcpy(slot.key, d->rec.key, d->rec.key_len);
    wire_data_msg_pack(&m, slot.event);
    return ringlog_commit(log, &slot);
}

int ingest_append_gap(struct topic *t, uint64_t missed, int64_t now_us)
{
    ringlog_t *log = t->log;
    struct cursor at = {.epoch = ringlog_epoch(log), .seq = ringlog_head_seq(log) + 1};
    struct cursor from = {.epoch = at.epoch, .seq = at.seq - 1};
    uint8_t buf[256];
    size_t n = wire_gap_pack(at, missed, EVENTS__V1__GAP_REASON__GAP_UPSTREAM_LOSS, from, buf,
                             sizeof(buf));
    if (!n)
        return -EMSGSIZE;
    struct ringlog_slot slot;
    int rc = ringlog_reserve(log, RINGLOG_GAP, 0, 0, n, now_us, &slot);
    if (rc)
        return rc;
    memcpy(slot.event, buf, n);
    return ringlog_commit(log, &slot);
}

/* ---- published batches --------------------------------------------------- */

void ingest_submit(ingest_t *in, struct ingest_job *job)
{
    mpsc_push(&in->jobs, &job->node); /* the eventfd is written whatever this returns */
    uint64_t one = 1;
    ssize_t w = write(in->wake_fd, &one, sizeof(one));
    (void)w;
}

void ingest_run_jobs(struct ingest *in)
{
    struct mpsc_node *n = mpsc_take_all(&in->jobs);
    while (n) {
        struct ingest_job *job = mpsc_entry(n, struct ingest_job, node);
        n = n->next; /* before done() hands the job back */
        job->appended = 0;
        job->error = 0;
        for (size_t i = 0; i < job->n; i++) {
            const struct ingest_record *r = &job->recs[i];
            int64_t now_us = ingest_now_us(in);
            struct wire_data d = {
                .rec = r->rec,
                .emitted_us = r->emitted_us ? r->emitted_us : now_us,
                .ingested_us = now_us,
            };
            int rc = ingest_append(r->topic, &d);
            if (rc) {
                job->error = rc; /* the caller reports it */
                break;
            }
            job->last = (struct cursor){.epoch = ringlog_epoch(r->topic->log), .seq = d.seq};
            job->appended++;
            in->appended_batch++;
            counter_add(&in->frames, 1);
        }
        job->done(job);
    }
}

/* ---- the loop's steps ------------------------------------------------------ */

/* Runs what is due; returns the nanoseconds until the next due time. */
static int64_t run_timers(struct ingest *in)
{
    int64_t now = clock_mono_ns();
    int64_t wait = MAX_WAIT_NS;
    for (struct source *s = in->sources; s; s = s->next) {
        int64_t w = MAX_WAIT_NS;
        if (s->type == SRC_SIM)
            w = source_sim_run(s, now);
        else if (s->type == SRC_FILE)
            w = file_replay_run(s, now);
        else if (s->type == SRC_TCP || s->type == SRC_LISTEN)
            w = tcp_timers(in, s, now);
        if (w < wait)
            wait = w;
    }
    return wait < 0 ? 0 : wait;
}

static void reap_dead(struct ingest *in)
{
    for (struct source **p = &in->sources; *p;) {
        struct source *s = *p;
        if (s->dead && !s->recv_op.busy) {
            *p = s->next;
            source_free(s);
        } else {
            p = &s->next;
        }
    }
}

/* Rings the shards once for everything appended since the last time. */
static void flush_notify(struct ingest *in)
{
    if (in->appended_batch) {
        in->appended_batch = 0;
        in->notify(in->arg);
    }
}

int64_t ingest_before_wait(struct ingest *in)
{
    ingest_run_jobs(in);
    int64_t wait = run_timers(in);
    flush_notify(in);
    return wait > MAX_WAIT_NS ? MAX_WAIT_NS : wait;
}

void ingest_after_wake(struct ingest *in)
{
    reap_dead(in);
    flush_notify(in);
}

static void *ingest_main(void *p)
{
    struct ingest *in = p;
    return in->engine->run(in);
}

/* ---- life cycle ----------------------------------------------------------- */

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
        if (s->type == SRC_UDP && udp_prepare(in, s, opts, &nbgid))
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
