/*
 * benchfeed: paced feed sender of the load generator. See benchfeed.h.
 *
 * The controlling thread creates, starts, stops and reads; the sender
 * thread owns the generator and the destination between start and stop.
 * Only the stop flag is shared while it runs.
 */
#define _GNU_SOURCE /* prctl PR_SET_TIMERSLACK */
#include "benchfeed.h"
#include "clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "feedgen.h"
#include "feedout.h"
#include "feedpace.h"

#define BURST_MAX 256         /* frames queued at most before a send */
#define STOP_POLL_NS 50000000 /* longest sleep before looking at the stop flag */
#define SENDER_NICE (-10)

struct benchfeed {
    struct benchfeed_config cfg;
    feedgen_t *gen;
    feedout_t *out;
    struct benchfeed_schedule sched;
    pthread_t thread;
    bool started, joined;
    _Atomic bool stop;
    int64_t stop_ns;
    struct benchfeed_stats stats; /* the sender's until joined */
};

int64_t benchfeed_due_ns(const struct benchfeed_schedule *s, uint64_t i)
{
    return feedpace_due_ns(s->t0_mono_ns, s->rate, i);
}

int64_t benchfeed_stamp_us(const struct benchfeed_schedule *s, uint64_t i)
{
    /* whole microseconds of the same offset the due time has: stamps never
     * drift from the schedule, however long the run */
    return s->t0_real_us + (feedpace_due_ns(0, s->rate, i) / 1000);
}

int benchfeed_create(benchfeed_t **out, const struct benchfeed_config *c, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    if (!c->spec || (strncmp(c->spec, "udp://", 6) != 0 && strncmp(c->spec, "tcp://", 6) != 0)) {
        snprintf(err, errlen, "--feed '%s': expected udp://HOST:PORT or tcp://HOST:PORT",
                 c->spec ? c->spec : "");
        return -EINVAL;
    }
    if (c->rate == 0 || c->rate > 100000000) {
        snprintf(err, errlen, "--rate %llu: expected 1..100000000 ticks/s",
                 (unsigned long long)c->rate);
        return -EINVAL;
    }
    if (c->payload_bytes > FEEDGEN_BODY_MAX) {
        snprintf(err, errlen, "--payload-bytes %zu: at most %d", c->payload_bytes,
                 FEEDGEN_BODY_MAX);
        return -EINVAL;
    }
    struct benchfeed *f = calloc(1, sizeof(*f));
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    f->cfg = *c;
    atomic_init(&f->stop, false);
    struct feedgen_options go = {
        .topic = c->topic,
        .symbols = BENCHFEED_SYMBOLS,
        .seed = 1,
        .channel = c->channel,
        .start_seq = 1,
        .body_size = c->payload_bytes,
    };
    rc = feedgen_create(&f->gen, &go);
    if (rc) {
        snprintf(err, errlen, "feed generator (topic '%s', payload %zu bytes): %s",
                 c->topic ? c->topic : "", c->payload_bytes, strerror(-rc));
        goto out_free;
    }
    struct feedout_options oo = {.batch = c->batch, .ttl = -1};
    rc = feedout_open(&f->out, c->spec, &oo, err, errlen);
    if (rc)
        goto out_free;
    if (feedgen_max_frame(f->gen) > feedout_max_frame(f->out)) {
        snprintf(err, errlen,
                 "--payload-bytes %zu: a frame of up to %zu bytes does not fit a datagram of "
                 "%zu (a larger --feed-batch allows 65,507)",
                 c->payload_bytes, feedgen_max_frame(f->gen), feedout_max_frame(f->out));
        rc = -EINVAL;
        goto out_free;
    }
    *out = f;
    return 0;

out_free:
    benchfeed_destroy(f);
    return rc;
}

/* Sends what is queued; the first queued tick is first_i, the last last_i. */
static int flush(struct benchfeed *f, uint64_t first_i, uint64_t last_i, int64_t *now)
{
    struct benchfeed_stats *st = &f->stats;
    int rc = feedout_flush(f->out, st->error_text, sizeof(st->error_text));
    *now = clock_mono_ns();
    int64_t lag = *now - benchfeed_due_ns(&f->sched, first_i);
    if (lag > st->max_lag_ns)
        st->max_lag_ns = lag;
    for (uint64_t i = first_i;
         i <= last_i && *now - benchfeed_due_ns(&f->sched, i) > BENCHFEED_LATE_NS; i++)
        st->late_ticks++;
    return rc;
}

