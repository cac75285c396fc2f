"""Clear errors: malformed requests, unknown topics, stale and foreign cursors,
and the allow_gap alternative to OUT_OF_RANGE."""
import time

import grpc
import pytest

from tickfan_harness import Watch, StreamEnded, cursor_parts, expect_status, make_cursor, pb

# A 64K log at this rate wraps within a fraction of a second, while a Python
# reader still keeps up with the head.
WRAP_FLAGS = ("--log-size", "64K", "--sim-rate", "5000")


def first_data(stub, **fields):
    w = Watch(stub, **fields)
    try:
        return w.next_data()
    finally:
        w.cancel()


def wait_for_wrap(stub, timeout=15.0):
    """Waits until the log has dropped its first events; returns the first
    retained Data event."""
    deadline = time.monotonic() + timeout
    while True:
        ev = first_data(stub, topic="sim")
        if ev.data.seq > 1:
            return ev
        assert time.monotonic() < deadline, "the 64K log did not wrap"
        time.sleep(0.1)


@pytest.mark.parametrize("cursor", [
    "garbage",
    "1-xyz-5",
    "2-0123456789abcdef-5",
    "1-0123456789abcdef-",
    "1-0123456789abcdef-5x",
    "1-0123456789ABCDEF-5",
    "1-0123456789abcdef-007",
])
def test_malformed_cursor_is_invalid_argument(tickfand, cursor):
    srv = tickfand("--sim-rate", "200")
    expect_status(srv.stub(), grpc.StatusCode.INVALID_ARGUMENT, topic="sim", cursor=cursor)


def test_malformed_request_is_invalid_argument(tickfand):
    srv = tickfand("--sim-rate", "200")
    stub = srv.stub()
    expect_status(stub, grpc.StatusCode.INVALID_ARGUMENT, topic="")
    expect_status(stub, grpc.StatusCode.INVALID_ARGUMENT, topic="sim", kinds=[""])
    expect_status(stub, grpc.StatusCode.INVALID_ARGUMENT, topic="sim", keys=["x" * 300])


def test_unknown_topic_is_not_found_and_named(tickfand):
    srv = tickfand("--sim-rate", "200")
    ended = expect_status(srv.stub(), grpc.StatusCode.NOT_FOUND, topic="nosuchtopic")
    assert "nosuchtopic" in ended.details


def check_out_of_range(ended, epoch):
    """The OUT_OF_RANGE names the earliest cursor in details and trailers."""
    earliest = ended.trailers.get("tickfan-earliest-cursor")
    assert earliest, f"no tickfan-earliest-cursor trailer: {ended}"
    assert earliest in ended.details, f"details do not name {earliest}: {ended.details!r}"
    e_epoch, e_seq = cursor_parts(earliest)
    assert e_epoch == epoch, f"earliest cursor {earliest} is not of the log's epoch {epoch}"
    return earliest, e_seq


def test_stale_cursor_is_out_of_range_naming_the_earliest_cursor(tickfand):
    srv = tickfand(*WRAP_FLAGS)
    stub = srv.stub()
    retained = wait_for_wrap(stub)
    epoch, _ = cursor_parts(retained.cursor)
    stale = make_cursor(epoch, 0)

    ended = expect_status(stub, grpc.StatusCode.OUT_OF_RANGE, topic="sim", cursor=stale)
    earliest, e_seq = check_out_of_range(ended, epoch)
    assert e_seq >= retained.data.seq - 1, \
        f"earliest cursor {earliest} is older than an already dropped event"

    # Resuming from the named cursor works. The log keeps moving, so the
    # cursor may have aged out meanwhile: then follow the new one.
    for attempt in range(3):
        w = Watch(stub, topic="sim", cursor=earliest)
        try:
            got = [w.next_data() for _ in range(100)]
        except StreamEnded as e:
            assert e.code == grpc.StatusCode.OUT_OF_RANGE, e
            assert attempt < 2, f"earliest cursor aged out three times in a row: {e}"
            earliest, e_seq = check_out_of_range(e, epoch)
            continue
        finally:
            w.cancel()
        assert [g.data.seq for g in got] == list(range(e_seq + 1, e_seq + 101))
        break


def test_cursor_of_another_epoch_is_out_of_range(tickfand):
    srv = tickfand("--sim-rate", "500")
    stub = srv.stub()
    ev = first_data(stub, topic="sim")
    epoch, _ = cursor_parts(ev.cursor)
    other = "%016x" % (int(epoch, 16) ^ 0x5A5A)
    ended = expect_status(stub, grpc.StatusCode.OUT_OF_RANGE, topic="sim",
                          cursor=make_cursor(other, 1))
    earliest, e_seq = check_out_of_range(ended, epoch)
    # Nothing aged out of a 64M log yet: the earliest cursor is the start.
    assert e_seq == 0, earliest
    assert first_data(stub, topic="sim", cursor=earliest).data.seq == 1


def test_cursor_ahead_of_the_log_is_out_of_range(tickfand):
    srv = tickfand("--sim-rate", "500")
    stub = srv.stub()
    epoch, _ = cursor_parts(first_data(stub, topic="sim").cursor)
    ended = expect_status(stub, grpc.StatusCode.OUT_OF_RANGE, topic="sim",
                          cursor=make_cursor(epoch, 10**15))
    check_out_of_range(ended, epoch)


def test_stale_cursor_with_allow_gap_tells_the_gap_then_continues(tickfand):
    srv = tickfand(*WRAP_FLAGS)
    stub = srv.stub()
    retained = wait_for_wrap(stub)
    epoch, _ = cursor_parts(retained.cursor)
    stale = make_cursor(epoch, 0)

    w = Watch(stub, topic="sim", cursor=stale, allow_gap=True)
    try:
        ev = w.next()
        assert ev.WhichOneof("payload") == "gap", f"first event is not a Gap: {ev}"
        assert ev.gap.reason == pb.GAP_RETENTION, ev
        assert ev.gap.missed > 0, ev
        assert ev.gap.from_cursor == stale, ev
        assert ev.cursor
        got = [w.next_data() for _ in range(100)]
    finally:
        w.cancel()
    # Exactly the missed events are missing: the first Data is the next one.
    first = ev.gap.missed + 1
    assert [g.data.seq for g in got] == list(range(first, first + 100))
