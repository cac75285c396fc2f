/*
 * reader: one subscriber's position in its topic log and the rules that
 * decide what it gets next (see reader.h). No gRPC: the caller sends.
 */
#include "reader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define SCAN_BUDGET 512 /* filtered-out records scanned before yielding */
#define LOOKAHEAD 64    /* records scanned after a send for the next match */

enum {
    CODE_INVALID_ARGUMENT = 3,
    CODE_NOT_FOUND = 5,
    CODE_RESOURCE_EXHAUSTED = 8,
    CODE_OUT_OF_RANGE = 11
}; /* grpc_status_code values (gRPC's headers are not ours here) */

/* The topic's lag budget in log bytes (SIGHUP may change it): the setting,
 * or half the log, and never more than three quarters of it. */
static uint64_t lag_budget(const struct reader *r)
{
    uint64_t cap = ringlog_capacity(r->topic->log);
    int64_t set = atomic_load_explicit(&r->topic->max_lag_bytes, memory_order_relaxed);
    uint64_t budget = set > 0 ? (uint64_t)set : cap / 2;
    return budget > cap / 4 * 3 ? cap / 4 * 3 : budget;
}

/* The topic's lag budget in events (0: none; SIGHUP may change it). */
static uint64_t lag_budget_events(const struct reader *r)
{
    int64_t set = atomic_load_explicit(&r->topic->max_lag_events, memory_order_relaxed);
    return set > 0 ? (uint64_t)set : 0;
}

void reader_lag(const struct reader *r, uint64_t *events, uint64_t *bytes)
{
    ringlog_t *log = r->topic->log;
    uint64_t head = ringlog_head_seq(log);
    *events = head >= r->it.seq ? head - r->it.seq + 1 : 0;
    *bytes = ringlog_head_pos(log) - r->it.pos;
}

/* Over either budget: more log bytes or more events behind the head. */
static bool over_budget(const struct reader *r)
{
    uint64_t events, bytes, max_events = lag_budget_events(r);
    reader_lag(r, &events, &bytes);
    return bytes > lag_budget(r) || (max_events && events > max_events);
}

static void end_with(struct reader_end *end, int code, const char *md_key, const char *md_value)
{
    end->code = code;
    end->md_key = md_key;
    snprintf(end->md_value, sizeof(end->md_value), "%s", md_value ? md_value : "");
    end->stalled = false;
}

/* Queues a Gap: `missed` matching events lost after `from`; the reader goes
 * on from where it is. */
static void queue_gap(struct reader *r, uint64_t missed, int reason, struct cursor from)
{
    r->gap_from = from;
    r->gap_missed = missed;
    r->gap_reason = (uint8_t)reason;
    r->gap_pending = true;
}

/* The subscriber is over its lag budget, or was lapped: apply its policy.
 * stalled: its send is held by flow control (the client does not read).
 * DISCONNECT then ends it at once (true, *end set; the caller sends the
 * status behind the held message); DROP and CONFLATE move it to the head now
 * and queue the Gap, the first thing it gets when it reads again. */
