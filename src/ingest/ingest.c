/*
 * ingest: the feed thread and the single writer of the topic logs.
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
#define _GNU_SOURCE /* accept4 */
#include "ingest.h"
#include "clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "counter.h"
#include "log.h"
#include "sim.h"

#define UDP_REQS 16                /* one-shot recvmsg operations in flight per UDP socket */
#define UDP_BUF (64 * 1024)        /* one datagram at most */
#define UDP_MS_BUFS 64             /* provided buffers per UDP socket (multishot; power of 2) */
#define UDP_MS_BUF (UDP_BUF + 256) /* a datagram, the recvmsg header and the cmsg */
#define READ_CHUNK (64 * 1024)     /* TCP and file reads */
#define SIM_BATCH 4096             /* simulated events per loop at most */
#define FILE_BATCH 4096            /* replayed frames per loop at most */
#define MAX_WAIT_NS (20 * 1000000)
#define ACCEPT_RETRY_MS 100 /* a listener that cannot accept (EMFILE ...) tries again after */

enum src_type { SRC_SIM, SRC_UDP, SRC_TCP, SRC_LISTEN, SRC_CONN, SRC_FILE, SRC_WAKE };
enum op_kind { OP_UDP, OP_UDP_MS, OP_RECV, OP_ACCEPT, OP_CONNECT, OP_WAKE };
enum file_pace { PACE_MAX, PACE_RATE, PACE_RECORDED };

struct source;

/* One io_uring operation in flight; its address is the user_data. */
struct op {
    enum op_kind kind;
    struct source *src;
    bool busy;
};

struct udp_req {
    struct op op;
    struct msghdr msg;
    struct iovec iov;
    uint8_t *buf;
    union {
        char bytes[CMSG_SPACE(sizeof(uint32_t))];
        struct cmsghdr align;
    } ctl;
};

struct channel_state {
    uint32_t channel;
    uint64_t next; /* the source_seq expected next */
};

struct source {
    enum src_type type;
    char *spec;
    int fd;
    struct ingest *in;
    struct source *next;
    bool dead; /* to be freed (closed connection) */

    /* counters (relaxed: read by ingest_get_stats) */
    _Atomic uint64_t frames, rejected, unknown_topic, gaps, missed, duplicates, rxq_ovfl;
    _Atomic uint64_t append_failed;
    uint32_t last_ovfl;
    uint64_t offset; /* bytes (streams, files) or datagrams (UDP) consumed */
    struct log_ratelimit rl;

    struct channel_state *chans;
    size_t nchans, capchans;

    /* streams and files: bytes not yet framed */
    uint8_t *sbuf;
    size_t slen, scap;

    /* UDP: one multishot recvmsg over a ring of provided buffers where the
     * kernel has them (6.0+), else UDP_REQS one-shot recvmsg (and epoll) */
    struct udp_req *reqs;
    bool multishot;
    bool multishot_worked; /* a datagram came through it */
    struct op ms_op;
    struct msghdr ms_msg; /* the template: no name, room for SO_RXQ_OVFL */
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    int bgid;
    uint8_t *ms_bufs;

    /* TCP listener: accepting again at this time after a failure (0: armed) */
    int64_t accept_at_ns;
    struct log_ratelimit accept_rl;

    /* TCP client */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t reconnect_at_ns;
    int64_t backoff_ms;
    bool connecting;

    struct op recv_op, accept_op, connect_op;

    /* file replay */
    enum file_pace pace;
    int64_t rate;
    int64_t start_ns;
    int64_t first_rec_us;
    uint64_t produced;
    bool eof;

    /* simulator */
    sim_t *sim;
    struct topic *topic;
};

struct ingest {
    struct source *sources;
    struct topics *topics;
    void (*notify)(void *);
    void *arg;
    enum ingest_io io;
    struct io_uring ring;
    bool ring_ok;
    int epfd;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    int64_t last_ingest_us;
    uint64_t appended_batch; /* appends since the last notify */
    struct log_ratelimit unknown_rl;
    /* published batches: pushed by shards, taken by the ingest thread */
    struct mpsc jobs;
    int wake_fd; /* eventfd: a job was queued */
    struct source *wake_src;
    uint64_t wake_buf;
    struct op wake_op;
    /* totals over all sources, for ingest_get_stats from any thread */
    _Atomic uint64_t frames, rejected, unknown_topic, gaps, missed, duplicates, rxq_ovfl;
    _Atomic uint64_t append_failed;
    counter_t reasons[FEEDFRAME_NREASONS];
};

/* Counts on the source (for its log lines) and in the totals. Only the
 * ingest thread writes either. */
#define count(s, field, n)                                                                         \
    do {                                                                                           \
        counter_add(&(s)->field, (n));                                                             \
        counter_add(&(s)->in->field, (n));                                                         \
    } while (0)

/* Ingest time never goes backwards within the process, so START_AT_TIME can
 * binary-search it. */
static int64_t ingest_now_us(struct ingest *in)
{
    int64_t now = clock_unix_us();
    if (now < in->last_ingest_us)
        now = in->last_ingest_us;
    in->last_ingest_us = now;
    return now;
}

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

static void run_jobs(struct ingest *in)
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

/* ---- frames -------------------------------------------------------------- */

static void reject(struct source *s, enum feedframe_error why)
{
    count(s, rejected, 1);
    counter_add(&s->in->reasons[why], 1);
    uint64_t suppressed;
    if (log_ratelimit_allow(&s->rl, clock_mono_us(), &suppressed))
        log_warn("msg=feed_reject source=\"%s\" reason=%s offset=%llu suppressed=%llu", s->spec,
                 feedframe_reason(why), (unsigned long long)s->offset,
                 (unsigned long long)suppressed);
}

