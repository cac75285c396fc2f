/*
 * source_file: capture-file replay (file:PATH?rate=N|pace=recorded|pace=max;
 * the format is feed/FORMAT.md): records of recv_time_us and a frame, read
 * in chunks and appended as fast as they come (pace=max, the default), at
 * N per second, or at the pace they were recorded. At the end of the file,
 * or at bytes that cannot be framed, the source stops.
 */
#include "feed_thread.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int file_open(struct source *s, const char *rest, char *err, size_t errlen)
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

int64_t file_replay_run(struct source *s, int64_t now)
{
    int64_t wait = MAX_WAIT_NS;
    if (s->eof)
        return wait;
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
            size_t claimed = (size_t)rec[12] | (size_t)rec[13] << 8 | (size_t)rec[14] << 16 |
                             (size_t)rec[15] << 24;
            if (claimed > FEEDFRAME_HDR && claimed <= FEEDFRAME_MAX)
                need = 8 + claimed;
        }
        if (have < need) {
            if (off) {
                memmove(s->sbuf, s->sbuf + off, have);
                s->slen = have;
                off = 0;
            }
            if (!source_reserve(s, READ_CHUNK))
                break;
            ssize_t n = read(s->fd, s->sbuf + s->slen, READ_CHUNK);
            if (n > 0) {
                s->slen += (size_t)n;
                k--;
                continue;
            }
            if (s->slen)
                source_reject(s, FEEDFRAME_NEED_MORE);
            s->eof = true;
            log_info("msg=feed_replay_done source=\"%s\" frames=%llu rejected=%llu", s->spec,
                     (unsigned long long)atomic_load(&s->frames),
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
            source_frame(s, &f);
        else
            source_reject(s, e);
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
    return wait;
}
