/*
 * h2conn: gRPC server-streaming calls on HTTP/2 with libnghttp2. See
 * h2conn.h.
 *
 * Receive path: read() into the connection's buffer, nghttp2_session_mem_recv
 * frames it, each DATA chunk goes to its stream's message assembler. A
 * message that lies whole in the chunk is handed over in place; one split
 * across chunks is gathered in the stream's own buffer first. Window
 * updates are ours (no automatic ones): the bytes a running stream parsed
 * are consumed after mem_recv returns, those of a paused stream when it
 * resumes.
 */
#define _GNU_SOURCE
#include "h2conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define READ_BUF (256 * 1024)
#define GRPC_PREFIX 5
/* gRPC clients refuse larger messages by default (4 MiB receive limit) */
#define MAX_MESSAGE (4u << 20)

enum {
    ST_CANCELLED = 1,
    ST_UNKNOWN = 2,
    ST_RESOURCE_EXHAUSTED = 8,
    ST_INTERNAL = 13,
    ST_UNAVAILABLE = 14
};

struct h2stream {
    struct h2conn *c;
    struct h2stream *next; /* the connection's list of every stream */
    struct h2stream *dirty_next;
    void *ud;
    int32_t id;
    /* the request: prefixed messages, sent by the data provider; an
     * open call (h2conn_open) keeps the buffer, a plain one frees it */
    uint8_t *req;
    size_t req_len, req_off, req_cap;
    bool open;     /* never half-closed: more comes by h2stream_send */
    bool deferred; /* the data provider said DEFERRED: resume it on send */
    /* message assembly */
    uint8_t hdr[GRPC_PREFIX];
    uint8_t hdr_n;
    uint32_t need; /* the current message's length */
    uint8_t *msg;  /* its bytes so far, when split across chunks */
    size_t msg_n, msg_cap;
    /* paused: bytes received, not parsed, not consumed */
    uint8_t *held;
    size_t held_n, held_cap;
    size_t to_consume; /* parsed in this read, window not yet given back */
    bool dirty;
    bool paused;
    bool cancelled;
    bool closed; /* by HTTP/2 */
    bool ended;  /* on_end called */
    bool have_status;
    int status;
    int http_status;
    char message[256];
    char cursor[160];
};

struct h2conn {
    int fd;
    nghttp2_session *s;
    const struct h2conn_handler *h;
    struct h2stream *streams;
    struct h2stream *dirty;
    size_t open_calls;
    size_t to_consume; /* connection level */
    bool dead;
    char authority[256];
    /* unsent output: what mem_send gave that write() did not take */
    uint8_t *out;
    size_t out_n, out_cap;
    uint8_t *rbuf;
};

/* ---- ending a call ------------------------------------------------------- */

static void end_stream(struct h2stream *st, int status, const char *message)
{
    if (st->ended)
        return;
    st->ended = true;
    st->c->open_calls--;
    st->c->h->on_end(st->ud, status, message, st->cursor);
}

static void end_on_close(struct h2stream *st, uint32_t error_code)
{
    char why[96];
    if (st->have_status) {
        end_stream(st, st->status, st->message);
    } else if (st->cancelled) {
        end_stream(st, ST_CANCELLED, "cancelled by the client");
    } else if (error_code) {
        snprintf(why, sizeof(why), "stream reset by the server (HTTP/2 error %u)", error_code);
        end_stream(st, ST_UNAVAILABLE, why);
    } else if (st->http_status && st->http_status != 200) {
        snprintf(why, sizeof(why), "HTTP status %d without grpc-status", st->http_status);
        end_stream(st, ST_UNKNOWN, why);
    } else {
        end_stream(st, ST_UNKNOWN, "stream closed without grpc-status");
    }
}

/* Ends a call the client cannot go on reading (out of memory, a message
 * over MAX_MESSAGE): RST_STREAM, on_end with why; what still arrives for
 * it is dropped and its window given back, as after a cancel. */
static void fail_stream(struct h2stream *st, int status, const char *why)
{
    if (st->ended)
        return;
    st->cancelled = true;
    if (!st->closed && !st->c->dead)
        nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    end_stream(st, status, why);
}

/* ---- messages ------------------------------------------------------------ */

/* Runs bytes of the response body through the assembler; returns how many
 * were parsed (fewer than n when on_message paused the call). */
