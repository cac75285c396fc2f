/*
 * muxsub: subscriptions over one Subscribe stream, each resumed from its
 * own cursor. The contract is in muxsub.h.
 *
 * Threads: the thread in tickfan_mux_run owns the stream and the state of
 * every subscription. Other threads touch three things, all under m->lock:
 * the queue of operations (add, remove) they put in, the array of
 * subscriptions (the run thread changes it under the lock; others only
 * look a subscription up in it, to copy its cursor) and the cursor texts
 * (the run thread writes them under the lock). Flags and counters are
 * atomics.
 */
#include "muxsub.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "muxclient.h"
#include "subcore.h"
#include "subscriber.h" /* the cursor file format */
#include "wire.h"

#define LOG_LINE_MAX 512
#define MAX_OPTION_MS SUBCORE_MAX_MS
#define SLOW_CONSUMER_PREFIX "slow consumer: "
#define TRANSPORT_METADATA_LIMIT "received initial metadata size exceeds limit"
#define SERVER_OUT_OF_MEMORY "server out of memory"

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "cancel and reconnect must be async-signal-safe");

enum stream_end {
    END_GO_ON,     /* (internal) keep reading */
    END_CANCEL,    /* tickfan_mux_cancel */
    END_RECONNECT, /* tickfan_mux_reconnect */
    END_DRAINED,   /* every subscription waits for a new stream */
    END_WATCHDOG,  /* nothing for heartbeat_timeout_ms */
    END_STATUS,    /* the call ended with a status */
    END_HANDLER,   /* an on_event returned non-zero */
    END_BADMSG,    /* not a SubscribeResponse */
    END_ERROR,     /* a local failure: *err */
};

enum sub_state {
    SUB_IDLE,     /* not on the stream: to be added at readd_at_ms */
    SUB_ADDED,    /* its SubscriptionAdd is on the stream */
    SUB_REMOVING, /* its SubscriptionRemove too: waiting for the end */
};

struct msub {
    uint32_t id;
    Events__V1__WatchRequest *request; /* our copy */
    tickfan_mux_event_fn on_event;
    tickfan_mux_end_fn on_end;
    void *arg;
    char *cursor_file;

    /* Written by the run thread under m->lock, read by it without. */
    char *cursor;
    size_t cursor_len;
    size_t cursor_cap;
    uint64_t cursor_gen;
    uint64_t commit_gen;

    enum sub_state state;
    bool past_snapshot;
    bool wait_reconnect; /* IDLE after an UNAVAILABLE end */
    bool remove_asked;   /* under m->lock */
    bool heard;          /* an event accepted since the last add */
    int64_t readd_at_ms;
    int64_t added_ms;
    uint32_t attempt; /* its own re-adds since it was last healthy */
};

enum op_kind { OP_ADD, OP_REMOVE };

struct op {
    struct op *next;
    enum op_kind kind;
    uint32_t id;
    struct msub *sub; /* OP_ADD */
};

struct mux_counters {
    _Atomic uint64_t events, data_events, deliveries, responses, streams;
    _Atomic uint64_t resumes_broken, resumes_watchdog, resumes_reconnect;
    _Atomic uint64_t adds_sent, readds, ends, live, commits;
};

struct tickfan_mux {
    struct tickfan_mux_options opt; /* target points at our copy */
    char *target;

    atomic_int cancel_req;
    atomic_int reconnect_req;
    atomic_int ops_req;

    pthread_mutex_t lock;
    struct op *ops_head;
    struct op *ops_tail;
    uint32_t next_id;
    struct msub **subs; /* sorted by id */
    size_t nsubs;
    size_t subs_cap;

    /* Run thread only. */
    size_t n_on_stream; /* ADDED or REMOVING */
    size_t n_idle;
    size_t n_waiting; /* IDLE with wait_reconnect */
    int64_t next_readd_ms;
    int64_t last_commit_ms;
    uint64_t stream_events;
    uint32_t attempt;
    uint32_t retries;
    uint64_t rng;

    bool have_status;
    grpc_status_code status;
    char *details;
    int handler_result;
    uint32_t handler_id;

