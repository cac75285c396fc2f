"""Limits the client can see: beyond --max-streams a Watch is refused with
RESOURCE_EXHAUSTED (never queued silently), and a slot frees up when a
stream ends."""
import grpc

from tickfan_harness import Watch, expect_status


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