/* A valid frame (or the Gap of an upstream loss) that the topic's log could
 * not take: too large for it (counted as an oversize frame), or an error of
 * the log itself (out of memory, the disk). */
static void append_failed(struct source *s, const struct topic *t, int err)
{
    if (err == -EMSGSIZE) {
        reject(s, FEEDFRAME_OVERSIZE); /* larger than half the topic's log */
        return;
    }
    count(s, append_failed, 1);
    uint64_t suppressed;
    if (log_ratelimit_allow(&s->rl, clock_mono_us(), &suppressed))
        log_warn("msg=feed_append_failed source=\"%s\" topic=%s error=\"%s\" suppressed=%llu",
                 s->spec, t->name, strerror(-err), (unsigned long long)suppressed);
}

static struct channel_state *channel_of(struct source *s, uint32_t channel)
{
    for (size_t i = 0; i < s->nchans; i++)
        if (s->chans[i].channel == channel)
            return &s->chans[i];
    if (s->nchans == s->capchans) {
        size_t cap = s->capchans ? s->capchans * 2 : 4;
        struct channel_state *grown = realloc(s->chans, cap * sizeof(*grown));
        if (!grown)
            return NULL;
        s->chans = grown;
        s->capchans = cap;
    }
    s->chans[s->nchans] = (struct channel_state){.channel = channel, .next = 0};
    return &s->chans[s->nchans++];
}

static void handle_frame(struct source *s, const struct feedframe *f)
{
    struct ingest *in = s->in;
    int why;
    struct topic *t = topics_find_or_create(in->topics, f->topic, f->topic_len, &why);
    if (!t) {
        count(s, unknown_topic, 1);
        uint64_t suppressed;
        if (log_ratelimit_allow(&in->unknown_rl, clock_mono_us(), &suppressed))
            log_warn("msg=feed_unknown_topic source=\"%s\" offset=%llu topic=%.*s reason=\"%s\" "
                     "suppressed=%llu",
                     s->spec, (unsigned long long)s->offset, (int)f->topic_len, f->topic,
                     topics_strerror(why), (unsigned long long)suppressed);
        return;
    }
    int64_t now_us = ingest_now_us(in);
    if (f->source_seq) {
        struct channel_state *ch = channel_of(s, f->channel);
        if (ch && ch->next && f->source_seq != ch->next) {
            if (f->source_seq > ch->next) {
                uint64_t missed = f->source_seq - ch->next;
                count(s, gaps, 1);
                count(s, missed, missed);
                log_warn("msg=upstream_gap source=\"%s\" channel=%u topic=%s missed=%llu "
                         "expected=%llu got=%llu",
                         s->spec, f->channel, t->name, (unsigned long long)missed,
                         (unsigned long long)ch->next, (unsigned long long)f->source_seq);
                int rc = ingest_append_gap(t, missed, now_us);
                if (rc)
                    append_failed(s, t, rc);
                else
                    in->appended_batch++;
            } else if (f->source_seq == 1) {
                log_info("msg=feed_restarted source=\"%s\" channel=%u expected=%llu", s->spec,
                         f->channel, (unsigned long long)ch->next);
            } else {
                count(s, duplicates, 1);
                return;
            }
        }
        if (ch)
            ch->next = f->source_seq + 1;
    }
    struct wire_data d = {
        .rec = f->rec,
        .emitted_us = f->source_time_us,
        .ingested_us = now_us,
    };
    int rc = ingest_append(t, &d);
    if (rc) {
        append_failed(s, t, rc);
        return;
    }
    count(s, frames, 1);
    in->appended_batch++;
}

/* A datagram: whole frames back to back. */
static void process_datagram(struct source *s, const uint8_t *buf, size_t len)
{
    s->offset++;
    while (len) {
        struct feedframe f;
        size_t n;
        enum feedframe_error e = feedframe_decode(buf, len, &f, &n);
        if (e == FEEDFRAME_OK) {
            handle_frame(s, &f);
        } else {
            reject(s, e); /* NEED_MORE here is a frame cut short: "truncated" */
            if (!n)
                return; /* the rest cannot be framed */
        }
        buf += n;
        len -= n;
    }
}

/* Stream bytes in s->sbuf. Returns false when the stream cannot be framed any
 * more (the connection must be closed). */
static bool process_stream(struct source *s)
{
    size_t off = 0;
    bool ok = true;
    while (off < s->slen) {
        struct feedframe f;
        size_t n;
        enum feedframe_error e = feedframe_decode(s->sbuf + off, s->slen - off, &f, &n);
        if (e == FEEDFRAME_NEED_MORE)
            break;
        if (e == FEEDFRAME_OK) {
            handle_frame(s, &f);
        } else {
            reject(s, e);
            if (!n) {
                ok = false;
                off = s->slen;
                break;
            }
        }
        off += n;
        s->offset += n;
    }
    memmove(s->sbuf, s->sbuf + off, s->slen - off);
    s->slen -= off;
    return ok;
}

/* Room for at least `want` more bytes in s->sbuf. */
static bool sbuf_reserve(struct source *s, size_t want)
{
    if (s->scap - s->slen >= want)
        return true;
    size_t cap = s->scap ? s->scap : READ_CHUNK * 2;
    while (cap - s->slen < want)
        cap *= 2;
    uint8_t *grown = realloc(s->sbuf, cap);
    if (!grown)
        return false;
    s->sbuf = grown;
    s->scap = cap;
    return true;
}

/* ---- sources: set-up ----------------------------------------------------- */