static bool overflow(struct reader *r, bool stalled, struct reader_end *end)
{
    ringlog_t *log = r->topic->log;
    struct cursor from = reader_cursor(r);
    char text[CURSOR_TEXT_MAX];
    if (r->overflow == EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT) {
        uint64_t lag_events, lag_bytes, max_events = lag_budget_events(r),
                                        max_bytes = lag_budget(r);
        reader_lag(r, &lag_events, &lag_bytes);
        cursor_format(from, text);
        /* name the budget crossed; neither: lapped while replaying */
        if (max_events && lag_events > max_events)
            snprintf(end->message, sizeof(end->message),
                     "slow consumer: %llu events behind the head of topic '%s', over its lag "
                     "budget of %llu events; resume from cursor %s",
                     (unsigned long long)lag_events, r->topic->name, (unsigned long long)max_events,
                     text);
        else if (lag_bytes > max_bytes)
            snprintf(end->message, sizeof(end->message),
                     "slow consumer: %llu bytes of log behind the head of topic '%s', over its "
                     "lag budget of %llu bytes; resume from cursor %s",
                     (unsigned long long)lag_bytes, r->topic->name, (unsigned long long)max_bytes,
                     text);
        else
            snprintf(end->message, sizeof(end->message),
                     "slow consumer: the log of topic '%s' overwrote events before they were "
                     "read (retention); resume from cursor %s",
                     r->topic->name, text);
        log_info("msg=slow_consumer id=%llu topic=%s policy=disconnect cursor=%s stalled=%d",
                 (unsigned long long)r->id, r->topic->name, text, stalled);
        counter_add(&r->ctr->slow[EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT], 1);
        end_with(end, CODE_RESOURCE_EXHAUSTED, "tickfan-cursor", text);
        end->stalled = stalled;
        return true;
    }
    /* OVERFLOW_DROP / CONFLATE: skip to the head, counting the matching
     * events skipped (and, to conflate, noting which (kind, key) changed).
     * Records overwritten before they could be read are counted whole (they
     * are lost either way) and make conflation fall back to every key. */
    bool conflate = r->overflow == EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_CONFLATE;
    bool keys_lost = false; /* records overwritten before their keys were noted */
    if (conflate && !r->snapset)
        r->snapset = calloc(1, sizeof(*r->snapset));
    if (conflate && !r->snapset)
        keys_lost = true;
    struct ringlog_iter target;
    ringlog_seek_head(log, &target);
    uint64_t missed = 0;
    bool widen = r->gap_pending && r->gap_slow; /* not sent yet: one Gap for both */
    if (widen) {
        from = r->gap_from;
        missed = r->gap_missed;
    }
    uint64_t missed_before = missed;
    while (r->it.seq < target.seq) {
        struct ringlog_view v;
        int rc = ringlog_peek(log, &r->it, &v);
        if (rc == -ESTALE) {
            uint64_t first = ringlog_first_seq(log);
            if (first > target.seq)
                first = target.seq;
            missed += first > r->it.seq ? first - r->it.seq : 0;
            keys_lost = conflate;
            if (ringlog_seek(log, first, &r->it) != 0)
                r->it = target;
            continue;
        }
        if (rc != 0)
            break;
        bool match = reader_matches(r, &v);
        bool noted = !conflate || !match || keys_lost || v.type != RINGLOG_DATA ||
                     keyset_put(r->snapset, v.kind, v.kind_len, v.key, v.key_len, v.seq);
        if (!ringlog_view_valid(log, &r->it))
            continue; /* lapped under us: handled by the next peek */
        if (!noted)
            keys_lost = true; /* out of memory */
        missed += match;
        ringlog_advance(&r->it, &v);
    }
    r->it = target;
    r->dropped += missed - missed_before;
    counter_add(&r->ctr->dropped_events, missed - missed_before);
    /* a Gap widened before it could be sent is the same loss, told once */
    if (!widen) {
        counter_add(&r->ctr->slow[r->overflow], 1);
        counter_add(&r->ctr->gaps, 1);
        log_info("msg=slow_consumer id=%llu topic=%s policy=%s missed=%llu conflated_keys=%zu "
                 "stalled=%d",
                 (unsigned long long)r->id, r->topic->name, conflate ? "conflate" : "drop",
                 (unsigned long long)(missed - missed_before),
                 conflate && r->snapset ? r->snapset->count : (size_t)0, stalled);
        r->gap_stalled = stalled;
    }
    queue_gap(r, missed, EVENTS__V1__GAP_REASON__GAP_SLOW_CONSUMER, from);
    r->gap_slow = true;
    if (conflate && missed) {
        /* then the latest value of each pair that changed in the skipped
         * range, read back from the log (the lag budget is below the log
         * size, so it still holds them); if some keys are unknown (lapped),
         * every matching pair's last value before the head from the cache */
        if (keys_lost && r->snapset)
            snapset_add_cache(r->topic->log, reader_filter(r), r->snapset, target.seq, false);
        r->snap_active = r->snapset != NULL;
        r->snap_index = 0;
    }
    return false;
}

