"""Retention: a log that has wrapped refuses stale cursors with OUT_OF_RANGE
naming the earliest cursor, resumes from that cursor, tells a Gap instead
when the request allows one, and replays from its oldest retained event."""
import time

import grpc

from tickfan_harness import (StreamEnded, Watch, check_out_of_range, cursor_parts, make_cursor,
                             pb, read_contiguous)

# A 64K log holds ~400 sim events: at this rate it wraps within ~2 s, and
# each append evicts the oldest event only every ~5 ms, so a client that is
# told the earliest cursor can resume from it before it ages out, and a
# Python reader starting there catches up with the head long before the
# writer could lap it.
WRAP_FLAGS = ("--log-size", "64K", "--sim-rate", "200")


def wait_until_stale(stub, timeout=15.0):
    """Waits until the log has dropped its first event, i.e. until resuming
    from the very start of the log is refused. Returns (epoch, stale cursor,
    the OUT_OF_RANGE StreamEnded)."""
    w = Watch(stub, topic="sim")
    epoch, _ = cursor_parts(w.next().cursor)
    w.cancel()
    stale = make_cursor(epoch, 0)
    deadline = time.monotonic() + timeout
    while True:
        w = Watch(stub, topic="sim", cursor=stale)
        try:
            w.next()  # the log still holds seq 1: not stale yet
        except StreamEnded as e:
            assert e.code == grpc.StatusCode.OUT_OF_RANGE, e
            return epoch, stale, e
        finally:
            w.cancel()
        assert time.monotonic() < deadline, f"the 64K log did not wrap within {timeout} s"
        time.sleep(0.05)


def test_stale_cursor_is_out_of_range_naming_the_earliest_cursor(tickfand):
    srv = tickfand(*WRAP_FLAGS)
    stub = srv.stub()
    epoch, stale, ended = wait_until_stale(stub)
    earliest, e_seq = check_out_of_range(ended, epoch)
    assert e_seq > 0, f"earliest cursor {earliest} names the dropped start of the log"

    # Resuming from the named cursor works. The log keeps moving (it holds
    # well under a second of the feed), so on a busy machine the cursor may
    # have aged out before the client got to use it: then follow the newer
    # one it is given, for up to 20 s.
    deadline = time.monotonic() + 20
    for attempt in range(1000):
        w = Watch(stub, topic="sim", cursor=earliest)
        try:
            read_contiguous(w, 100, e_seq + 1, f"resume from earliest cursor {earliest}")
            break
        except StreamEnded as e:
            assert e.code == grpc.StatusCode.OUT_OF_RANGE, e
            assert time.monotonic() < deadline, \
                f"earliest cursor aged out {attempt + 1} times in a row for 20 s: {e}"
            earliest, e_seq = check_out_of_range(e, epoch)
        finally:
            w.cancel()


def test_stale_cursor_with_allow_gap_tells_the_gap_then_continues(tickfand):
    srv = tickfand(*WRAP_FLAGS)
    stub = srv.stub()
    epoch, stale, _ = wait_until_stale(stub)

    w = Watch(stub, topic="sim", cursor=stale, allow_gap=True)
    try:
        ev = w.next()
        assert ev.WhichOneof("payload") == "gap", f"first event is not a Gap: {ev}"
        assert ev.gap.reason == pb.GAP_RETENTION, ev
        assert ev.gap.missed > 0, ev
        assert ev.gap.from_cursor == stale, ev
        assert cursor_parts(ev.cursor)[0] == epoch, ev
        # Exactly the missed events are missing: the next Data is the one
        # after. The oldest retained event of this tiny log is evicted every
        # ~5 ms, so on a slow (sanitizer) build it may go before it is read:
        # that loss must be told too, by another exact GAP_RETENTION.
        expect = cursor_parts(ev.cursor)[1] + 1
        got = 0
        while got < 100:
            ev = w.next()
            kind = ev.WhichOneof("payload")
            if kind == "gap":
                assert ev.gap.reason == pb.GAP_RETENTION, ev
                assert cursor_parts(ev.gap.from_cursor)[1] == expect - 1, (expect, ev)
                assert cursor_parts(ev.cursor)[1] == expect - 1 + ev.gap.missed, (expect, ev)
                expect += ev.gap.missed
                continue
            assert kind in ("data", "heartbeat", "end_of_backlog"), ev
            if kind == "data":
                assert ev.data.seq == expect, f"expected seq {expect}, got {ev}"
                expect += 1
                got += 1
    finally:
        w.cancel()


