"""--auto-create-topics: a topic a feed (or a Publish call) names is created
on first use, its subscribers get every frame from seq 1, it survives a
restart (its log is reopened from the data directory before the feed names
it again), names that are invalid or beyond the topic limit are refused and
counted while the good frames around them are kept. Off (the default), such
frames are rejected and counted (test_feeds.py) and Publish gets NOT_FOUND
(test_publish.py)."""
import socket
import time

import grpc
import pytest

import tickfan_harness as h
from tickfan_harness import Watch, cursor_parts, expect_status, logfmt, pb
from test_feeds import SYMBOLS, collect, check_ticks, data_of, expected_ticks, free_port, good, \
    run_feed
from test_metrics import scrape, value
from events.v1 import publisher_pb2 as ppb
from events.v1 import publisher_pb2_grpc as ppb_grpc

FLAGS = ("--auto-create-topics", "--heartbeat-ms", "200", "--log-size", "256K",
         "--metrics-listen", "127.0.0.1:0")


def udp_server(tickfand, *extra):
    port = free_port()
    spec = f"udp://127.0.0.1:{port}"
    return tickfand(*FLAGS, "--feed", spec, *extra), spec, port


def test_topics_named_by_a_feed_are_created_and_deliver_every_frame(tickfand, tmp_path):
    srv, spec, _ = udp_server(tickfand)
    assert logfmt(next(ln for ln in srv.lines if "msg=listening" in ln))["auto_create_topics"] \
        == "true"
    # not there until the feed names it: NOT_FOUND, not an empty stream
    expect_status(srv.stub(), grpc.StatusCode.NOT_FOUND, topic="md")
    run_feed("send", "--to", spec, "--topic", "md", "--count", 40, "--rate", 0, "--seed", 7,
             "--symbols", SYMBOLS)
    run_feed("send", "--to", spec, "--topic", "fx.eur-usd_1", "--count", 25, "--rate", 0,
             "--seed", 8, "--symbols", SYMBOLS)
    srv.wait_event("topic_created", topic="fx.eur-usd_1")
    check_ticks(data_of(collect(srv, 40, topic="md")), _expected(tmp_path, 40, 7, "md"))
    check_ticks(data_of(collect(srv, 25, topic="fx.eur-usd_1")),
                _expected(tmp_path, 25, 8, "fx.eur-usd_1"))
    created = [kv["topic"] for kv in map(logfmt, srv.lines) if kv.get("msg") == "topic_created"]
    assert sorted(created) == ["fx.eur-usd_1", "md"]  # once each
    m = scrape(srv)
    assert value(m, "tickfan_topics") == 2
    assert value(m, "tickfan_topics_auto_created_total") == 2
    assert value(m, "tickfan_ingest_unknown_topic_total") == 0


def _expected(tmp_path, count, seed, topic):
    return expected_ticks(tmp_path, count, seed, name=f"exp-{topic}.tkfcap", topic=topic)


def test_a_stream_on_a_topic_waits_for_data_then_gets_it(tickfand):
    """A subscriber at the live head of a topic created late is woken like any
    other: the shard's per-topic tables cover topics that did not exist when
    it started."""
    srv, spec, port = udp_server(tickfand, "--shards", "2")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(good("A1", topic="late"), ("127.0.0.1", port))
    srv.wait_event("topic_created", topic="late")
    watches = [Watch(srv.stub(), topic="late", start=pb.START_LIVE) for _ in range(4)]
    try:
        for w in watches:
            assert w.next().WhichOneof("payload") == "end_of_backlog"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(2, 12):
                s.sendto(good(f"A{i}", topic="late"), ("127.0.0.1", port))
        for w in watches:
            got = [w.next_data(allow=("heartbeat",)).data for _ in range(10)]  # EOB was first
            assert [d.key for d in got] == [f"A{i}" for i in range(2, 12)]
            assert [d.seq for d in got] == list(range(2, 12))
    finally:
        for w in watches:
            w.cancel()


