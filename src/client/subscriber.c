/*
 * subscriber: a Watch subscription that resumes from the last processed
 * cursor. The contract is in subscriber.h.
 *
 * Threads: the thread in tickfan_sub_run owns all state, except the
 * request flags (atomics, set from anywhere, signal handlers included), the
 * counters (atomics, read by tickfan_sub_stats) and the cursor text, which
 * only the run thread writes and other threads copy under cursor_lock.
 * Each stream is one watchclient (its own channel, completion queue and
 * TCP connection), opened and closed in the run thread.
 */
#include "subscriber.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "subcore.h"
#include "watchclient.h"
#include "wire.h"

#define CURSOR_FILE_MAX 1024
#define LOG_LINE_MAX 512
/* Upper bound of the time options, so that no arithmetic overflows. */
#define MAX_OPTION_MS SUBCORE_MAX_MS
#define TRAILER_CURSOR "tickfan-cursor"
#define SLOW_CONSUMER_PREFIX "slow consumer: " /* a slow consumer's RESOURCE_EXHAUSTED */
#define TRAILER_EARLIEST "tickfan-earliest-cursor"
/* gRPC's own message (1.51) when a stream on the connection sent more
 * metadata than the server takes: the server closes the whole HTTP/2
 * connection and every stream on it ends with RESOURCE_EXHAUSTED and this
 * text. tickfand never sends it. */
#define TRANSPORT_METADATA_LIMIT "received initial metadata size exceeds limit"

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "cancel and reconnect must be async-signal-safe");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "counters are read while the run thread writes");

/* Why one stream ended. */
enum stream_end {
    END_CANCEL,    /* tickfan_sub_cancel */
    END_RECONNECT, /* tickfan_sub_reconnect */
    END_WATCHDOG,  /* nothing arrived for heartbeat_timeout_ms */
    END_STATUS,    /* the call ended with a status (server or transport) */
    END_HANDLER,   /* on_event returned non-zero */
    END_BADMSG,    /* a message that is not a WatchEvent */
    END_ERROR,     /* a local failure (commit, memory): stream_loop's *err */
};

struct sub_counters {
    _Atomic uint64_t events;
    _Atomic uint64_t data_events;
    _Atomic uint64_t streams;
    _Atomic uint64_t resumes_server;
    _Atomic uint64_t resumes_transport;
    _Atomic uint64_t resumes_watchdog;
    _Atomic uint64_t resumes_reconnect;
    _Atomic uint64_t resumes_by_status[TICKFAN_SUB_STATUS_CODES];
    _Atomic uint64_t commits;
};

struct tickfan_sub {
    struct tickfan_sub_options opt; /* target and cursor_file point at our copies */
    char *target;
    char *cursor_file;
    Events__V1__WatchRequest *request; /* our copy, unpacked by protobuf-c */

    atomic_int cancel_req;
    atomic_int reconnect_req;

    /* The cursor to resume from: the last event processed, else the start. */
    pthread_mutex_t cursor_lock;
    char *cursor;
    size_t cursor_len;
    size_t cursor_cap;
    uint64_t cursor_gen; /* +1 per move; commit_gen: the one last committed */

    uint64_t commit_gen;
    uint64_t since_commit; /* events processed since the last commit point */
    int64_t last_commit_ms;

    /* An event after the snapshot phase was processed: never ask again. */
    bool past_snapshot;
    uint32_t attempt; /* resumes since the last healthy stream (backoff) */
    uint32_t retries; /* resumes since the last event processed */
    uint64_t rng;

    /* How the last stream of the last run ended. */
    bool have_status;
    grpc_status_code status;
    char *details;
    char *earliest;
    bool resume_trailer;
    int handler_result;