static int parse_host_port(const char *hp, int socktype, struct sockaddr_storage *out,
                           socklen_t *outlen, char *err, size_t errlen, const char *spec)
{
    char host[256];
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp || !colon[1] || (size_t)(colon - hp) >= sizeof(host)) {
        snprintf(err, errlen, "--feed '%s': expected HOST:PORT", spec);
        return -EINVAL;
    }
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = 0;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = socktype}, *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "--feed '%s': cannot resolve '%s': %s", spec, hp, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int open_udp(struct source *s, const char *rest, const struct ingest_options *o, char *err,
                    size_t errlen)
{
    char hp[300], iface[64] = "";
    snprintf(hp, sizeof(hp), "%s", rest);
    char *q = strchr(hp, '?');
    if (q) {
        *q++ = 0;
        if (strncmp(q, "iface=", 6) != 0) {
            snprintf(err, errlen, "--feed '%s': unknown parameter '%s' (udp takes iface=ADDR)",
                     s->spec, q);
            return -EINVAL;
        }
        snprintf(iface, sizeof(iface), "%s", q + 6);
    }
    int rc = parse_host_port(hp, SOCK_DGRAM, &s->addr, &s->addrlen, err, errlen, s->spec);
    if (rc)
        return rc;
    struct sockaddr_in *sin = (struct sockaddr_in *)&s->addr;
    bool mcast = IN_MULTICAST(ntohl(sin->sin_addr.s_addr));
    s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        goto out_errno;
    int one = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(s->fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one));
    if (o->udp_rcvbuf > 0) {
        int v = (int)o->udp_rcvbuf;
        setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
    }
    if (bind(s->fd, (struct sockaddr *)&s->addr, s->addrlen))
        goto out_errno;
    if (mcast) {
        struct ip_mreq mreq = {.imr_multiaddr = sin->sin_addr};
        mreq.imr_interface.s_addr = htonl(INADDR_ANY);
        if (iface[0] && inet_pton(AF_INET, iface, &mreq.imr_interface) != 1) {
            snprintf(err, errlen, "--feed '%s': iface '%s' is not an IPv4 address", s->spec, iface);
            return -EINVAL;
        }
        if (setsockopt(s->fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof(mreq)))
            goto out_errno;
    }
    return 0;
out_errno:
    rc = -errno; /* before snprintf, which may change errno */
    snprintf(err, errlen, "--feed '%s': %s", s->spec, strerror(-rc));
    return rc;
}

static int open_listen(struct source *s, const char *rest, char *err, size_t errlen)
{
    int rc = parse_host_port(rest, SOCK_STREAM, &s->addr, &s->addrlen, err, errlen, s->spec);
    if (rc)
        return rc;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (s->fd < 0 || setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(s->fd, (struct sockaddr *)&s->addr, s->addrlen) || listen(s->fd, 128)) {
        rc = -errno;
        snprintf(err, errlen, "--feed '%s': %s", s->spec, strerror(-rc));
        return rc;
    }
    return 0;
}

static int open_file(struct source *s, const char *rest, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s", rest);
    s->pace = PACE_MAX;
    char *q = strchr(path, '?');
    if (q) {
        *q++ = 0;
        if (strncmp(q, "rate=", 5) == 0) {
            char *end;
            s->rate = strtoll(q + 5, &end, 10);
            if (*end || s->rate <= 0) {
                snprintf(err, errlen, "--feed '%s': rate must be a positive integer", s->spec);
                return -EINVAL;
            }
            s->pace = PACE_RATE;
        } else if (strcmp(q, "pace=recorded") == 0) {
            s->pace = PACE_RECORDED;
        } else if (strcmp(q, "pace=max") != 0) {
            snprintf(err, errlen,
                     "--feed '%s': unknown parameter '%s' (file takes rate=N, pace=recorded "
                     "or pace=max)",
                     s->spec, q);
            return -EINVAL;
        }
    }
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        int rc = -errno;
        snprintf(err, errlen, "--feed '%s': cannot open '%s': %s", s->spec, path, strerror(-rc));
        return rc;
    }
    uint8_t hdr[FEEDCAP_HDR];
    if (read(s->fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr) ||
        memcmp(hdr, FEEDCAP_MAGIC, 8) != 0 || hdr[8] != 1) {
        snprintf(err, errlen, "--feed '%s': '%s' is not a version 1 capture file", s->spec, path);
        return -EINVAL;
    }
    s->offset = FEEDCAP_HDR;
    return 0;
}

static void source_free(struct source *s)
{
    if (s->fd >= 0)
        close(s->fd);
    if (s->reqs) {
        for (size_t i = 0; i < UDP_REQS; i++)
            free(s->reqs[i].buf);
        free(s->reqs);
    }
    if (s->br) /* the ring that registered it has exited */
        munmap(s->br, s->br_bytes);
    free(s->ms_bufs);
    sim_destroy(s->sim);
    free(s->chans);
    free(s->sbuf);
    free(s->spec);
    free(s);
}

static struct source *source_new(struct ingest *in, enum src_type type, const char *spec)
{
    struct source *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->type = type;
    s->fd = -1;
    s->in = in;
    s->spec = strdup(spec);
    s->rl = (struct log_ratelimit){.interval_us = 1000000, .burst = 5};
    s->accept_rl = (struct log_ratelimit){.interval_us = 10000000, .burst = 1};
    s->recv_op = (struct op){.kind = OP_RECV, .src = s};
    s->accept_op = (struct op){.kind = OP_ACCEPT, .src = s};
    s->connect_op = (struct op){.kind = OP_CONNECT, .src = s};
    if (!s->spec) {
        free(s);
        return NULL;
    }
    return s;
}

