/* ingest: what the ingest thread does with what arrives, driven without the
 * thread, sockets or an engine: frames in datagrams and in streams cut at
 * every byte, the channel sequence (upstream gaps become Gap events,
 * duplicates are dropped, a restart is taken), unknown topics, malformed and
 * oversize frames, capture-file replay and its pacing, the simulator's
 * pacing, and published batches. Each appended event is read back from the
 * topic's log and decoded as a subscriber would. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "events/v1/watcher.pb-c.h"
#include "feed_thread.h"

struct fixture {
    struct topics topics;
    struct topic *t;
    struct ingest *in;
    struct source *s;
};

static struct fixture *fx_new(size_t log_size, enum src_type type)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    topics_init(&f->topics);
    const struct topics_options mem = {.data_dir = NULL, .log_size = log_size};
    char err[256];
    assert_int_equal(topics_add(&f->topics, "md", &mem, err, sizeof(err)), 0);
    f->t = topics_find(&f->topics, "md", 2);
    assert_non_null(f->t);
    f->in = calloc(1, sizeof(*f->in));
    assert_non_null(f->in);
    f->in->topics = &f->topics;
    f->in->engine = &ingest_engine_epoll; /* epfd -1: nothing is watched */
    f->in->epfd = -1;
    f->in->wake_fd = -1;
    f->in->unknown_rl = (struct log_ratelimit){.interval_us = 1000000, .burst = 5};
    mpsc_init(&f->in->jobs);
    f->s = source_new(f->in, type, "test");
    assert_non_null(f->s);
    f->s->next = f->in->sources;
    f->in->sources = f->s;
    return f;
}

static void fx_free(struct fixture *f)
{
    while (f->in->sources) {
        struct source *s = f->in->sources;
        f->in->sources = s->next;
        source_free(s);
    }
    free(f->in);
    topics_destroy(&f->topics);
    free(f);
}

/* Encodes a frame for topic "md" (or `topic`) at `out`; returns its size. */
static size_t frame(uint8_t *out, const char *topic, uint32_t channel, uint64_t seq,
                    const char *key, size_t body_len)
{
    static uint8_t body[64 * 1024];
    for (size_t i = 0; i < body_len && i < sizeof(body); i++)
        body[i] = (uint8_t)(seq + i);
    struct feedframe fr = {.channel = channel,
                           .source_seq = seq,
                           .source_time_us = 1795502100000000LL + (int64_t)seq,
                           .topic = topic,
                           .topic_len = strlen(topic),
                           .rec = {.kind = "trade",
                                   .kind_len = 5,
                                   .key = key,
                                   .key_len = strlen(key),
                                   .body = body,
                                   .body_len = body_len}};
    return feedframe_encode(&fr, out);
}

static uint64_t head(const struct fixture *f)
{
    return ringlog_head_seq(f->t->log);
}

/* The event at `seq` as a subscriber decodes it (free with
 * events__v1__watch_event__free_unpacked). */
static Events__V1__WatchEvent *event_at(const struct fixture *f, uint64_t seq,
                                        struct ringlog_view *v)
{
    struct ringlog_iter it;
    assert_int_equal(ringlog_seek(f->t->log, seq, &it), 0);
    assert_int_equal(ringlog_peek(f->t->log, &it, v), 0);
    uint8_t *buf = malloc(v->event_len);
    assert_non_null(buf);
    ringlog_copy_event(v, buf);
    assert_true(ringlog_view_valid(f->t->log, &it));
    Events__V1__WatchEvent *e = events__v1__watch_event__unpack(NULL, v->event_len, buf);
    free(buf);
    assert_non_null(e);
    return e;
}

/* Asserts that `seq` holds a Data event for `key` with source_seq `sseq`
 * (the frame's emitted time tells it) and the frame's body. */