static size_t feed(struct h2stream *st, const uint8_t *p, size_t n)
{
    size_t used = 0;
    while (used < n && !st->paused && !st->cancelled) {
        if (st->hdr_n < GRPC_PREFIX) {
            size_t k = GRPC_PREFIX - st->hdr_n;
            if (k > n - used)
                k = n - used;
            memcpy(st->hdr + st->hdr_n, p + used, k);
            st->hdr_n += (uint8_t)k;
            used += k;
            if (st->hdr_n < GRPC_PREFIX)
                break;
            st->need = (uint32_t)st->hdr[1] << 24 | (uint32_t)st->hdr[2] << 16 |
                       (uint32_t)st->hdr[3] << 8 | st->hdr[4];
            st->msg_n = 0;
            if (st->need > MAX_MESSAGE) {
                char why[96];
                snprintf(why, sizeof(why), "a message of %u bytes, over the %u-byte limit",
                         st->need, MAX_MESSAGE);
                fail_stream(st, ST_RESOURCE_EXHAUSTED, why);
                return n;
            }
            if (st->need > 0)
                continue;
            /* an empty message */
        } else if (st->msg_n == 0 && n - used >= st->need) {
            /* whole in this chunk: in place */
        } else {
            size_t k = st->need - st->msg_n;
            if (k > n - used)
                k = n - used;
            if (st->msg_cap < st->need) {
                uint8_t *m = realloc(st->msg, st->need);
                if (!m) {
                    fail_stream(st, ST_INTERNAL, "out of memory for a message split across frames");
                    return n;
                }
                st->msg = m;
                st->msg_cap = st->need;
            }
            memcpy(st->msg + st->msg_n, p + used, k);
            st->msg_n += k;
            used += k;
            if (st->msg_n < st->need)
                break;
        }
        const uint8_t *m;
        if (st->need == 0) {
            m = st->hdr; /* any pointer: zero bytes */
        } else if (st->msg_n == 0) {
            m = p + used;
            used += st->need;
        } else {
            m = st->msg;
        }
        bool compressed = st->hdr[0] != 0;
        st->hdr_n = 0;
        st->msg_n = 0;
        /* a compressed message cannot be read here: hand over no bytes of
         * it, which the caller's parser refuses */
        if (!st->c->h->on_message(st->ud, compressed ? NULL : m, compressed ? 0 : st->need))
            st->paused = true;
    }
    return used;
}

/* Appends n bytes to a growing buffer (*buf, *len, *cap). */
static int buf_append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 65536;
        while (c < *len + n)
            c *= 2;
        uint8_t *b = realloc(*buf, c);
        if (!b)
            return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

static int hold(struct h2stream *st, const uint8_t *p, size_t n)
{
    return buf_append(&st->held, &st->held_n, &st->held_cap, p, n);
}

static void mark_consumed(struct h2stream *st, size_t n)
{
    st->to_consume += n;
    st->c->to_consume += n;
    if (!st->dirty) {
        st->dirty = true;
        st->dirty_next = st->c->dirty;
        st->c->dirty = st;
    }
}

/* Gives the window back for what was parsed: after mem_recv, not inside
 * its callbacks. */
static void consume_dirty(struct h2conn *c)
{
    while (c->dirty) {
        struct h2stream *st = c->dirty;
        c->dirty = st->dirty_next;
        st->dirty = false;
        if (st->to_consume && !st->closed)
            nghttp2_session_consume_stream(c->s, st->id, st->to_consume);
        st->to_consume = 0;
    }
    if (c->to_consume) {
        nghttp2_session_consume_connection(c->s, c->to_consume);
        c->to_consume = 0;
    }
}

/* ---- nghttp2 callbacks --------------------------------------------------- */

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    (void)flags;
    (void)user;
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    if (st->cancelled) {
        /* in flight before our RST_STREAM: not delivered, window given back */
        mark_consumed(st, len);
        return 0;
    }
    size_t used = st->paused ? 0 : feed(st, data, len);
    if (used > 0)
        mark_consumed(st, used);
    /* the rest: held while paused; dropped once cancelled or failed, its
     * window given back */
    if (used < len && !st->cancelled && hold(st, data + used, len - used) != 0)
        fail_stream(st, ST_INTERNAL, "out of memory for what a paused stream holds");
    if (used < len && st->cancelled)
        mark_consumed(st, len - used);
    return 0;
}

/* grpc-message is percent-encoded (gRPC's HTTP/2 protocol document) */
static void percent_decode(char *out, size_t cap, const uint8_t *v, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned hi, lo;
        if (v[i] == '%' && i + 2 < n && sscanf((const char *)v + i + 1, "%1x%1x", &hi, &lo) == 2) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = (char)v[i];
        }
    }
    out[o] = '\0';
}

static bool name_is(const uint8_t *name, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(name, want, len) == 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    (void)flags;
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!st)
        return 0;
    if (name_is(name, namelen, "grpc-status")) {
        char v[16];
        size_t k = valuelen < sizeof(v) - 1 ? valuelen : sizeof(v) - 1;
        memcpy(v, value, k);
        v[k] = '\0';
        st->status = atoi(v);
        st->have_status = true;
    } else if (name_is(name, namelen, "grpc-message")) {
        percent_decode(st->message, sizeof(st->message), value, valuelen);
    } else if (name_is(name, namelen, "tickfan-cursor")) {
        size_t k = valuelen < sizeof(st->cursor) - 1 ? valuelen : sizeof(st->cursor) - 1;
        memcpy(st->cursor, value, k);
        st->cursor[k] = '\0';
    } else if (name_is(name, namelen, ":status")) {
        st->http_status = atoi((const char *)value);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *user)
{
    (void)user;
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    st->closed = true;
    end_on_close(st, error_code);
    return 0;
}

