/* reader: the contract's rules for what a subscriber gets next, driven over
 * an in-memory log with no server: cursors and start positions, filters,
 * EndOfBacklog, the scan budget, the lag budgets and every overflow policy,
 * laps (before the first event, in the backlog, while live), torn reads,
 * and the snapshot and conflation sets. The writer runs between steps (and,
 * for torn reads, inside one), so the races the end-to-end tests found are
 * reproduced exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reader.h"

enum { OK = 0, INVALID_ARGUMENT = 3, NOT_FOUND = 5, RESOURCE_EXHAUSTED = 8, OUT_OF_RANGE = 11 };

#define DROP EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DROP
#define CONFLATE EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_CONFLATE
#define DISCONNECT EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT

struct fixture {
    struct topics topics;
    struct topic *t;
    struct reader_counters ctr;
    struct reader r;
    bool opened;
};

static struct fixture *fx_new(size_t log_size)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    topics_init(&f->topics);
    const struct topics_options mem = {.data_dir = NULL, .log_size = log_size};
    char err[256];
    assert_int_equal(topics_add(&f->topics, "md", &mem, err, sizeof(err)), 0);
    f->t = topics_find(&f->topics, "md", 2);
    assert_non_null(f->t);
    atomic_store(&f->t->overflow, DROP);
    return f;
}

static void fx_free(struct fixture *f)
{
    if (f->opened)
        reader_free(&f->r);
    topics_destroy(&f->topics);
    free(f);
}

static uint64_t append(struct fixture *f, const char *kind, const char *key, size_t event_len)
{
    struct ringlog_slot slot;
    assert_int_equal(
        ringlog_reserve(f->t->log, RINGLOG_DATA, strlen(kind), strlen(key), event_len, 1000, &slot),
        0);
    memcpy(slot.kind, kind, strlen(kind));
    memcpy(slot.key, key, strlen(key));
    memset(slot.event, (int)(slot.seq & 0xff), event_len);
    assert_int_equal(ringlog_commit(f->t->log, &slot), 0);
    return slot.seq;
}

static void append_n(struct fixture *f, int n, size_t event_len)
{
    for (int i = 0; i < n; i++)
        append(f, "trade", "AAPL", event_len);
}

/* The sender's side of a test: what it encoded, and a writer that may run
 * inside encode to overwrite the record being read. */
struct sender {
    struct fixture *f;
    int encoded, discarded;
    uint64_t last_seq;
    char last_key[64];
    int tear; /* records to append inside the next encode */
};

static bool encode(void *ctx, const struct ringlog_iter *it, const struct ringlog_view *v)
{
    struct sender *s = ctx;
    (void)it;
    s->encoded++;
    s->last_seq = v->seq;
    snprintf(s->last_key, sizeof(s->last_key), "%.*s", (int)v->key_len, v->key);
    if (s->tear) {
        int n = s->tear;
        s->tear = 0;
        append_n(s->f, n, 1000);
    }
    return true;
}

static void discard(void *ctx)
{
    ((struct sender *)ctx)->discarded++;
}

static struct reader_step step(struct fixture *f, struct sender *s, uint64_t limit)
{
    const struct reader_encoder enc = {.encode = encode, .discard = discard, .ctx = s};
    struct reader_step st;
    memset(&st, 0, sizeof(st));
    reader_next(&f->r, limit, &enc, &st);
    /* what a sender does with the step */
    if (st.action == READER_EVENT || st.action == READER_GAP || st.action == READER_EOB)
        f->r.sent_first = true;
    return st;
}

static struct reader_step next(struct fixture *f, struct sender *s)
{
    return step(f, s, UINT64_MAX);
}

static bool open_req(struct fixture *f, Events__V1__WatchRequest *req, struct reader_end *end)
{
    memset(&f->r, 0, sizeof(f->r));
    memset(end, 0, sizeof(*end));
    bool ok = reader_open(&f->r, &f->topics, req, &f->ctr, 1, end);
    f->opened = true;
    return ok;
}

static void open_ok(struct fixture *f, Events__V1__WatchRequest *req)
{
    struct reader_end end;
    bool ok = open_req(f, req, &end);
    if (!ok)
        fail_msg("reader_open: %d %s", end.code, end.message);
}

static Events__V1__WatchRequest request(int start)
{
    Events__V1__WatchRequest req = EVENTS__V1__WATCH_REQUEST__INIT;
    req.topic = "md";
    req.start = start;
    return req;
}

static void cursor_text(struct fixture *f, uint64_t seq, char *text)
{
    cursor_format((struct cursor){.epoch = ringlog_epoch(f->t->log), .seq = seq}, text);
}

static void expect_event(struct fixture *f, struct sender *s, uint64_t seq)
{
    struct reader_step st = next(f, s);
    if (st.action != READER_EVENT)
        fail_msg("expected event %llu, got action %d", (unsigned long long)seq, st.action);
    assert_int_equal(st.seq, seq);
    assert_int_equal(s->last_seq, seq);
}