def test_an_auto_created_topic_is_reopened_after_a_restart(tickfand):
    srv, spec, port = udp_server(tickfand)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"".join(good(f"K{i}", topic="keep") for i in range(1, 6)), ("127.0.0.1", port))
    srv.wait_event("topic_created", topic="keep")
    w = Watch(srv.stub(), topic="keep", start=pb.START_EARLIEST)
    first = [w.next_data() for _ in range(5)]
    w.cancel()
    cursor3 = first[2].cursor
    srv.signal(15)
    assert srv.wait_exit(20) == 0
    # the feed has not named "keep" since the restart: the log is reopened
    again = tickfand.restart(srv)
    again.wait_event("topic_reopened", topic="keep")
    w = Watch(again.stub(), topic="keep", cursor=cursor3)
    rest = [w.next_data() for _ in range(2)]
    w.cancel()
    assert [e.data.key for e in rest] == ["K4", "K5"]
    assert cursor_parts(rest[0].cursor)[0] == cursor_parts(cursor3)[0]  # same epoch


def test_invalid_names_are_rejected_and_counted_and_good_frames_kept(tickfand):
    srv, spec, port = udp_server(tickfand)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # one datagram: a good frame, a frame with a name that cannot be a
        # topic (space and '/'), another good one
        s.sendto(good("G1", topic="ok") + good("B1", topic="no way/..") + good("G2", topic="ok"),
                 ("127.0.0.1", port))
    bad, _ = srv.wait_event("feed_reject", source=spec)
    srv.wait_event("topic_created", topic="ok")
    assert bad["reason"] == "bad_topic", bad
    w = Watch(srv.stub(), topic="ok", start=pb.START_EARLIEST)
    got = [w.next_data().data for _ in range(2)]
    w.cancel()
    assert [(d.key, d.seq) for d in got] == [("G1", 1), ("G2", 2)]
    m = scrape(srv)
    assert value(m, "tickfan_topics") == 1  # nothing created for the bad name
    assert value(m, "tickfan_ingest_rejected_total", reason="bad_topic") == 1
    assert not [ln for ln in srv.lines if "topic_created" in ln and "no way" in ln]


def test_beyond_the_topic_limit_frames_are_refused_and_counted(tickfand):
    srv, spec, port = udp_server(tickfand, "--log-size", "64K")
    names = [f"t{i:04d}" for i in range(1030)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for i in range(0, len(names), 10):  # 10 frames a datagram, paced
            s.sendto(b"".join(good("X", topic=n) for n in names[i:i + 10]), ("127.0.0.1", port))
            time.sleep(0.002)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = scrape(srv)
        if value(m, "tickfan_topics") + value(m, "tickfan_topics_refused_total") >= 1030:
            break
        time.sleep(0.2)
    assert value(m, "tickfan_topics") == 1024
    assert value(m, "tickfan_topics_refused_total") == 6
    assert value(m, "tickfan_ingest_unknown_topic_total") == 6
    refused, _ = srv.wait_event("topic_refused")
    srv.wait_event("topic_created", topic="t1023")
    assert "too many topics (at most 1024)" in refused["error"]
    # the last topic created works like the first
    w = Watch(srv.stub(), topic="t1023", start=pb.START_EARLIEST)
    assert w.next_data().data.seq == 1
    w.cancel()
    expect_status(srv.stub(), grpc.StatusCode.NOT_FOUND, topic="t1024")


def test_publish_creates_a_topic_and_refuses_an_invalid_name_with_its_index(tickfand):
    srv = tickfand(*FLAGS, "--feed", "none")
    stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))

    def recs(topic, n):
        for i in range(1, n + 1):
            yield ppb.PublishRequest(topic=topic, kind="quote", key=f"K{i}", body=b"b%d" % i)

    resp = stub.Publish(recs("pub.new", 30), timeout=20)
    assert resp.accepted == 30 and cursor_parts(resp.last_cursor)[1] == 30
    w = Watch(srv.stub(), topic="pub.new", start=pb.START_EARLIEST)
    assert [w.next_data().data.seq for _ in range(30)] == \
        list(range(1, 31))
    w.cancel()

    def mixed():
        yield from recs("pub.new", 4)
        yield ppb.PublishRequest(topic="bad name", kind="quote", key="x")

    with pytest.raises(grpc.RpcError) as e:
        stub.Publish(mixed(), timeout=20)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "record 4" in e.value.details() and "invalid topic name" in e.value.details()
    assert dict(e.value.trailing_metadata())["tickfan-accepted"] == "4"


def test_a_bad_value_names_the_option():
    r = h.run_cli([h.TICKFAND, "--auto-create-topics=maybe"])
    assert r.returncode == 2
    assert "--auto-create-topics" in r.stderr and "'maybe'" in r.stderr