static ssize_t read_request(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)s;
    (void)id;
    (void)user;
    struct h2stream *st = src->ptr;
    size_t k = st->req_len - st->req_off;
    if (k == 0 && st->open) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (k > length)
        k = length;
    memcpy(buf, st->req + st->req_off, k);
    st->req_off += k;
    if (st->req_off == st->req_len) {
        if (st->open) {
            st->req_off = st->req_len = 0;
        } else {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            free(st->req);
            st->req = NULL;
        }
    }
    return (ssize_t)k;
}

/* ---- connection ---------------------------------------------------------- */

static void lose(struct h2conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    for (struct h2stream *st = c->streams; st; st = st->next) {
        st->closed = true;
        end_stream(st, st->have_status ? st->status : ST_UNAVAILABLE,
                   st->have_status ? st->message : "connection lost");
    }
}

static int split_target(const char *target, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *t = target;
    if (strncmp(t, "dns:///", 7) == 0)
        t += 7;
    else if (strncmp(t, "ipv4:", 5) == 0 || strncmp(t, "ipv6:", 5) == 0)
        t += 5;
    const char *colon = strrchr(t, ':');
    if (!colon || colon == t || !colon[1])
        return -1;
    size_t hl = (size_t)(colon - t);
    if (t[0] == '[' && hl >= 2 && t[hl - 1] == ']') {
        t++;
        hl -= 2;
    }
    if (hl >= hcap || strlen(colon + 1) >= pcap)
        return -1;
    memcpy(host, t, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

static int dial(const char *host, const char *port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, last = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s:%s: %s", host, port, strerror(last));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "cannot make the socket non-blocking: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int h2conn_connect(struct h2conn **out, const char *target, const struct h2conn_options *opt,
                   const struct h2conn_handler *h, char *err, size_t errlen)
{
    *out = NULL;
    char host[200], port[16];
    if (split_target(target, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(err, errlen, "server '%s': expected host:port", target);
        return -EINVAL;
    }
    struct h2conn *c = calloc(1, sizeof(*c));
    if (!c || !(c->rbuf = malloc(READ_BUF))) {
        free(c);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->h = h;
    c->fd = -1;
    /* host:port as dialled, without a "dns:///" or "ipv4:" prefix */
    snprintf(c->authority, sizeof(c->authority), strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
             port);
    nghttp2_session_callbacks *cbs;
    nghttp2_option *o;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&o) != 0) {
        free(c->rbuf);
        free(c);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option_set_no_auto_window_update(o, 1);
    int rc = nghttp2_session_client_new2(&c->s, cbs, c, o);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(o);
    if (rc != 0) {
        free(c->rbuf);
        free(c);
        snprintf(err, errlen, "nghttp2: %s", nghttp2_strerror(rc));
        return -ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, opt->stream_window},
    };
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    if (opt->connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)opt->connection_window);
    c->fd = dial(host, port, err, errlen);
    if (c->fd < 0) {
        h2conn_destroy(c);
        return -ECONNREFUSED;
    }
    if (h2conn_flush(c) < 0) {
        snprintf(err, errlen, "cannot send the HTTP/2 preface to %s", target);
        h2conn_destroy(c);
        return -EIO;
    }
    *out = c;
    return 0;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                                  \
            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                           \
    }

/* Appends one prefixed message to st's request bytes. */
static int append_message(struct h2stream *st, const uint8_t *msg, size_t len)
{
    if (st->req_off && st->req_len + GRPC_PREFIX + len > st->req_cap) {
        /* an open call's bytes already sent make room first */
        memmove(st->req, st->req + st->req_off, st->req_len - st->req_off);
        st->req_len -= st->req_off;
        st->req_off = 0;
    }
    size_t need = st->req_len + GRPC_PREFIX + len;
    if (need > st->req_cap) {
        size_t cap = st->req_cap ? 2 * st->req_cap : 256;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(st->req, cap);
        if (!p)
            return -ENOMEM;
        st->req = p;
        st->req_cap = cap;
    }
    uint8_t *q = st->req + st->req_len;
    q[0] = 0;
    q[1] = (uint8_t)(len >> 24);
    q[2] = (uint8_t)(len >> 16);
    q[3] = (uint8_t)(len >> 8);
    q[4] = (uint8_t)len;
    memcpy(q + GRPC_PREFIX, msg, len);
    st->req_len = need;
    return 0;
}

static struct h2stream *start_call(struct h2conn *c, const char *path, const uint8_t *req,
                                   size_t len, bool open, void *ud)
{
    if (c->dead)
        return NULL;
    struct h2stream *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->open = open;
    if (!open && append_message(st, req, len) != 0) {
        free(st);
        return NULL;
    }
    st->c = c;
    st->ud = ud;
    nghttp2_nv nva[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", path),
        NV(":authority", c->authority),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "tickfan-bench-h2"),
    };
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_request};
    int32_t id = nghttp2_submit_request(c->s, NULL, nva, sizeof(nva) / sizeof(nva[0]), &prd, st);
    if (id < 0) {
        free(st->req);
        free(st);
        return NULL;
    }
    st->id = id;
    st->next = c->streams;
    c->streams = st;
    c->open_calls++;
    return st;
}

