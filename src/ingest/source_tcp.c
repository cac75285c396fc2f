/*
 * source_tcp: TCP sources. tcp://HOST:PORT connects out and reconnects
 * with backoff (100 ms doubling to 5 s); tcp-listen://ADDR:PORT accepts
 * senders, each connection a source of its own until it closes. A stream
 * is framed as it comes (source_stream); bytes that cannot be framed close
 * it. A listener whose accept fails for a lasting reason (EMFILE ...)
 * rests ACCEPT_RETRY_MS instead of spinning.
 */
#include "feed_thread.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int tcp_listen_open(struct source *s, const char *rest, char *err, size_t errlen)
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

void stream_closed(struct source *s, const char *why)
{
    if (s->slen) {
        source_reject(s, FEEDFRAME_NEED_MORE); /* a frame cut short by the close */
        s->slen = 0;
    }
    log_info("msg=feed_disconnected source=\"%s\" reason=\"%s\" frames=%llu", s->spec, why,
             (unsigned long long)atomic_load(&s->frames));
    if (s->fd >= 0) {
        s->in->engine->forget(s->in, s);
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

void stream_bytes(struct source *s, size_t n)
{
    s->slen += n;
    if (!source_stream(s))
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
    const char *why = in->engine->start_connect(in, s);
    if (why)
        stream_closed(s, why);
}

void tcp_connected(struct ingest *in, struct source *s, int res)
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
    in->engine->arm_read(in, s);
}

void tcp_accepted(struct ingest *in, struct source *l, int fd)
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
    in->engine->arm_read(in, c);
}

/* An accept on listener `l` failed with `err` (an errno). Errors of one
 * connection (reset before it was taken, refused by a firewall) leave the
 * listener armed: returns true. Anything else (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM ...) would fail again at once and spin the thread: the listener
 * rests ACCEPT_RETRY_MS (run_timers arms it again), with a rate-limited
 * line, and this returns false. */
bool tcp_accept_failed(struct source *l, int err)
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

int64_t tcp_timers(struct ingest *in, struct source *s, int64_t now)
{
    if (s->type == SRC_TCP && s->fd < 0) {
        if (!s->reconnect_at_ns || now >= s->reconnect_at_ns)
            tcp_connect(in, s);
        else
            return s->reconnect_at_ns - now;
    } else if (s->type == SRC_LISTEN && s->accept_at_ns) {
        if (now < s->accept_at_ns)
            return s->accept_at_ns - now;
        s->accept_at_ns = 0;
        in->engine->arm_accept(in, s);
    }
    return MAX_WAIT_NS;
}