    struct mux_counters st;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define COUNT(m, field) atomic_fetch_add_explicit(&(m)->st.field, 1, memory_order_relaxed)

__attribute__((format(printf, 2, 3))) static void opt_log(const struct tickfan_mux_options *o,
                                                          const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    for (char *p = line; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    if (o->log != NULL)
        o->log(line, o->log_arg);
    else
        fprintf(stderr, "tickfan: %s\n", line);
}

#define mux_log(m, ...) opt_log(&(m)->opt, __VA_ARGS__)

static uint64_t rng_next(struct tickfan_mux *m)
{
    uint64_t z = (m->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Full jitter, as tickfan_sub: uniform in [0, min(max, initial * 2^*attempt)]. */
static int64_t backoff_ms(struct tickfan_mux *m, uint32_t *attempt)
{
    int64_t cap = m->opt.backoff_initial_ms;
    for (uint32_t i = 0; i < *attempt && cap < m->opt.backoff_max_ms; i++)
        cap *= 2;
    if (cap > m->opt.backoff_max_ms)
        cap = m->opt.backoff_max_ms;
    if (*attempt < UINT32_MAX)
        (*attempt)++;
    return (int64_t)(rng_next(m) % (uint64_t)(cap + 1));
}

void tickfan_mux_options_init(struct tickfan_mux_options *o)
{
    memset(o, 0, sizeof(*o));
    o->resume = true;
    o->backoff_initial_ms = 100;
    o->backoff_max_ms = 5000;
    o->healthy_ms = 10000;
    o->heartbeat_timeout_ms = 15000;
    o->commit_interval_ms = 1000;
}

/* ---- subscriptions ---------------------------------------------------------- */

/* The index of id in m->subs, or of where it would go; under m->lock or in
 * the run thread. */
static size_t find_index(const struct tickfan_mux *m, uint32_t id)
{
    size_t lo = 0, hi = m->nsubs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->subs[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct msub *find_sub(const struct tickfan_mux *m, uint32_t id)
{
    size_t i = find_index(m, id);
    return i < m->nsubs && m->subs[i]->id == id ? m->subs[i] : NULL;
}

static void sub_free(struct msub *sub)
{
    if (sub == NULL)
        return;
    if (sub->request != NULL)
        events__v1__watch_request__free_unpacked(sub->request, NULL);
    free(sub->cursor_file);
    free(sub->cursor);
    free(sub);
}

/* Run thread: sub's state, keeping the counts the loop looks at. */
static void set_state(struct tickfan_mux *m, struct msub *sub, enum sub_state st, bool waiting)
{
    if (sub->state == SUB_IDLE) {
        m->n_idle--;
        if (sub->wait_reconnect)
            m->n_waiting--;
    } else {
        m->n_on_stream--;
    }
    sub->state = st;
    sub->wait_reconnect = st == SUB_IDLE && waiting;
    if (st == SUB_IDLE) {
        m->n_idle++;
        if (sub->wait_reconnect)
            m->n_waiting++;
        if (sub->readd_at_ms < m->next_readd_ms)
            m->next_readd_ms = sub->readd_at_ms;
    } else {
        m->n_on_stream++;
    }
}

static int store_cursor(struct tickfan_mux *m, struct msub *sub, const char *text, size_t len)
{
    int rc =
        subcore_store_cursor(&sub->cursor, &sub->cursor_len, &sub->cursor_cap, &m->lock, text, len);
    if (rc == 0)
        sub->cursor_gen++;
    return rc;
}

/* A commit point of one subscription: the hook, then its file. */
static int commit_sub(struct tickfan_mux *m, struct msub *sub)
{
    int rc;
    if (sub->cursor_gen == sub->commit_gen || sub->cursor_len == 0)
        return 0;
    if (m->opt.on_commit == NULL && sub->cursor_file == NULL) {
        sub->commit_gen = sub->cursor_gen;
        return 0;
    }
    if (m->opt.on_commit != NULL) {
        rc = m->opt.on_commit(sub->id, sub->cursor, m->opt.commit_arg);
        if (rc != 0) {
            rc = rc < 0 ? rc : -ECANCELED;
            mux_log(m, "subscription %" PRIu32 ": commit hook failed (%s) at cursor %s", sub->id,
                    strerror(-rc), sub->cursor);
            return rc;
        }
    }
    if (sub->cursor_file != NULL) {
        rc = tickfan_sub_cursor_file_write(sub->cursor_file, sub->cursor);
        if (rc < 0) {
            mux_log(m, "subscription %" PRIu32 ": cannot write cursor file %s: %s", sub->id,
                    sub->cursor_file, strerror(-rc));
            return rc;
        }
    }
    sub->commit_gen = sub->cursor_gen;
    COUNT(m, commits);
    return 0;
}

/* Every subscription's commit point; the first error, after trying all.
 * Also where a subscription that has worked for healthy_ms gets its
 * backoff back. */
static int commit_all(struct tickfan_mux *m)
{
    int64_t now = now_ms();
    int first = 0;
    m->last_commit_ms = now;
    for (size_t i = 0; i < m->nsubs; i++) {
        struct msub *sub = m->subs[i];
        if (sub->state == SUB_ADDED && sub->heard && now - sub->added_ms >= m->opt.healthy_ms)
            sub->attempt = 0;
        int rc = commit_sub(m, sub);
        if (rc < 0 && first == 0)
            first = rc;
    }
    return first;
}

/* The subscription is over: its last commit, on_end, gone. */
static int end_sub(struct tickfan_mux *m, struct msub *sub, grpc_status_code code,
                   const char *message, const char *earliest)
{
    int rc = commit_sub(m, sub);
    struct tickfan_mux_end end = {
        .code = code,
        .message = message ? message : "",
        .cursor = sub->cursor ? sub->cursor : "",
        .earliest_cursor = earliest ? earliest : "",
    };
    if (sub->on_end != NULL)
        sub->on_end(sub->id, &end, sub->arg);
    if (sub->state == SUB_IDLE) {
        m->n_idle--;
        if (sub->wait_reconnect)
            m->n_waiting--;
    } else {
        m->n_on_stream--;
    }
    pthread_mutex_lock(&m->lock);
    size_t i = find_index(m, sub->id);
    memmove(&m->subs[i], &m->subs[i + 1], (m->nsubs - i - 1) * sizeof(*m->subs));
    m->nsubs--;
    pthread_mutex_unlock(&m->lock);
    atomic_fetch_sub_explicit(&m->st.live, 1, memory_order_relaxed);
    COUNT(m, ends);
    sub_free(sub);
    return rc;
}

static int send_remove(muxclient_t *mc, uint32_t id)
{
    Events__V1__SubscribeRequest req = EVENTS__V1__SUBSCRIBE_REQUEST__INIT;
    Events__V1__SubscriptionRemove rm = EVENTS__V1__SUBSCRIPTION_REMOVE__INIT;
    rm.id = id;
    req.op_case = EVENTS__V1__SUBSCRIBE_REQUEST__OP_REMOVE;
    req.remove = &rm;
    return muxclient_send(mc, &req);
}

static int send_add(struct tickfan_mux *m, muxclient_t *mc, struct msub *sub)
{
    Events__V1__SubscribeRequest req = EVENTS__V1__SUBSCRIBE_REQUEST__INIT;
    Events__V1__SubscriptionAdd add = EVENTS__V1__SUBSCRIPTION_ADD__INIT;
    Events__V1__WatchRequest wr = *sub->request;
    if (sub->cursor_len > 0)
        wr.cursor = sub->cursor;
    wr.snapshot = sub->request->snapshot && !sub->past_snapshot;
    add.id = sub->id;
    add.request = &wr;
    req.op_case = EVENTS__V1__SUBSCRIBE_REQUEST__OP_ADD;
    req.add = &add;
    int rc = muxclient_send(mc, &req);
    if (rc == 0)
        COUNT(m, adds_sent);
    return rc;
}

/*
 * Carries out the queued operations. mc is the stream, NULL between
 * streams. Returns 0 or a commit error.
 */
static int apply_ops(struct tickfan_mux *m, muxclient_t *mc)
{
    int first = 0;
    if (!atomic_exchange(&m->ops_req, 0))
        return 0;
    pthread_mutex_lock(&m->lock);
    struct op *op = m->ops_head;
    m->ops_head = m->ops_tail = NULL;
    pthread_mutex_unlock(&m->lock);

    while (op != NULL) {
        struct op *next = op->next;
        if (op->kind == OP_ADD) {
            struct msub *sub = op->sub;
            sub->state = SUB_IDLE;
            sub->readd_at_ms = 0;
            m->n_idle++;
            m->next_readd_ms = 0;
            /* Ids grow in queue order: the array stays sorted. */
            pthread_mutex_lock(&m->lock);
            m->subs[m->nsubs++] = sub;
            pthread_mutex_unlock(&m->lock);
        } else {
            struct msub *sub = find_sub(m, op->id);
            int rc = 0;
            if (sub != NULL && sub->state == SUB_IDLE) {
                rc = end_sub(m, sub, GRPC_STATUS_OK, "removed", NULL);
            } else if (sub != NULL && sub->state == SUB_ADDED) {
                set_state(m, sub, SUB_REMOVING, false);
                /* A stream that has ended takes nothing: the end of the
                 * stream ends the subscription. */
                if (mc != NULL && send_remove(mc, sub->id) == -ENOMEM)
                    rc = -ENOMEM;
            }
            if (rc < 0 && first == 0)
                first = rc;
        }
        free(op);
        op = next;
    }
    return first;
}

/* Sends the adds whose time has come. Returns 0 or -ENOMEM. */
static int send_adds(struct tickfan_mux *m, muxclient_t *mc, int64_t now)
{
    if (m->n_idle == 0 || now < m->next_readd_ms)
        return 0;
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < m->nsubs; i++) {
        struct msub *sub = m->subs[i];
        if (sub->state != SUB_IDLE)
            continue;
        if (sub->readd_at_ms > now) {
            if (sub->readd_at_ms < next)
                next = sub->readd_at_ms;
            continue;
        }
        int rc = send_add(m, mc, sub);
        if (rc == -EPIPE)
            break; /* the stream is over; muxclient_next says so */
        if (rc < 0)
            return rc;
        set_state(m, sub, SUB_ADDED, false);
        sub->added_ms = now;
        sub->heard = false;
    }
    m->next_readd_ms = next;
    return 0;
}

/* ---- the stream --------------------------------------------------------------- */

static const char *topic_of(const struct msub *sub)
{
    return sub->request->topic;
}

static const char *cursor_or_start(const struct msub *sub)
{
    return sub->cursor_len > 0 ? sub->cursor : "(none: the original request)";
}

/* What a SubscriptionEnd means for sub. Returns END_GO_ON or END_ERROR. */
static enum stream_end handle_end(struct tickfan_mux *m, struct msub *sub,
                                  const Events__V1__SubscriptionEnd *e, int *err)
{
    grpc_status_code code = (grpc_status_code)e->code;
    const char *msg = e->message ? e->message : "";
    bool has_cursor = e->cursor != NULL && e->cursor[0] != '\0';

    if (sub->state == SUB_IDLE)
        return END_GO_ON; /* not on this stream: nothing can end */
    if (sub->state == SUB_ADDED && code == GRPC_STATUS_RESOURCE_EXHAUSTED &&
        (has_cursor || strncmp(msg, SLOW_CONSUMER_PREFIX, strlen(SLOW_CONSUMER_PREFIX)) == 0)) {
        int64_t delay = backoff_ms(m, &sub->attempt);
        sub->readd_at_ms = now_ms() + delay;
        set_state(m, sub, SUB_IDLE, false);
        COUNT(m, readds);
        mux_log(m,
                "subscription %" PRIu32 " (topic %s) ended by the server (%s: %s); re-adding "
                "from cursor %s in %" PRId64 " ms",
                sub->id, topic_of(sub), wire_status_name(code), msg, cursor_or_start(sub), delay);
        return END_GO_ON;
    }
    if (sub->state == SUB_ADDED && code == GRPC_STATUS_UNAVAILABLE) {
        /* A draining server: the stream ends soon; if not, come back. */
        sub->readd_at_ms = now_ms() + m->opt.backoff_max_ms;
        set_state(m, sub, SUB_IDLE, true);
        mux_log(m,
                "subscription %" PRIu32 " (topic %s) ended by the server (%s: %s); re-adding "
                "from cursor %s on the next stream",
                sub->id, topic_of(sub), wire_status_name(code), msg, cursor_or_start(sub));
        return END_GO_ON;
    }
    /* A final end is on_end's to report; without one, the log's. */
    if (code != GRPC_STATUS_OK && sub->on_end == NULL)
        mux_log(m, "subscription %" PRIu32 " (topic %s) ended: %s%s%s", sub->id, topic_of(sub),
                wire_status_name(code), msg[0] ? ": " : "", msg);
    *err = end_sub(m, sub, code, msg, e->earliest_cursor);
    return *err < 0 ? END_ERROR : END_GO_ON;
}

/* Hands one event to every subscription it is for. */
static enum stream_end deliver_event(struct tickfan_mux *m, const Events__V1__Delivery *d, int *err)
{
    const Events__V1__WatchEvent *ev = d->event;
    for (size_t k = 0; k < d->n_ids; k++) {
        if (atomic_load(&m->cancel_req))
            return END_CANCEL;
        struct msub *sub = find_sub(m, d->ids[k]);
        /* Removed (or never ours): nothing more reaches its handler. */
        if (sub == NULL || sub->state != SUB_ADDED)
            continue;
        int hr = sub->on_event(sub->id, ev, sub->arg);
        if (hr != 0) {
            m->handler_result = hr;
            m->handler_id = sub->id;
            return END_HANDLER;
        }
        if (ev->cursor != NULL && ev->cursor[0] != '\0') {
            *err = store_cursor(m, sub, ev->cursor, strlen(ev->cursor));
            if (*err < 0)
                return END_ERROR;
        }
        if (!subcore_is_snapshot(ev))
            sub->past_snapshot = true;
        sub->heard = true;
        m->retries = 0;
        m->stream_events++;
        COUNT(m, events);
        if (ev->payload_case == EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA)
            COUNT(m, data_events);
    }
    return END_GO_ON;
}

static enum stream_end dispatch(struct tickfan_mux *m, const Events__V1__SubscribeResponse *resp,
                                int *err)
{
    COUNT(m, responses);
    for (size_t i = 0; i < resp->n_deliveries; i++) {
        const Events__V1__Delivery *d = resp->deliveries[i];
        enum stream_end end = END_GO_ON;
        if (atomic_load(&m->cancel_req))
            return END_CANCEL;
        COUNT(m, deliveries);
        if (d->payload_case == EVENTS__V1__DELIVERY__PAYLOAD_EVENT && d->event != NULL) {
            end = deliver_event(m, d, err);
        } else if (d->payload_case == EVENTS__V1__DELIVERY__PAYLOAD_END && d->end != NULL) {
            for (size_t k = 0; k < d->n_ids && end == END_GO_ON; k++) {
                struct msub *sub = find_sub(m, d->ids[k]);
                if (sub != NULL)
                    end = handle_end(m, sub, d->end, err);
            }
        }
        /* A payload newer than this build: skipped, as the ids' own
         * cursors do not move. */
        if (end != END_GO_ON)
            return end;
    }
    return END_GO_ON;
}

static enum stream_end stream_loop(struct tickfan_mux *m, muxclient_t *mc, int *err)
{
    int64_t opened = now_ms();
    int64_t last_heard = opened;
    bool healthy = false;

    m->stream_events = 0;
    for (;;) {
        Events__V1__SubscribeResponse *resp;
        if (atomic_load(&m->cancel_req))
            return END_CANCEL;
        if (atomic_exchange(&m->reconnect_req, 0))
            return END_RECONNECT;
        *err = apply_ops(m, mc);
        if (*err < 0)
            return END_ERROR;
        int64_t now = now_ms();
        *err = send_adds(m, mc, now);
        if (*err < 0)
            return END_ERROR;
        if (!healthy && m->stream_events > 0 && now - opened >= m->opt.healthy_ms) {
            healthy = true;
            m->attempt = 0;
        }
        if (m->opt.commit_interval_ms > 0 && now - m->last_commit_ms >= m->opt.commit_interval_ms) {
            *err = commit_all(m);
            if (*err < 0)
                return END_ERROR;
        }
        if (m->n_on_stream == 0) {
            /* Nobody expects anything: the watchdog sleeps. */
            last_heard = now;
            if (m->nsubs > 0 && m->n_waiting == m->nsubs)
                return END_DRAINED;
        }

        int rc = muxclient_next(mc, TICKFAN_MUX_POLL_MS, &resp);
        if (rc == -EAGAIN) {
            if (m->opt.heartbeat_timeout_ms > 0 && m->n_on_stream > 0 &&
                now_ms() - last_heard >= m->opt.heartbeat_timeout_ms)
                return END_WATCHDOG;
            continue;
        }
        if (rc == -EPIPE)
            return END_STATUS;
        if (rc < 0)
            return END_BADMSG;
        enum stream_end end = dispatch(m, resp, err);
        events__v1__subscribe_response__free_unpacked(resp, NULL);
        if (end != END_GO_ON)
            return end;
        /* After the handlers: a slow handler is not a dead stream. */
        last_heard = now_ms();
    }
}

/* After a stream: every subscription is off it. Returns 0 or a commit error. */
static int off_the_stream(struct tickfan_mux *m)
{
    int first = 0;
    for (size_t i = 0; i < m->nsubs;) {
        struct msub *sub = m->subs[i];
        if (sub->state == SUB_REMOVING) {
            /* Its stream is gone, and the subscription with it. */
            int rc = end_sub(m, sub, GRPC_STATUS_OK, "removed", NULL);
            if (rc < 0 && first == 0)
                first = rc;
            continue;
        }
        sub->readd_at_ms = 0;
        set_state(m, sub, SUB_IDLE, false);
        i++;
    }
    m->next_readd_ms = 0;
    return first;
}

static void forget_status(struct tickfan_mux *m)
{
    m->have_status = false;
    free(m->details);
    m->details = NULL;
}

static void keep_status(struct tickfan_mux *m, muxclient_t *mc)
{
    const char *details = "";
    forget_status(m);
    m->status = GRPC_STATUS_UNKNOWN;
    muxclient_status(mc, &m->status, &details);
    m->have_status = true;
    m->details = strdup(details);
}

static bool status_resumable(grpc_status_code code, const char *details)
{
    switch (code) {
    case GRPC_STATUS_OK:
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_INTERNAL:
    case GRPC_STATUS_UNKNOWN:
    case GRPC_STATUS_ABORTED:
    case GRPC_STATUS_CANCELLED:
        return true;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return details != NULL &&
               (strncmp(details, TRANSPORT_METADATA_LIMIT, strlen(TRANSPORT_METADATA_LIMIT)) == 0 ||
                strcmp(details, SERVER_OUT_OF_MEMORY) == 0);
    default:
        return false;
    }
}

/* 0 with *delay_ms when the stream is reopened (counted, logged), or the
 * error run stops with. */
static int plan_resume(struct tickfan_mux *m, enum stream_end end, int64_t *delay_ms)
{
    *delay_ms = 0;
    if (end == END_RECONNECT) {
        COUNT(m, resumes_reconnect);
        mux_log(m, "reconnect requested; re-adding %zu subscriptions", m->nsubs);
        return 0;
    }
    if (end == END_WATCHDOG && !m->opt.resume) {
        mux_log(m, "stream silent for %" PRId64 " ms; not resuming", m->opt.heartbeat_timeout_ms);
        return -ETIMEDOUT;
    }
    if (end == END_STATUS && (!m->opt.resume || !status_resumable(m->status, m->details)))
        return -EPIPE;
    if (m->opt.max_retries != 0 && m->retries >= m->opt.max_retries) {
        mux_log(m, "giving up after %" PRIu32 " resumes without an event", m->retries);
        return end == END_WATCHDOG ? -ETIMEDOUT : -EPIPE;
    }
    m->retries++;
    *delay_ms = backoff_ms(m, &m->attempt);
    if (end == END_WATCHDOG) {
        COUNT(m, resumes_watchdog);
        mux_log(m,
                "stream silent for %" PRId64 " ms (no event or heartbeat); re-adding %zu "
                "subscriptions from their cursors in %" PRId64 " ms",
                m->opt.heartbeat_timeout_ms, m->nsubs, *delay_ms);
    } else if (end == END_DRAINED) {
        COUNT(m, resumes_reconnect);
        mux_log(m,
                "every subscription was ended by a draining server; re-adding %zu "
                "subscriptions on a new stream in %" PRId64 " ms",
                m->nsubs, *delay_ms);
    } else {
        COUNT(m, resumes_broken);
        mux_log(m,
                "stream broken (%s%s%s); re-adding %zu subscriptions from their cursors in "
                "%" PRId64 " ms",
                wire_status_name(m->status), m->details && m->details[0] ? ": " : "",
                m->details ? m->details : "", m->nsubs, *delay_ms);
    }
    return 0;
}

/* Sleeps ms, carrying out queued operations meanwhile; cut short by a
 * cancel or reconnect request. Returns 0 or a commit error. */
static int pause_ms(struct tickfan_mux *m, int64_t ms)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        int rc = apply_ops(m, NULL);
        if (rc < 0)
            return rc;
        if (atomic_load(&m->cancel_req) || atomic_load(&m->reconnect_req))
            return 0;
        int64_t left = end - now_ms();
        if (left <= 0)
            return 0;
        if (left > 10)
            left = 10; /* queued removes are seen soon */
        struct timespec ts = {.tv_sec = 0, .tv_nsec = left * 1000000};
        nanosleep(&ts, NULL);
    }
}

int tickfan_mux_run(tickfan_mux_t *m)
{
    int rc = 0;
    int err;

    forget_status(m);
    m->handler_result = 0;
    m->handler_id = 0;
    m->last_commit_ms = now_ms();
    for (;;) {
        muxclient_t *mc;
        if (atomic_load(&m->cancel_req))
            break;
        rc = apply_ops(m, NULL);
        if (rc < 0)
            break;
        if (m->nsubs == 0) {
            /* No stream without a subscription. */
            rc = pause_ms(m, TICKFAN_MUX_POLL_MS);
            atomic_store(&m->reconnect_req, 0);
            if (rc < 0)
                break;
            continue;
        }
        atomic_store(&m->reconnect_req, 0);
        rc = muxclient_open(&mc, m->target);
        if (rc < 0) {
            mux_log(m, "cannot start a stream to %s: %s", m->target, strerror(-rc));
            break;
        }
        COUNT(m, streams);
        err = 0;
        enum stream_end end = stream_loop(m, mc, &err);
        if (end == END_STATUS)
            keep_status(m, mc);
        else
            forget_status(m);
        muxclient_close(mc);
        rc = off_the_stream(m);
        if (rc < 0)
            break;

        if (end == END_CANCEL)
            break;
        if (end == END_HANDLER) {
            rc = -ECANCELED;
            break;
        }
        if (end == END_BADMSG) {
            mux_log(m, "the server sent a message that is not a SubscribeResponse; stopping");
            rc = -EBADMSG;
            break;
        }
        if (end == END_ERROR) {
            rc = err;
            break;
        }
        int64_t delay;
        rc = plan_resume(m, end, &delay);
        if (rc != 0)
            break;
        rc = commit_all(m);
        if (rc < 0)
            break;
        rc = pause_ms(m, delay);
        if (rc < 0)
            break;
    }
    err = commit_all(m);
    return rc == 0 ? err : rc;
}

/* ---- the API around it -------------------------------------------------------- */

static int check_options(const struct tickfan_mux_options *o)
{
    const char *bad = NULL;
    int64_t value = 0;

    if (o->target == NULL || o->target[0] == '\0') {
        opt_log(o, "mux subscriber: target is required");
        return -EINVAL;
    }
    bad = subcore_check_times(o->backoff_initial_ms, o->backoff_max_ms, o->healthy_ms,
                              o->heartbeat_timeout_ms, o->commit_interval_ms, &value);
    if (bad != NULL) {
        opt_log(o,
                "mux subscriber: %s = %" PRId64 " is out of range (times: 0..%lld ms, "
                "backoff: 1 <= initial <= max)",
                bad, value, MAX_OPTION_MS);
        return -EINVAL;
    }
    return 0;
}

int tickfan_mux_create(tickfan_mux_t **out, const struct tickfan_mux_options *o)
{
    struct tickfan_mux *m;

    *out = NULL;
    int rc = check_options(o);
    if (rc < 0)
        return rc;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->opt = *o;
    pthread_mutex_init(&m->lock, NULL);
    atomic_init(&m->cancel_req, 0);
    atomic_init(&m->reconnect_req, 0);
    atomic_init(&m->ops_req, 0);
    m->next_id = 1;
    if (getrandom(&m->rng, sizeof(m->rng), GRND_NONBLOCK) != (ssize_t)sizeof(m->rng))
        m->rng = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)m;
    grpc_init();
    m->target = strdup(o->target);
    if (m->target == NULL) {
        tickfan_mux_destroy(m);
        return -ENOMEM;
    }
    m->opt.target = m->target;
    *out = m;
    return 0;
}

void tickfan_mux_destroy(tickfan_mux_t *m)
{
    if (m == NULL)
        return;
    for (struct op *op = m->ops_head, *next; op != NULL; op = next) {
        next = op->next;
        sub_free(op->sub);
        free(op);
    }
    for (size_t i = 0; i < m->nsubs; i++)
        sub_free(m->subs[i]);
    free(m->subs);
    free(m->target);
    free(m->details);
    pthread_mutex_destroy(&m->lock);
    free(m);
    grpc_shutdown();
}

/* A new subscription from so, its start cursor read; not yet in m. */
static int sub_new(struct tickfan_mux *m, const struct tickfan_mux_sub_options *so,
                   struct msub **out)
{
    struct msub *sub;
    char *from_file = NULL;
    int rc;

    *out = NULL;
    if (so->request == NULL || so->request->topic == NULL || so->request->topic[0] == '\0' ||
        so->on_event == NULL) {
        mux_log(m, "mux subscriber: a subscription needs %s",
                so->on_event == NULL ? "on_event" : "request.topic");
        return -EINVAL;
    }
    sub = calloc(1, sizeof(*sub));
    if (sub == NULL)
        return -ENOMEM;
    sub->on_event = so->on_event;
    sub->on_end = so->on_end;
    sub->arg = so->arg;
    rc = subcore_copy_request(so->request, &sub->request);
    if (rc < 0)
        goto out_free;
    if (so->cursor_file != NULL) {
        sub->cursor_file = strdup(so->cursor_file);
        if (sub->cursor_file == NULL) {
            rc = -ENOMEM;
            goto out_free;
        }
    }
    const char *start = sub->request->cursor;
    if ((start == NULL || start[0] == '\0') && sub->cursor_file != NULL) {
        rc = tickfan_sub_cursor_file_read(sub->cursor_file, &from_file);
        if (rc == -ENOENT) {
            rc = 0;
        } else if (rc < 0) {
            mux_log(m, "cursor file %s: %s", sub->cursor_file,
                    rc == -EINVAL ? "does not hold a cursor" : strerror(-rc));
            goto out_free;
        } else {
            mux_log(m, "cursor file %s: topic %s resumes from cursor %s", sub->cursor_file,
                    sub->request->topic, from_file);
            start = from_file;
        }
    }
    if (start != NULL && start[0] != '\0') {
        size_t len = strlen(start);
        sub->cursor = malloc(len + 1);
        if (sub->cursor == NULL) {
            rc = -ENOMEM;
            goto out_free;
        }
        memcpy(sub->cursor, start, len + 1);
        sub->cursor_len = len;
        sub->cursor_cap = len + 1;
    }
    free(from_file);
    *out = sub;
    return 0;

out_free:
    free(from_file);
    sub_free(sub);
    return rc;
}

/* Under m->lock: op goes last in the queue the run loop takes its work from. */
static void queue_op_locked(struct tickfan_mux *m, struct op *op)
{
    if (m->ops_tail != NULL)
        m->ops_tail->next = op;
    else
        m->ops_head = op;
    m->ops_tail = op;
}

int tickfan_mux_add(tickfan_mux_t *m, const struct tickfan_mux_sub_options *so, uint32_t *id)
{
    struct msub *sub;
    struct op *op;
    int rc;

    *id = 0;
    if (atomic_load(&m->cancel_req))
        return -ECANCELED;
    rc = sub_new(m, so, &sub);
    if (rc < 0)
        return rc;
    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        sub_free(sub);
        return -ENOMEM;
    }
    pthread_mutex_lock(&m->lock);
    if (m->next_id == 0) { /* all 2^32 - 1 ids used */
        rc = -ENOMEM;
        goto out_unlock;
    }
    /* Room in the array now, so the run thread never fails to insert. */
    size_t queued = 0;
    for (struct op *q = m->ops_head; q != NULL; q = q->next)
        queued += q->kind == OP_ADD;
    if (m->nsubs + queued + 1 > m->subs_cap) {
        size_t cap = m->subs_cap ? m->subs_cap * 2 : 16;
        struct msub **subs = realloc(m->subs, cap * sizeof(*subs));
        if (subs == NULL) {
            rc = -ENOMEM;
            goto out_unlock;
        }
        m->subs = subs;
        m->subs_cap = cap;
    }
    uint32_t new_id = m->next_id++;
    sub->id = new_id;
    atomic_fetch_add_explicit(&m->st.live, 1, memory_order_relaxed);
    op->kind = OP_ADD;
    op->id = sub->id;
    op->sub = sub;
    queue_op_locked(m, op);
    pthread_mutex_unlock(&m->lock);
    atomic_store(&m->ops_req, 1);
    *id = new_id;
    return 0;

out_unlock:
    pthread_mutex_unlock(&m->lock);
    free(op);
    sub_free(sub);
    return rc;
}

/* Under m->lock: the subscription id, in the array or still queued. */
static struct msub *lookup_locked(struct tickfan_mux *m, uint32_t id)
{
    struct msub *sub = find_sub(m, id);
    if (sub != NULL)
        return sub;
    for (struct op *q = m->ops_head; q != NULL; q = q->next)
        if (q->kind == OP_ADD && q->id == id)
            return q->sub;
    return NULL;
}

int tickfan_mux_remove(tickfan_mux_t *m, uint32_t id)
{
    struct op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&m->lock);
    struct msub *sub = lookup_locked(m, id);
    if (sub == NULL || sub->remove_asked) {
        pthread_mutex_unlock(&m->lock);
        free(op);
        return -ENOENT;
    }
    sub->remove_asked = true;
    op->kind = OP_REMOVE;
    op->id = id;
    queue_op_locked(m, op);
    pthread_mutex_unlock(&m->lock);
    atomic_store(&m->ops_req, 1);
    return 0;
}