/* Ends the stream with OUT_OF_RANGE: cursor `c` is older than the log
 * retains (`why` says how), naming the earliest cursor, where `r` is left. */
static void refuse_cursor(struct reader *r, struct cursor c, const char *why,
                          struct reader_end *end)
{
    char text[CURSOR_TEXT_MAX], earliest_text[CURSOR_TEXT_MAX];
    ringlog_seek_oldest(r->topic->log, &r->it);
    cursor_format(reader_cursor(r), earliest_text);
    cursor_format(c, text);
    snprintf(end->message, sizeof(end->message),
             "cursor %s of topic '%s' %s; earliest available cursor is %s", text, r->topic->name,
             why, earliest_text);
    end_with(end, CODE_OUT_OF_RANGE, "tickfan-earliest-cursor", earliest_text);
}

/* Lapped while replaying the backlog: the records it had not read yet are
 * gone from the log (retention), not skipped for being slow. Tell it and go
 * on from the oldest record left; a DISCONNECT subscriber is ended instead.
 * Before its first message the request decides, as if it had come a moment
 * later: a cursor without allow_gap is refused (OUT_OF_RANGE), and a start
 * position starts again from the oldest record left, with nothing to tell.
 * Returns 1 in that last case (scan on), 0 when a Gap is queued, -1 when the
 * stream ends with *end. */
static int lapped_in_backlog(struct reader *r, struct reader_end *end)
{
    ringlog_t *log = r->topic->log;
    struct cursor from = reader_cursor(r);
    if (!r->sent_first && r->start == READER_START_CURSOR) {
        log_info("msg=lapped_before_first_event id=%llu topic=%s action=refused",
                 (unsigned long long)r->id, r->topic->name);
        refuse_cursor(r, from, "was overwritten before the stream could read on from it", end);
        return -1;
    }
    if (!r->sent_first && r->start == READER_START_POSITION) {
        /* may repeat while the writer keeps overtaking it: debug only */
        log_debug("msg=lapped_before_first_event id=%llu topic=%s action=reseek",
                  (unsigned long long)r->id, r->topic->name);
        ringlog_seek_oldest(log, &r->it);
        return 1;
    }
    if (r->overflow == EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT)
        return overflow(r, false, end) ? -1 : 0;
    ringlog_seek_oldest(log, &r->it);
    uint64_t missed = r->it.seq > from.seq + 1 ? r->it.seq - from.seq - 1 : 0;
    r->dropped += missed;
    counter_add(&r->ctr->dropped_events, missed);
    counter_add(&r->ctr->gaps, 1);
    log_info("msg=lapped_in_backlog id=%llu topic=%s missed=%llu", (unsigned long long)r->id,
             r->topic->name, (unsigned long long)missed);
    queue_gap(r, missed, EVENTS__V1__GAP_REASON__GAP_RETENTION, from);
    r->gap_slow = false;
    return 0;
}

/* Behind the writer: the lag budget (live phase) or a lap (any time).
 * Returns 1 when the reader was only moved and may scan on, 0 when a Gap is
 * queued, -1 when the stream ends with *end. */
static int fell_behind(struct reader *r, struct reader_end *end)
{
    if (r->eob_sent)
        return overflow(r, false, end) ? -1 : 0;
    return lapped_in_backlog(r, end);
}

bool reader_next_is_queued(struct reader *r)
{
    ringlog_t *log = r->topic->log;
    for (int budget = LOOKAHEAD; budget > 0; budget--) {
        struct ringlog_view v;
        if (ringlog_peek(log, &r->it, &v) != 0)
            return false;
        bool match = reader_matches(r, &v);
        if (!ringlog_view_valid(log, &r->it))
            return false;
        if (match)
            return true;
        ringlog_advance(&r->it, &v);
    }
    return false;
}

