"""Admin view: ListSubscribers shows every open Watch stream with its peer,
topic, filters, lag, counts, shard, cursor and state; the CLI prints it."""
import json
import subprocess

import grpc

from tickfan_harness import TICKFAN, Watch
from tickfan.admin.v1 import admin_pb2  # noqa: E402


def list_subscribers(srv, topic=""):
    ch = grpc.insecure_channel(srv.addr)
    call = ch.unary_unary("/tickfan.admin.v1.Admin/ListSubscribers",
                          request_serializer=admin_pb2.ListSubscribersRequest.SerializeToString,
                          response_deserializer=admin_pb2.ListSubscribersResponse.FromString)
    resp = call(admin_pb2.ListSubscribersRequest(topic=topic), timeout=10)
    ch.close()
    return resp.subscribers


def test_list_subscribers_shows_each_stream_with_its_filters_and_state(tickfand):
    srv = tickfand("--sim-rate", "200", "--topic", "quiet", "--heartbeat-ms", "100")
    stub = srv.stub()
    a = Watch(stub, topic="sim", kinds=["trade"], keys=["AAPL", "MSFT"])
    b = Watch(stub, topic="quiet")
    a.next_data()
    b.next()
    subs = list_subscribers(srv)
    assert len(subs) == 2
    by_topic = {s.topic: s for s in subs}
    s = by_topic["sim"]
    assert list(s.kinds) == ["trade"] and sorted(s.keys) == ["AAPL", "MSFT"]
    assert s.state in ("live", "replaying") and s.sent >= 1 and s.peer.startswith("ipv4:127.0.0.1")
    assert s.cursor.startswith("1-") and s.since_unix_micros > 0
    assert by_topic["quiet"].state == "live" and by_topic["quiet"].lag_events == 0
    assert [x.topic for x in list_subscribers(srv, topic="quiet")] == ["quiet"]
    out = subprocess.run([TICKFAN, "admin", "subscribers", "--server", srv.addr, "--json"],
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["topic"] for r in rows} == {"sim", "quiet"}
    a.cancel()
    b.cancel()