void tickfan_mux_cancel(tickfan_mux_t *m)
{
    atomic_store(&m->cancel_req, 1);
}

void tickfan_mux_reconnect(tickfan_mux_t *m)
{
    atomic_store(&m->reconnect_req, 1);
}

void tickfan_mux_stats(tickfan_mux_t *m, struct tickfan_mux_stats *out)
{
    const struct mux_counters *c = &m->st;
#define LOAD(f) atomic_load_explicit(&c->f, memory_order_relaxed)
    memset(out, 0, sizeof(*out));
    out->events = LOAD(events);
    out->data_events = LOAD(data_events);
    out->deliveries = LOAD(deliveries);
    out->responses = LOAD(responses);
    out->streams = LOAD(streams);
    out->resumes_broken = LOAD(resumes_broken);
    out->resumes_watchdog = LOAD(resumes_watchdog);
    out->resumes_reconnect = LOAD(resumes_reconnect);
    out->resumes = out->resumes_broken + out->resumes_watchdog + out->resumes_reconnect;
    out->adds_sent = LOAD(adds_sent);
    out->readds = LOAD(readds);
    out->ends = LOAD(ends);
    out->live = LOAD(live);
    out->commits = LOAD(commits);
#undef LOAD
}

long tickfan_mux_cursor(tickfan_mux_t *m, uint32_t id, char *buf, size_t len)
{
    pthread_mutex_lock(&m->lock);
    struct msub *sub = lookup_locked(m, id);
    if (sub == NULL) {
        pthread_mutex_unlock(&m->lock);
        if (len > 0)
            buf[0] = '\0';
        return -ENOENT;
    }
    size_t n = sub->cursor_len;
    if (len > 0) {
        size_t k = n < len - 1 ? n : len - 1;
        if (k > 0)
            memcpy(buf, sub->cursor, k);
        buf[k] = '\0';
    }
    pthread_mutex_unlock(&m->lock);
    return (long)n;
}

int tickfan_mux_status(tickfan_mux_t *m, grpc_status_code *code, const char **details)
{
    if (!m->have_status)
        return -ENOENT;
    if (code != NULL)
        *code = m->status;
    if (details != NULL)
        *details = m->details ? m->details : "";
    return 0;
}

int tickfan_mux_handler_result(tickfan_mux_t *m, uint32_t *id)
{
    if (id != NULL)
        *id = m->handler_id;
    return m->handler_result;
}
