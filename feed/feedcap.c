/*
 * feedcap: capture file writer and reader. One thread per writer or reader.
 */
#include "feedcap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WBUF (256 * 1024)
#define RCHUNK (256 * 1024)
#define REC_HDR 8 /* recv_time_us before each frame */

struct feedcap_writer {
    int fd;
    uint8_t *buf;
    size_t len;
    int err; /* the first write error, kept for close */
};

struct feedcap_reader {
    int fd;
    int64_t created_us;
    uint8_t *buf;
    size_t cap, start, end; /* unread bytes are buf[start, end) */
    uint64_t offset;        /* file offset of buf[start] */
    int eof;
};

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int feedcap_writer_create(feedcap_writer_t **out, const char *path, int64_t created_us, char *err,
                          size_t errlen)
{
    *out = NULL;
    struct feedcap_writer *w = calloc(1, sizeof(*w));
    uint8_t *buf = malloc(WBUF);
    if (!w || !buf) {
        free(w);
        free(buf);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    w->buf = buf;
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int rc = -errno;
        snprintf(err, errlen, "cannot create '%s': %s", path, strerror(errno));
        free(w->buf);
        free(w);
        return rc;
    }
    memcpy(w->buf, FEEDCAP_MAGIC, 8);
    put64(w->buf + 8, 1); /* version 1, reserved 0 */
    put64(w->buf + 16, (uint64_t)created_us);
    w->len = FEEDCAP_HDR;
    *out = w;
    return 0;
}

int feedcap_flush(feedcap_writer_t *w)
{
    if (!w->err && w->len)
        w->err = write_all(w->fd, w->buf, w->len);
    w->len = 0;
    return w->err;
}

int feedcap_write(feedcap_writer_t *w, int64_t recv_time_us, const uint8_t *frame, size_t len)
{
    if (w->len + REC_HDR + len > WBUF && feedcap_flush(w))
        return w->err;
    if (REC_HDR + len > WBUF) { /* larger than the buffer: straight through */
        uint8_t hdr[REC_HDR];
        put64(hdr, (uint64_t)recv_time_us);
        if (!w->err)
            w->err = write_all(w->fd, hdr, REC_HDR);
        if (!w->err)
            w->err = write_all(w->fd, frame, len);
        return w->err;
    }
    put64(w->buf + w->len, (uint64_t)recv_time_us);
    memcpy(w->buf + w->len + REC_HDR, frame, len);
    w->len += REC_HDR + len;
    return 0;
}

int feedcap_writer_close(feedcap_writer_t *w)
{
    int rc = feedcap_flush(w);
    if (!rc && fsync(w->fd))
        rc = -errno;
    if (close(w->fd) && !rc)
        rc = -errno;
    free(w->buf);
    free(w);
    return rc;
}

int feedcap_reader_open(feedcap_reader_t **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    struct feedcap_reader *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        goto out_free;
    }
    uint8_t hdr[FEEDCAP_HDR];
    ssize_t n = read(r->fd, hdr, sizeof(hdr));
    if (n != (ssize_t)sizeof(hdr) || memcmp(hdr, FEEDCAP_MAGIC, 8) != 0 ||
        (get64(hdr + 8) & 0xffffffffu) != 1) {
        rc = -EINVAL;
        snprintf(err, errlen, "'%s' is not a version 1 capture file", path);
        goto out_close;
    }
    r->created_us = (int64_t)get64(hdr + 16);
    r->offset = FEEDCAP_HDR;
    r->cap = RCHUNK * 2;
    r->buf = malloc(r->cap);
    if (!r->buf) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out_close;
    }
    *out = r;
    return 0;

out_close:
    close(r->fd);
out_free:
    free(r);
    return rc;
}

int64_t feedcap_created_us(const feedcap_reader_t *r)
{
    return r->created_us;
}

/* At least `want` unread bytes in the buffer, unless the file ends first.
 * Returns 0 or -errno. */
static int fill(struct feedcap_reader *r, size_t want)
{
    while (r->end - r->start < want && !r->eof) {
        if (r->start && r->cap - r->end < RCHUNK) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        }
        while (r->cap - r->end < RCHUNK || r->cap < want) {
            uint8_t *grown = realloc(r->buf, r->cap * 2);
            if (!grown)
                return -ENOMEM;
            r->buf = grown;
            r->cap *= 2;
        }
        ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            r->eof = 1;
        r->end += (size_t)n;
    }
    return 0;
}

int feedcap_next(feedcap_reader_t *r, struct feedcap_record *rec, char *err, size_t errlen)
{
    int rc = fill(r, REC_HDR + FEEDFRAME_HDR);
    if (rc)
        goto out_io;
    size_t avail = r->end - r->start;
    if (avail == 0)
        return 0;
    struct feedframe f;
    size_t n;
    enum feedframe_error e = FEEDFRAME_NEED_MORE;
    if (avail > REC_HDR) {
        e = feedframe_decode(r->buf + r->start + REC_HDR, avail - REC_HDR, &f, &n);
        if (e == FEEDFRAME_NEED_MORE && avail >= REC_HDR + FEEDFRAME_HDR) {
            /* the header is sound: read the whole frame */
            const uint8_t *h = r->buf + r->start + REC_HDR;
            size_t claimed =
                (size_t)h[4] | (size_t)h[5] << 8 | (size_t)h[6] << 16 | (size_t)h[7] << 24;
            rc = fill(r, REC_HDR + claimed);
            if (rc)
                goto out_io;
            avail = r->end - r->start;
            e = feedframe_decode(r->buf + r->start + REC_HDR, avail - REC_HDR, &f, &n);
        }
    }
    if (e != FEEDFRAME_OK && !((e == FEEDFRAME_BAD_TOPIC || e == FEEDFRAME_BAD_TEXT) && n)) {
        snprintf(err, errlen, "record at offset %llu: %s", (unsigned long long)r->offset,
                 feedframe_reason(e));
        return -EBADMSG;
    }
    rec->recv_time_us = (int64_t)get64(r->buf + r->start);
    rec->frame = r->buf + r->start + REC_HDR;
    rec->len = n;
    rec->offset = r->offset;
    rec->status = e;
    r->start += REC_HDR + n;
    r->offset += REC_HDR + n;
    return 1;

out_io:
    snprintf(err, errlen, "read at offset %llu: %s", (unsigned long long)r->offset, strerror(-rc));
    return rc;
}

void feedcap_reader_close(feedcap_reader_t *r)
{
    if (!r)
        return;
    close(r->fd);
    free(r->buf);
    free(r);
}
