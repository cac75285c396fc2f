"""Clear errors: malformed requests and cursors, unknown topics, cursors of
another epoch or ahead of the log."""
import grpc
import pytest

import h2raw
from tickfan_harness import check_out_of_range, cursor_parts, expect_status, first_data, make_cursor


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


def test_a_request_that_does_not_decode_or_never_comes_is_invalid_argument(tickfand):
    """Not a reset, so still the client's error (raw HTTP/2): bytes that are
    not a WatchRequest, and a call half-closed without any request."""
    h2raw.require_h2()
    srv = tickfand("--sim-rate", "200")
    with h2raw.Conn(srv.addr) as c:
        bad = c.request(h2raw.WATCH, b"\xff\xff\xff")
        none = c.request(h2raw.WATCH, None)
        c.pump_until(lambda: bad.ended and none.ended, 10)
    assert bad.status()[:2] == (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                "malformed WatchRequest"), bad.status()
    assert none.status()[:2] == (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                 "no WatchRequest: the client sent none"), none.status()


def test_unknown_topic_is_not_found_and_named(tickfand):
    srv = tickfand("--sim-rate", "200")
    ended = expect_status(srv.stub(), grpc.StatusCode.NOT_FOUND, topic="nosuchtopic")
    assert "nosuchtopic" in ended.details


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