/* The queued Gap, as the step. */
static void take_gap(struct reader *r, struct reader_step *step)
{
    if (r->gap_slow && r->gap_stalled)
        /* the line at the crossing said what was skipped then; this one the
         * episode's total, the count in the Gap */
        log_info("msg=slow_consumer_told id=%llu topic=%s missed=%llu", (unsigned long long)r->id,
                 r->topic->name, (unsigned long long)r->gap_missed);
    step->action = READER_GAP;
    step->gap = (struct reader_gap){.at = reader_cursor(r),
                                    .from = r->gap_from,
                                    .missed = r->gap_missed,
                                    .reason = r->gap_reason};
    r->gap_pending = false;
    r->gap_slow = false;
}

void reader_next(struct reader *r, uint64_t limit, const struct reader_encoder *enc,
                 struct reader_step *step)
{
    ringlog_t *log = r->topic->log;
    /* A slow-consumer Gap queued while the send was held may be stale by
     * the time the send completes: the reader fell behind again since.
     * Widen it to the head now, so one Gap tells the whole episode. */
    if (r->gap_pending && r->gap_slow && r->eob_sent && over_budget(r) &&
        overflow(r, false, &step->end)) {
        step->action = READER_END;
        return;
    }
    if (r->gap_pending) {
        take_gap(r, step);
        return;
    }
    if (r->snap_active) {
        step->action = READER_SNAPSHOT;
        return;
    }
    for (int budget = SCAN_BUDGET; budget > 0; budget--) {
        /* The lag budget is for live subscribers: one replaying the backlog
         * is behind by design, and only being lapped stops it. */
        if (r->eob_sent && over_budget(r)) {
            if (overflow(r, false, &step->end))
                step->action = READER_END;
            else
                reader_next(r, limit, enc, step); /* the Gap it queued */
            return;
        }
        if (!r->eob_sent && r->it.seq > r->backlog_end) {
            /* everything that was in the log when the stream started is out */
            r->eob_sent = true;
            step->action = READER_EOB;
            return;
        }
        struct ringlog_view v;
        struct ringlog_iter from = r->it;
        /* a subscription reads up to where its stream's flush began, as the
         * others of the stream do: what came since goes into the next
         * message for all of them, shared, not into this one for some */
        int rc = r->it.seq > limit ? -EAGAIN : ringlog_peek(log, &r->it, &v);
        if (rc == -EAGAIN) {
            if (!r->eob_sent) {
                r->eob_sent = true;
                step->action = READER_EOB;
                return;
            }
            step->action = READER_WAIT;
            return;
        }
        bool match = false, got = false;
        if (rc == 0) {
            match = reader_matches(r, &v);
            got = match && enc->encode(enc->ctx, &r->it, &v);
        }
        if (rc != 0 || (match && !got) || !ringlog_view_valid(log, &r->it)) {
            /* lapped, or what we read may be torn: discard it */
            if (got)
                enc->discard(enc->ctx);
            int how = fell_behind(r, &step->end);
            if (how > 0)
                continue; /* re-seeked; the scan budget bounds the retries */
            if (how < 0)
                step->action = READER_END;
            else
                reader_next(r, limit, enc, step); /* the Gap it queued */
            return;
        }
        ringlog_advance(&r->it, &v);
        if (match) {
            step->action = READER_EVENT;
            step->seq = v.seq;
            step->from = from;
            return;
        }
    }
    step->action = READER_YIELD; /* more to scan: come back after others */
}

bool reader_follow(struct reader *r, uint64_t limit, const struct reader_hop *hop)
{
    /* each test is one reader_next makes before it reads, in its order;
     * what it would then read is the hop's record */
    if (r->has_filter || !r->eob_sent || r->gap_pending || r->snap_active ||
        r->topic->log != hop->log || r->it.pos != hop->from.pos || r->it.seq != hop->from.seq ||
        r->it.seq > limit || over_budget(r) || !ringlog_view_valid(hop->log, &r->it))
        return false;
    r->it = hop->to;
    return true;
}

