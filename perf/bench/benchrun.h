/*
 * benchrun: one load-generating run against a tickfan Watch server.
 *
 * S Watch streams on one topic over M client connections (distinct channels
 * with a local subchannel pool each, so they really are M TCP connections),
 * spread round-robin; T worker threads, each with its own completion queue,
 * each owning every T-th stream; one RECV_MESSAGE outstanding per stream.
 *
 * With rpc BENCHRUN_RPC_SUBSCRIBE the same S subscriptions (below, a
 * "stream" is a subscription) are carried by ceil(S / K) Subscribe bidi
 * streams instead, K = subs_per_stream: subscription i is id i / calls + 1
 * on Subscribe stream i % calls (so each carries S / calls of them, at most
 * K), stream j on connection j % M and worker j % T; one RECV_MESSAGE
 * outstanding per Subscribe stream, its adds (and, with --messages, the
 * removes) sent one message at a time. Each SubscribeResponse is walked
 * by hand (subparse.h): a delivery's WatchEvent is parsed once and then
 * checked and measured for each of its ids exactly as Watch's message for
 * that subscription would be; the clock is read once per message, so the
 * deliveries of one message share their receipt time. A SubscriptionEnd
 * ends its subscription as a status ends a Watch stream; the end of a
 * Subscribe stream ends every subscription it still carried. Stalled
 * streams (--stall) are Watch only.
 * Every message is decoded and checked: Data seq order per stream (exactly
 * previous + 1 for an unfiltered stream; strictly increasing for a filtered
 * one; a jump right after a Gap must equal the Gap's missed count), Gap
 * events and their missed counts, heartbeats.
 *
 * Latency, CLOCK_REALTIME at receipt minus a time the event carries (same
 * host, same clock), into per-thread histograms merged at the end:
 * - with a feed (cfg->feed, see benchfeed.h), the run drives the server
 *   itself: once every stream is connected and live, a sender thread emits
 *   ticks on a fixed schedule, each stamped with its scheduled time, which
 *   the server carries as Data.emitted_at_unix_micros. The latency of each
 *   of those ticks received on a live normal stream is now minus that
 *   scheduled time (corrected for coordinated omission: a late sender or a
 *   stalled server cannot hide the wait), and, as a second figure, now minus
 *   ingested_at_unix_micros. After the run window the sender stops and the
 *   streams get up to cfg->drain_s to receive what was sent, still measured;
 *   a tick an unfiltered stream still lacks then is recorded at its age at
 *   that moment, a lower bound, so that a server far behind cannot hide
 *   its worst latencies.
 * - without a feed, the server's own feed drives it, and the latency of each
 *   live Data during the window is now minus ingested_at_unix_micros (not
 *   corrected for coordinated omission).
 *
 * Stalled streams (the slow consumers) read their first message and then
 * stop reading until the resume time; they live on connections of their own
 * with HTTP/2 BDP probing off, so the server's flow-control slack stays
 * small and its send blocks soon.
 *
 * Threads: benchrun_run() is called by one thread (main), which starts the
 * workers, paces the phases (connect, run, drain, stop) through atomics,
 * starts and stops the feed sender, and joins them. Every stream's state is
 * touched only by its worker.
 */
#ifndef TICKFAN_BENCHRUN_H
#define TICKFAN_BENCHRUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "benchfeed.h"
#include "hist.h"

#define BENCHRUN_STATUS_MAX 17 /* gRPC status codes 0..16 */

enum benchrun_rpc {
    BENCHRUN_RPC_WATCH = 0, /* one Watch stream per subscription */
    BENCHRUN_RPC_SUBSCRIBE, /* subs_per_stream subscriptions per Subscribe stream */
};

/* What reads the Watch streams (Subscribe is always read with gRPC). */
enum benchrun_client {
    BENCHRUN_CLIENT_GRPC = 0, /* gRPC C core: a batch and a completion per message */
    BENCHRUN_CLIENT_H2,       /* h2conn.h: HTTP/2 frames parsed in place (libnghttp2) */
};

struct benchrun_config {
    const char *server; /* gRPC target, "host:port" */
    const char *topic;
    uint32_t streams;     /* total, stalled ones included */
    uint32_t connections; /* for the normal streams */
    uint32_t threads;
    double duration_s; /* run window once every stream is connected */
    uint64_t messages; /* per normal stream (then it cancels); 0 = no limit */
    char **kinds;      /* filters; NULL/0 = all */
    size_t n_kinds;
    char **keys;
    size_t n_keys;
    int start;    /* events.v1.StartPosition */
    int overflow; /* events.v1.OverflowPolicy of the normal streams */
    uint32_t stall;
    double stall_resume_after_s; /* < 0: never resume */
    const int *stall_overflow;   /* per stalled stream, cycled; NULL = overflow */
    size_t n_stall_overflow;
    uint32_t stall_connections;
    double connect_timeout_s;
    double ramp_s; /* open the streams evenly over this long; 0 = all at once */
    unsigned hist_precision;
    /* the paced feed this run sends once every stream is live; NULL: none
     * (subscribe only) */
    const struct benchfeed_config *feed;
    double drain_s;           /* with a feed: how long the streams may take, after the
                               * window, to receive what was sent */
    int rpc;                  /* enum benchrun_rpc */
    uint32_t subs_per_stream; /* BENCHRUN_RPC_SUBSCRIBE: at most this many per stream */
    int client;               /* enum benchrun_client */
    int server_pid;           /* > 0: read this process's CPU time over the window */
};