def test_start_earliest_on_a_wrapped_log_replays_from_the_oldest_retained_event(tickfand):
    srv = tickfand(*WRAP_FLAGS)
    stub = srv.stub()
    epoch, _, ended = wait_until_stale(stub)
    _, e_seq = check_out_of_range(ended, epoch)

    w = Watch(stub, topic="sim")  # START_EARLIEST, the default
    try:
        first = w.next()
        assert first.WhichOneof("payload") == "data", \
            f"a replay from the oldest retained event began with {first}"
        # The log holds ~400 events and evicts one per ~5 ms: the replay starts
        # within a few events of the earliest cursor named just before, far
        # from the head.
        assert e_seq < first.data.seq <= e_seq + 50, \
            f"replay starts at seq {first.data.seq}, earliest cursor named seq {e_seq}"
        read_contiguous(w, 200, first.data.seq + 1, f"replay from seq {first.data.seq}")
    finally:
        w.cancel()


# Fast enough that the oldest event is evicted every ~50 us: a cursor just
# inside the log when the request arrives is often overwritten before the
# stream reads on from it.
RACE_FLAGS = ("--log-size", "64K", "--sim-rate", "20000")


def test_a_cursor_overwritten_before_the_first_event_is_refused_never_gapped(tickfand):
    """A resume without allow_gap starts exactly after its cursor or is
    refused with OUT_OF_RANGE, however the writer races it: a Gap is only for
    requests that allow one. A START_EARLIEST stream raced the same way starts
    at the oldest event left, with nothing to tell."""
    srv = tickfand(*RACE_FLAGS)
    stub = srv.stub()
    epoch, stale, ended = wait_until_stale(stub)
    # How many events the log holds: the head (a live event) less the
    # earliest retained one. A cursor less than half of that past the
    # earliest is still inside the log whatever the build's speed.
    _, e_seq = check_out_of_range(ended, epoch)
    live = Watch(stub, topic="sim", start=pb.START_LIVE)
    try:
        span = live.next_data().data.seq - e_seq
    finally:
        live.cancel()
    assert span > 8, f"a 64K log holds only {span} events"
    since = srv.mark()
    outcomes = {"data": 0, "out_of_range": 0}
    # Resume from `offset` events past the earliest cursor last named. The
    # offset that races the writer depends on how fast this build answers,
    # so it walks: up after a refusal, down after a resume. It settles where
    # the cursor is overwritten about as the stream reads on from it, and
    # both outcomes are exercised on a fast build and a sanitizer one alike.
    offset = 0
    start = time.monotonic()
    attempt = 0
    while time.monotonic() < start + 4 or (
            not (outcomes["data"] and outcomes["out_of_range"]) and time.monotonic() < start + 20):
        attempt += 1
        _, e_seq = check_out_of_range(ended, epoch)
        cursor = make_cursor(epoch, e_seq + offset)
        w = Watch(stub, topic="sim", cursor=cursor)
        try:
            ev = w.next()
            assert ev.WhichOneof("payload") == "data", \
                f"attempt {attempt}: a resume from {cursor} without allow_gap began with {ev}"
            assert ev.data.seq == cursor_parts(cursor)[1] + 1, (cursor, ev)
            outcomes["data"] += 1
            offset = max(0, offset - 1)
        except StreamEnded as e:
            check_out_of_range(e, epoch)
            outcomes["out_of_range"] += 1
            offset = min(span // 2, offset + 2)
            ended = e
        finally:
            w.cancel()
        if outcomes["data"] and attempt % 2:
            w = Watch(stub, topic="sim")  # START_EARLIEST
            try:
                ev = w.next()
                assert ev.WhichOneof("payload") == "data", \
                    f"a replay from the oldest retained event began with {ev}"
            finally:
                w.cancel()
        w = Watch(stub, topic="sim", cursor=stale)
        try:
            w.next()
        except StreamEnded as e:
            ended = e
        finally:
            w.cancel()
    races = sum("msg=lapped_before_first_event" in line for line in srv.lines[since:])
    print(f"{attempt} resumes (span {span}, last offset {offset}): {outcomes}; refused after being overwritten before the first event: {races}")
    assert outcomes["data"] > 0 and outcomes["out_of_range"] > 0, outcomes
