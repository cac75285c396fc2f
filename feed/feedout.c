/*
 * feedout: UDP, TCP and capture-file destinations. One thread per feedout.
 */
#define _GNU_SOURCE /* sendmmsg */
#include "feedout.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "feedcap.h"
#include "feedframe.h"

#define DGRAMS 64            /* datagrams per sendmmsg at most */
#define TCP_BUF (256 * 1024) /* stream bytes written at once at most */
#define UDP_SNDBUF (4 << 20) /* room for catch-up bursts */
#define ACCEPT_POLL_MS 200   /* how often a wait for a receiver checks `stop` */

enum kind { OUT_UDP, OUT_TCP, OUT_FILE };

struct feedout {
    enum kind kind;
    int fd;
    char *spec;

    /* UDP: DGRAMS datagrams of dgram_cap bytes; [0, ndgrams) are complete,
     * ndgrams is being filled (cur_len bytes, cur_frames frames) */
    uint8_t *dgrams;
    size_t dgram_cap, batch;
    struct mmsghdr msgs[DGRAMS];
    struct iovec iovs[DGRAMS];
    size_t frames_in[DGRAMS];
    size_t ndgrams, cur_len, cur_frames;

    /* TCP */
    uint8_t *tbuf;
    size_t tlen;
    uint64_t tframes; /* frames in tbuf */

    /* capture file */
    feedcap_writer_t *cap;

    struct feedout_stats stats;
};

static struct feedout *alloc_out(enum kind kind, const char *spec)
{
    struct feedout *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->kind = kind;
    o->fd = -1;
    o->spec = strdup(spec);
    if (!o->spec) {
        free(o);
        return NULL;
    }
    return o;
}

static void free_out(struct feedout *o)
{
    if (o->fd >= 0)
        close(o->fd);
    free(o->dgrams);
    free(o->tbuf);
    free(o->spec);
    free(o);
}

/* "HOST:PORT" (HOST may be empty when passive: any address) to an IPv4
 * address. */
static int resolve(const char *spec, const char *hp, int socktype, bool passive,
                   struct sockaddr_in *out, char *err, size_t errlen)
{
    const char *colon = strrchr(hp, ':');
    if (!colon || !colon[1] || (!passive && colon == hp)) {
        snprintf(err, errlen, "--to '%s': expected HOST:PORT", spec);
        return -EINVAL;
    }
    char host[256];
    if ((size_t)(colon - hp) >= sizeof(host)) {
        snprintf(err, errlen, "--to '%s': host name too long", spec);
        return -EINVAL;
    }
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535 || (port == 0 && !passive)) {
        snprintf(err, errlen, "--to '%s': '%s' is not a port number", spec, colon + 1);
        return -EINVAL;
    }
    struct addrinfo hints = {
        .ai_family = AF_INET, .ai_socktype = socktype, .ai_flags = passive ? AI_PASSIVE : 0};
    struct addrinfo *res;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "--to '%s': cannot resolve '%s': %s", spec, host, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(out, res->ai_addr, sizeof(*out));
    freeaddrinfo(res);
    return 0;
}

static int open_udp(struct feedout *o, const char *hp, const struct feedout_options *opts,
                    char *err, size_t errlen)
{
    struct sockaddr_in to;
    int rc = resolve(o->spec, hp, SOCK_DGRAM, false, &to, err, errlen);
    if (rc)
        return rc;
    bool mcast = IN_MULTICAST(ntohl(to.sin_addr.s_addr));
    if (!mcast && (opts->ttl >= 0 || opts->iface)) {
        snprintf(err, errlen, "%s: only for a multicast destination (224.0.0.0/4), not '%s'",
                 opts->ttl >= 0 ? "--ttl" : "--iface", o->spec);
        return -EINVAL;
    }
    o->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (o->fd < 0)
        goto out_errno;
    int sndbuf = UDP_SNDBUF;
    setsockopt(o->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    if (mcast) {
        if (opts->iface) {
            struct in_addr ifa;
            if (inet_pton(AF_INET, opts->iface, &ifa) != 1) {
                snprintf(err, errlen, "--iface: '%s' is not an IPv4 address", opts->iface);
                return -EINVAL;
            }
            if (setsockopt(o->fd, IPPROTO_IP, IP_MULTICAST_IF, &ifa, sizeof(ifa))) {
                rc = -errno; /* before snprintf, which may change errno */
                snprintf(err, errlen, "--iface '%s': %s", opts->iface, strerror(-rc));
                return rc;
            }
        }
        if (opts->ttl >= 0) {
            unsigned char ttl = (unsigned char)opts->ttl;
            if (setsockopt(o->fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl)))
                goto out_errno;
        }
        unsigned char loop = 1; /* receivers on this host too */
        setsockopt(o->fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof(loop));
    }
    if (connect(o->fd, (struct sockaddr *)&to, sizeof(to)))
        goto out_errno;
    o->batch = opts->batch;
    o->dgram_cap = opts->batch ? FEEDOUT_DGRAM_MAX : FEEDOUT_MTU_PAYLOAD;
    o->dgrams = malloc(DGRAMS * o->dgram_cap);
    if (!o->dgrams) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < DGRAMS; i++) {
        o->iovs[i].iov_base = o->dgrams + i * o->dgram_cap;
        o->msgs[i].msg_hdr.msg_iov = &o->iovs[i];
        o->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    return 0;
out_errno:
    rc = -errno;
    snprintf(err, errlen, "--to '%s': %s", o->spec, strerror(errno));
    return rc;
}