/* Was this build linked with libnghttp2 (BENCHRUN_CLIENT_H2)? */
bool benchrun_has_h2(void);

/* What a stalled stream saw, and how it ended. */
struct benchrun_stalled {
    uint32_t index;
    int overflow;
    bool resumed;
    uint64_t data_before_resume; /* received before it stopped reading */
    uint64_t data_before_gap;    /* Data received before its first Gap */
    uint64_t data;
    uint64_t last_seq; /* of the last Data received; 0 if none */
    uint64_t gaps;
    uint64_t gap_missed;       /* sum over its Gaps */
    uint64_t first_gap_missed; /* of the first Gap */
    uint32_t first_gap_reason;
    uint64_t first_gap_jump; /* seq after the first Gap minus the seq before it, minus 1 */
    bool jump_seen;
    uint64_t violations; /* order violations not explained by a Gap */
    bool ended;          /* ended by the server (not by our cancel) */
    int status;
    char details[256];
    char cursor_trailer[96]; /* tickfan-cursor trailing metadata, "" if none */
};

struct benchrun_results {
    uint32_t normal_streams;
    uint32_t connected;   /* received a first message */
    uint32_t failed;      /* ended before any message, or not connected in time */
    uint32_t ended_early; /* normal streams the server ended during the run */
    uint32_t incomplete;  /* --messages: normal streams that did not get them all */
    uint32_t status_counts[BENCHRUN_STATUS_MAX]; /* of failed and ended-early streams */
    char first_failure[320];

    /* normal streams */
    uint64_t data_total;
    uint64_t data_window; /* Data received during the run window */
    uint64_t data_min, data_max;
    double data_avg;
    uint64_t snapshots, heartbeats, end_of_backlogs, gaps, gap_missed;
    uint64_t order_gaps, order_repeats, order_reorders, gap_mismatches;
    uint64_t bad_messages;
    char first_violation[320];
    /* unfiltered normal streams that received Data */
    uint32_t seq_streams;
    uint64_t first_seq_min, first_seq_max, last_seq_min, last_seq_max;

    /* live Data of normal streams: with a feed, the ticks it sent, from
     * their scheduled emit time; else Data during the window, from ingest */
    hist_t *latency_ns;
    uint64_t latency_negative; /* samples with now before that time, recorded as 0 */
    hist_t *latency_ingest_ns; /* the same samples, from ingested_at_unix_micros */
    uint64_t latency_ingest_negative;

    /* with a feed */
    bool fed;
    struct benchfeed_stats feed;
    double drain_s; /* spent waiting after the window */
    /* ticks received on normal streams; and on unfiltered ones (without
     * --messages), ticks neither received nor announced as missed by a Gap
     * when the drain ended: each is recorded in latency_ns at its age then
     * (a lower bound of its latency) */
    uint64_t feed_received;
    uint64_t feed_undelivered;

    /* what came over the wire to the normal streams: gRPC messages (Watch:
     * one event each; Subscribe: one SubscribeResponse, any number of
     * Delivery records), the records, and deliveries (a record for n ids
     * is n deliveries; Watch: one per message) of events and of
     * SubscriptionEnds */
    uint32_t grpc_streams;        /* Watch streams, or Subscribe streams */
    uint32_t grpc_streams_failed; /* Subscribe: streams that ended before any message */
    uint64_t grpc_messages;
    uint64_t grpc_messages_window;
    uint64_t grpc_message_bytes;
    uint64_t delivery_records;
    uint64_t deliveries; /* of events */
    uint64_t subscription_ends;
    uint64_t unknown_ids; /* Subscribe: ids no live subscription of that stream has */
    uint64_t after_end;   /* Subscribe: deliveries for a subscription after its end */
    uint32_t max_ids_per_record;

    double connect_s;
    double window_s;
    double cpu_user_s, cpu_sys_s; /* this process, during the window */
    /* the server's (config server_pid), during the window; valid when
     * server_cpu_read */
    bool server_cpu_read;
    double server_cpu_user_s, server_cpu_sys_s;
    uint64_t fd_limit;

    struct benchrun_stalled *stalled;
    size_t n_stalled;
};

/*
 * Runs the benchmark per cfg and fills *res (owned by the caller, freed with
 * benchrun_results_free). Returns 0 when the run took place (the checks are
 * in *res), or a negative errno when it could not: -EINVAL for a bad
 * configuration, -ENOMEM, -EMFILE when the file limit cannot cover the
 * connections, -EIO when gRPC refused a channel, queue or call. Errors are
 * described on stderr.
 */
int benchrun_run(const struct benchrun_config *cfg, struct benchrun_results *res);

void benchrun_results_free(struct benchrun_results *res);

#endif