static void assert_data(const struct fixture *f, uint64_t seq, const char *key, uint64_t sseq,
                        size_t body_len)
{
    struct ringlog_view v;
    Events__V1__WatchEvent *e = event_at(f, seq, &v);
    assert_int_equal(v.type, RINGLOG_DATA);
    assert_int_equal(v.key_len, strlen(key));
    assert_memory_equal(v.key, key, strlen(key));
    assert_int_equal(e->payload_case, EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA);
    assert_string_equal(e->data->kind, "trade");
    assert_string_equal(e->data->key, key);
    assert_int_equal(e->data->seq, seq);
    assert_int_equal(e->data->emitted_at_unix_micros, 1795502100000000LL + (int64_t)sseq);
    assert_true(e->data->ingested_at_unix_micros > 0);
    assert_int_equal(e->data->body.len, body_len);
    for (size_t i = 0; i < body_len; i++)
        assert_int_equal(e->data->body.data[i], (uint8_t)(sseq + i));
    /* the cursor names this event: a resume from it starts after it */
    struct cursor c;
    assert_int_equal(cursor_parse(e->cursor, strlen(e->cursor), &c), 0);
    assert_int_equal(c.seq, seq);
    assert_int_equal(c.epoch, ringlog_epoch(f->t->log));
    events__v1__watch_event__free_unpacked(e, NULL);
}

static void frames_of_a_datagram_are_appended_in_order(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1 << 20, SRC_UDP);
    uint8_t buf[4096];
    size_t n = 0;
    n += frame(buf + n, "md", 1, 1, "AAPL", 10);
    n += frame(buf + n, "md", 1, 2, "MSFT", 0);
    n += frame(buf + n, "md", 1, 3, "AAPL", 100);
    source_datagram(f->s, buf, n);
    assert_int_equal(head(f), 3);
    assert_data(f, 1, "AAPL", 1, 10);
    assert_data(f, 2, "MSFT", 2, 0);
    assert_data(f, 3, "AAPL", 3, 100);
    assert_int_equal(atomic_load(&f->s->frames), 3);
    assert_int_equal(atomic_load(&f->in->frames), 3);
    assert_int_equal(f->in->appended_batch, 3);
    assert_int_equal(f->s->offset, 1); /* datagrams */
    fx_free(f);
}

static void an_upstream_loss_becomes_one_gap_event(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1 << 20, SRC_UDP);
    uint8_t buf[512];
    source_datagram(f->s, buf, frame(buf, "md", 1, 1, "A", 1));
    source_datagram(f->s, buf, frame(buf, "md", 1, 5, "A", 1)); /* 2, 3, 4 lost */
    assert_int_equal(head(f), 3);
    struct ringlog_view v;
    Events__V1__WatchEvent *e = event_at(f, 2, &v);
    assert_int_equal(v.type, RINGLOG_GAP);
    assert_int_equal(e->payload_case, EVENTS__V1__WATCH_EVENT__PAYLOAD_GAP);
    assert_int_equal(e->gap->missed, 3);
    assert_int_equal(e->gap->reason, EVENTS__V1__GAP_REASON__GAP_UPSTREAM_LOSS);
    events__v1__watch_event__free_unpacked(e, NULL);
    assert_data(f, 3, "A", 5, 1);
    assert_int_equal(atomic_load(&f->s->gaps), 1);
    assert_int_equal(atomic_load(&f->s->missed), 3);
    assert_int_equal(atomic_load(&f->s->frames), 2);
    fx_free(f);
}

static void duplicates_are_dropped_and_a_restart_is_taken(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1 << 20, SRC_UDP);
    uint8_t buf[512];
    for (uint64_t s = 1; s <= 3; s++)
        source_datagram(f->s, buf, frame(buf, "md", 1, s, "A", 1));
    source_datagram(f->s, buf, frame(buf, "md", 1, 2, "A", 1)); /* replayed */
    source_datagram(f->s, buf, frame(buf, "md", 1, 3, "A", 1));
    assert_int_equal(head(f), 3);
    assert_int_equal(atomic_load(&f->s->duplicates), 2);
    /* the sender restarted: 1 again is taken, and its sequence goes on */
    source_datagram(f->s, buf, frame(buf, "md", 1, 1, "B", 1));
    source_datagram(f->s, buf, frame(buf, "md", 1, 2, "B", 1));
    assert_int_equal(head(f), 5);
    assert_data(f, 4, "B", 1, 1);
    assert_int_equal(atomic_load(&f->s->gaps), 0);
    /* channels are independent; source_seq 0 is not sequenced */
    source_datagram(f->s, buf, frame(buf, "md", 2, 9, "C", 1));
    source_datagram(f->s, buf, frame(buf, "md", 3, 0, "D", 1));
    source_datagram(f->s, buf, frame(buf, "md", 3, 0, "D", 1));
    assert_int_equal(head(f), 8);
    assert_int_equal(atomic_load(&f->s->duplicates), 2);
    fx_free(f);
}

