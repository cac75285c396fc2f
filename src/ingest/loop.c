/*
 * loop: the steps of the ingest thread's loop that are the same on every
 * engine. Before it waits: the published batches the shards queued, the
 * timers of every source (the simulator's and replay's pacing, TCP
 * reconnects, listeners resting), and one ring of the shards for all that
 * was appended; after what arrived was handled: closed connections freed,
 * and the ring again. Ingest thread only, except ingest_submit.
 */
#include "feed_thread.h"

#include <unistd.h>

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