    struct sub_counters st;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void default_log(const char *line, void *arg)
{
    (void)arg;
    fprintf(stderr, "tickfan: %s\n", line);
}

/* Formats one log line; control bytes (from server strings too) become '?'. */
__attribute__((format(printf, 2, 3))) static void opt_log(const struct tickfan_sub_options *o,
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
        default_log(line, NULL);
}

#define sub_log(s, ...) opt_log(&(s)->opt, __VA_ARGS__)

/* splitmix64: good enough to spread reconnects, seeded per subscriber. */
static uint64_t rng_next(struct tickfan_sub *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(struct tickfan_sub *s)
{
    if (getrandom(&s->rng, sizeof(s->rng), GRND_NONBLOCK) != (ssize_t)sizeof(s->rng))
        s->rng = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
}

/* Full jitter: uniform in [0, min(max, initial * 2^attempt)]. */
static int64_t backoff_ms(struct tickfan_sub *s)
{
    int64_t cap = s->opt.backoff_initial_ms;
    for (uint32_t i = 0; i < s->attempt && cap < s->opt.backoff_max_ms; i++)
        cap *= 2;
    if (cap > s->opt.backoff_max_ms)
        cap = s->opt.backoff_max_ms;
    if (s->attempt < UINT32_MAX)
        s->attempt++;
    return (int64_t)(rng_next(s) % (uint64_t)(cap + 1));
}

void tickfan_sub_options_init(struct tickfan_sub_options *o)
{
    memset(o, 0, sizeof(*o));
    o->resume = true;
    o->backoff_initial_ms = 100;
    o->backoff_max_ms = 5000;
    o->healthy_ms = 10000;
    o->heartbeat_timeout_ms = 15000;
    o->commit_interval_ms = 1000;
}

/* Makes s->cursor hold text (len bytes); the run thread only. */
static int store_cursor(struct tickfan_sub *s, const char *text, size_t len)
{
    int rc = subcore_store_cursor(&s->cursor, &s->cursor_len, &s->cursor_cap, &s->cursor_lock, text,
                                  len);
    if (rc == 0)
        s->cursor_gen++;
    return rc;
}

static bool valid_cursor_text(const char *text, size_t len)
{
    if (len == 0 || len > CURSOR_FILE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] <= 0x20 || text[i] == 0x7f)
            return false;
    return true;
}

int tickfan_sub_cursor_file_read(const char *path, char **cursor)
{
    char buf[CURSOR_FILE_MAX + 2];
    size_t len = 0;
    int rc = 0;

    *cursor = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out_close;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    /* One line: the cursor, then an optional newline. */
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (!valid_cursor_text(buf, len)) {
        rc = -EINVAL;
        goto out_close;
    }
    *cursor = strndup(buf, len);
    if (*cursor == NULL)
        rc = -ENOMEM;
out_close:
    close(fd);
    return rc;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsync of the directory holding path, so that a rename in it is durable. */
static int sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL   ? strdup(".")
                : slash == path ? strdup("/")
                                : strndup(path, (size_t)(slash - path));
    if (dir == NULL)
        return -ENOMEM;
    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out_free;
    }
    if (fsync(fd) != 0)
        rc = -errno;
    close(fd);
out_free:
    free(dir);
    return rc;
}

int tickfan_sub_cursor_file_write(const char *path, const char *cursor)
{
    size_t len = strlen(cursor);
    int rc;

    if (!valid_cursor_text(cursor, len))
        return -EINVAL;
    char *tmp = malloc(strlen(path) + sizeof(".tmp"));
    if (tmp == NULL)
        return -ENOMEM;
    strcpy(tmp, path);
    strcat(tmp, ".tmp");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out_free;
    }
    rc = write_all(fd, cursor, len);
    if (rc == 0)
        rc = write_all(fd, "\n", 1);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc < 0)
        goto out_unlink;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto out_unlink;
    }
    rc = sync_parent_dir(path);
    goto out_free;

out_unlink:
    unlink(tmp);
out_free:
    free(tmp);
    return rc;
}

/* A commit point: the hook, then the cursor file, if the cursor moved. */
static int commit(struct tickfan_sub *s)
{
    int rc;
    s->last_commit_ms = now_ms();
    s->since_commit = 0;
    if (s->cursor_gen == s->commit_gen || s->cursor_len == 0)
        return 0;
    if (s->opt.on_commit == NULL && s->cursor_file == NULL)
        return 0;
    if (s->opt.on_commit != NULL) {
        rc = s->opt.on_commit(s->cursor, s->opt.commit_arg);
        if (rc != 0) {
            rc = rc < 0 ? rc : -ECANCELED;
            sub_log(s, "commit hook failed (%s) at cursor %s", strerror(-rc), s->cursor);
            return rc;
        }
    }
    if (s->cursor_file != NULL) {
        rc = tickfan_sub_cursor_file_write(s->cursor_file, s->cursor);
        if (rc < 0) {
            sub_log(s, "cannot write cursor file %s: %s", s->cursor_file, strerror(-rc));
            return rc;
        }
    }
    s->commit_gen = s->cursor_gen;
    atomic_fetch_add_explicit(&s->st.commits, 1, memory_order_relaxed);
    return 0;
}