static void unknown_topics_and_malformed_frames_are_counted_and_skipped(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1 << 20, SRC_UDP);
    uint8_t buf[4096];
    size_t n = 0;
    n += frame(buf + n, "other", 1, 1, "A", 1); /* no such topic */
    size_t bad = n;
    n += frame(buf + n, "md", 1, 1, "A", 1);
    buf[bad + 1] ^= 0xff; /* a broken magic: the rest cannot be framed */
    n += frame(buf + n, "md", 1, 2, "A", 1);
    source_datagram(f->s, buf, n);
    assert_int_equal(head(f), 0);
    assert_int_equal(atomic_load(&f->s->unknown_topic), 1);
    assert_int_equal(atomic_load(&f->s->rejected), 1);
    uint64_t by_reason = 0;
    for (size_t i = 0; i < FEEDFRAME_NREASONS; i++)
        by_reason += counter_get(&f->in->reasons[i]);
    assert_int_equal(by_reason, 1);
    /* the next datagram is read as ever */
    source_datagram(f->s, buf + bad + (n - bad) / 2, (n - bad) / 2);
    assert_int_equal(head(f), 1);
    fx_free(f);
}

static void a_frame_larger_than_the_log_takes_is_counted_oversize(void **state)
{
    (void)state;
    struct fixture *f = fx_new(RINGLOG_MIN_CAPACITY, SRC_UDP);
    static uint8_t buf[64 * 1024];
    source_datagram(f->s, buf, frame(buf, "md", 1, 1, "A", 40 * 1024));
    assert_int_equal(head(f), 0);
    assert_int_equal(counter_get(&f->in->reasons[FEEDFRAME_OVERSIZE]), 1);
    assert_int_equal(atomic_load(&f->s->append_failed), 0);
    source_datagram(f->s, buf, frame(buf, "md", 1, 2, "A", 100));
    assert_int_equal(head(f), 1);
    fx_free(f);
}

/* A stream delivered in pieces of `piece` bytes appends the same events. */
static void feed_stream(struct fixture *f, const uint8_t *bytes, size_t n, size_t piece)
{
    for (size_t off = 0; off < n; off += piece) {
        size_t k = n - off < piece ? n - off : piece;
        assert_true(source_reserve(f->s, k));
        memcpy(f->s->sbuf + f->s->slen, bytes + off, k);
        f->s->slen += k;
        assert_true(source_stream(f->s));
    }
}

static void a_stream_cut_anywhere_frames_the_same(void **state)
{
    (void)state;
    uint8_t bytes[2048];
    size_t n = 0;
    for (uint64_t s = 1; s <= 5; s++)
        n += frame(bytes + n, "md", 1, s, s % 2 ? "AAPL" : "MSFT", (size_t)(s * 7));
    for (size_t piece = 1; piece <= n; piece = piece < 8 ? piece + 1 : piece * 3) {
        struct fixture *f = fx_new(1 << 20, SRC_CONN);
        feed_stream(f, bytes, n, piece);
        assert_int_equal(head(f), 5);
        for (uint64_t s = 1; s <= 5; s++)
            assert_data(f, s, s % 2 ? "AAPL" : "MSFT", s, (size_t)(s * 7));
        assert_int_equal(f->s->slen, 0);
        assert_int_equal(f->s->offset, n);
        fx_free(f);
    }
}

static void unframeable_stream_bytes_end_the_stream(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1 << 20, SRC_CONN);
    uint8_t bytes[512];
    size_t n = frame(bytes, "md", 1, 1, "A", 1);
    memset(bytes + n, 0x5a, 64); /* not a frame */
    assert_true(source_reserve(f->s, n + 64));
    memcpy(f->s->sbuf, bytes, n + 64);
    f->s->slen = n + 64;
    assert_false(source_stream(f->s));
    assert_int_equal(head(f), 1);
    assert_int_equal(atomic_load(&f->s->rejected), 1);
    /* closing it: a connection is freed by the loop, not reconnected */
    stream_closed(f->s, "unframeable bytes");
    assert_true(f->s->dead);
    fx_free(f);
}

