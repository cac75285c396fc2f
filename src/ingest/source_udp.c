/*
 * source_udp: UDP sources, unicast or multicast (udp://ADDR:PORT?iface=IP):
 * the socket, its receive buffers, and the kernel's count of datagrams it
 * dropped (SO_RXQ_OVFL). The engines receive; the datagrams come here.
 */
#include "feed_thread.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int udp_open(struct source *s, const char *rest, const struct ingest_options *o, char *err,
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

int udp_buffers(struct source *s)
{
    s->reqs = calloc(UDP_REQS, sizeof(*s->reqs));
    if (!s->reqs)
        return -ENOMEM;
    for (size_t i = 0; i < UDP_REQS; i++) {
        struct udp_req *r = &s->reqs[i];
        r->op = (struct op){.kind = OP_UDP, .src = s};
        r->buf = malloc(UDP_BUF);
        if (!r->buf)
            return -ENOMEM;
        r->iov = (struct iovec){.iov_base = r->buf, .iov_len = UDP_BUF};
        r->msg.msg_iov = &r->iov;
        r->msg.msg_iovlen = 1;
        r->msg.msg_control = r->ctl.bytes;
        r->msg.msg_controllen = sizeof(r->ctl.bytes);
    }
    return 0;
}

void udp_log_bound(const struct source *s, const char *mode, const char *why)
{
    /* the address actually bound: a port of 0 in the spec gets one here */
    struct sockaddr_in bound;
    socklen_t blen = sizeof(bound);
    char addr[INET_ADDRSTRLEN] = "?";
    int port = 0;
    if (getsockname(s->fd, (struct sockaddr *)&bound, &blen) == 0) {
        inet_ntop(AF_INET, &bound.sin_addr, addr, sizeof(addr));
        port = ntohs(bound.sin_port);
    }
    log_info("msg=udp_receive source=\"%s\" bound=%s:%d mode=%s%s%s%s", s->spec, addr, port, mode,
             why ? " reason=\"" : "", why ? why : "", why ? "\"" : "");
}

/* The kernel's count of datagrams dropped on the socket, from SO_RXQ_OVFL. */
void udp_overflow(struct source *s, const struct cmsghdr *c)
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

void udp_datagram(struct source *s, struct msghdr *msg, size_t len)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c))
        udp_overflow(s, c);
    source_datagram(s, msg->msg_iov->iov_base, len);
}