static void expect_action(struct fixture *f, struct sender *s, enum reader_action a)
{
    struct reader_step st = next(f, s);
    if (st.action != a)
        fail_msg("expected action %d, got %d", a, st.action);
}

/* ---- positions ---------------------------------------------------------- */

static void earliest_replays_then_end_of_backlog_then_live(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 5, 10);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    open_ok(f, &req);
    struct sender s = {.f = f};
    for (uint64_t seq = 1; seq <= 5; seq++)
        expect_event(f, &s, seq);
    assert_false(f->r.eob_sent);
    expect_action(f, &s, READER_EOB);
    assert_int_equal(reader_cursor(&f->r).seq, 5);
    expect_action(f, &s, READER_WAIT);
    expect_action(f, &s, READER_WAIT); /* waits again: EndOfBacklog is once */
    append_n(f, 2, 10);
    expect_event(f, &s, 6);
    expect_event(f, &s, 7);
    expect_action(f, &s, READER_WAIT);
    assert_int_equal(f->ctr.resumes, 0);
    fx_free(f);
}

static void live_start_says_end_of_backlog_at_once(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 3, 10);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_LIVE);
    open_ok(f, &req);
    struct sender s = {.f = f};
    expect_action(f, &s, READER_EOB);
    assert_int_equal(reader_cursor(&f->r).seq, 3);
    expect_action(f, &s, READER_WAIT);
    append_n(f, 1, 10);
    expect_event(f, &s, 4);
    fx_free(f);
}

static void at_time_needs_a_time(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_AT_TIME);
    struct reader_end end;
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, INVALID_ARGUMENT);
    assert_non_null(strstr(end.message, "start_unix_micros > 0"));
    reader_free(&f->r);
    req.start = 7;
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, INVALID_ARGUMENT);
    assert_string_equal(end.message, "unknown start position 7");
    fx_free(f);
}

static void request_errors_have_their_status(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    struct reader_end end;
    Events__V1__WatchRequest req = request(0);
    req.topic = "";
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, INVALID_ARGUMENT);
    assert_string_equal(end.message, "topic is required");
    assert_null(end.md_key);
    req.topic = "nope";
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, NOT_FOUND);
    assert_string_equal(end.message, "unknown topic 'nope'");
    req.topic = "md";
    char *empty[] = {""};
    req.kinds = empty;
    req.n_kinds = 1;
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, INVALID_ARGUMENT);
    assert_non_null(strstr(end.message, "invalid filter: "));
    reader_free(&f->r);
    req.n_kinds = 0;
    req.overflow = 9;
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, INVALID_ARGUMENT);
    assert_string_equal(end.message, "unknown overflow policy 9");
    fx_free(f);
}

/* ---- cursors ------------------------------------------------------------ */

static void cursor_resumes_after_it(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 5, 10);
    char text[CURSOR_TEXT_MAX];
    cursor_text(f, 2, text);
    Events__V1__WatchRequest req = request(0);
    req.cursor = text;
    open_ok(f, &req);
    assert_int_equal(f->r.start, READER_START_CURSOR);
    assert_int_equal(f->ctr.resumes, 1);
    struct sender s = {.f = f};
    expect_event(f, &s, 3);
    expect_event(f, &s, 4);
    expect_event(f, &s, 5);
    expect_action(f, &s, READER_EOB);
    /* a cursor at the head: nothing to replay */
    reader_free(&f->r);
    cursor_text(f, 5, text);
    open_ok(f, &req);
    expect_action(f, &s, READER_EOB);
    assert_int_equal(reader_cursor(&f->r).seq, 5);
    fx_free(f);
}

static void bad_cursors_are_refused(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 5, 10);
    struct reader_end end;
    Events__V1__WatchRequest req = request(0);
    req.cursor = "not-a-cursor";
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, INVALID_ARGUMENT);
    assert_string_equal(end.message, "malformed cursor 'not-a-cursor'");

    char text[CURSOR_TEXT_MAX], earliest[CURSOR_TEXT_MAX];
    cursor_text(f, 0, earliest); /* nothing overwritten: the oldest is 1 */
    cursor_text(f, 9, text);     /* ahead of the head (5) */
    req.cursor = text;
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, OUT_OF_RANGE);
    assert_non_null(strstr(end.message, "is ahead of the topic's log"));
    assert_string_equal(end.md_key, "tickfan-earliest-cursor");
    assert_string_equal(end.md_value, earliest);
    /* ahead is refused even with allow_gap: it is no loss, it is wrong */
    req.allow_gap = true;
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, OUT_OF_RANGE);

    req.allow_gap = false;
    cursor_format((struct cursor){.epoch = ringlog_epoch(f->t->log) + 1, .seq = 3}, text);
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, OUT_OF_RANGE);
    assert_non_null(strstr(end.message, "another epoch"));
    fx_free(f);
}