struct h2stream *h2conn_call(struct h2conn *c, const char *path, const uint8_t *req, size_t len,
                             void *ud)
{
    return start_call(c, path, req, len, false, ud);
}

struct h2stream *h2conn_open(struct h2conn *c, const char *path, void *ud)
{
    return start_call(c, path, NULL, 0, true, ud);
}

int h2stream_send(struct h2stream *st, const uint8_t *msg, size_t len)
{
    if (!st->open || st->ended || st->cancelled || st->closed || st->c->dead)
        return -EPIPE;
    if (append_message(st, msg, len) != 0)
        return -ENOMEM;
    if (st->deferred) {
        st->deferred = false;
        if (nghttp2_session_resume_data(st->c->s, st->id) != 0)
            return -EPIPE;
    }
    return 0;
}

void h2stream_cancel(struct h2stream *st)
{
    if (st->ended || st->cancelled)
        return;
    st->cancelled = true;
    if (!st->closed)
        nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
}

bool h2stream_ended(const struct h2stream *st)
{
    return st->ended;
}

void h2stream_resume(struct h2stream *st)
{
    if (!st->paused)
        return;
    st->paused = false;
    size_t used = st->cancelled ? st->held_n : feed(st, st->held, st->held_n);
    if (used < st->held_n)
        memmove(st->held, st->held + used, st->held_n - used);
    st->held_n -= used;
    if (used && !st->c->dead) {
        mark_consumed(st, used);
        consume_dirty(st->c);
    }
}

int h2conn_fd(const struct h2conn *c)
{
    return c->fd;
}

size_t h2conn_open_calls(const struct h2conn *c)
{
    return c->open_calls;
}

int h2conn_read(struct h2conn *c)
{
    if (c->dead)
        return -1;
    for (;;) {
        ssize_t n = read(c->fd, c->rbuf, READ_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            lose(c);
            return -1;
        }
        ssize_t rc = nghttp2_session_mem_recv(c->s, c->rbuf, (size_t)n);
        consume_dirty(c);
        if (rc < 0) {
            lose(c);
            return -1;
        }
        if ((size_t)n < READ_BUF)
            break;
    }
    return 0;
}

static int write_all(struct h2conn *c, const uint8_t *p, size_t n, size_t *written)
{
    *written = 0;
    while (*written < n) {
        ssize_t k = write(c->fd, p + *written, n - *written);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        if (k < 0)
            return -1;
        *written += (size_t)k;
    }
    return 0;
}

static int queue_out(struct h2conn *c, const uint8_t *p, size_t n)
{
    return buf_append(&c->out, &c->out_n, &c->out_cap, p, n);
}

int h2conn_flush(struct h2conn *c)
{
    if (c->dead)
        return -1;
    size_t w;
    if (c->out_n) {
        int rc = write_all(c, c->out, c->out_n, &w);
        if (rc < 0) {
            lose(c);
            return -1;
        }
        memmove(c->out, c->out + w, c->out_n - w);
        c->out_n -= w;
        if (c->out_n)
            return 1;
    }
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->s, &p);
        if (n < 0) {
            lose(c);
            return -1;
        }
        if (n == 0)
            return 0;
        int rc = write_all(c, p, (size_t)n, &w);
        if (rc < 0) {
            lose(c);
            return -1;
        }
        if (w < (size_t)n) {
            if (queue_out(c, p + w, (size_t)n - w) != 0) {
                lose(c);
                return -1;
            }
            return 1;
        }
    }
}

void h2conn_destroy(struct h2conn *c)
{
    if (!c)
        return;
    if (c->s)
        nghttp2_session_del(c->s);
    if (c->fd >= 0)
        close(c->fd);
    struct h2stream *st = c->streams;
    while (st) {
        struct h2stream *next = st->next;
        free(st->req);
        free(st->msg);
        free(st->held);
        free(st);
        st = next;
    }
    free(c->out);
    free(c->rbuf);
    free(c);
}
