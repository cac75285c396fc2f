/*
 * engine_uring: the ingest thread on io_uring. Every operation in flight is
 * a struct op whose address is the completion's user_data. A UDP socket is
 * read by one multishot recvmsg over its own ring of provided buffers
 * (Linux 6.0+; a buffer goes back to the ring as soon as its datagram is
 * appended), or by UDP_REQS one-shot recvmsg where multishot is missing or
 * turned off; streams by one recv at a time; listeners by one accept; the
 * wake-up eventfd (a published batch was queued) by one read.
 */
#include "feed_thread.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
    if (!source_reserve(s, READ_CHUNK))
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

static void uring_wake_arm(struct ingest *in)
{
    struct io_uring_sqe *sqe = get_sqe(in);
    if (!sqe)
        return;
    io_uring_prep_read(sqe, in->wake_fd, &in->wake_buf, sizeof(in->wake_buf), 0);
    io_uring_sqe_set_data(sqe, &in->wake_op);
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
        source_datagram(s, io_uring_recvmsg_payload(o, &s->ms_msg),
                        io_uring_recvmsg_payload_length(o, len, &s->ms_msg));
    } else {
        s->offset++;
        source_reject(s,
                      FEEDFRAME_NEED_MORE); /* cannot happen: the kernel wrote less than a header */
    }
    io_uring_buf_ring_add(s->br, buf, UDP_MS_BUF, (unsigned short)bid,
                          io_uring_buf_ring_mask(UDP_MS_BUFS), 0);
    io_uring_buf_ring_advance(s->br, 1);
}

static void uring_complete(struct ingest *in, struct io_uring_cqe *cqe)
{
    struct op *op = io_uring_cqe_get_data(cqe);
    if (op->kind == OP_WAKE) {
        ingest_run_jobs(in);
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
            tcp_accepted(in, s, res);
        if (!atomic_load_explicit(&in->stop, memory_order_relaxed) &&
            (res >= 0 || tcp_accept_failed(s, -res)))
            uring_accept_arm(in, s);
        break;
    case OP_CONNECT:
        tcp_connected(in, s, res);
        break;
    case OP_WAKE: /* handled above */
        break;
    }
}

/* The loop: a submit that waits for one completion at most until the next
 * timer, then every completion that is ready. */
static void *uring_run(struct ingest *in)
{
    uring_wake_arm(in);
    for (struct source *s = in->sources; s; s = s->next) {
        if (s->type == SRC_UDP)
            uring_udp_start(in, s);
        else if (s->type == SRC_LISTEN)
            uring_accept_arm(in, s);
    }
    while (!atomic_load_explicit(&in->stop, memory_order_relaxed)) {
        int64_t wait = ingest_before_wait(in);
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
        ingest_after_wake(in);
    }
    return NULL;
}

/* Registers a ring of UDP_MS_BUFS provided buffers (group `bgid`) for the
 * socket's multishot recvmsg. 0, or -errno: the kernel has no provided
 * buffer rings (before 5.19), or memory ran out. */
int uring_udp_setup(struct ingest *in, struct source *s, int bgid)
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

static const char *uring_start_connect(struct ingest *in, struct source *s)
{
    struct io_uring_sqe *sqe = get_sqe(in);
    if (!sqe)
        return "submission queue full";
    io_uring_prep_connect(sqe, s->fd, (struct sockaddr *)&s->addr, s->addrlen);
    io_uring_sqe_set_data(sqe, &s->connect_op);
    s->connect_op.busy = true;
    return NULL;
}

/* Closing the fd ends what is in flight on it (its completion comes back
 * with an error, or with s->fd already -1). */
static void uring_forget(struct ingest *in, struct source *s)
{
    (void)in;
    (void)s;
}

static void uring_close(struct ingest *in)
{
    if (in->ring_ok)
        io_uring_queue_exit(&in->ring); /* cancels what is in flight */
    in->ring_ok = false;
}

int ingest_uring_open(struct ingest *in)
{
    /* Completions' task work runs when the ingest thread enters the kernel
     * anyway, instead of interrupting it (Linux 5.19+). */
    int rc =
        io_uring_queue_init(1024, &in->ring, IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    if (rc == -EINVAL) /* before 5.19 */
        rc = io_uring_queue_init(1024, &in->ring, 0);
    in->ring_ok = rc == 0;
    return rc;
}

const struct ingest_engine ingest_engine_uring = {
    .name = "io_uring",
    .run = uring_run,
    .arm_read = uring_recv_arm,
    .arm_accept = uring_accept_arm,
    .start_connect = uring_start_connect,
    .forget = uring_forget,
    .close = uring_close,
};