static void another_epoch_with_allow_gap_starts_over_with_an_unknown_gap(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 3, 10);
    char text[CURSOR_TEXT_MAX];
    struct cursor old = {.epoch = ringlog_epoch(f->t->log) + 1, .seq = 77};
    cursor_format(old, text);
    Events__V1__WatchRequest req = request(0);
    req.cursor = text;
    req.allow_gap = true;
    open_ok(f, &req);
    assert_int_equal(f->r.start, READER_START_CURSOR_GAP);
    struct sender s = {.f = f};
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.reason, EVENTS__V1__GAP_REASON__GAP_RETENTION);
    assert_int_equal(st.gap.missed, 0); /* unknown */
    assert_int_equal(st.gap.from.epoch, old.epoch);
    assert_int_equal(st.gap.from.seq, 77);
    assert_int_equal(st.gap.at.seq, 0);
    expect_event(f, &s, 1);
    fx_free(f);
}

/* 64 KiB log, 1000-byte events: about 60 records fit */
static uint64_t lap_log(struct fixture *f, int n)
{
    append_n(f, n, 1000);
    return ringlog_first_seq(f->t->log);
}

static void stale_cursor_is_out_of_range_or_a_counted_gap(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    uint64_t first = lap_log(f, 200);
    assert_true(first > 10);
    char text[CURSOR_TEXT_MAX], earliest[CURSOR_TEXT_MAX];
    cursor_text(f, 4, text);
    cursor_text(f, first - 1, earliest);
    Events__V1__WatchRequest req = request(0);
    req.cursor = text;
    struct reader_end end;
    assert_false(open_req(f, &req, &end));
    assert_int_equal(end.code, OUT_OF_RANGE);
    assert_non_null(strstr(end.message, "is older than what the topic retains"));
    assert_non_null(strstr(end.message, earliest));
    assert_string_equal(end.md_value, earliest);

    req.allow_gap = true;
    open_ok(f, &req);
    struct sender s = {.f = f};
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.reason, EVENTS__V1__GAP_REASON__GAP_RETENTION);
    assert_int_equal(st.gap.missed, first - 5); /* 5 .. first-1, exactly */
    assert_int_equal(st.gap.from.seq, 4);
    assert_int_equal(st.gap.at.seq, first - 1);
    expect_event(f, &s, first);
    fx_free(f);
}

/* ---- filters and the scan budget ------------------------------------ */

static void filter_skips_but_the_cursor_moves_over_everything(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append(f, "trade", "AAPL", 10);
    append(f, "quote", "AAPL", 10);
    append(f, "trade", "MSFT", 10);
    append(f, "quote", "MSFT", 10);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    char *kinds[] = {"quote"};
    req.kinds = kinds;
    req.n_kinds = 1;
    open_ok(f, &req);
    struct sender s = {.f = f};
    expect_event(f, &s, 2);
    expect_event(f, &s, 4);
    expect_action(f, &s, READER_EOB);
    assert_int_equal(reader_cursor(&f->r).seq, 4);
    append(f, "trade", "AAPL", 10);
    expect_action(f, &s, READER_WAIT);
    assert_int_equal(reader_cursor(&f->r).seq, 5); /* heartbeats carry it */
    assert_int_equal(s.encoded, 2);
    fx_free(f);
}

static void a_long_run_of_filtered_records_yields(void **state)
{
    (void)state;
    struct fixture *f = fx_new(1024 * 1024);
    for (int i = 0; i < 600; i++)
        append(f, "trade", "AAPL", 10);
    append(f, "quote", "AAPL", 10);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    char *kinds[] = {"quote"};
    req.kinds = kinds;
    req.n_kinds = 1;
    open_ok(f, &req);
    struct sender s = {.f = f};
    expect_action(f, &s, READER_YIELD);
    assert_int_equal(reader_cursor(&f->r).seq, 512);
    expect_event(f, &s, 601);
    fx_free(f);
}

static void limit_holds_a_subscription_at_its_flush_horizon(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 5, 10);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    open_ok(f, &req);
    struct sender s = {.f = f};
    assert_int_equal(step(f, &s, 2).action, READER_EVENT);
    assert_int_equal(step(f, &s, 2).action, READER_EVENT);
    /* at the horizon before the backlog's end: EndOfBacklog, as at a head */
    assert_int_equal(step(f, &s, 2).action, READER_EOB);
    assert_int_equal(step(f, &s, 2).action, READER_WAIT);
    assert_int_equal(step(f, &s, 4).action, READER_EVENT);
    assert_int_equal(s.last_seq, 3);
    fx_free(f);
}

