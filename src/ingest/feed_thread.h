/*
 * feed_thread.h: what the files of the ingest thread share (private to
 * src/ingest/; users include ingest.h). From the top down:
 *
 *   ingest.c         the life cycle: specs, the engine chosen, the thread
 *   engine_uring.c   the io_uring engine (multishot UDP, provided buffers)
 *   engine_epoll.c   the epoll engine (where io_uring cannot run)
 *   loop.c           the loop's steps on every engine: published batches,
 *                    the timers of every source, ringing the shards
 *   source.c         a source's life, its spec, framing and the checks of
 *                    every frame (sequence, gaps, duplicates); the simulator
 *   source_udp.c     UDP and multicast sockets
 *   source_tcp.c     TCP: connecting out (with backoff) and listening
 *   source_file.c    capture-file replay and its pacing
 *   append.c         the appends to a topic log (public: ingest.h)
 *
 * Each file calls only the ones below it: the sources never name an
 * engine (they ask `in->engine` to read, accept or connect), and the
 * engines hand what arrived to the sources' functions.
 * Everything here runs on the ingest thread unless said otherwise.
 */
#ifndef TICKFAN_FEED_THREAD_H
#define TICKFAN_FEED_THREAD_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "clock.h"
#include "counter.h"
#include "ingest.h"
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
    const struct ingest_engine *engine; /* set by ingest_create */
    struct io_uring ring;               /* io_uring engine */
    bool ring_ok;
    int epfd; /* epoll engine; -1 */
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

/* An I/O engine: how the thread waits and reads. */
struct ingest_engine {
    const char *name; /* "io_uring" or "epoll" */
    /* The thread's loop until in->stop: arms the sources, then waits for
     * I/O at most until ingest_before_wait() says, and hands what came to
     * the sources. */
    void *(*run)(struct ingest *in);
    /* A connected stream (s->fd) is to be read: its bytes go to
     * stream_bytes(), its end to stream_closed(). */
    void (*arm_read)(struct ingest *in, struct source *s);
    /* A listener (s->fd) is to accept: tcp_accepted(), tcp_accept_failed(). */
    void (*arm_accept)(struct ingest *in, struct source *s);
    /* Connects the non-blocking s->fd to s->addr: tcp_connected() follows.
     * NULL, or why it could not start. */
    const char *(*start_connect)(struct ingest *in, struct source *s);
    /* s->fd is about to be closed. */
    void (*forget)(struct ingest *in, struct source *s);
    /* Releases the engine (main thread, the thread not running). */
    void (*close)(struct ingest *in);
};

extern const struct ingest_engine ingest_engine_uring, ingest_engine_epoll;
/* Set-up (main thread): 0, or -errno (the engine cannot run here). */
int ingest_uring_open(struct ingest *in);
int ingest_epoll_open(struct ingest *in);
/* io_uring: a ring of provided buffers for UDP source `s` (group `bgid`),
 * read by one multishot recvmsg. 0, or -errno (the kernel has none). */
int uring_udp_setup(struct ingest *in, struct source *s, int bgid);

/* Counts on the source (for its log lines) and in the totals. Only the
 * ingest thread writes either. */
#define count(s, field, n)                                                                         \
    do {                                                                                           \
        counter_add(&(s)->field, (n));                                                             \
        counter_add(&(s)->in->field, (n));                                                         \
    } while (0)

/* Ingest time never goes backwards within the process, so START_AT_TIME can
 * binary-search it. */
static inline int64_t ingest_now_us(struct ingest *in)
{
    int64_t now = clock_unix_us();
    if (now < in->last_ingest_us)
        now = in->last_ingest_us;
    in->last_ingest_us = now;
    return now;
}

/* ---- loop.c: the loop's steps, for the engines ---- */

/* Appends the published batches queued by the shards (the wake-up). */
void ingest_run_jobs(struct ingest *in);
/* Before waiting: published batches, due timers, the shards rung for what
 * was appended. Returns how long the wait may be (ns, 0 to MAX_WAIT_NS). */
int64_t ingest_before_wait(struct ingest *in);
/* After what arrived was handled: frees closed connections, rings. */
void ingest_after_wake(struct ingest *in);

/* ---- source.c ---- */

struct source *source_new(struct ingest *in, enum src_type type, const char *spec);
void source_free(struct source *s);
int parse_host_port(const char *hp, int socktype, struct sockaddr_storage *out, socklen_t *outlen,
                    char *err, size_t errlen, const char *spec);
void source_reject(struct source *s, enum feedframe_error why);
void source_append_failed(struct source *s, const struct topic *t, int err);
/* One decoded frame: checked against its channel's sequence, appended. */
void source_frame(struct source *s, const struct feedframe *f);
/* A datagram of whole frames. */
void source_datagram(struct source *s, const uint8_t *buf, size_t len);
/* The bytes in s->sbuf; false: the stream cannot be framed any more. */
bool source_stream(struct source *s);
/* Room for `want` more bytes in s->sbuf. */
bool source_reserve(struct source *s, size_t want);
/* The simulator's due ticks; returns the ns until the next one. */
int64_t source_sim_run(struct source *s, int64_t now_ns);

/* ---- source_udp.c ---- */

int udp_open(struct source *s, const char *rest, const struct ingest_options *o, char *err,
             size_t errlen);
/* The one-shot receive requests (and epoll's buffer). 0 or -ENOMEM. */
int udp_buffers(struct source *s);
/* Logs how the socket is read and the address it is bound to. */
void udp_log_bound(const struct source *s, const char *mode, const char *why);
void udp_overflow(struct source *s, const struct cmsghdr *c);
void udp_datagram(struct source *s, struct msghdr *msg, size_t len);

/* ---- source_tcp.c ---- */

int tcp_listen_open(struct source *s, const char *rest, char *err, size_t errlen);
void stream_bytes(struct source *s, size_t n);
void stream_closed(struct source *s, const char *why);
void tcp_connected(struct ingest *in, struct source *s, int res);
void tcp_accepted(struct ingest *in, struct source *l, int fd);
bool tcp_accept_failed(struct source *l, int err);
/* Reconnects and listeners resting after a failure; ns until the next. */
int64_t tcp_timers(struct ingest *in, struct source *s, int64_t now_ns);

/* ---- source_file.c ---- */

int file_open(struct source *s, const char *rest, char *err, size_t errlen);
/* Replays what is due; ns until the next record (0: at once). */
int64_t file_replay_run(struct source *s, int64_t now_ns);

#endif