static int add_source(struct ingest *in, const char *spec, const struct ingest_options *o,
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
        rc = s ? open_udp(s, spec + 6, o, err, errlen) : -ENOMEM;
    } else if (strncmp(spec, "tcp://", 6) == 0) {
        s = source_new(in, SRC_TCP, spec);
        rc = s ? parse_host_port(spec + 6, SOCK_STREAM, &s->addr, &s->addrlen, err, errlen, spec)
               : -ENOMEM;
    } else if (strncmp(spec, "tcp-listen://", 13) == 0) {
        s = source_new(in, SRC_LISTEN, spec);
        rc = s ? open_listen(s, spec + 13, err, errlen) : -ENOMEM;
    } else if (strncmp(spec, "file:", 5) == 0) {
        s = source_new(in, SRC_FILE, spec);
        rc = s ? open_file(s, spec + 5, err, errlen) : -ENOMEM;
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

/* ---- io_uring ------------------------------------------------------------ */

static struct io_uring_sqe *get_sqe(struct ingest *in)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&in->ring);
    if (!sqe) {
        io_uring_submit(&in->ring);
        sqe = io_uring_get_sqe(&in->ring);
    }
    return sqe;
}

static void uring_udp_arm(struct ingest *in, struct udp_req *r)
{
    struct io_uring_sqe *sqe = get_sqe(in);
    if (!sqe)
        return;
    r->msg.msg_controllen = sizeof(r->ctl.bytes);
    io_uring_prep_recvmsg(sqe, r->op.src->fd, &r->msg, 0);
    io_uring_sqe_set_data(sqe, &r->op);
    r->op.busy = true;
}

static void uring_udp_ms_arm(struct ingest *in, struct source *s)
{
    struct io_uring_sqe *sqe = get_sqe(in);
    if (!sqe)
        return;
    io_uring_prep_recvmsg_multishot(sqe, s->fd, &s->ms_msg, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = (uint16_t)s->bgid;
    io_uring_sqe_set_data(sqe, &s->ms_op);
    s->ms_op.busy = true;
}

/* Receiving on a UDP socket starts: multishot, or the one-shot requests. */
static void uring_udp_start(struct ingest *in, struct source *s)
{
    if (s->multishot) {
        uring_udp_ms_arm(in, s);
        return;
    }
    for (size_t i = 0; i < UDP_REQS; i++)
        uring_udp_arm(in, &s->reqs[i]);
}

static void uring_recv_arm(struct ingest *in, struct source *s)
{
    if (!sbuf_reserve(s, READ_CHUNK))
        return;
    struct io_uring_sqe *sqe = get_sqe(in);
    if (!sqe)
        return;
    io_uring_prep_recv(sqe, s->fd, s->sbuf + s->slen, READ_CHUNK, 0);
    io_uring_sqe_set_data(sqe, &s->recv_op);
    s->recv_op.busy = true;
}

static void uring_accept_arm(struct ingest *in, struct source *s)
{
    struct io_uring_sqe *sqe = get_sqe(in);
    if (!sqe)
        return;
    io_uring_prep_accept(sqe, s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data(sqe, &s->accept_op);
    s->accept_op.busy = true;
}

/* ---- epoll ---------------------------------------------------------------- */

static void epoll_watch(struct ingest *in, struct source *s, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = s};
    if (epoll_ctl(in->epfd, EPOLL_CTL_MOD, s->fd, &ev) && errno == ENOENT)
        epoll_ctl(in->epfd, EPOLL_CTL_ADD, s->fd, &ev);
}

/* ---- per-source I/O, shared by both engines ------------------------------- */

/* The kernel's count of datagrams dropped on the socket, from SO_RXQ_OVFL. */
static void udp_overflow(struct source *s, const struct cmsghdr *c)
{
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SO_RXQ_OVFL)
        return;
    uint32_t drops;
    memcpy(&drops, CMSG_DATA(c), sizeof(drops));
    if (drops > s->last_ovfl) {
        count(s, rxq_ovfl, drops - s->last_ovfl);
        uint64_t suppressed;
        if (log_ratelimit_allow(&s->rl, clock_mono_us(), &suppressed))
            log_warn("msg=udp_overflow source=\"%s\" dropped_total=%u suppressed=%llu", s->spec,
                     drops, (unsigned long long)suppressed);
    }
    s->last_ovfl = drops;
}

static void udp_datagram(struct source *s, struct msghdr *msg, size_t len)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c))
        udp_overflow(s, c);
    process_datagram(s, msg->msg_iov->iov_base, len);
}

/* A multishot completion: the datagram is in provided buffer `bid`, laid
 * out as struct io_uring_recvmsg_out, control data, payload. The buffer goes
 * back to the ring once the datagram is appended. */
static void udp_ms_datagram(struct source *s, unsigned bid, int len)
{
    uint8_t *buf = s->ms_bufs + (size_t)bid * UDP_MS_BUF;
    struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, len, &s->ms_msg);
    if (o) {
        for (struct cmsghdr *c = io_uring_recvmsg_cmsg_firsthdr(o, &s->ms_msg); c;
             c = io_uring_recvmsg_cmsg_nexthdr(o, &s->ms_msg, c))
            udp_overflow(s, c);
        process_datagram(s, io_uring_recvmsg_payload(o, &s->ms_msg),
                         io_uring_recvmsg_payload_length(o, len, &s->ms_msg));
    } else {
        s->offset++;
        reject(s, FEEDFRAME_NEED_MORE); /* cannot happen: the kernel wrote less than a header */
    }
    io_uring_buf_ring_add(s->br, buf, UDP_MS_BUF, (unsigned short)bid,
                          io_uring_buf_ring_mask(UDP_MS_BUFS), 0);
    io_uring_buf_ring_advance(s->br, 1);
}