static void next_is_queued_looks_past_filtered_records(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append(f, "quote", "A", 10);
    append(f, "trade", "A", 10);
    append(f, "quote", "A", 10);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    char *kinds[] = {"quote"};
    req.kinds = kinds;
    req.n_kinds = 1;
    open_ok(f, &req);
    struct sender s = {.f = f};
    expect_event(f, &s, 1);
    assert_true(reader_next_is_queued(&f->r));
    assert_int_equal(f->r.it.seq, 3); /* moved over the trade */
    expect_event(f, &s, 3);
    assert_false(reader_next_is_queued(&f->r));
    fx_free(f);
}

/* ---- laps ---------------------------------------------------------------- */

static void lapped_before_the_first_event_a_start_position_reseeks(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 5, 1000);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    open_ok(f, &req);
    uint64_t first = lap_log(f, 200);
    struct sender s = {.f = f};
    /* nothing promised was lost: no Gap; what was the backlog is gone */
    expect_action(f, &s, READER_EOB);
    assert_int_equal(reader_cursor(&f->r).seq, first - 1); /* re-seeked to the oldest */
    assert_int_equal(f->ctr.gaps, 0);
    assert_int_equal(f->r.dropped, 0);
    fx_free(f);
}

static void lapped_before_the_first_event_a_cursor_is_refused(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 5, 1000);
    char text[CURSOR_TEXT_MAX];
    cursor_text(f, 2, text);
    Events__V1__WatchRequest req = request(0);
    req.cursor = text;
    open_ok(f, &req);
    uint64_t first = lap_log(f, 200);
    struct sender s = {.f = f};
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_END);
    assert_int_equal(st.end.code, OUT_OF_RANGE);
    assert_non_null(strstr(st.end.message, "was overwritten before the stream could read on"));
    char earliest[CURSOR_TEXT_MAX];
    cursor_text(f, first - 1, earliest);
    assert_string_equal(st.end.md_value, earliest);
    fx_free(f);
}

static void lapped_in_the_backlog_is_a_retention_gap_with_the_exact_count(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 10, 1000);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    open_ok(f, &req);
    struct sender s = {.f = f};
    expect_event(f, &s, 1);
    expect_event(f, &s, 2);
    uint64_t first = lap_log(f, 200);
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.reason, EVENTS__V1__GAP_REASON__GAP_RETENTION);
    assert_int_equal(st.gap.from.seq, 2);
    assert_int_equal(st.gap.missed, first - 3);
    assert_int_equal(f->r.dropped, first - 3);
    assert_int_equal(f->ctr.dropped_events, first - 3);
    assert_int_equal(f->ctr.gaps, 1);
    expect_action(f, &s, READER_EOB); /* the backlog (1 .. 10) is over */
    assert_int_equal(reader_cursor(&f->r).seq, first - 1);
    /* and live, a whole log behind the head: over its budget at once */
    st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.reason, EVENTS__V1__GAP_REASON__GAP_SLOW_CONSUMER);
    assert_int_equal(st.gap.from.seq, first - 1);
    assert_int_equal(st.gap.missed, ringlog_head_seq(f->t->log) - first + 1);
    assert_int_equal(f->ctr.slow[DROP], 1);
    fx_free(f);
}

static void lapped_in_the_backlog_with_disconnect_ends_it(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 10, 1000);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    req.overflow = DISCONNECT;
    open_ok(f, &req);
    struct sender s = {.f = f};
    expect_event(f, &s, 1);
    lap_log(f, 200);
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_END);
    assert_int_equal(st.end.code, RESOURCE_EXHAUSTED);
    /* a lapped reader is more than the log behind: over the byte budget */
    assert_non_null(strstr(st.end.message, "slow consumer: "));
    assert_non_null(strstr(st.end.message, "bytes of log behind the head of topic 'md'"));
    char text[CURSOR_TEXT_MAX];
    cursor_text(f, 1, text);
    assert_string_equal(st.end.md_key, "tickfan-cursor");
    assert_string_equal(st.end.md_value, text);
    assert_false(st.end.stalled);
    assert_int_equal(f->ctr.slow[DISCONNECT], 1);
    fx_free(f);
}

static void a_record_overwritten_while_encoded_is_discarded(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 10, 1000);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    open_ok(f, &req);
    struct sender s = {.f = f};
    expect_event(f, &s, 1);
    s.tear = 200; /* the writer laps the reader while it encodes record 2 */
    struct reader_step st = next(f, &s);
    assert_int_equal(s.discarded, 1);
    assert_int_equal(st.action, READER_GAP); /* torn bytes are never sent */
    uint64_t first = ringlog_first_seq(f->t->log);
    assert_int_equal(st.gap.missed, first - 2);
    expect_action(f, &s, READER_EOB);
    assert_int_equal(reader_cursor(&f->r).seq, first - 1);
    fx_free(f);
}

/* ---- lag budget and overflow policies -------------------------------- */