static int check_options(const struct tickfan_sub_options *o)
{
    const char *bad = NULL;
    int64_t value = 0;

    if (o->target == NULL || o->target[0] == '\0')
        bad = "target";
    else if (o->request == NULL || o->request->topic == NULL || o->request->topic[0] == '\0')
        bad = "request.topic";
    else if (o->on_event == NULL)
        bad = "on_event";
    if (bad != NULL) {
        opt_log(o, "subscriber: %s is required", bad);
        return -EINVAL;
    }
    bad = subcore_check_times(o->backoff_initial_ms, o->backoff_max_ms, o->healthy_ms,
                              o->heartbeat_timeout_ms, o->commit_interval_ms, &value);
    if (bad != NULL) {
        opt_log(o,
                "subscriber: %s = %" PRId64 " is out of range (times: 0..%lld ms, "
                "backoff: 1 <= initial <= max)",
                bad, value, MAX_OPTION_MS);
        return -EINVAL;
    }
    return 0;
}

int tickfan_sub_create(tickfan_sub_t **out, const struct tickfan_sub_options *o)
{
    struct tickfan_sub *s;
    int rc;

    *out = NULL;
    rc = check_options(o);
    if (rc < 0)
        return rc;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->opt = *o;
    pthread_mutex_init(&s->cursor_lock, NULL);
    atomic_init(&s->cancel_req, 0);
    atomic_init(&s->reconnect_req, 0);
    rng_seed(s);
    grpc_init();
    /* From here on, tickfan_sub_destroy() undoes whatever was done. */

    s->target = strdup(o->target);
    s->cursor_file = o->cursor_file ? strdup(o->cursor_file) : NULL;
    if (s->target == NULL || (o->cursor_file != NULL && s->cursor_file == NULL)) {
        rc = -ENOMEM;
        goto out_destroy;
    }
    s->opt.target = s->target;
    s->opt.cursor_file = s->cursor_file;
    s->opt.request = NULL;
    rc = subcore_copy_request(o->request, &s->request);
    if (rc < 0)
        goto out_destroy;

    const char *start = s->request->cursor;
    char *from_file = NULL;
    if ((start == NULL || start[0] == '\0') && s->cursor_file != NULL) {
        rc = tickfan_sub_cursor_file_read(s->cursor_file, &from_file);
        if (rc == -ENOENT) {
            rc = 0;
        } else if (rc < 0) {
            sub_log(s, "cursor file %s: %s", s->cursor_file,
                    rc == -EINVAL ? "does not hold a cursor" : strerror(-rc));
            goto out_destroy;
        } else {
            sub_log(s, "cursor file %s: resuming from cursor %s", s->cursor_file, from_file);
            start = from_file;
        }
    }
    if (start != NULL && start[0] != '\0')
        rc = store_cursor(s, start, strlen(start));
    free(from_file);
    if (rc < 0)
        goto out_destroy;
    /* The starting cursor is not news: nothing to commit until an event. */
    s->commit_gen = s->cursor_gen;
    *out = s;
    return 0;

out_destroy:
    tickfan_sub_destroy(s);
    return rc;
}

void tickfan_sub_destroy(tickfan_sub_t *s)
{
    if (s == NULL)
        return;
    if (s->request != NULL)
        events__v1__watch_request__free_unpacked(s->request, NULL);
    free(s->target);
    free(s->cursor_file);
    free(s->cursor);
    free(s->details);
    free(s->earliest);
    pthread_mutex_destroy(&s->cursor_lock);
    free(s);
    grpc_shutdown();
}

void tickfan_sub_cancel(tickfan_sub_t *s)
{
    atomic_store(&s->cancel_req, 1);
}

void tickfan_sub_reconnect(tickfan_sub_t *s)
{
    atomic_store(&s->reconnect_req, 1);
}

