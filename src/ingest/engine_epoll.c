/*
 * engine_epoll: the ingest thread on epoll, where io_uring cannot be set
 * up (seccomp, kernel.io_uring_disabled) or when asked (--io epoll).
 * Level-triggered; each ready source is read in bounded rounds (256
 * datagrams, 64 stream reads) so no source starves the others.
 */
#define _GNU_SOURCE /* accept4 */
#include "feed_thread.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static void epoll_watch(struct ingest *in, struct source *s, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = s};
    if (epoll_ctl(in->epfd, EPOLL_CTL_MOD, s->fd, &ev) && errno == ENOENT)
        epoll_ctl(in->epfd, EPOLL_CTL_ADD, s->fd, &ev);
}

static void epoll_ready(struct ingest *in, struct source *s, uint32_t events)
{
    if (s->type == SRC_WAKE) {
        uint64_t v;
        ssize_t r = read(in->wake_fd, &v, sizeof(v));
        (void)r;
        ingest_run_jobs(in);
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
                tcp_accepted(in, s, fd);
                continue;
            }
            /* level-triggered: a lasting error would be reported at once
             * again, so the listener leaves the set until run_timers */
            if (errno != EWOULDBLOCK && !tcp_accept_failed(s, errno))
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
            if (!source_reserve(s, READ_CHUNK))
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

static void *epoll_run(struct ingest *in)
{
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = in->wake_src};
    epoll_ctl(in->epfd, EPOLL_CTL_ADD, in->wake_fd, &wev);
    for (struct source *s = in->sources; s; s = s->next)
        if (s->type == SRC_UDP || s->type == SRC_LISTEN)
            epoll_watch(in, s, EPOLLIN);
    while (!atomic_load_explicit(&in->stop, memory_order_relaxed)) {
        int64_t wait = ingest_before_wait(in);
        struct epoll_event evs[64];
        int n = epoll_wait(in->epfd, evs, 64, (int)((wait + 999999) / 1000000));
        for (int i = 0; i < n; i++)
            epoll_ready(in, evs[i].data.ptr, evs[i].events);
        ingest_after_wake(in);
    }
    return NULL;
}

static const char *epoll_start_connect(struct ingest *in, struct source *s)
{
    if (connect(s->fd, (struct sockaddr *)&s->addr, s->addrlen) && errno != EINPROGRESS)
        return strerror(errno);
    epoll_watch(in, s, EPOLLOUT);
    return NULL;
}

static void epoll_arm_read(struct ingest *in, struct source *s)
{
    epoll_watch(in, s, EPOLLIN);
}

static void epoll_forget(struct ingest *in, struct source *s)
{
    epoll_ctl(in->epfd, EPOLL_CTL_DEL, s->fd, NULL);
}

static void epoll_close(struct ingest *in)
{
    if (in->epfd >= 0)
        close(in->epfd);
    in->epfd = -1;
}

int ingest_epoll_open(struct ingest *in)
{
    in->epfd = epoll_create1(EPOLL_CLOEXEC);
    return in->epfd < 0 ? -errno : 0;
}

const struct ingest_engine ingest_engine_epoll = {
    .name = "epoll",
    .run = epoll_run,
    .arm_read = epoll_arm_read,
    .arm_accept = epoll_arm_read, /* a listener is readable when a connection waits */
    .start_connect = epoll_start_connect,
    .forget = epoll_forget,
    .close = epoll_close,
};