static void live(struct fixture *f, struct sender *s, int policy)
{
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_LIVE);
    req.overflow = policy;
    open_ok(f, &req);
    expect_action(f, s, READER_EOB);
}

static void no_budget_while_replaying_the_backlog(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_events, 3);
    append_n(f, 20, 10);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    open_ok(f, &req);
    struct sender s = {.f = f};
    for (uint64_t seq = 1; seq <= 20; seq++)
        expect_event(f, &s, seq);
    expect_action(f, &s, READER_EOB);
    assert_int_equal(f->ctr.gaps, 0);
    fx_free(f);
}

static void drop_over_the_event_budget_skips_to_the_head_with_one_gap(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_events, 10);
    append_n(f, 4, 10);
    struct sender s = {.f = f};
    live(f, &s, 0); /* the topic's default: DROP */
    append_n(f, 10, 10);
    expect_event(f, &s, 5); /* 10 behind: at the budget, not over */
    append_n(f, 30, 10);
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.reason, EVENTS__V1__GAP_REASON__GAP_SLOW_CONSUMER);
    assert_int_equal(st.gap.from.seq, 5);
    assert_int_equal(st.gap.missed, 39);
    assert_int_equal(st.gap.at.seq, 44);
    assert_int_equal(f->ctr.slow[DROP], 1);
    assert_int_equal(f->ctr.dropped_events, 39);
    assert_int_equal(f->ctr.gaps, 1);
    expect_action(f, &s, READER_WAIT);
    fx_free(f);
}

static void a_dropped_range_counts_only_the_matching_events(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_events, 5);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_LIVE);
    char *keys[] = {"MSFT"};
    req.keys = keys;
    req.n_keys = 1;
    open_ok(f, &req);
    struct sender s = {.f = f};
    expect_action(f, &s, READER_EOB);
    for (int i = 0; i < 30; i++)
        append(f, "trade", i % 3 ? "AAPL" : "MSFT", 10);
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.missed, 10);
    assert_int_equal(f->r.dropped, 10);
    fx_free(f);
}

static void disconnect_over_the_byte_budget_names_it(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_bytes, 4096);
    struct sender s = {.f = f};
    live(f, &s, DISCONNECT);
    append_n(f, 10, 1000);
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_END);
    assert_int_equal(st.end.code, RESOURCE_EXHAUSTED);
    assert_non_null(strstr(st.end.message, "bytes of log behind the head of topic 'md', over its "
                                           "lag budget of 4096 bytes; resume from cursor "));
    char text[CURSOR_TEXT_MAX];
    cursor_text(f, 0, text);
    assert_string_equal(st.end.md_value, text);
    fx_free(f);
}

static void disconnect_over_the_event_budget_names_it(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_events, 3);
    struct sender s = {.f = f};
    live(f, &s, DISCONNECT);
    append_n(f, 5, 10);
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_END);
    assert_non_null(strstr(st.end.message, "5 events behind the head of topic 'md', over its lag "
                                           "budget of 3 events"));
    fx_free(f);
}

static void the_byte_budget_is_at_most_three_quarters_of_the_log(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_bytes, 1 << 30); /* more than the log */
    struct sender s = {.f = f};
    live(f, &s, DISCONNECT);
    append_n(f, 44, 1000); /* ~45 KB: under 48 KiB */
    expect_event(f, &s, 1);
    append_n(f, 10, 1000); /* ~54 KB behind: over */
    assert_int_equal(next(f, &s).action, READER_END);
    fx_free(f);
}

static void conflate_tells_the_gap_then_the_latest_value_of_each_key(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_events, 5);
    struct sender s = {.f = f};
    live(f, &s, CONFLATE);
    uint64_t last[3] = {0};
    const char *keys[3] = {"A", "B", "C"};
    for (int i = 0; i < 30; i++)
        last[i % 3] = append(f, "px", keys[i % 3], 10);
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.missed, 30);
    assert_int_equal(f->ctr.slow[CONFLATE], 1);
    assert_true(f->r.snap_active);
    assert_false(f->r.snap_initial);
    assert_int_equal(f->r.snapset->count, 3);
    for (int k = 0; k < 3; k++) {
        const struct keyset_entry *e = keyset_get(f->r.snapset, "px", 2, keys[k], 1);
        assert_non_null(e);
        assert_int_equal(e->value, last[k]);
    }
    expect_action(f, &s, READER_SNAPSHOT); /* the sender sends the set... */
    reader_snapshot_end(&f->r);            /* ...and ends the phase */
    expect_action(f, &s, READER_WAIT);
    fx_free(f);
}