void tickfan_sub_stats(tickfan_sub_t *s, struct tickfan_sub_stats *out)
{
    const struct sub_counters *c = &s->st;
    memset(out, 0, sizeof(*out));
    out->events = atomic_load_explicit(&c->events, memory_order_relaxed);
    out->data_events = atomic_load_explicit(&c->data_events, memory_order_relaxed);
    out->streams = atomic_load_explicit(&c->streams, memory_order_relaxed);
    out->resumes_server = atomic_load_explicit(&c->resumes_server, memory_order_relaxed);
    out->resumes_transport = atomic_load_explicit(&c->resumes_transport, memory_order_relaxed);
    out->resumes_watchdog = atomic_load_explicit(&c->resumes_watchdog, memory_order_relaxed);
    out->resumes_reconnect = atomic_load_explicit(&c->resumes_reconnect, memory_order_relaxed);
    out->resumes = out->resumes_server + out->resumes_transport + out->resumes_watchdog +
                   out->resumes_reconnect;
    for (int i = 0; i < TICKFAN_SUB_STATUS_CODES; i++)
        out->resumes_by_status[i] =
            atomic_load_explicit(&c->resumes_by_status[i], memory_order_relaxed);
    out->commits = atomic_load_explicit(&c->commits, memory_order_relaxed);
}

size_t tickfan_sub_cursor(tickfan_sub_t *s, char *buf, size_t len)
{
    pthread_mutex_lock(&s->cursor_lock);
    size_t n = s->cursor_len;
    if (len > 0) {
        size_t k = n < len - 1 ? n : len - 1;
        if (k > 0)
            memcpy(buf, s->cursor, k);
        buf[k] = '\0';
    }
    pthread_mutex_unlock(&s->cursor_lock);
    return n;
}

int tickfan_sub_status(tickfan_sub_t *s, grpc_status_code *code, const char **details)
{
    if (!s->have_status)
        return -ENOENT;
    if (code != NULL)
        *code = s->status;
    if (details != NULL)
        *details = s->details ? s->details : "";
    return 0;
}

const char *tickfan_sub_earliest_cursor(tickfan_sub_t *s)
{
    return s->have_status ? s->earliest : NULL;
}

int tickfan_sub_handler_result(tickfan_sub_t *s)
{
    return s->handler_result;
}

static void forget_status(struct tickfan_sub *s)
{
    s->have_status = false;
    free(s->details);
    free(s->earliest);
    s->details = NULL;
    s->earliest = NULL;
    s->resume_trailer = false;
}

/* Keeps the status of a stream that ended, beyond its watchclient. */
static void keep_status(struct tickfan_sub *s, watchclient_t *wc)
{
    const char *details = "";
    const char *earliest;
    forget_status(s);
    s->status = GRPC_STATUS_UNKNOWN;
    watchclient_status(wc, &s->status, &details);
    s->have_status = true;
    s->details = strdup(details);
    earliest = watchclient_trailer(wc, TRAILER_EARLIEST);
    s->earliest = earliest ? strdup(earliest) : NULL;
    /* A slow consumer's disconnect: the trailer, or (a stream that had
     * stopped reading, cancelled with the status, which carries no
     * trailing metadata) the message alone. */
    s->resume_trailer =
        watchclient_trailer(wc, TRAILER_CURSOR) != NULL ||
        (s->status == GRPC_STATUS_RESOURCE_EXHAUSTED && s->details &&
         strncmp(s->details, SLOW_CONSUMER_PREFIX, strlen(SLOW_CONSUMER_PREFIX)) == 0);
}

/* Whether a stream that ended with code (and details) may be reopened from
 * the cursor. */
static bool status_resumable(grpc_status_code code, bool resume_trailer, const char *details)
{
    switch (code) {
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_INTERNAL:
    case GRPC_STATUS_UNKNOWN:
    case GRPC_STATUS_ABORTED:
    /* Only our own cancels are final, and those never get here. */
    case GRPC_STATUS_CANCELLED:
        return true;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        /* A slow consumer told where to resume; "too many streams" is not.
         * We send no metadata of our own: gRPC's limit text means another
         * stream closed a connection we shared (a proxy multiplexing
         * clients), and a new one works. */
        return resume_trailer || (details && strncmp(details, TRANSPORT_METADATA_LIMIT,
                                                     sizeof(TRANSPORT_METADATA_LIMIT) - 1) == 0);
    default:
        return false;
    }
}

