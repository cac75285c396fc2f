"""Limits the client can see: beyond --max-streams a Watch is refused with
RESOURCE_EXHAUSTED (never queued silently), and a slot frees up when a
stream ends; a request over the size limit is RESOURCE_EXHAUSTED."""
import grpc
import pytest

from tickfan_harness import Watch, expect_status, pb, pb_grpc


def test_streams_beyond_max_streams_are_refused_and_slots_come_back(tickfand):
    srv = tickfand("--max-streams", "2", "--feed", "none", "--topic", "t", "--heartbeat-ms", "100")
    stub = srv.stub()
    a = Watch(stub, topic="t")
    b = Watch(stub, topic="t")
    a.next()
    b.next()  # both open (EndOfBacklog)
    ended = expect_status(stub, grpc.StatusCode.RESOURCE_EXHAUSTED, topic="t")
    assert "too many streams" in ended.details and "2" in ended.details
    mark = srv.mark()
    a.cancel()
    srv.wait_event("stream_closed", since=mark, streams_live=1)
    c = Watch(stub, topic="t")
    assert c.next().WhichOneof("payload") in ("end_of_backlog", "heartbeat")
    b.cancel()
    c.cancel()


def test_a_request_over_the_size_limit_is_refused_with_resource_exhausted(tickfand):
    """Requests are capped at 1 MiB (GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH): a
    larger Watch request is refused by gRPC before the server reads it, and
    the server keeps serving."""
    srv = tickfand("--feed", "none", "--topic", "t")
    stub = pb_grpc.WatcherStub(srv.channel())
    keys = ["k" * 200 + str(i) for i in range(6000)]  # ~1.2 MB of keys
    with pytest.raises(grpc.RpcError) as e:
        for ev in stub.Watch(pb.WatchRequest(topic="t", keys=keys), timeout=10):
            raise AssertionError(f"an event for an oversize request: {ev}")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert "larger than max" in e.value.details(), e.value.details()
    w = Watch(srv.stub(), topic="t", keys=keys[:10])
    assert w.next().WhichOneof("payload") == "end_of_backlog"
    w.cancel()