static void conflate_lapped_while_skipping_takes_every_key_from_the_cache(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_events, 5);
    struct sender s = {.f = f};
    live(f, &s, CONFLATE);
    for (int i = 0; i < 200; i++) /* laps the reader: keys of lost records unknown */
        append(f, "px", i % 2 ? "A" : "B", 1000);
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.missed, 200);
    assert_true(f->r.snap_active);
    assert_int_equal(f->r.snapset->count, 2);
    fx_free(f);
}

static void a_stalled_stream_gets_its_policy_and_one_widened_gap(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_events, 5);
    struct sender s = {.f = f};
    live(f, &s, DROP);
    append_n(f, 3, 10);
    expect_event(f, &s, 1); /* in flight; the client stops reading */
    struct reader_end end;
    assert_false(reader_check_stalled(&f->r, &end)); /* 2 behind: within */
    append_n(f, 10, 10);
    assert_false(reader_check_stalled(&f->r, &end)); /* DROP: a Gap queued */
    assert_true(f->r.gap_pending);
    assert_true(f->r.gap_stalled);
    assert_int_equal(f->ctr.slow[DROP], 1);
    assert_false(reader_check_stalled(&f->r, &end)); /* at the head now */
    append_n(f, 20, 10);                             /* behind again before it read */
    assert_false(reader_check_stalled(&f->r, &end)); /* widened, not a second */
    struct reader_step st = next(f, &s);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.from.seq, 1);
    assert_int_equal(st.gap.missed, 32);
    assert_int_equal(st.gap.at.seq, 33);
    assert_int_equal(f->ctr.slow[DROP], 1);
    assert_int_equal(f->ctr.gaps, 1);
    assert_int_equal(f->ctr.dropped_events, 32);
    expect_action(f, &s, READER_WAIT);
    fx_free(f);
}

static void a_stalled_disconnect_says_so(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    atomic_store(&f->t->max_lag_events, 5);
    struct sender s = {.f = f};
    live(f, &s, DISCONNECT);
    append_n(f, 10, 10);
    struct reader_end end;
    assert_true(reader_check_stalled(&f->r, &end));
    assert_true(end.stalled);
    assert_int_equal(end.code, RESOURCE_EXHAUSTED);
    fx_free(f);
}

/* ---- snapshot --------------------------------------------------------- */

static void a_snapshot_is_each_pairs_value_as_of_the_position(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append(f, "px", "A", 10);              /* 1 */
    append(f, "px", "B", 10);              /* 2 */
    uint64_t a = append(f, "px", "A", 10); /* 3 */
    append(f, "vol", "A", 10);             /* 4: filtered out */
    uint64_t b = append(f, "px", "B", 10); /* 5 */
    char text[CURSOR_TEXT_MAX];
    cursor_text(f, 3, text);
    Events__V1__WatchRequest req = request(0);
    req.cursor = text;
    req.snapshot = true;
    char *kinds[] = {"px"};
    req.kinds = kinds;
    req.n_kinds = 1;
    open_ok(f, &req);
    /* as of cursor 3: A=3, B=2 (the cache has B=5, the log still has 2) */
    assert_true(f->r.snap_active && f->r.snap_initial);
    assert_int_equal(f->r.snapset->count, 2);
    assert_int_equal(keyset_get(f->r.snapset, "px", 2, "A", 1)->value, a);
    assert_int_equal(keyset_get(f->r.snapset, "px", 2, "B", 1)->value, 2);
    struct sender s = {.f = f};
    expect_action(f, &s, READER_SNAPSHOT);
    reader_snapshot_end(&f->r);
    expect_event(f, &s, b);
    reader_free(&f->r);

    /* a live snapshot: the latest of each */
    req.cursor = NULL;
    req.start = EVENTS__V1__START_POSITION__START_LIVE;
    open_ok(f, &req);
    assert_int_equal(keyset_get(f->r.snapset, "px", 2, "A", 1)->value, a);
    assert_int_equal(keyset_get(f->r.snapset, "px", 2, "B", 1)->value, b);
    fx_free(f);
}

static void a_snapshot_pair_whose_value_is_gone_stays_in_the_set_as_lost(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append(f, "px", "B", 1000); /* 1: B's value as of the position below */
    for (int i = 0; i < 100; i++)
        append(f, "px", "A", 1000);
    uint64_t pos = ringlog_head_seq(f->t->log);
    assert_true(ringlog_first_seq(f->t->log) > 1); /* B's old value left the log */
    uint64_t b = append(f, "px", "B", 1000);       /* the cache moves past the position */
    char text[CURSOR_TEXT_MAX];
    cursor_text(f, pos, text);
    Events__V1__WatchRequest req = request(0);
    req.cursor = text;
    req.snapshot = true;
    open_ok(f, &req);
    const struct keyset_entry *e = keyset_get(f->r.snapset, "px", 2, "B", 1);
    assert_non_null(e); /* it existed before the position: in the snapshot, as lost */
    assert_int_equal(e->value, 0);
    assert_true(b > pos);
    e = keyset_get(f->r.snapset, "px", 2, "A", 1);
    assert_non_null(e);
    assert_int_equal(e->value, pos);
    fx_free(f);
}

