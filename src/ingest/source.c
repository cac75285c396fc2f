/*
 * source: a feed source's life (its spec, opening, freeing), the framing of
 * its bytes and the checks of every frame before it is appended: the
 * topic, the channel's sequence (an upstream loss becomes a Gap event, a
 * duplicate is dropped), the log's answer. Bad input is counted per source
 * and reason, with rate-limited log lines. The simulator's pacing is here
 * too; UDP, TCP and file replay have their own files.
 *
 * Thread: the ingest thread, except source_add/source_new/source_free
 * (main thread, before the thread starts or after it stopped).
 */
#include "feed_thread.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- frames -------------------------------------------------------------- */

void source_reject(struct source *s, enum feedframe_error why)
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
void source_append_failed(struct source *s, const struct topic *t, int err)
{
    if (err == -EMSGSIZE) {
        source_reject(s, FEEDFRAME_OVERSIZE); /* larger than half the topic's log */
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

void source_frame(struct source *s, const struct feedframe *f)
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
                    source_append_failed(s, t, rc);
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
        source_append_failed(s, t, rc);
        return;
    }
    count(s, frames, 1);
    in->appended_batch++;
}

/* A datagram: whole frames back to back. */
void source_datagram(struct source *s, const uint8_t *buf, size_t len)
{
    s->offset++;
    while (len) {
        struct feedframe f;
        size_t n;
        enum feedframe_error e = feedframe_decode(buf, len, &f, &n);
        if (e == FEEDFRAME_OK) {
            source_frame(s, &f);
        } else {
            source_reject(s, e); /* NEED_MORE here is a frame cut short: "truncated" */
            if (!n)
                return; /* the rest cannot be framed */
        }
        buf += n;
        len -= n;
    }
}

/* Stream bytes in s->sbuf. Returns false when the stream cannot be framed any
 * more (the connection must be closed). */
bool source_stream(struct source *s)
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
            source_frame(s, &f);
        } else {
            source_reject(s, e);
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
bool source_reserve(struct source *s, size_t want)
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

int parse_host_port(const char *hp, int socktype, struct sockaddr_storage *out, socklen_t *outlen,
                    char *err, size_t errlen, const char *spec)
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

void source_free(struct source *s)
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

struct source *source_new(struct ingest *in, enum src_type type, const char *spec)
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

/* ---- the simulator ------------------------------------------------------ */

int64_t source_sim_run(struct source *s, int64_t now)
{
    struct ingest *in = s->in;
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
            source_append_failed(s, s->topic, rc);
        } else {
            count(s, frames, 1);
            in->appended_batch++;
        }
        s->produced++;
    }
    return (int64_t)((__int128)(s->produced + 1) * 1000000000 / s->rate) - elapsed;
}