/* Writes a capture file of `n` frames, recorded 1 ms apart. */
static void write_capture(const char *path, int n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    uint8_t hdr[FEEDCAP_HDR] = {0};
    memcpy(hdr, FEEDCAP_MAGIC, 8);
    hdr[8] = 1;
    assert_int_equal(fwrite(hdr, 1, sizeof(hdr), fp), sizeof(hdr));
    for (int i = 1; i <= n; i++) {
        uint8_t rec[8 + 512];
        int64_t t = 1795502100000000LL + i * 1000;
        for (int b = 0; b < 8; b++)
            rec[b] = (uint8_t)(t >> (8 * b));
        size_t len = frame(rec + 8, "md", 1, (uint64_t)i, "AAPL", 16);
        assert_int_equal(fwrite(rec, 1, 8 + len, fp), 8 + len);
    }
    assert_int_equal(fclose(fp), 0);
}

static struct fixture *replay_fixture(const char *spec_rest, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "/tmp/tickfan_ingest_test_%d.cap", (int)getpid());
    write_capture(path, 10000);
    struct fixture *f = fx_new(16 << 20, SRC_FILE);
    char rest[4200], err[256];
    snprintf(rest, sizeof(rest), "%s%s", path, spec_rest);
    assert_int_equal(file_open(f->s, rest, err, sizeof(err)), 0);
    return f;
}

static void a_capture_file_replays_every_frame_in_batches(void **state)
{
    (void)state;
    char path[256];
    struct fixture *f = replay_fixture("", path, sizeof(path));
    int rounds = 0;
    int64_t now = 1000000000;
    while (!f->s->eof) {
        int64_t wait = file_replay_run(f->s, now);
        assert_true(f->s->eof || wait == 0); /* pace=max: at once again */
        assert_true(++rounds < 100);
    }
    assert_true(rounds >= 10000 / FILE_BATCH); /* bounded batches: the loop goes on */
    assert_int_equal(head(f), 10000);
    assert_data(f, 1, "AAPL", 1, 16);
    assert_data(f, 10000, "AAPL", 10000, 16);
    assert_int_equal(atomic_load(&f->s->rejected), 0);
    assert_int_equal(file_replay_run(f->s, now), MAX_WAIT_NS); /* done: no timer */
    fx_free(f);
    unlink(path);
}

static void a_paced_replay_appends_only_what_is_due(void **state)
{
    (void)state;
    char path[256];
    struct fixture *f = replay_fixture("?rate=1000", path, sizeof(path));
    int64_t t0 = 5000000000;
    int64_t wait = file_replay_run(f->s, t0); /* the first is due at once */
    assert_int_equal(head(f), 1);
    assert_int_equal(wait, 1000000); /* the next in 1 ms */
    file_replay_run(f->s, t0 + 250 * 1000000 + 1);
    assert_int_equal(head(f), 251);
    fx_free(f);

    f = replay_fixture("?pace=recorded", path, sizeof(path));
    wait = file_replay_run(f->s, t0);
    assert_int_equal(head(f), 1);
    assert_int_equal(wait, 1000000); /* recorded 1 ms apart */
    file_replay_run(f->s, t0 + 10 * 1000000);
    assert_int_equal(head(f), 11);
    fx_free(f);
    unlink(path);
}