static void *sender_main(void *p)
{
    struct benchfeed *f = p;
    struct benchfeed_stats *st = &f->stats;
    uint64_t i = 0, first = 0;
    size_t queued = 0;
    int rc = 0;

    /* wake up on time, not up to 50 us late (the default timer slack) */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    /* the receivers share this CPU: a tick should not wait for them to
     * yield it (where allowed: root or CAP_SYS_NICE; else stays at 0) */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), SENDER_NICE) == 0)
        st->nice = SENDER_NICE;
    int64_t now = clock_mono_ns();
    int64_t flushed = now; /* the last send: at most one per quantum */
    while (!atomic_load_explicit(&f->stop, memory_order_relaxed)) {
        int64_t due = benchfeed_due_ns(&f->sched, i);
        if (due > now) {
            if (queued && now - flushed >= f->cfg.quantum_ns) {
                rc = flush(f, first, i - 1, &now);
                flushed = now;
                queued = 0;
                if (rc)
                    break;
            } else {
                now = clock_mono_ns();
            }
            if (due > now) {
                /* with a quantum, the ticks due before the next send may
                 * go queue up meanwhile: no wake for each of them */
                int64_t next_send = flushed + f->cfg.quantum_ns;
                int64_t until = queued && due < next_send ? next_send : due;
                feedpace_sleep_until(until - now > STOP_POLL_NS ? now + STOP_POLL_NS : until);
                now = clock_mono_ns();
                continue;
            }
        }
        const uint8_t *frame;
        int64_t stamp = benchfeed_stamp_us(&f->sched, i);
        size_t len = feedgen_next(f->gen, stamp, &frame);
        rc = feedout_put(f->out, frame, len, stamp, st->error_text, sizeof(st->error_text));
        if (rc)
            break;
        if (queued++ == 0)
            first = i;
        st->last_stamp_us = stamp;
        i++;
        if (queued == BURST_MAX) {
            rc = flush(f, first, i - 1, &now);
            queued = 0;
            if (rc)
                break;
        }
    }
    if (rc == 0 && queued)
        rc = flush(f, first, i - 1, &now);
    st->error = rc;
    if (rc == 0)
        st->error_text[0] = '\0';
    return NULL;
}

int benchfeed_start(benchfeed_t *f, int64_t t0_mono_ns)
{
    if (f->started)
        return -EALREADY;
    int64_t mono = clock_mono_ns();
    int64_t real = clock_unix_us();
    f->sched = (struct benchfeed_schedule){
        .t0_mono_ns = t0_mono_ns,
        .t0_real_us = real - (mono - t0_mono_ns) / 1000,
        .rate = f->cfg.rate,
    };
    f->stats.first_stamp_us = f->sched.t0_real_us;
    int err = pthread_create(&f->thread, NULL, sender_main, f);
    if (err) {
        f->stats.first_stamp_us = 0;
        return -err;
    }
    f->started = true;
    return 0;
}

void benchfeed_stop(benchfeed_t *f)
{
    if (!f->started || f->joined)
        return;
    atomic_store_explicit(&f->stop, true, memory_order_relaxed);
    pthread_join(f->thread, NULL);
    f->joined = true;
    f->stop_ns = clock_mono_ns();
    f->stats.send_s = (double)(f->stop_ns - f->sched.t0_mono_ns) / 1e9;
    struct feedout_stats os;
    feedout_get_stats(f->out, &os);
    f->stats.ticks = os.frames;
    f->stats.datagrams = os.datagrams;
    f->stats.send_errors = os.send_errors;
}

void benchfeed_get_stats(const benchfeed_t *f, struct benchfeed_stats *out)
{
    *out = f->stats;
}

struct benchfeed_schedule benchfeed_get_schedule(const benchfeed_t *f)
{
    return f->sched;
}

void benchfeed_destroy(benchfeed_t *f)
{
    if (!f)
        return;
    benchfeed_stop(f);
    if (f->out) {
        char err[160];
        feedout_close(f->out, err, sizeof(err));
    }
    feedgen_destroy(f->gen);
    free(f);
}