bool reader_check_stalled(struct reader *r, struct reader_end *end)
{
    if (!r->eob_sent || (r->snap_active && !r->gap_slow) || (r->gap_pending && !r->gap_slow) ||
        !over_budget(r))
        return false;
    return overflow(r, true, end);
}

/* ---- opening ----------------------------------------------------------- */

/* Positions the reader per request. Returns true when it may start;
 * otherwise *end says why not. */
static bool position(struct reader *r, const Events__V1__WatchRequest *req, struct reader_end *end)
{
    ringlog_t *log = r->topic->log;
    uint64_t epoch = ringlog_epoch(log);

    if (req->cursor && req->cursor[0]) {
        counter_add(&r->ctr->resumes, 1);
        r->start = req->allow_gap ? READER_START_CURSOR_GAP : READER_START_CURSOR;
        size_t len = strlen(req->cursor);
        struct cursor c;
        if (cursor_parse(req->cursor, len, &c) != 0) {
            snprintf(end->message, sizeof(end->message), "malformed cursor '%.64s'", req->cursor);
            end_with(end, CODE_INVALID_ARGUMENT, NULL, NULL);
            return false;
        }
        const char *why = NULL;
        if (c.epoch != epoch)
            why = "is from another epoch of the topic's log (the log was recreated)";
        else if (c.seq > ringlog_head_seq(log))
            why = "is ahead of the topic's log";
        else if (ringlog_seek(log, c.seq + 1, &r->it) != 0)
            why = "is older than what the topic retains";
        else
            return true;
        if (req->allow_gap && (c.epoch != epoch || c.seq <= ringlog_head_seq(log))) {
            ringlog_seek_oldest(log, &r->it);
            /* from the same epoch, exactly the records between; from another,
             * unknown (0) */
            uint64_t missed =
                c.epoch == epoch && r->it.seq > c.seq + 1 ? r->it.seq - (c.seq + 1) : 0;
            queue_gap(r, missed, EVENTS__V1__GAP_REASON__GAP_RETENTION, c);
            r->gap_slow = false;
            return true;
        }
        refuse_cursor(r, c, why, end);
        return false;
    }

    switch (req->start) {
    case EVENTS__V1__START_POSITION__START_EARLIEST:
        ringlog_seek_oldest(log, &r->it);
        return true;
    case EVENTS__V1__START_POSITION__START_LIVE:
        ringlog_seek_head(log, &r->it);
        return true;
    case EVENTS__V1__START_POSITION__START_AT_TIME:
        if (req->start_unix_micros <= 0) {
            snprintf(end->message, sizeof(end->message),
                     "start=START_AT_TIME needs start_unix_micros > 0");
            end_with(end, CODE_INVALID_ARGUMENT, NULL, NULL);
            return false;
        }
        ringlog_seek_time(log, req->start_unix_micros, &r->it);
        return true;
    default:
        snprintf(end->message, sizeof(end->message), "unknown start position %d", (int)req->start);
        end_with(end, CODE_INVALID_ARGUMENT, NULL, NULL);
        return false;
    }
}

bool reader_open(struct reader *r, const struct topics *topics, const Events__V1__WatchRequest *req,
                 struct reader_counters *ctr, uint64_t id, struct reader_end *end)
{
    r->ctr = ctr;
    r->id = id;
    if (!req->topic || !req->topic[0]) {
        snprintf(end->message, sizeof(end->message), "topic is required");
        end_with(end, CODE_INVALID_ARGUMENT, NULL, NULL);
        return false;
    }
    r->topic = topics_find(topics, req->topic, strlen(req->topic));
    if (!r->topic) {
        snprintf(end->message, sizeof(end->message), "unknown topic '%.128s'", req->topic);
        end_with(end, CODE_NOT_FOUND, NULL, NULL);
        return false;
    }
    const char *why = NULL;
    int rc = filter_init(&r->filter, req->kinds, req->n_kinds, req->keys, req->n_keys, &why);
    if (rc) {
        snprintf(end->message, sizeof(end->message), "invalid filter: %s",
                 rc == -EINVAL ? why : "out of memory");
        end_with(end, rc == -EINVAL ? CODE_INVALID_ARGUMENT : CODE_RESOURCE_EXHAUSTED, NULL, NULL);
        return false;
    }
    r->has_filter = req->n_kinds || req->n_keys;