static void stream_ready(struct feedout *o, FILE *notice, const struct sockaddr_in *peer)
{
    int one = 1;
    setsockopt(o->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &peer->sin_addr, ip, sizeof(ip));
    if (notice) {
        fprintf(notice, "msg=connected peer=%s:%u\n", ip, ntohs(peer->sin_port));
        fflush(notice);
    }
}

static int open_tcp(struct feedout *o, const char *hp, const struct feedout_options *opts,
                    char *err, size_t errlen)
{
    struct sockaddr_in to;
    int rc = resolve(o->spec, hp, SOCK_STREAM, false, &to, err, errlen);
    if (rc)
        return rc;
    o->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (o->fd < 0 || connect(o->fd, (struct sockaddr *)&to, sizeof(to))) {
        rc = -errno;
        snprintf(err, errlen, "--to '%s': cannot connect: %s", o->spec, strerror(errno));
        return rc;
    }
    stream_ready(o, opts->notice, &to);
    return 0;
}

static int open_listen(struct feedout *o, const char *hp, const struct feedout_options *opts,
                       char *err, size_t errlen)
{
    struct sockaddr_in at;
    int rc = resolve(o->spec, hp, SOCK_STREAM, true, &at, err, errlen);
    if (rc)
        return rc;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    socklen_t alen = sizeof(at);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(lfd, (struct sockaddr *)&at, sizeof(at)) || listen(lfd, 1) ||
        getsockname(lfd, (struct sockaddr *)&at, &alen)) {
        rc = -errno;
        snprintf(err, errlen, "--to '%s': %s", o->spec, strerror(errno));
        goto out_close;
    }
    if (opts->notice) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &at.sin_addr, ip, sizeof(ip));
        fprintf(opts->notice, "msg=listening addr=%s:%u\n", ip, ntohs(at.sin_port));
        fflush(opts->notice);
    }
    for (;;) {
        if (opts->stop && *opts->stop) {
            rc = -EINTR;
            snprintf(err, errlen, "--to '%s': stopped while waiting for a receiver", o->spec);
            goto out_close;
        }
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, ACCEPT_POLL_MS) <= 0)
            continue;
        struct sockaddr_in peer;
        socklen_t plen = sizeof(peer);
        o->fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
        if (o->fd >= 0) {
            stream_ready(o, opts->notice, &peer);
            break;
        }
        if (errno != EINTR && errno != ECONNABORTED) {
            rc = -errno;
            snprintf(err, errlen, "--to '%s': accept: %s", o->spec, strerror(errno));
            goto out_close;
        }
    }
    rc = 0;
out_close:
    if (lfd >= 0)
        close(lfd);
    return rc;
}

int feedout_open(feedout_t **out, const char *spec, const struct feedout_options *opts, char *err,
                 size_t errlen)
{
    *out = NULL;
    enum kind kind;
    const char *rest;
    if (strncmp(spec, "udp://", 6) == 0) {
        kind = OUT_UDP;
        rest = spec + 6;
    } else if (strncmp(spec, "tcp://", 6) == 0) {
        kind = OUT_TCP;
        rest = spec + 6;
    } else if (strncmp(spec, "tcp-listen://", 13) == 0) {
        kind = OUT_TCP;
        rest = spec + 13;
    } else {
        snprintf(err, errlen,
                 "--to '%s': unknown destination (expected udp://HOST:PORT, tcp://HOST:PORT or "
                 "tcp-listen://ADDR:PORT)",
                 spec);
        return -EINVAL;
    }
    if (kind == OUT_TCP && (opts->ttl >= 0 || opts->iface)) {
        snprintf(err, errlen, "%s: only for a UDP multicast destination, not '%s'",
                 opts->ttl >= 0 ? "--ttl" : "--iface", spec);
        return -EINVAL;
    }
    struct feedout *o = alloc_out(kind, spec);
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc;
    if (kind == OUT_UDP) {
        rc = open_udp(o, rest, opts, err, errlen);
    } else {
        o->tbuf = malloc(TCP_BUF);
        if (!o->tbuf) {
            snprintf(err, errlen, "out of memory");
            rc = -ENOMEM;
        } else if (spec[3] == '-') {
            rc = open_listen(o, rest, opts, err, errlen);
        } else {
            rc = open_tcp(o, rest, opts, err, errlen);
        }
    }
    if (rc) {
        free_out(o);
        return rc;
    }
    *out = o;
    return 0;
}