/*
 * Hands one event to on_event and, if it accepted it, moves the cursor and
 * counts. Returns END_STATUS to mean "go on", or why the stream must end.
 */
static enum stream_end process(struct tickfan_sub *s, const Events__V1__WatchEvent *ev, int *err)
{
    int hr = s->opt.on_event(ev, s->opt.arg);
    if (hr != 0) {
        s->handler_result = hr;
        return END_HANDLER;
    }
    if (ev->cursor != NULL && ev->cursor[0] != '\0') {
        *err = store_cursor(s, ev->cursor, strlen(ev->cursor));
        if (*err < 0)
            return END_ERROR;
    }
    if (!subcore_is_snapshot(ev))
        s->past_snapshot = true;
    s->retries = 0;
    s->since_commit++;
    atomic_fetch_add_explicit(&s->st.events, 1, memory_order_relaxed);
    if (ev->payload_case == EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA)
        atomic_fetch_add_explicit(&s->st.data_events, 1, memory_order_relaxed);
    if (s->opt.commit_every != 0 && s->since_commit >= s->opt.commit_every) {
        *err = commit(s);
        if (*err < 0)
            return END_ERROR;
    }
    return END_STATUS;
}

/* Reads one stream until it ends or must be dropped; says why. */
static enum stream_end stream_loop(struct tickfan_sub *s, watchclient_t *wc, int *err)
{
    int64_t opened = now_ms();
    int64_t last_heard = opened;
    bool healthy = false;
    uint64_t processed = 0;

    for (;;) {
        Events__V1__WatchEvent *ev;
        if (atomic_load(&s->cancel_req))
            return END_CANCEL;
        if (atomic_exchange(&s->reconnect_req, 0))
            return END_RECONNECT;
        int64_t now = now_ms();
        if (!healthy && processed > 0 && now - opened >= s->opt.healthy_ms) {
            healthy = true;
            s->attempt = 0;
        }
        if (s->opt.commit_interval_ms > 0 && now - s->last_commit_ms >= s->opt.commit_interval_ms) {
            *err = commit(s);
            if (*err < 0)
                return END_ERROR;
        }

        int rc = watchclient_next(wc, TICKFAN_SUB_POLL_MS, &ev);
        if (rc == -EAGAIN) {
            if (s->opt.heartbeat_timeout_ms > 0 &&
                now_ms() - last_heard >= s->opt.heartbeat_timeout_ms)
                return END_WATCHDOG;
            continue;
        }
        if (rc == -EPIPE)
            return END_STATUS;
        if (rc < 0)
            return END_BADMSG;
        /* Nothing more reaches the caller once it asked to stop. */
        if (atomic_load(&s->cancel_req)) {
            events__v1__watch_event__free_unpacked(ev, NULL);
            return END_CANCEL;
        }
        enum stream_end end = process(s, ev, err);
        events__v1__watch_event__free_unpacked(ev, NULL);
        if (end != END_STATUS)
            return end;
        processed++;
        /* Measured after the handler: a slow handler is not a dead stream. */
        last_heard = now_ms();
    }
}

static int open_stream(struct tickfan_sub *s, watchclient_t **wc)
{
    Events__V1__WatchRequest req = *s->request;
    struct watchclient_opts wo = {.own_connection = true};

    if (s->cursor_len > 0)
        req.cursor = s->cursor;
    req.snapshot = s->request->snapshot && !s->past_snapshot;
    atomic_store(&s->reconnect_req, 0);
    int rc = watchclient_open_with(wc, s->target, &req, &wo);
    if (rc < 0) {
        sub_log(s, "cannot start a stream to %s: %s", s->target, strerror(-rc));
        return rc;
    }
    atomic_fetch_add_explicit(&s->st.streams, 1, memory_order_relaxed);
    return 0;
}

/* Sleeps ms, cut short by a cancel or reconnect request. */
static void pause_ms(struct tickfan_sub *s, int64_t ms)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        if (atomic_load(&s->cancel_req) || atomic_load(&s->reconnect_req))
            return;
        int64_t left = end - now_ms();
        if (left <= 0)
            return;
        if (left > TICKFAN_SUB_POLL_MS)
            left = TICKFAN_SUB_POLL_MS;
        struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* "from cursor C" or how the next request starts without one. */
