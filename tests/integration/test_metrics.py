"""Metrics: /metrics parses as Prometheus text exposition and its counters
move when the matching events happen."""
import time
import urllib.request

import grpc

from tickfan_harness import Watch, expect_status, parse_metrics, pb, pb_grpc


def scrape(srv):
    m = next(line for line in srv.lines if "msg=metrics_listening" in line)
    port = int(m.split("port=")[1].split()[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return parse_metrics(text)  # raises on invalid exposition


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_count_streams_resumes_statuses_and_ingest(tickfand):
    srv = tickfand("--metrics-listen", "127.0.0.1:0", "--sim-rate", "500", "--topic", "quiet",
                   "--heartbeat-ms", "100")
    before = scrape(srv)
    assert any(k[0] == "tickfan_build_info" and v == 1 for k, v in before.items())
    stub = srv.stub()
    w = Watch(stub, topic="sim")
    first = w.next_data()
    w2 = Watch(stub, topic="sim", cursor=first.cursor)  # a resume
    w2.next_data()
    wq = Watch(stub, topic="quiet")  # idle: heartbeats
    expect_status(stub, grpc.StatusCode.NOT_FOUND, topic="nope")
    time.sleep(0.5)
    after = scrape(srv)
    assert value(after, "tickfan_streams_opened_total") - \
        value(before, "tickfan_streams_opened_total") >= 3
    assert value(after, "tickfan_resumes_total") - value(before, "tickfan_resumes_total") == 1
    assert sum(value(after, "tickfan_streams", shard=str(i)) for i in range(8)) == 3
    assert value(after, "tickfan_stream_status_total", code="NOT_FOUND") == 1
    assert value(after, "tickfan_heartbeats_sent_total") > value(before, "tickfan_heartbeats_sent_total")
    assert value(after, "tickfan_messages_sent_total") > value(before, "tickfan_messages_sent_total")
    assert value(after, "tickfan_ingest_events_total") > value(before, "tickfan_ingest_events_total")
    assert value(after, "tickfan_topic_head_seq", topic="sim") >= first.data.seq
    assert value(after, "tickfan_topic_cached_keys", topic="sim") > 0
    assert value(after, "tickfan_subscriber_lag_bytes_count") >= 2
    # two streams read the same events on their shards: copied once per shard, maybe shared
    assert value(after, "tickfan_event_slice_copies_total") > 0
    assert ("tickfan_event_slice_shares_total", ()) in after
    assert ("tickfan_subscriber_gaps_total", ()) in after
    for x in (w, w2, wq):
        x.cancel()


def test_lag_histogram_places_a_stalled_subscriber_and_sums_its_lag(tickfand):
    # 2,000 events/s: a 2 s stall leaves ~500 KB of log unread, beyond the
    # client's 64 KiB window (BDP probing off) and far inside both budgets
    srv = tickfand("--metrics-listen", "127.0.0.1:0", "--sim-rate", "2000")
    ch = grpc.insecure_channel(srv.addr, options=[("grpc.http2.bdp_probe", 0)])
    call = pb_grpc.WatcherStub(ch).Watch(pb.WatchRequest(topic="sim", start=pb.START_LIVE),
                                         timeout=60)
    for ev in call:
        if ev.WhichOneof("payload") == "end_of_backlog":
            break
    try:
        time.sleep(2.0)  # not reading
        m = scrape(srv)
        count = value(m, "tickfan_subscriber_lag_bytes_count")
        under_64k = m[("tickfan_subscriber_lag_bytes_bucket", (("le", "65536"),))]
        lag_sum = value(m, "tickfan_subscriber_lag_bytes_sum")
        assert count == 1, m  # the one live stream
        assert under_64k == 0, f"a 2 s stall at 2,000 events/s is under 64 KiB behind: {m}"
        assert 65536 < lag_sum < 64 << 20, lag_sum
    finally:
        call.cancel()
        ch.close()


def test_other_paths_are_404(tickfand):
    srv = tickfand("--metrics-listen", "127.0.0.1:0", "--feed", "none", "--topic", "t")
    m = next(line for line in srv.lines if "msg=metrics_listening" in line)
    port = int(m.split("port=")[1].split()[0])
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_an_empty_metrics_listen_turns_the_endpoint_off(tickfand):
    # what `-e TICKFAN_METRICS_LISTEN=` does to the image's 0.0.0.0:9464
    srv = tickfand("--metrics-listen=")
    stub = srv.stub()
    w = Watch(stub, topic="sim", start=pb.START_EARLIEST)
    assert w.next_data().HasField("data")  # the server serves as ever
    w.cancel()
    assert not any("msg=metrics_listening" in line for line in srv.lines)