int feedout_open_file(feedout_t **out, const char *path, int64_t created_us, char *err,
                      size_t errlen)
{
    *out = NULL;
    struct feedout *o = alloc_out(OUT_FILE, path);
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = feedcap_writer_create(&o->cap, path, created_us, err, errlen);
    if (rc) {
        free_out(o);
        return rc;
    }
    *out = o;
    return 0;
}

size_t feedout_max_frame(const feedout_t *o)
{
    return o->kind == OUT_UDP ? o->dgram_cap : FEEDFRAME_MAX;
}

/* Sends the complete datagrams. */
static int udp_send(struct feedout *o, char *err, size_t errlen)
{
    size_t done = 0;
    while (done < o->ndgrams) {
        int n = sendmmsg(o->fd, o->msgs + done, (unsigned)(o->ndgrams - done), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ECONNREFUSED || errno == ENOBUFS) {
                o->stats.send_errors++; /* nobody listening yet, or a full queue */
                continue;
            }
            int rc = -errno;
            snprintf(err, errlen, "--to '%s': send: %s", o->spec, strerror(errno));
            return rc;
        }
        for (int i = 0; i < n; i++) {
            o->stats.frames += o->frames_in[done + (size_t)i];
            o->stats.bytes += o->iovs[done + (size_t)i].iov_len;
        }
        o->stats.datagrams += (uint64_t)n;
        done += (size_t)n;
    }
    o->ndgrams = 0;
    return 0;
}

/* Ends the datagram being filled. */
static void udp_close_dgram(struct feedout *o)
{
    if (!o->cur_frames)
        return;
    o->iovs[o->ndgrams].iov_len = o->cur_len;
    o->frames_in[o->ndgrams] = o->cur_frames;
    o->ndgrams++;
    o->cur_len = 0;
    o->cur_frames = 0;
}

static int tcp_send(struct feedout *o, char *err, size_t errlen)
{
    size_t off = 0;
    while (off < o->tlen) {
        ssize_t n = send(o->fd, o->tbuf + off, o->tlen - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int rc = -errno;
            snprintf(err, errlen, "--to '%s': the receiver is gone: %s", o->spec, strerror(errno));
            return rc;
        }
        off += (size_t)n;
    }
    o->stats.frames += o->tframes;
    o->stats.bytes += o->tlen;
    o->tlen = 0;
    o->tframes = 0;
    return 0;
}

int feedout_put(feedout_t *o, const uint8_t *frame, size_t len, int64_t time_us, char *err,
                size_t errlen)
{
    int rc;
    switch (o->kind) {
    case OUT_UDP:
        if (len > o->dgram_cap) {
            snprintf(err, errlen, "--to '%s': a %zu-byte frame does not fit a datagram", o->spec,
                     len);
            return -EMSGSIZE;
        }
        if (o->cur_len + len > o->dgram_cap || (o->batch && o->cur_frames == o->batch)) {
            udp_close_dgram(o);
            if (o->ndgrams == DGRAMS && (rc = udp_send(o, err, errlen)))
                return rc;
        }
        memcpy(o->dgrams + o->ndgrams * o->dgram_cap + o->cur_len, frame, len);
        o->cur_len += len;
        o->cur_frames++;
        return 0;
    case OUT_TCP:
        if (o->tlen + len > TCP_BUF && (rc = tcp_send(o, err, errlen)))
            return rc;
        if (len > TCP_BUF) { /* larger than the buffer: on its own */
            uint8_t *grown = realloc(o->tbuf, len);
            if (!grown) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
            }
            o->tbuf = grown;
        }
        memcpy(o->tbuf + o->tlen, frame, len);
        o->tlen += len;
        o->tframes++;
        return 0;
    case OUT_FILE:
        rc = feedcap_write(o->cap, time_us, frame, len);
        if (rc) {
            snprintf(err, errlen, "'%s': write: %s", o->spec, strerror(-rc));
            return rc;
        }
        o->stats.frames++;
        o->stats.bytes += len;
        return 0;
    }
    return -EINVAL;
}

int feedout_flush(feedout_t *o, char *err, size_t errlen)
{
    int rc = 0;
    switch (o->kind) {
    case OUT_UDP:
        udp_close_dgram(o);
        return udp_send(o, err, errlen);
    case OUT_TCP:
        return tcp_send(o, err, errlen);
    case OUT_FILE:
        rc = feedcap_flush(o->cap);
        if (rc)
            snprintf(err, errlen, "'%s': write: %s", o->spec, strerror(-rc));
        return rc;
    }
    return rc;
}

int feedout_close(feedout_t *o, char *err, size_t errlen)
{
    int rc = feedout_flush(o, err, errlen);
    if (o->kind == OUT_FILE) {
        int crc = feedcap_writer_close(o->cap);
        if (crc && !rc) {
            rc = crc;
            snprintf(err, errlen, "'%s': %s", o->spec, strerror(-crc));
        }
    }
    free_out(o);
    return rc;
}

void feedout_get_stats(const feedout_t *o, struct feedout_stats *out)
{
    *out = o->stats;
}