static void stream_closed(struct source *s, const char *why)
{
    if (s->slen) {
        reject(s, FEEDFRAME_NEED_MORE); /* a frame cut short by the close */
        s->slen = 0;
    }
    log_info("msg=feed_disconnected source=\"%s\" reason=\"%s\" frames=%llu", s->spec, why,
             (unsigned long long)atomic_load(&s->frames));
    if (s->fd >= 0) {
        if (s->in->epfd >= 0)
            epoll_ctl(s->in->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
    }
    if (s->type == SRC_CONN) {
        s->dead = true;
    } else { /* SRC_TCP: reconnect with backoff */
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : 100;
        if (s->backoff_ms > 5000)
            s->backoff_ms = 5000;
        s->reconnect_at_ns = clock_mono_ns() + s->backoff_ms * 1000000;
        s->connecting = false;
    }
}

static void stream_bytes(struct source *s, size_t n)
{
    s->slen += n;
    if (!process_stream(s))
        stream_closed(s, "unframeable bytes");
}

static void tcp_connect(struct ingest *in, struct source *s)
{
    s->reconnect_at_ns = 0;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        stream_closed(s, strerror(errno));
        return;
    }
    s->connecting = true;
    if (in->ring_ok) {
        struct io_uring_sqe *sqe = get_sqe(in);
        if (!sqe) {
            stream_closed(s, "submission queue full");
            return;
        }
        io_uring_prep_connect(sqe, s->fd, (struct sockaddr *)&s->addr, s->addrlen);
        io_uring_sqe_set_data(sqe, &s->connect_op);
        s->connect_op.busy = true;
    } else {
        if (connect(s->fd, (struct sockaddr *)&s->addr, s->addrlen) && errno != EINPROGRESS) {
            stream_closed(s, strerror(errno));
            return;
        }
        epoll_watch(in, s, EPOLLOUT);
    }
}

static void tcp_connected(struct ingest *in, struct source *s, int res)
{
    s->connecting = false;
    if (res) {
        uint64_t suppressed;
        if (log_ratelimit_allow(&s->rl, clock_mono_us(), &suppressed))
            log_warn("msg=feed_connect_failed source=\"%s\" error=\"%s\" retry_ms=%lld", s->spec,
                     strerror(-res), (long long)(s->backoff_ms ? s->backoff_ms * 2 : 100));
        close(s->fd);
        s->fd = -1;
        s->slen = 0;
        stream_closed(s, "connect failed");
        return;
    }
    s->backoff_ms = 0;
    log_info("msg=feed_connected source=\"%s\"", s->spec);
    if (in->ring_ok)
        uring_recv_arm(in, s);
    else
        epoll_watch(in, s, EPOLLIN);
}

static void accepted(struct ingest *in, struct source *l, int fd)
{
    char spec[400];
    struct sockaddr_in peer;
    socklen_t plen = sizeof(peer);
    char ip[64] = "?";
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0)
        inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
    snprintf(spec, sizeof(spec), "%s<-%s:%u", l->spec, ip, ntohs(peer.sin_port));
    struct source *c = source_new(in, SRC_CONN, spec);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->next = in->sources;
    in->sources = c;
    log_info("msg=feed_connected source=\"%s\"", c->spec);
    if (in->ring_ok)
        uring_recv_arm(in, c);
    else
        epoll_watch(in, c, EPOLLIN);
}

/* An accept on listener `l` failed with `err` (an errno). Errors of one
 * connection (reset before it was taken, refused by a firewall) leave the
 * listener armed: returns true. Anything else (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM ...) would fail again at once and spin the thread: the listener
 * rests ACCEPT_RETRY_MS (run_timers arms it again), with a rate-limited
 * line, and this returns false. */
static bool accept_failed(struct source *l, int err)
{
    switch (err) {
    case EAGAIN:
    case EINTR:
    case ECONNABORTED:
    case EPERM:
    case EPROTO:
    case ENOPROTOOPT:
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENONET:
    case EOPNOTSUPP:
        return true;
    default:
        break;
    }
    l->accept_at_ns = clock_mono_ns() + (int64_t)ACCEPT_RETRY_MS * 1000000;
    uint64_t suppressed;
    if (log_ratelimit_allow(&l->accept_rl, clock_mono_us(), &suppressed))
        log_warn("msg=feed_accept_failed source=\"%s\" error=\"%s\" retry_ms=%d suppressed=%llu",
                 l->spec, strerror(err), ACCEPT_RETRY_MS, (unsigned long long)suppressed);
    return false;
}

/* ---- timers: simulator, file replay, reconnects --------------------------- */

