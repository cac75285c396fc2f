/*
 * metrics: the /metrics endpoint. libmicrohttpd's thread renders on each
 * scrape from relaxed reads; nothing here writes shared state.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "events/v1/watcher.pb-c.h"
#include "shard.h"
#include "watch.h"
#include "wire.h"

/* jemalloc's control interface, when the binary links jemalloc. */
extern int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
    __attribute__((weak));

struct metrics {
    struct MHD_Daemon *daemon;
    struct server *srv;
    struct topics *topics;
    ingest_t *ingest;
    int port;
};

static void family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One counter without labels: its HELP, TYPE and value. */
static void counter(FILE *out, const char *name, const char *help, uint64_t value)
{
    family(out, name, "counter", help);
    fprintf(out, "%s %llu\n", name, (unsigned long long)value);
}

/* One gauge without labels. */
static void gauge(FILE *out, const char *name, const char *help, long long value)
{
    family(out, name, "gauge", help);
    fprintf(out, "%s %lld\n", name, value);
}

static uint64_t shard_sum(struct server *srv, size_t offset)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < srv->nshards; i++)
        sum += counter_get((const counter_t *)((const char *)&srv->shards[i]->ctr + offset));
    return sum;
}

/* A counter family by status code, from the shards' counter_t[17] at
 * `offset`: the codes seen, and OK and UNAVAILABLE always. */
static void by_code(FILE *out, struct server *srv, const char *name, const char *help,
                    size_t offset)
{
    family(out, name, "counter", help);
    for (int code = 0; code < 17; code++) {
        uint64_t n = shard_sum(srv, offset + (size_t)code * sizeof(counter_t));
        if (n || code == GRPC_STATUS_OK || code == GRPC_STATUS_UNAVAILABLE)
            fprintf(out, "%s{code=\"%s\"} %llu\n", name, wire_status_name((grpc_status_code)code),
                    (unsigned long long)n);
    }
}

#define SHARD_SUM(srv, field) shard_sum((srv), offsetof(struct shard_counters, field))