/* ---- following another reader's step ------------------------------------ */

/* A second reader on the fixture's topic, opened with req. */
static void open_other(struct fixture *f, Events__V1__WatchRequest *req, struct reader *r)
{
    struct reader_end end;
    memset(r, 0, sizeof(*r));
    memset(&end, 0, sizeof(end));
    if (!reader_open(r, &f->topics, req, &f->ctr, 2, &end))
        fail_msg("reader_open: %d %s", end.code, end.message);
}

static struct reader_step other_next(struct reader *r, struct sender *s, uint64_t limit)
{
    const struct reader_encoder enc = {.encode = encode, .discard = discard, .ctx = s};
    struct reader_step st;
    memset(&st, 0, sizeof(st));
    reader_next(r, limit, &enc, &st);
    return st;
}

/* The fixture's reader reads the next record; the hop it took. */
static struct reader_hop lead(struct fixture *f, struct sender *s)
{
    struct reader_step st = next(f, s);
    assert_int_equal(st.action, READER_EVENT);
    return (struct reader_hop){.log = f->t->log, .from = st.from, .to = f->r.it, .seq = st.seq};
}

static void a_follower_takes_the_step_reading_would_take(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    append_n(f, 3, 10);
    struct sender s = {.f = f}, s2 = {.f = f};
    live(f, &s, 0);
    struct reader r2;
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_LIVE);
    open_other(f, &req, &r2);
    assert_int_equal(other_next(&r2, &s2, UINT64_MAX).action, READER_EOB);
    append_n(f, 3, 10);
    for (uint64_t seq = 4; seq <= 6; seq++) {
        struct reader_hop hop = lead(f, &s);
        assert_int_equal(hop.seq, seq);
        assert_true(reader_follow(&r2, UINT64_MAX, &hop));
        assert_int_equal(r2.it.pos, f->r.it.pos);
        assert_int_equal(r2.it.seq, f->r.it.seq);
        assert_int_equal(reader_cursor(&r2).seq, seq);
    }
    assert_int_equal(s2.encoded, 0); /* it read nothing itself */
    /* and reading on from there is what the leader reads */
    append_n(f, 1, 10);
    assert_int_equal(other_next(&r2, &s2, UINT64_MAX).seq, 7);
    expect_event(f, &s, 7);
    reader_free(&r2);
    fx_free(f);
}

static void a_follower_reads_for_itself_wherever_reading_would_differ(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    struct sender s = {.f = f}, s2 = {.f = f};
    live(f, &s, 0);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_LIVE);
    struct reader filtered, replaying, behind;
    char *kinds[] = {"trade"};
    Events__V1__WatchRequest freq = req;
    freq.kinds = kinds;
    freq.n_kinds = 1;
    open_other(f, &freq, &filtered);
    assert_int_equal(other_next(&filtered, &s2, UINT64_MAX).action, READER_EOB);
    open_other(f, &req, &behind);
    assert_int_equal(other_next(&behind, &s2, UINT64_MAX).action, READER_EOB);
    append_n(f, 2, 10);
    Events__V1__WatchRequest ereq = request(EVENTS__V1__START_POSITION__START_EARLIEST);
    open_other(f, &ereq, &replaying); /* its EndOfBacklog is still to come */
    expect_event(f, &s, 1);
    struct reader_hop hop = lead(f, &s); /* record 2 */
    assert_int_equal(hop.seq, 2);
    other_next(&filtered, &s2, UINT64_MAX); /* at record 2 too, now */
    assert_int_equal(filtered.it.pos, hop.from.pos);
    /* filtered: its own filter decides, even where it matches */
    assert_false(reader_follow(&filtered, UINT64_MAX, &hop));
    assert_int_equal(filtered.it.seq, 2);
    /* elsewhere in the log: at record 1, not 2 */
    assert_false(reader_follow(&behind, UINT64_MAX, &hop));
    assert_int_equal(behind.it.seq, 1);
    /* replaying the backlog */
    other_next(&replaying, &s2, UINT64_MAX);
    assert_int_equal(replaying.it.pos, hop.from.pos);
    assert_false(reader_follow(&replaying, UINT64_MAX, &hop));
    assert_int_equal(replaying.it.seq, 2);
    /* the same place, but past its flush horizon, then within it */
    assert_int_equal(other_next(&behind, &s2, UINT64_MAX).seq, 1);
    assert_false(reader_follow(&behind, 1, &hop));
    assert_int_equal(behind.it.seq, 2);
    assert_true(reader_follow(&behind, 2, &hop));
    assert_int_equal(behind.it.seq, 3);
    reader_free(&filtered);
    reader_free(&replaying);
    reader_free(&behind);
    fx_free(f);
}