/* Runs what is due; returns the nanoseconds until the next due time. */
static int64_t run_timers(struct ingest *in)
{
    int64_t now = clock_mono_ns();
    int64_t wait = MAX_WAIT_NS;
    for (struct source *s = in->sources; s; s = s->next) {
        if (s->type == SRC_SIM) {
            if (!s->start_ns)
                s->start_ns = now;
            int64_t elapsed = now - s->start_ns;
            uint64_t due = (uint64_t)((__int128)elapsed * s->rate / 1000000000);
            uint64_t todo = due > s->produced ? due - s->produced : 0;
            if (todo > SIM_BATCH)
                todo = SIM_BATCH;
            for (uint64_t k = 0; k < todo; k++) {
                int64_t now_us = ingest_now_us(in);
                struct sim_tick tick;
                sim_next(s->sim, clock_unix_ns(), &tick);
                struct wire_data d = {
                    .rec = {.kind = tick.kind,
                            .kind_len = strlen(tick.kind),
                            .key = tick.symbol,
                            .key_len = strlen(tick.symbol),
                            .body = tick.body,
                            .body_len = tick.body_len},
                    .emitted_us = now_us,
                    .ingested_us = now_us,
                };
                int rc = ingest_append(s->topic, &d);
                if (rc) {
                    append_failed(s, s->topic, rc);
                } else {
                    count(s, frames, 1);
                    in->appended_batch++;
                }
                s->produced++;
            }
            int64_t next = (int64_t)((__int128)(s->produced + 1) * 1000000000 / s->rate) - elapsed;
            if (next < wait)
                wait = next;
        } else if (s->type == SRC_FILE && !s->eof) {
            if (!s->start_ns)
                s->start_ns = now;
            size_t off = 0; /* consumed: compacted before a read and at the end */
            for (int k = 0; k < FILE_BATCH; k++) {
                /* one record: recv_time_us, then a frame (a length beyond
                 * the maximum is not waited for: the decoder rejects it) */
                uint8_t *rec = s->sbuf ? s->sbuf + off : NULL; /* NULL before the first read */
                size_t have = s->slen - off;
                size_t need = 8 + FEEDFRAME_HDR;
                if (have >= need) {
                    size_t claimed = (size_t)rec[12] | (size_t)rec[13] << 8 |
                                     (size_t)rec[14] << 16 | (size_t)rec[15] << 24;
                    if (claimed > FEEDFRAME_HDR && claimed <= FEEDFRAME_MAX)
                        need = 8 + claimed;
                }
                if (have < need) {
                    if (off) {
                        memmove(s->sbuf, s->sbuf + off, have);
                        s->slen = have;
                        off = 0;
                    }
                    if (!sbuf_reserve(s, READ_CHUNK))
                        break;
                    ssize_t n = read(s->fd, s->sbuf + s->slen, READ_CHUNK);
                    if (n > 0) {
                        s->slen += (size_t)n;
                        k--;
                        continue;
                    }
                    if (s->slen)
                        reject(s, FEEDFRAME_NEED_MORE);
                    s->eof = true;
                    log_info("msg=feed_replay_done source=\"%s\" frames=%llu rejected=%llu",
                             s->spec, (unsigned long long)atomic_load(&s->frames),
                             (unsigned long long)atomic_load(&s->rejected));
                    break;
                }
                int64_t rec_us = 0;
                for (int i = 7; i >= 0; i--)
                    rec_us = rec_us << 8 | rec[i];
                int64_t due_ns = 0;
                if (s->pace == PACE_RATE)
                    due_ns = s->start_ns + (int64_t)((__int128)s->produced * 1000000000 / s->rate);
                else if (s->pace == PACE_RECORDED) {
                    if (!s->produced)
                        s->first_rec_us = rec_us;
                    due_ns = s->start_ns + (rec_us - s->first_rec_us) * 1000;
                }
                if (due_ns > now) {
                    if (due_ns - now < wait)
                        wait = due_ns - now;
                    break;
                }
                struct feedframe f;
                size_t n;
                enum feedframe_error e = feedframe_decode(rec + 8, have - 8, &f, &n);
                if (e == FEEDFRAME_OK)
                    handle_frame(s, &f);
                else
                    reject(s, e);
                if (!n) { /* cannot go on framing the file */
                    s->eof = true;
                    log_warn("msg=feed_replay_stopped source=\"%s\" offset=%llu", s->spec,
                             (unsigned long long)s->offset);
                    break;
                }
                off += 8 + n;
                s->offset += 8 + n;
                s->produced++;
            }
            if (off) {
                memmove(s->sbuf, s->sbuf + off, s->slen - off);
                s->slen -= off;
            }
            if (!s->eof && s->pace == PACE_MAX)
                wait = 0;
        } else if (s->type == SRC_TCP && s->fd < 0) {
            if (!s->reconnect_at_ns || now >= s->reconnect_at_ns)
                tcp_connect(in, s);
            else if (s->reconnect_at_ns - now < wait)
                wait = s->reconnect_at_ns - now;
        } else if (s->type == SRC_LISTEN && s->accept_at_ns) {
            if (now >= s->accept_at_ns) {
                s->accept_at_ns = 0;
                if (in->ring_ok)
                    uring_accept_arm(in, s);
                else
                    epoll_watch(in, s, EPOLLIN);
            } else if (s->accept_at_ns - now < wait) {
                wait = s->accept_at_ns - now;
            }
        }
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

/* ---- the loops ------------------------------------------------------------ */

/* Rings the shards once for everything appended since the last time. */
static void flush_notify(struct ingest *in)
{
    if (in->appended_batch) {
        in->appended_batch = 0;
        in->notify(in->arg);
    }
}

static void uring_wake_arm(struct ingest *in)
{
    struct io_uring_sqe *sqe = get_sqe(in);
    if (!sqe)
        return;
    io_uring_prep_read(sqe, in->wake_fd, &in->wake_buf, sizeof(in->wake_buf), 0);
    io_uring_sqe_set_data(sqe, &in->wake_op);
}

static void uring_complete(struct ingest *in, struct io_uring_cqe *cqe)
{
    struct op *op = io_uring_cqe_get_data(cqe);
    if (op->kind == OP_WAKE) {
        run_jobs(in);
        uring_wake_arm(in);
        return;
    }
    struct source *s = op->src;
    op->busy = false;
    int res = cqe->res;
    switch (op->kind) {
    case OP_UDP: {
        struct udp_req *r = (struct udp_req *)op;
        if (res >= 0)
            udp_datagram(s, &r->msg, (size_t)res);
        if (!atomic_load_explicit(&in->stop, memory_order_relaxed))
            uring_udp_arm(in, r);
        break;
    }
    case OP_UDP_MS:
        if (res >= 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
            s->multishot_worked = true;
            udp_ms_datagram(s, cqe->flags >> IORING_CQE_BUFFER_SHIFT, res);
        } else if (res < 0 && res != -ENOBUFS && !s->multishot_worked) {
            /* the kernel has provided buffers but not multishot recvmsg */
            log_info("msg=udp_receive source=\"%s\" mode=recvmsg reason=\"multishot recvmsg: "
                     "%s\"",
                     s->spec, strerror(-res));
            s->multishot = false;
        } else if (res < 0 && res != -ENOBUFS) {
            uint64_t suppressed; /* re-armed below: a lasting error must not flood the log */
            if (log_ratelimit_allow(&s->rl, clock_mono_us(), &suppressed))
                log_warn("msg=udp_receive_error source=\"%s\" error=\"%s\" suppressed=%llu",
                         s->spec, strerror(-res), (unsigned long long)suppressed);
        }
        /* -ENOBUFS: every buffer was full; the datagrams wait in the socket */
        if (cqe->flags & IORING_CQE_F_MORE)
            s->ms_op.busy = true; /* still armed */
        else if (!atomic_load_explicit(&in->stop, memory_order_relaxed))
            uring_udp_start(in, s);
        break;
    case OP_RECV:
        if (s->fd < 0) /* closed while the recv was in flight */
            break;
        if (res > 0) {
            stream_bytes(s, (size_t)res);
            if (s->fd >= 0)
                uring_recv_arm(in, s);
        } else {
            stream_closed(s, res == 0 ? "closed by peer" : strerror(-res));
        }
        break;
    case OP_ACCEPT:
        if (res >= 0)
            accepted(in, s, res);
        if (!atomic_load_explicit(&in->stop, memory_order_relaxed) &&
            (res >= 0 || accept_failed(s, -res)))
            uring_accept_arm(in, s);
        break;
    case OP_CONNECT:
        tcp_connected(in, s, res);
        break;
    case OP_WAKE: /* handled above */
        break;
    }
}

static void *uring_main(struct ingest *in)
{
    uring_wake_arm(in);
    for (struct source *s = in->sources; s; s = s->next) {
        if (s->type == SRC_UDP)
            uring_udp_start(in, s);
        else if (s->type == SRC_LISTEN)
            uring_accept_arm(in, s);
    }
    while (!atomic_load_explicit(&in->stop, memory_order_relaxed)) {
        run_jobs(in);
        int64_t wait = run_timers(in);
        flush_notify(in);
        if (wait > MAX_WAIT_NS)
            wait = MAX_WAIT_NS;
        if (wait > 0) {
            struct __kernel_timespec ts = {.tv_sec = wait / 1000000000,
                                           .tv_nsec = wait % 1000000000};
            struct io_uring_cqe *cqe;
            io_uring_submit_and_wait_timeout(&in->ring, &cqe, 1, &ts, NULL);
        } else {
            io_uring_submit(&in->ring); /* work is due now: take what is ready, no wait */
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&in->ring, head, cqe)
        {
            uring_complete(in, cqe);
            n++;
        }
        io_uring_cq_advance(&in->ring, n);
        reap_dead(in);
        flush_notify(in);
    }
    return NULL;
}

static void epoll_ready(struct ingest *in, struct source *s, uint32_t events)
{
    if (s->type == SRC_WAKE) {
        uint64_t v;
        ssize_t r = read(in->wake_fd, &v, sizeof(v));
        (void)r;
        run_jobs(in);
    } else if (s->type == SRC_UDP) {
        struct udp_req *r = &s->reqs[0];
        for (int k = 0; k < 256; k++) {
            r->msg.msg_controllen = sizeof(r->ctl.bytes);
            ssize_t n = recvmsg(s->fd, &r->msg, 0);
            if (n < 0)
                break;
            udp_datagram(s, &r->msg, (size_t)n);
        }
    } else if (s->type == SRC_LISTEN) {
        for (;;) {
            int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                accepted(in, s, fd);
                continue;
            }
            /* level-triggered: a lasting error would be reported at once
             * again, so the listener leaves the set until run_timers */
            if (errno != EWOULDBLOCK && !accept_failed(s, errno))
                epoll_ctl(in->epfd, EPOLL_CTL_DEL, s->fd, NULL);
            break;
        }
    } else if (s->connecting) {
        int soerr = 0;
        socklen_t l = sizeof(soerr);
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
        if (soerr && s->in->epfd >= 0)
            epoll_ctl(s->in->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        tcp_connected(in, s, -soerr);
    } else if (s->fd >= 0) {
        for (int k = 0; k < 64 && s->fd >= 0; k++) {
            if (!sbuf_reserve(s, READ_CHUNK))
                break;
            ssize_t n = recv(s->fd, s->sbuf + s->slen, READ_CHUNK, 0);
            if (n > 0) {
                stream_bytes(s, (size_t)n);
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                stream_closed(s, n == 0 ? "closed by peer" : strerror(errno));
                break;
            } else {
                break;
            }
        }
    }
}

static void *epoll_main(struct ingest *in)
{
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = in->wake_src};
    epoll_ctl(in->epfd, EPOLL_CTL_ADD, in->wake_fd, &wev);
    for (struct source *s = in->sources; s; s = s->next)
        if (s->type == SRC_UDP || s->type == SRC_LISTEN)
            epoll_watch(in, s, EPOLLIN);
    while (!atomic_load_explicit(&in->stop, memory_order_relaxed)) {
        run_jobs(in);
        int64_t wait = run_timers(in);
        flush_notify(in);
        if (wait > MAX_WAIT_NS)
            wait = MAX_WAIT_NS;
        struct epoll_event evs[64];
        int n = epoll_wait(in->epfd, evs, 64, (int)((wait + 999999) / 1000000));
        for (int i = 0; i < n; i++)
            epoll_ready(in, evs[i].data.ptr, evs[i].events);
        reap_dead(in);
        flush_notify(in);
    }
    return NULL;
}

static void *ingest_main(void *p)
{
    struct ingest *in = p;
    return in->ring_ok ? uring_main(in) : epoll_main(in);
}

/* ---- life cycle ----------------------------------------------------------- */

/* Registers a ring of UDP_MS_BUFS provided buffers (group `bgid`) for the
 * socket's multishot recvmsg. 0, or -errno: the kernel has no provided
 * buffer rings (before 5.19), or memory ran out. */
static int udp_multishot_setup(struct ingest *in, struct source *s, int bgid)
{
    size_t bytes = UDP_MS_BUFS * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED)
        return -ENOMEM;
    s->ms_bufs = malloc((size_t)UDP_MS_BUFS * UDP_MS_BUF);
    if (!s->ms_bufs) {
        munmap(mem, bytes);
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (uintptr_t)mem, .ring_entries = UDP_MS_BUFS, .bgid = (uint16_t)bgid};
    int rc = io_uring_register_buf_ring(&in->ring, &reg, 0);
    if (rc) {
        munmap(mem, bytes);
        free(s->ms_bufs);
        s->ms_bufs = NULL;
        return rc;
    }
    s->br = mem;
    s->br_bytes = bytes;
    s->bgid = bgid;
    io_uring_buf_ring_init(s->br);
    for (unsigned i = 0; i < UDP_MS_BUFS; i++)
        io_uring_buf_ring_add(s->br, s->ms_bufs + (size_t)i * UDP_MS_BUF, UDP_MS_BUF,
                              (unsigned short)i, io_uring_buf_ring_mask(UDP_MS_BUFS), (int)i);
    io_uring_buf_ring_advance(s->br, UDP_MS_BUFS);
    s->ms_msg = (struct msghdr){.msg_controllen = CMSG_SPACE(sizeof(uint32_t))};
    s->ms_op = (struct op){.kind = OP_UDP_MS, .src = s};
    s->multishot = true;
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
        rc = add_source(in, list[i], opts, topts, err, errlen);
        if (rc)
            goto out_free;
    }
    if (none && n) {
        snprintf(err, errlen, "--feed none: cannot be combined with other feeds");
        rc = -EINVAL;
        goto out_free;
    }

    if (opts->io != INGEST_IO_EPOLL) {
        /* Completions' task work runs when the ingest thread enters the
         * kernel anyway, instead of interrupting it (Linux 5.19+). */
        rc = io_uring_queue_init(1024, &in->ring,
                                 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
        if (rc == -EINVAL) /* before 5.19 */
            rc = io_uring_queue_init(1024, &in->ring, 0);
        if (rc == 0) {
            in->ring_ok = true;
        } else if (opts->io == INGEST_IO_URING) {
            snprintf(err, errlen, "--io uring: io_uring is not available: %s", strerror(-rc));
            goto out_free;
        } else {
            log_warn("msg=io_uring_unavailable error=\"%s\" fallback=epoll", strerror(-rc));
        }
    }
    if (!in->ring_ok) {
        in->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (in->epfd < 0) {
            rc = -errno;
            snprintf(err, errlen, "epoll: %s", strerror(-rc));
            goto out_free;
        }
    }
    int nbgid = 0;
    for (struct source *s = in->sources; s; s = s->next) {
        if (s->type != SRC_UDP)
            continue;
        s->reqs = calloc(UDP_REQS, sizeof(*s->reqs));
        if (!s->reqs)
            goto out_nomem;
        for (size_t i = 0; i < UDP_REQS; i++) {
            struct udp_req *r = &s->reqs[i];
            r->op = (struct op){.kind = OP_UDP, .src = s};
            r->buf = malloc(UDP_BUF);
            if (!r->buf)
                goto out_nomem;
            r->iov = (struct iovec){.iov_base = r->buf, .iov_len = UDP_BUF};
            r->msg.msg_iov = &r->iov;
            r->msg.msg_iovlen = 1;
            r->msg.msg_control = r->ctl.bytes;
            r->msg.msg_controllen = sizeof(r->ctl.bytes);
        }
        const char *mode = "epoll", *why = NULL;
        char why_buf[96];
        if (in->ring_ok && opts->udp_no_multishot) {
            mode = "recvmsg";
            why = "--udp-multishot=false";
        } else if (in->ring_ok) {
            rc = udp_multishot_setup(in, s, nbgid++);
            if (rc == -ENOMEM)
                goto out_nomem;
            mode = rc ? "recvmsg" : "multishot";
            if (rc) {
                /* the kernel's own answer: old kernels say EINVAL */
                snprintf(why_buf, sizeof(why_buf), "provided buffer ring: %s", strerror(-rc));
                why = why_buf;
            }
            rc = 0;
        }
        /* the address actually bound: a port of 0 in the spec gets one here */
        struct sockaddr_in bound;
        socklen_t blen = sizeof(bound);
        char addr[INET_ADDRSTRLEN] = "?";
        int port = 0;
        if (getsockname(s->fd, (struct sockaddr *)&bound, &blen) == 0) {
            inet_ntop(AF_INET, &bound.sin_addr, addr, sizeof(addr));
            port = ntohs(bound.sin_port);
        }
        log_info("msg=udp_receive source=\"%s\" bound=%s:%d mode=%s%s%s%s", s->spec, addr, port,
                 mode, why ? " reason=\"" : "", why ? why : "", why ? "\"" : "");
    }
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
    if (in->ring_ok)
        io_uring_queue_exit(&in->ring); /* cancels what is in flight */
    if (in->epfd >= 0)
        close(in->epfd);
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
    return in->ring_ok ? "io_uring" : "epoll";
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