void metrics_render(FILE *out, struct server *srv, struct topics *topics, ingest_t *ingest)
{
    family(out, "tickfan_build_info", "gauge", "Version of this tickfand.");
    fprintf(out, "tickfan_build_info{version=\"%s\"} 1\n", TICKFAN_VERSION);

    struct ingest_stats st;
    ingest_get_stats(ingest, &st);
    counter(out, "tickfan_ingest_events_total", "Events appended from feeds and Publish.",
            st.frames);
    family(out, "tickfan_ingest_rejected_total", "counter",
           "Feed frames dropped as malformed, by reason.");
    for (int r = FEEDFRAME_NEED_MORE; r < FEEDFRAME_NREASONS; r++)
        fprintf(out, "tickfan_ingest_rejected_total{reason=\"%s\"} %llu\n",
                feedframe_reason((enum feedframe_error)r),
                (unsigned long long)st.rejected_by_reason[r]);
    counter(out, "tickfan_ingest_unknown_topic_total",
            "Feed frames for a topic this server does not have.", st.unknown_topic);
    counter(out, "tickfan_ingest_duplicates_total",
            "Feed frames dropped as duplicate or reordered.", st.duplicates);
    counter(out, "tickfan_ingest_append_failed_total",
            "Valid feed frames the topic log could not store (out of memory, disk errors).",
            st.append_failed);
    counter(out, "tickfan_upstream_gaps_total", "Upstream sequence gaps detected.", st.gaps);
    counter(out, "tickfan_upstream_missed_events_total",
            "Events lost upstream, summed over the gaps.", st.missed);
    counter(out, "tickfan_udp_receive_overflows_total",
            "Datagrams the kernel dropped on feed sockets (SO_RXQ_OVFL).", st.rxq_ovfl);

    family(out, "tickfan_topics", "gauge", "Topics this server has.");
    fprintf(out, "tickfan_topics %zu\n", topics_count(topics));
    counter(out, "tickfan_topics_auto_created_total",
            "Topics created because a feed or a Publish call named them (--auto-create-topics).",
            atomic_load_explicit(&topics->auto_created, memory_order_relaxed));
    counter(out, "tickfan_topics_refused_total",
            "Times a named topic could not be created (invalid name, topic limit, log error).",
            atomic_load_explicit(&topics->refused, memory_order_relaxed));
    family(out, "tickfan_topic_head_seq", "gauge", "Sequence number of the newest event.");
    for (size_t i = 0, n = topics_count(topics); i < n; i++)
        fprintf(out, "tickfan_topic_head_seq{topic=\"%s\"} %llu\n", topics->items[i]->name,
                (unsigned long long)ringlog_head_seq(topics->items[i]->log));
    family(out, "tickfan_topic_retained_events", "gauge", "Events the topic's log retains.");
    for (size_t i = 0, n = topics_count(topics); i < n; i++) {
        ringlog_t *log = topics->items[i]->log;
        uint64_t head = ringlog_head_seq(log), first = ringlog_first_seq(log);
        fprintf(out, "tickfan_topic_retained_events{topic=\"%s\"} %llu\n", topics->items[i]->name,
                (unsigned long long)(head >= first ? head - first + 1 : 0));
    }
    family(out, "tickfan_topic_log_bytes", "gauge", "Capacity of the topic's ring log.");
    for (size_t i = 0, n = topics_count(topics); i < n; i++)
        fprintf(out, "tickfan_topic_log_bytes{topic=\"%s\"} %zu\n", topics->items[i]->name,
                ringlog_capacity(topics->items[i]->log));
    family(out, "tickfan_topic_cached_keys", "gauge",
           "(kind, key) pairs in the topic's last-value cache.");
    for (size_t i = 0, n = topics_count(topics); i < n; i++)
        fprintf(out, "tickfan_topic_cached_keys{topic=\"%s\"} %zu\n", topics->items[i]->name,
                lvc_count(ringlog_lvc(topics->items[i]->log)));

    family(out, "tickfan_shards_active", "gauge",
           "Shards taking calls (--shard-fill); the rest wait until needed.");
    fprintf(out, "tickfan_shards_active %zu\n", atomic_load(&srv->shards_active));
    family(out, "tickfan_streams", "gauge", "Watch and Subscribe streams open, by shard.");
    for (size_t i = 0; i < srv->nshards; i++)
        fprintf(out, "tickfan_streams{shard=\"%zu\"} %lld\n", i,
                (long long)atomic_load(&srv->shards[i]->streams));
    counter(out, "tickfan_streams_opened_total", "Watch streams accepted.", SHARD_SUM(srv, opened));
    counter(out, "tickfan_resumes_total", "Watch requests that carried a cursor.",
            SHARD_SUM(srv, rd.resumes));
    counter(out, "tickfan_messages_sent_total", "Messages sent on Watch streams.",
            SHARD_SUM(srv, sent));
    counter(out, "tickfan_heartbeats_sent_total", "Heartbeats sent.", SHARD_SUM(srv, heartbeats));
    counter(out, "tickfan_subscriber_gaps_total",
            "Gap events made for Watch streams (slow consumer, retention, incomplete snapshot).",
            SHARD_SUM(srv, rd.gaps));
    counter(out, "tickfan_event_slice_copies_total",
            "Events copied out of a topic log into a shard's shared slice.",
            SHARD_SUM(srv, slice_copies));
    counter(out, "tickfan_cq_cached_completions_total",
            "Completions that came back inside grpc_call_start_batch (--cq-thread-cache), "
            "without the completion queue.",
            SHARD_SUM(srv, cq_cached));
    counter(out, "tickfan_event_slice_shares_total",
            "Sends that reused a shard's shared slice of an event instead of copying it.",
            SHARD_SUM(srv, slice_shares));
    counter(out, "tickfan_subscriber_dropped_events_total",
            "Events subscribers did not get (slow consumer, retention), each told by a Gap.",
            SHARD_SUM(srv, rd.dropped_events));
    family(out, "tickfan_slow_consumer_total", "counter",
           "Slow-consumer episodes, by the overflow policy applied.");
    static const char *const policies[] = {NULL, "drop", "conflate", "disconnect"};
    for (int p = 1; p <= 3; p++)
        fprintf(out, "tickfan_slow_consumer_total{policy=\"%s\"} %llu\n", policies[p],
                (unsigned long long)shard_sum(srv, offsetof(struct shard_counters, rd.slow) +
                                                       (size_t)p * sizeof(counter_t)));
    gauge(out, "tickfan_subscribe_streams_live", "Subscribe streams open.",
          (long long)SHARD_SUM(srv, sub_streams_live));
    gauge(out, "tickfan_subscriptions_live", "Subscriptions open on Subscribe streams.",
          (long long)SHARD_SUM(srv, sub_subs_live));
    counter(out, "tickfan_subscribe_streams_opened_total", "Subscribe streams accepted.",
            SHARD_SUM(srv, sub_streams_opened));
    counter(out, "tickfan_subscriptions_opened_total",
            "Subscriptions started on Subscribe streams (their request valid).",
            SHARD_SUM(srv, subs_opened));
    counter(out, "tickfan_subscribe_responses_total", "SubscribeResponse messages sent.",
            SHARD_SUM(srv, sub_responses));
    counter(out, "tickfan_subscribe_deliveries_total",
            "Deliveries in SubscribeResponse messages (a delivery shared by several "
            "subscriptions counts once).",
            SHARD_SUM(srv, sub_deliveries));
    counter(out, "tickfan_subscribe_delivered_total",
            "Deliveries times the subscriptions each was for: what the subscriptions received.",
            SHARD_SUM(srv, sub_delivered));
    counter(out, "tickfan_subscribe_followed_total",
            "Of those, the ones a subscription took by following another of its shard at the "
            "same place in the same topic: the event and the step were the other's, the log "
            "was not read again.",
            SHARD_SUM(srv, sub_followed));
    by_code(out, srv, "tickfan_subscription_end_total",
            "SubscriptionEnds sent, by code (OK: removed).",
            offsetof(struct shard_counters, sub_ends));
    by_code(out, srv, "tickfan_stream_status_total", "Statuses Watch streams ended with.",
            offsetof(struct shard_counters, status));
    counter(out, "tickfan_calls_cancelled_before_request_total",
            "Calls (Watch, Health, Admin) their clients reset before sending the request: "
            "cancels, with no status and no log line of their own.",
            SHARD_SUM(srv, cancelled_before_request));
    family(out, "tickfan_subscriber_lag_bytes", "histogram",
           "Live subscribers by log bytes behind the head, as of the last shard tick.");
    uint64_t lag[WATCH_LAG_BUCKETS] = {0}, lag_sum = 0;
    for (size_t i = 0; i < srv->nshards; i++) {
        uint64_t l[WATCH_LAG_BUCKETS], sum;
        watch_lag_totals(srv->shards[i], l, &sum);
        for (size_t b = 0; b < WATCH_LAG_BUCKETS; b++)
            lag[b] += l[b];
        lag_sum += sum;
    }
    uint64_t cum = 0;
    for (size_t b = 0; b < WATCH_LAG_BUCKETS; b++) {
        cum += lag[b];
        if (b + 1 < WATCH_LAG_BUCKETS)
            fprintf(out, "tickfan_subscriber_lag_bytes_bucket{le=\"%llu\"} %llu\n",
                    (unsigned long long)watch_lag_bounds[b], (unsigned long long)cum);
        else
            fprintf(out, "tickfan_subscriber_lag_bytes_bucket{le=\"+Inf\"} %llu\n",
                    (unsigned long long)cum);
    }
    fprintf(out, "tickfan_subscriber_lag_bytes_count %llu\n", (unsigned long long)cum);
    fprintf(out, "tickfan_subscriber_lag_bytes_sum %llu\n", (unsigned long long)lag_sum);

    if (mallctl) {
        uint64_t epoch = 1;
        size_t sz = sizeof(epoch);
        mallctl("epoch", &epoch, &sz, &epoch, sz);
        size_t allocated = 0, resident = 0, len = sizeof(size_t);
        mallctl("stats.allocated", &allocated, &len, NULL, 0);
        len = sizeof(size_t);
        mallctl("stats.resident", &resident, &len, NULL, 0);
        family(out, "tickfan_jemalloc_allocated_bytes", "gauge", "Bytes allocated by jemalloc.");
        fprintf(out, "tickfan_jemalloc_allocated_bytes %zu\n", allocated);
        family(out, "tickfan_jemalloc_resident_bytes", "gauge",
               "Bytes in pages jemalloc holds resident.");
        fprintf(out, "tickfan_jemalloc_resident_bytes %zu\n", resident);
    }
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **state)
{
    struct metrics *m = cls;
    struct MHD_Response *resp;
    unsigned int code = MHD_HTTP_OK;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET\n";
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "tickfan: metrics are at /metrics\n";
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_NOT_FOUND;
    } else {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
            return MHD_NO;
        metrics_render(f, m->srv, m->topics, m->ingest);
        fclose(f);
        resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    }
    if (!resp)
        return MHD_NO;
    enum MHD_Result r = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    return r;
}

int metrics_start(metrics_t **out, const char *listen, struct server *srv, struct topics *topics,
                  ingest_t *ingest, char *err, size_t errlen)
{
    *out = NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(listen, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || (size_t)(colon - listen) >= sizeof(host) || *end || port < 0 || port > 65535) {
        snprintf(err, errlen, "--metrics-listen '%s': expected HOST:PORT", listen);
        return -EINVAL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa.sin_addr) != 1) {
        snprintf(err, errlen, "--metrics-listen '%s': '%s' is not an IPv4 address", listen, host);
        return -EINVAL;
    }
    sa.sin_port = htons((uint16_t)port);
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    m->srv = srv;
    m->topics = topics;
    m->ingest = ingest;
    m->daemon =
        MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle, m,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
                         64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!m->daemon) {
        snprintf(err, errlen, "--metrics-listen '%s': cannot listen (address in use?)", listen);
        free(m);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : (int)port;
    *out = m;
    return 0;
}

int metrics_port(const metrics_t *m)
{
    return m->port;
}

void metrics_stop(metrics_t *m)
{
    if (!m)
        return;
    MHD_stop_daemon(m->daemon);
    free(m);
}