static void a_follower_over_its_budget_or_lapped_gets_its_gap(void **state)
{
    (void)state;
    struct fixture *f = fx_new(64 * 1024);
    struct sender s = {.f = f}, s2 = {.f = f};
    live(f, &s, 0);
    Events__V1__WatchRequest req = request(EVENTS__V1__START_POSITION__START_LIVE);
    struct reader late;
    open_other(f, &req, &late);
    assert_int_equal(other_next(&late, &s2, UINT64_MAX).action, READER_EOB);
    append_n(f, 1, 10);
    struct reader_hop hop = lead(f, &s);
    assert_int_equal(late.it.pos, hop.from.pos);
    atomic_store(&f->t->max_lag_events, 20);
    append_n(f, 30, 10); /* 31 behind: over the budget of 20 */
    assert_false(reader_follow(&late, UINT64_MAX, &hop));
    struct reader_step st = other_next(&late, &s2, UINT64_MAX);
    assert_int_equal(st.action, READER_GAP);
    assert_int_equal(st.gap.reason, EVENTS__V1__GAP_REASON__GAP_SLOW_CONSUMER);
    reader_free(&late);

    /* no event budget: overwritten since the leader read it */
    atomic_store(&f->t->max_lag_events, 0);
    struct reader lapped;
    open_other(f, &req, &lapped);
    assert_int_equal(other_next(&lapped, &s2, UINT64_MAX).action, READER_EOB);
    struct ringlog_iter at = lapped.it;
    append_n(f, 1, 10);
    struct reader_hop h2 = {.log = f->t->log, .from = at, .seq = at.seq};
    struct reader tmp;
    open_other(f, &req, &tmp); /* a reader past it: where the step leads */
    h2.to = tmp.it;
    reader_free(&tmp);
    append_n(f, 200, 1000); /* laps the 64 KiB log */
    assert_false(reader_follow(&lapped, UINT64_MAX, &h2));
    assert_int_equal(lapped.it.seq, at.seq);
    assert_int_equal(other_next(&lapped, &s2, UINT64_MAX).action, READER_GAP);
    reader_free(&lapped);
    fx_free(f);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(earliest_replays_then_end_of_backlog_then_live),
        cmocka_unit_test(live_start_says_end_of_backlog_at_once),
        cmocka_unit_test(at_time_needs_a_time),
        cmocka_unit_test(request_errors_have_their_status),
        cmocka_unit_test(cursor_resumes_after_it),
        cmocka_unit_test(bad_cursors_are_refused),
        cmocka_unit_test(another_epoch_with_allow_gap_starts_over_with_an_unknown_gap),
        cmocka_unit_test(stale_cursor_is_out_of_range_or_a_counted_gap),
        cmocka_unit_test(filter_skips_but_the_cursor_moves_over_everything),
        cmocka_unit_test(a_long_run_of_filtered_records_yields),
        cmocka_unit_test(limit_holds_a_subscription_at_its_flush_horizon),
        cmocka_unit_test(next_is_queued_looks_past_filtered_records),
        cmocka_unit_test(lapped_before_the_first_event_a_start_position_reseeks),
        cmocka_unit_test(lapped_before_the_first_event_a_cursor_is_refused),
        cmocka_unit_test(lapped_in_the_backlog_is_a_retention_gap_with_the_exact_count),
        cmocka_unit_test(lapped_in_the_backlog_with_disconnect_ends_it),
        cmocka_unit_test(a_record_overwritten_while_encoded_is_discarded),
        cmocka_unit_test(no_budget_while_replaying_the_backlog),
        cmocka_unit_test(drop_over_the_event_budget_skips_to_the_head_with_one_gap),
        cmocka_unit_test(a_dropped_range_counts_only_the_matching_events),
        cmocka_unit_test(disconnect_over_the_byte_budget_names_it),
        cmocka_unit_test(disconnect_over_the_event_budget_names_it),
        cmocka_unit_test(the_byte_budget_is_at_most_three_quarters_of_the_log),
        cmocka_unit_test(conflate_tells_the_gap_then_the_latest_value_of_each_key),
        cmocka_unit_test(conflate_lapped_while_skipping_takes_every_key_from_the_cache),
        cmocka_unit_test(a_stalled_stream_gets_its_policy_and_one_widened_gap),
        cmocka_unit_test(a_stalled_disconnect_says_so),
        cmocka_unit_test(a_snapshot_is_each_pairs_value_as_of_the_position),
        cmocka_unit_test(a_snapshot_pair_whose_value_is_gone_stays_in_the_set_as_lost),
        cmocka_unit_test(a_follower_takes_the_step_reading_would_take),
        cmocka_unit_test(a_follower_reads_for_itself_wherever_reading_would_differ),
        cmocka_unit_test(a_follower_over_its_budget_or_lapped_gets_its_gap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
