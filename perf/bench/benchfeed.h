/*
 * benchfeed: the load generator's paced feed sender.
 *
 * Sends synthetic ticks (feed/feedgen: quotes and trades over a few symbols,
 * bodies padded to a fixed size) as feed frames (feed/FORMAT.md) to a UDP
 * feed on a fixed schedule: tick i (0-based) is due at t0 + i / rate, and its
 * frame's source_time_us, which servers carry into
 * Data.emitted_at_unix_micros, is that scheduled time on the real-time
 * clock, never the time it was actually sent. A sender that falls behind
 * sends what is due at once, in full datagrams, and keeps the scheduled
 * stamps: a receiver that measures "now minus emitted_at" then counts the
 * time a tick waited for a late sender, which is what corrects latency for
 * coordinated omission.
 *
 * Ticks due at the same moment share datagrams (at most `batch` frames per
 * datagram); a tick is never held back to wait for a later one. The sender
 * sleeps with a 1 ns timer slack and, where allowed, at nice -10, so that
 * the receiving threads of the same process do not delay it.
 *
 * Threads: benchfeed_create, _start, _stop, _get_stats and _destroy are
 * called by one controlling thread; _start runs the sender on a thread of
 * its own until _stop. The stats are complete once _stop has returned.
 */
#ifndef TICKFAN_BENCHFEED_H
#define TICKFAN_BENCHFEED_H

#include <stddef.h>
#include <stdint.h>

#define BENCHFEED_SYMBOLS "AAPL,MSFT,GOOG,AMZN,NVDA,TSLA,META,JPM"
#define BENCHFEED_LATE_NS 1000000 /* a tick sent this far behind schedule counts as late */

typedef struct benchfeed benchfeed_t;

struct benchfeed_config {
    const char *spec;     /* udp://HOST:PORT */
    const char *topic;    /* the frames' topic */
    uint64_t rate;        /* ticks per second, >= 1 */
    size_t payload_bytes; /* body size; 0 = the bare encoded Tick */
    size_t batch;         /* frames per datagram at most; 0 = as many as fit 1,472 bytes */
    uint32_t channel;     /* frames' channel; source_seq counts 1, 2, 3 ... on it */
    /* the sender wakes at most once per quantum and sends every tick due
     * by then, each stamped with its own due time (so the wait counts in
     * its latency); 0 = wake for every due time */
    int64_t quantum_ns;
};

/* The schedule: tick i is due at t0_mono_ns + i / rate on CLOCK_MONOTONIC,
 * and stamped t0_real_us + i / rate on CLOCK_REALTIME (the same instant). */
struct benchfeed_schedule {
    int64_t t0_mono_ns;
    int64_t t0_real_us;
    uint64_t rate;
};

/* Due time of tick i, CLOCK_MONOTONIC ns. */
int64_t benchfeed_due_ns(const struct benchfeed_schedule *s, uint64_t i);
/* Scheduled emit time of tick i, microseconds since the Unix epoch: its
 * frame's source_time_us. Depends only on the schedule and i. */
int64_t benchfeed_stamp_us(const struct benchfeed_schedule *s, uint64_t i);

struct benchfeed_stats {
    uint64_t ticks;         /* frames handed to the kernel */
    uint64_t datagrams;     /* sent */
    uint64_t send_errors;   /* sends refused and retried (ENOBUFS, ECONNREFUSED) */
    uint64_t late_ticks;    /* sent more than BENCHFEED_LATE_NS behind schedule */
    int64_t max_lag_ns;     /* furthest behind schedule a datagram left: its send
                             * completion minus the due time of its first tick */
    int64_t first_stamp_us; /* of tick 0 (t0 on the real-time clock); 0 before start */
    int64_t last_stamp_us;  /* of the last tick sent; 0 when none */
    double send_s;          /* from t0 to _stop */
    int nice;               /* the sender thread's nice value (-10 where allowed, else 0) */
    int error;              /* 0, or the -errno that ended the sender early */
    char error_text[160];
};

/* Opens the destination and the tick generator; sends nothing yet. Returns
 * 0, -EINVAL (a bad spec, topic, rate or size: said in err) or -errno (the
 * socket: said in err). *out is NULL on failure. */
int benchfeed_create(benchfeed_t **out, const struct benchfeed_config *c, char *err, size_t errlen);

/* Starts the sender thread with tick 0 due at t0_mono_ns (normally now; an
 * earlier time makes the sender start behind schedule). Returns 0,
 * -EALREADY when it was started before (a feed runs once), or -errno when
 * the thread could not start (nothing is sent). */
int benchfeed_start(benchfeed_t *f, int64_t t0_mono_ns);

/* Stops sending (ticks not yet due are never sent), flushes and joins the
 * sender. Idempotent; a no-op before a successful start. */
void benchfeed_stop(benchfeed_t *f);

void benchfeed_get_stats(const benchfeed_t *f, struct benchfeed_stats *out);

/* The schedule the sender follows (valid after a successful start). */
struct benchfeed_schedule benchfeed_get_schedule(const benchfeed_t *f);

/* Stops the sender if it runs, closes the destination, frees. NULL is fine. */
void benchfeed_destroy(benchfeed_t *f);

#endif
