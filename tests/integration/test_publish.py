"""Publish (client-streaming): records appended in order, the response counts
them with the last cursor; an invalid record ends the call with
INVALID_ARGUMENT naming its index and the records before it are kept; an
unknown topic is NOT_FOUND; a subscriber sees exactly what was published."""
import grpc
import pytest

from tickfan_harness import PY_DIR, Watch, cursor_parts, pb  # noqa: F401
from events.v1 import publisher_pb2 as ppb  # noqa: E402
from events.v1 import publisher_pb2_grpc as ppb_grpc  # noqa: E402

FLAGS = ("--feed", "none", "--topic", "pub", "--topic", "other")


def records(n, start=1, topic="pub"):
    for i in range(start, start + n):
        yield ppb.PublishRequest(topic=topic, kind="trade" if i % 3 == 0 else "quote",
                                 key=f"K{i % 5}", body=f"body-{i}".encode(),
                                 emitted_at_unix_micros=1000 + i, source_seq=i)


def test_published_records_arrive_in_order_exactly_once(tickfand):
    srv = tickfand(*FLAGS)
    stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))
    resp = stub.Publish(records(5000), timeout=30)
    assert resp.accepted == 5000
    assert cursor_parts(resp.last_cursor)[1] == 5000
    w = Watch(srv.stub(), topic="pub")
    got = [w.next_data().data for _ in range(5000)]
    w.cancel()
    assert [d.seq for d in got] == list(range(1, 5001))
    assert [d.body for d in got] == [f"body-{i}".encode() for i in range(1, 5001)]
    assert [d.emitted_at_unix_micros for d in got] == [1000 + i for i in range(1, 5001)]
    assert {d.kind for d in got} == {"quote", "trade"}


def test_a_second_publish_continues_the_topic_sequence(tickfand):
    srv = tickfand(*FLAGS)
    stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))
    assert stub.Publish(records(10), timeout=10).accepted == 10
    resp = stub.Publish(records(7, start=11), timeout=10)
    assert resp.accepted == 7 and cursor_parts(resp.last_cursor)[1] == 17


def test_an_invalid_record_ends_the_call_naming_its_index_and_keeps_the_ones_before(tickfand):
    srv = tickfand(*FLAGS)
    stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))

    def stream():
        yield from records(700)
        yield ppb.PublishRequest(topic="pub", kind="k" * 300, key="x")  # kind too long
        yield from records(50, start=701)

    with pytest.raises(grpc.RpcError) as e:
        stub.Publish(stream(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "record 700" in e.value.details()
    trailers = dict(e.value.trailing_metadata())
    assert trailers["tickfan-accepted"] == "700"
    assert cursor_parts(trailers["tickfan-last-cursor"])[1] == 700
    w = Watch(srv.stub(), topic="pub")
    seqs = []
    while True:
        ev = w.next()
        if ev.WhichOneof("payload") == "end_of_backlog":
            break
        seqs.append(ev.data.seq)
    w.cancel()
    assert seqs == list(range(1, 701))  # kept; nothing after the invalid one


def test_an_unknown_topic_is_not_found_with_its_index(tickfand):
    srv = tickfand(*FLAGS)
    stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))

    def stream():
        yield from records(3)
        yield from records(1, start=4, topic="nope")

    with pytest.raises(grpc.RpcError) as e:
        stub.Publish(stream(), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "record 3" in e.value.details() and "nope" in e.value.details()
    assert dict(e.value.trailing_metadata())["tickfan-accepted"] == "3"


def test_an_empty_publish_accepts_nothing(tickfand):
    srv = tickfand(*FLAGS)
    stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))
    resp = stub.Publish(iter(()), timeout=10)
    assert resp.accepted == 0 and resp.last_cursor == ""


def test_a_record_too_large_for_the_topic_log_is_invalid_with_its_index(tickfand):
    """Within the request size limit but over half the topic's log: the log
    refuses it (EMSGSIZE), the call ends INVALID_ARGUMENT naming it, and the
    records before it are kept."""
    srv = tickfand("--feed", "none", "--topic", "pub", "--log-size", "64K")
    stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))

    def stream():
        yield from records(3)
        yield ppb.PublishRequest(topic="pub", kind="quote", key="BIG", body=b"x" * 40000)
        yield from records(2, start=4)

    with pytest.raises(grpc.RpcError) as e:
        stub.Publish(stream(), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "record 3: too large for the log of topic 'pub'" in e.value.details(), e.value
    assert dict(e.value.trailing_metadata())["tickfan-accepted"] == "3"