static void a_bad_replay_spec_names_the_option(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1 << 20, SRC_FILE);
    char err[256];
    assert_int_equal(file_open(f->s, "/nonexistent/x.cap", err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "--feed 'test': cannot open"));
    assert_int_equal(file_open(f->s, "/dev/null?rate=0", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "rate must be a positive integer"));
    assert_int_equal(file_open(f->s, "/dev/null?speed=2", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unknown parameter 'speed=2'"));
    assert_int_equal(file_open(f->s, "/dev/null", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "is not a version 1 capture file"));
    fx_free(f);
}

static void the_simulator_keeps_its_rate(void **state)
{
    (void)state;
    struct fixture *f = fx_new(16 << 20, SRC_SIM);
    f->s->rate = 2000;
    f->s->topic = f->t;
    assert_int_equal(sim_create(&f->s->sim, "AAPL,MSFT", 1), 0);
    int64_t t0 = 7000000000;
    int64_t wait = source_sim_run(f->s, t0);
    assert_int_equal(head(f), 0);
    assert_int_equal(wait, 500000);        /* 1/2000 s */
    source_sim_run(f->s, t0 + 1000000000); /* one second later */
    assert_int_equal(head(f), 2000);
    source_sim_run(f->s, t0 + 3000000000); /* two seconds more */
    assert_int_equal(head(f), 6000);
    /* far behind (the thread was held up): at most SIM_BATCH a round, so
     * the loop goes on, and the rest comes in the next rounds */
    source_sim_run(f->s, t0 + 10000000000);
    assert_int_equal(head(f), 6000 + SIM_BATCH);
    assert_true(source_sim_run(f->s, t0 + 10000000000) <= 0); /* still behind: due now */
    assert_int_equal(head(f), 6000 + 2 * SIM_BATCH);
    struct ringlog_view v;
    Events__V1__WatchEvent *e = event_at(f, 1, &v);
    assert_int_equal(e->payload_case, EVENTS__V1__WATCH_EVENT__PAYLOAD_DATA);
    assert_true(strcmp(e->data->key, "AAPL") == 0 || strcmp(e->data->key, "MSFT") == 0);
    events__v1__watch_event__free_unpacked(e, NULL);
    fx_free(f);
}

struct done_box {
    int calls;
};

static void job_done(struct ingest_job *job)
{
    ((struct done_box *)job->arg)->calls++;
}

static void published_batches_are_appended_and_handed_back(void **state)
{
    (void)state;
    struct fixture *f = fx_new(RINGLOG_MIN_CAPACITY, SRC_UDP);
    static uint8_t big[40 * 1024];
    struct ingest_record recs[3] = {
        {.topic = f->t,
         .rec = {.kind = "trade", .kind_len = 5, .key = "AAPL", .key_len = 4},
         .emitted_us = 1795502100000001LL},
        {.topic = f->t, .rec = {.kind = "trade", .kind_len = 5, .key = "MSFT", .key_len = 4}},
        {.topic = f->t,
         .rec = {.kind = "trade",
                 .kind_len = 5,
                 .key = "BIG",
                 .key_len = 3,
                 .body = big,
                 .body_len = sizeof(big)}},
    };
    struct done_box box = {0};
    struct ingest_job a = {.recs = recs, .n = 2, .done = job_done, .arg = &box};
    struct ingest_job b = {.recs = recs, .n = 3, .done = job_done, .arg = &box};
    mpsc_push(&f->in->jobs, &a.node);
    mpsc_push(&f->in->jobs, &b.node);
    ingest_run_jobs(f->in);
    assert_int_equal(box.calls, 2);
    assert_int_equal(a.appended, 2);
    assert_int_equal(a.error, 0);
    assert_int_equal(a.last.seq, 2);
    /* the second job stops at the record the log cannot take, and says so */
    assert_int_equal(b.appended, 2);
    assert_int_equal(b.error, -EMSGSIZE);
    assert_int_equal(b.last.seq, 4);
    assert_int_equal(head(f), 4);
    struct ringlog_view v;
    Events__V1__WatchEvent *e = event_at(f, 1, &v);
    assert_int_equal(e->data->emitted_at_unix_micros, 1795502100000001LL);
    events__v1__watch_event__free_unpacked(e, NULL);
    e = event_at(f, 2, &v); /* no emitted time: the ingest time */
    assert_int_equal(e->data->emitted_at_unix_micros, e->data->ingested_at_unix_micros);
    events__v1__watch_event__free_unpacked(e, NULL);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frames_of_a_datagram_are_appended_in_order),
        cmocka_unit_test(an_upstream_loss_becomes_one_gap_event),
        cmocka_unit_test(duplicates_are_dropped_and_a_restart_is_taken),
        cmocka_unit_test(unknown_topics_and_malformed_frames_are_counted_and_skipped),
        cmocka_unit_test(a_frame_larger_than_the_log_takes_is_counted_oversize),
        cmocka_unit_test(a_stream_cut_anywhere_frames_the_same),
        cmocka_unit_test(unframeable_stream_bytes_end_the_stream),
        cmocka_unit_test(a_capture_file_replays_every_frame_in_batches),
        cmocka_unit_test(a_paced_replay_appends_only_what_is_due),
        cmocka_unit_test(a_bad_replay_spec_names_the_option),
        cmocka_unit_test(the_simulator_keeps_its_rate),
        cmocka_unit_test(published_batches_are_appended_and_handed_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