    switch (req->overflow) {
    case EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DEFAULT:
        r->overflow = atomic_load(&r->topic->overflow);
        break;
    case EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DROP:
    case EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_CONFLATE:
    case EVENTS__V1__OVERFLOW_POLICY__OVERFLOW_DISCONNECT:
        r->overflow = req->overflow;
        break;
    default:
        snprintf(end->message, sizeof(end->message), "unknown overflow policy %d",
                 (int)req->overflow);
        end_with(end, CODE_INVALID_ARGUMENT, NULL, NULL);
        return false;
    }
    if (!position(r, req, end))
        return false;
    r->backlog_end = ringlog_head_seq(r->topic->log);
    if (req->snapshot) {
        /* the state as of where the stream starts: every pair's last value
         * before it, then the events from it on */
        bool live = (!req->cursor || !req->cursor[0]) &&
                    req->start == EVENTS__V1__START_POSITION__START_LIVE;
        if (!reader_snapshot_prepare(r, live)) {
            snprintf(end->message, sizeof(end->message), "out of memory for the snapshot");
            end_with(end, CODE_RESOURCE_EXHAUSTED, NULL, NULL);
            return false;
        }
    }
    return true;
}

void reader_free(struct reader *r)
{
    if (r->has_filter)
        filter_free(&r->filter);
    r->has_filter = false;
    reader_snapshot_end(r);
}

/* ---- snapshot and conflation sets ---------------------------------------- */

#define SNAPSHOT_LIVE_ATTEMPTS 8 /* positions a live snapshot tries before it scans */

/* The snapshot as of the stream's position, exactly: the value every
 * matching pair had just before r->it. A live start may move the position
 * forward to one where the cache is consistent; any other start is fixed,
 * and pairs that changed since come from a scan of the log up to it. A live
 * start whose every position was overtaken keeps the last one and its
 * cached values, and scans too: the pairs that only the cache holds any
 * more are in the snapshot whatever the writer does. A pair that existed
 * before the position but whose value as of it neither the log nor the
 * cache holds any more stays in the set with value 0: counted as lost, and
 * told by the Gap that ends the snapshot. */
bool reader_snapshot_prepare(struct reader *r, bool live)
{
    r->snapset = calloc(1, sizeof(*r->snapset));
    if (!r->snapset)
        return false;
    size_t late = 0;
    for (int attempt = 1;; attempt++) {
        late = snapset_add_cache(r->topic->log, reader_filter(r), r->snapset, r->it.seq, true);
        if (!late || !live)
            break;
        if (attempt == SNAPSHOT_LIVE_ATTEMPTS) {
            log_debug("msg=snapshot_overtaken id=%llu topic=%s attempts=%d late=%zu action=scan",
                      (unsigned long long)r->id, r->topic->name, attempt, late);
            break;
        }
        keyset_free(r->snapset); /* the cache moved past us: take a newer position */
        ringlog_seek_head(r->topic->log, &r->it);
        r->backlog_end = r->it.seq - 1;
    }
    if (late)
        snapset_add_scan(r->topic->log, reader_filter(r), r->snapset, r->it.seq);
    r->snap_active = true;
    r->snap_initial = true;
    r->snap_index = 0;
    return true;
}

void reader_snapshot_end(struct reader *r)
{
    r->snap_active = false;
    r->snap_initial = false;
    if (r->snapset) {
        keyset_free(r->snapset);
        free(r->snapset);
        r->snapset = NULL;
    }
}