static const char *resume_point(const struct tickfan_sub *s, char *buf, size_t len)
{
    if (s->cursor_len == 0)
        return "with the original request (no event processed yet)";
    snprintf(buf, len, "from cursor %s", s->cursor);
    return buf;
}

/*
 * After a stream ended for end (a reconnect, the watchdog or a status):
 * returns 0 with *delay_ms set when the subscription resumes (counted and
 * logged), 1 when it stops cleanly (status OK), or the error it stops with.
 */
static int plan_resume(struct tickfan_sub *s, enum stream_end end, int64_t *delay_ms)
{
    char where[LOG_LINE_MAX / 2];
    const char *from = resume_point(s, where, sizeof(where));
    int64_t delay;

    *delay_ms = 0;
    if (end == END_RECONNECT) {
        atomic_fetch_add_explicit(&s->st.resumes_reconnect, 1, memory_order_relaxed);
        sub_log(s, "reconnect requested; resuming %s", from);
        return 0;
    }
    if (end == END_WATCHDOG && !s->opt.resume) {
        sub_log(s, "stream silent for %" PRId64 " ms (no event or heartbeat); not resuming",
                s->opt.heartbeat_timeout_ms);
        return -ETIMEDOUT;
    }
    if (end == END_STATUS) {
        if (s->status == GRPC_STATUS_OK)
            return 1;
        if (s->status == GRPC_STATUS_OUT_OF_RANGE)
            return -ERANGE;
        if (!s->opt.resume || !status_resumable(s->status, s->resume_trailer, s->details))
            return -EPIPE;
    }
    if (s->opt.max_retries != 0 && s->retries >= s->opt.max_retries) {
        sub_log(s, "giving up after %" PRIu32 " resumes without an event", s->retries);
        return end == END_WATCHDOG ? -ETIMEDOUT : -EPIPE;
    }
    s->retries++;
    delay = backoff_ms(s);
    *delay_ms = delay;
    if (end == END_WATCHDOG) {
        atomic_fetch_add_explicit(&s->st.resumes_watchdog, 1, memory_order_relaxed);
        sub_log(s,
                "stream silent for %" PRId64 " ms (no event or heartbeat); resuming %s in %" PRId64
                " ms",
                s->opt.heartbeat_timeout_ms, from, delay);
        return 0;
    }
    if (s->resume_trailer)
        atomic_fetch_add_explicit(&s->st.resumes_server, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&s->st.resumes_transport, 1, memory_order_relaxed);
    if ((int)s->status >= 0 && (int)s->status < TICKFAN_SUB_STATUS_CODES)
        atomic_fetch_add_explicit(&s->st.resumes_by_status[s->status], 1, memory_order_relaxed);
    sub_log(s, "stream %s (%s%s%s); resuming %s in %" PRId64 " ms",
            s->resume_trailer ? "ended by the server" : "broken", wire_status_name(s->status),
            s->details && s->details[0] ? ": " : "", s->details ? s->details : "", from, delay);
    return 0;
}

int tickfan_sub_run(tickfan_sub_t *s)
{
    int rc = 0;
    int err;

    forget_status(s);
    s->handler_result = 0;
    s->last_commit_ms = now_ms();
    for (;;) {
        watchclient_t *wc;
        if (atomic_load(&s->cancel_req))
            break;
        rc = open_stream(s, &wc);
        if (rc < 0)
            break;
        err = 0;
        enum stream_end end = stream_loop(s, wc, &err);
        if (end == END_STATUS)
            keep_status(s, wc);
        else
            forget_status(s);
        watchclient_close(wc);

        if (end == END_CANCEL)
            break;
        if (end == END_HANDLER) {
            rc = -ECANCELED;
            break;
        }
        if (end == END_BADMSG) {
            sub_log(s, "the server sent a message that is not a WatchEvent; stopping");
            rc = -EBADMSG;
            break;
        }
        if (end == END_ERROR) {
            rc = err;
            break;
        }
        int64_t delay;
        rc = plan_resume(s, end, &delay);
        if (rc != 0) {
            rc = rc > 0 ? 0 : rc;
            break;
        }
        rc = commit(s);
        if (rc < 0)
            break;
        pause_ms(s, delay);
    }
    err = commit(s);
    return rc == 0 ? err : rc;
}
