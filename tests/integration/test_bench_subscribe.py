"""tickfan-bench --rpc subscribe (perf/bench) against a scripted Subscribe
server: many subscriptions per bidi stream, deliveries shared by several
ids, removes answered by SubscriptionEnd. The script, not tickfand, so the
client's reading of the contract is checked on its own, misbehaviour
included: every delivery counts once per id, a seq jump of one id is that
subscription's violation alone, an unknown id or an early end fails the
run. Every test runs with both of the bench's clients: gRPC C core and its
own HTTP/2 reader (--client h2), which perf/run uses."""
import json
import os
import queue
import subprocess
import threading
import time
from concurrent import futures

import grpc

import tickfan_harness as h
from tickfan_harness import pb, pb_grpc
from test_scale import BENCH, CLIENTS


class ScriptedWatcher(pb_grpc.WatcherServicer):
    """Subscribe: EndOfBacklog for each add, then every `period` s one
    SubscribeResponse with `per_msg` Data (seq 1, 2, ... per stream), each
    one Delivery for every live id; a remove is answered with
    SubscriptionEnd{OK}. `misbehave` (on the first stream only): "gap"
    leaves id 2 out of seq 30's delivery, "unknown" adds id 999 to seq 50's,
    "end" ends id 3 with RESOURCE_EXHAUSTED at seq 40, "silent" never sends
    id 2 anything."""

    def __init__(self, period=0.005, per_msg=2, misbehave=None):
        self.period, self.per_msg, self.misbehave = period, per_msg, misbehave
        self.lock = threading.Lock()
        self.adds, self.removes, self.streams = [], [], 0

    def Subscribe(self, request_iterator, context):
        ops = queue.Queue()
        live = set()
        with self.lock:
            first = self.streams == 0
            self.streams += 1

        def read():
            try:
                for req in request_iterator:
                    if req.HasField("add"):
                        with self.lock:
                            self.adds.append(req.add.id)
                        ops.put(("add", req.add.id))
                    elif req.HasField("remove"):
                        with self.lock:
                            self.removes.append(req.remove.id)
                        ops.put(("remove", req.remove.id))
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        seq = 0
        while context.is_active():
            resp = pb.SubscribeResponse()
            while True:
                try:
                    op, sid = ops.get_nowait()
                except queue.Empty:
                    break
                if op == "add" and first and self.misbehave == "silent" and sid == 2:
                    continue
                if op == "add":
                    live.add(sid)
                    resp.deliveries.add(ids=[sid]).event.CopyFrom(
                        pb.WatchEvent(end_of_backlog=pb.EndOfBacklog(), cursor=f"c-{seq}"))
                elif sid in live:
                    live.discard(sid)
                    resp.deliveries.add(ids=[sid]).end.CopyFrom(pb.SubscriptionEnd(code=0))
            for _ in range(self.per_msg if live else 0):
                seq += 1
                ids = sorted(live)
                bad = first and self.misbehave
                if bad == "gap" and seq == 30:
                    ids.remove(2)
                if bad == "unknown" and seq == 50:
                    ids.append(999)
                if bad == "end" and seq == 40 and 3 in live:
                    live.discard(3)
                    ids.remove(3)
                    resp.deliveries.add(ids=[3]).end.CopyFrom(pb.SubscriptionEnd(
                        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                        message="slow consumer: lag budget exceeded", cursor=f"c-{seq}"))
                us = time.time_ns() // 1000
                ev = pb.WatchEvent(data=pb.Data(kind="quote", key="AAPL", seq=seq,
                                                ingested_at_unix_micros=us,
                                                emitted_at_unix_micros=us, body=b"x" * 40),
                                   cursor=f"c-{seq}")
                resp.deliveries.add(ids=ids).event.CopyFrom(ev)
            if resp.deliveries:
                yield resp
            time.sleep(self.period)


def serve(servicer):
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_WatcherServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    return srv, f"127.0.0.1:{port}"


def bench(addr, tmp_path, client, *args, timeout=60):
    assert os.access(BENCH, os.X_OK), f"{BENCH} is not built"
    out = tmp_path / f"bench-{time.monotonic_ns()}.json"
    cmd = [BENCH, "--server", addr, "--topic", "bench", "--rpc", "subscribe",
           "--client", client, "--json", str(out)] + [str(a) for a in args]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    print(p.stdout)
    assert p.returncode != 3, f"tickfan-bench could not run: {p.stderr}"
    doc = json.loads(out.read_text())
    return p.returncode, p.stdout, doc


@CLIENTS
def test_shared_deliveries_count_once_per_id(tmp_path, client):
    script = ScriptedWatcher()
    srv, addr = serve(script)
    try:
        code, out, doc = bench(addr, tmp_path, client, "--streams", 10, "--subs-per-stream", 4,
                               "--connections", 2, "--duration", 2)
    finally:
        srv.stop(0)
    r = doc["results"]
    assert code == 0, doc["failures"]
    assert doc["config"]["rpc"] == "subscribe" and doc["config"]["subs_per_stream"] == 4
    # ceil(10 / 4) = 3 streams carrying 4, 3 and 3 subscriptions, ids 1..n
    assert script.streams == 3
    assert sorted(script.adds) == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    w = r["wire"]
    assert w["rpc"] == "subscribe" and w["grpc_streams"] == 3 and w["grpc_streams_failed"] == 0
    assert r["streams"]["connected"] == 10 and r["streams"]["failed"] == 0
    assert sum(r["order_violations"][k] for k in ("gaps", "repeats", "reorders",
                                                  "gap_mismatches", "malformed")) == 0
    # one delivery for n ids is n deliveries: every Data and EndOfBacklog
    # the subscriptions saw, and no more
    assert r["events"]["end_of_backlogs"] == 10
    assert w["deliveries"] == r["messages"]["total"] + 10
    assert w["max_ids_per_record"] == 4
    assert w["deliveries_per_message"] > 3  # 2 Data for 3-4 ids per message
    assert w["delivery_records"] < w["deliveries"]
    assert w["unknown_ids"] == 0 and w["after_end"] == 0
    # every subscription of a stream got the same ticks
    assert r["messages"]["per_stream_min"] > 100
    lat = r["latency_us"]
    assert lat["measured_from"] == "ingested_at_unix_micros" and lat["count"] > 0
    assert "rpc=subscribe subs-per-stream=4" in out and "deliveries per message" in out


@CLIENTS
def test_long_requests_go_out_whole(tmp_path, client):
    """A WatchRequest of 60 keys (about 1.3 KB): every add reaches the
    server, whichever client sends it."""
    script = ScriptedWatcher()
    srv, addr = serve(script)
    keys = ",".join(f"KEY{i:017d}" for i in range(60))
    try:
        code, out, doc = bench(addr, tmp_path, client, "--streams", 6, "--subs-per-stream", 3,
                               "--keys", keys, "--duration", 1)
    finally:
        srv.stop(0)
    assert sorted(script.adds) == [1, 1, 2, 2, 3, 3], script.adds
    assert doc["results"]["streams"]["connected"] == 6, doc["failures"]


@CLIENTS
def test_messages_limit_removes_each_subscription(tmp_path, client):
    script = ScriptedWatcher()
    srv, addr = serve(script)
    try:
        code, out, doc = bench(addr, tmp_path, client, "--streams", 6, "--subs-per-stream", 3,
                               "--messages", 60, "--duration", 20)
    finally:
        srv.stop(0)
    r = doc["results"]
    assert code == 0, doc["failures"]
    assert r["streams"]["incomplete"] == 0 and r["streams"]["ended_early"] == 0
    # a remove each (sent one at a time per stream: the last ones may be
    # cut short by the end of the run)
    assert 1 <= len(script.removes) <= 6 and set(script.removes) <= {1, 2, 3}
    # the run ends once each has sent its remove: the ends may still be on
    # their way then
    assert r["wire"]["subscription_ends"] <= 6 and r["wire"]["after_end"] == 0
    assert r["messages"]["per_stream_min"] >= 60
    assert r["window_s"] < 15


@CLIENTS
def test_a_jump_of_one_id_is_its_own_violation(tmp_path, client):
    srv, addr = serve(ScriptedWatcher(misbehave="gap"))
    try:
        code, out, doc = bench(addr, tmp_path, client, "--streams", 8, "--subs-per-stream", 4,
                               "--duration", 1.5)
    finally:
        srv.stop(0)
    r = doc["results"]
    assert code == 1
    # only subscription id 2 of the stream the script saw first missed seq
    # 30: subscription 2 (id 2 of Subscribe stream 0) or 3 (of stream 1)
    assert r["order_violations"]["gaps"] == 1
    first = r["order_violations"]["first"]
    assert first.split(":")[0] in ("stream 2", "stream 3"), first
    assert "unannounced gap: expected seq 30, got 31" in first


@CLIENTS
def test_unknown_ids_and_early_ends_fail_the_run(tmp_path, client):
    for misbehave, want in (("unknown", "ids no subscription of their stream has"),
                            ("end", "ended by the server during the run")):
        srv, addr = serve(ScriptedWatcher(misbehave=misbehave))
        try:
            code, out, doc = bench(addr, tmp_path, client, "--streams", 8, "--subs-per-stream", 4,
                                   "--duration", 1.5)
        finally:
            srv.stop(0)
        r = doc["results"]
        assert code == 1, misbehave
        assert any(want in f for f in doc["failures"]), (misbehave, doc["failures"])
        if misbehave == "unknown":
            assert r["wire"]["unknown_ids"] == 1
        else:
            assert r["streams"]["ended_early"] == 1
            assert r["failure_statuses"] == {"RESOURCE_EXHAUSTED": 1}
            assert "slow consumer: lag budget exceeded" in r["first_failure"]


@CLIENTS
def test_a_subscription_with_no_delivery_fails_alone_at_the_connect_timeout(tmp_path, client):
    script = ScriptedWatcher(misbehave="silent")
    srv, addr = serve(script)
    try:
        code, out, doc = bench(addr, tmp_path, client, "--streams", 8, "--subs-per-stream", 4,
                               "--duration", 1, "--connect-timeout", 1)
    finally:
        srv.stop(0)
    r = doc["results"]
    assert code == 1
    assert r["streams"]["connected"] == 7 and r["streams"]["failed"] == 1
    assert r["failure_statuses"] == {"DEADLINE_EXCEEDED": 1}
    assert "no delivery before the connect timeout" in r["first_failure"]
    # it was removed; the others went on over the same stream
    assert script.removes == [2]
    assert r["messages"]["per_stream_max"] > 50 and r["wire"]["grpc_streams_failed"] == 0


@CLIENTS
def test_unimplemented_fails_every_subscription(tmp_path, client):
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        code, out, doc = bench(f"127.0.0.1:{port}", tmp_path, client, "--streams", 5,
                               "--subs-per-stream", 2, "--duration", 0.5)
    finally:
        srv.stop(0)
    r = doc["results"]
    assert code == 1
    assert r["streams"]["failed"] == 5 and r["wire"]["grpc_streams_failed"] == 3
    assert r["failure_statuses"] == {"UNIMPLEMENTED": 5}


# The real tickfand: 60 subscriptions, at most 16 to a Subscribe stream (4
# streams of 15 over 2 connections) x 200 ticks/s, far below what the machine delivers,
# so every tick reaches every subscription, in order, within the drain; and
# one event goes out once for all the ids of a stream that want it.
@CLIENTS
def test_tickfand_subscribe_delivers_every_tick_to_every_subscription(tickfand, tmp_path, client):
    from test_bench_feed import fed_server
    srv, feed = fed_server(tickfand)
    code, out, doc = bench(srv.addr, tmp_path, client, "--streams", 60, "--subs-per-stream", 16,
                           "--connections", 2, "--duration", 2, "--feed", feed,
                           "--rate", 200, "--drain", 10)
    r = doc["results"]
    assert code == 0, doc["failures"]
    f, w = r["feed"], r["wire"]
    assert f["received"] == 60 * f["ticks_sent"] and f["undelivered"] == 0
    assert r["messages"]["per_stream_min"] == r["messages"]["per_stream_max"] == f["ticks_sent"]
    assert w["grpc_streams"] == 4 and w["grpc_streams_failed"] == 0
    assert w["deliveries"] == r["messages"]["total"] + r["events"]["end_of_backlogs"] + \
        r["events"]["heartbeats"]
    # each tick is one record for the 15 ids of its stream
    assert w["max_ids_per_record"] == 15
    assert w["deliveries_per_record"] > 10
    assert w["unknown_ids"] == 0 and w["after_end"] == 0
    lat = r["latency_us"]
    assert lat["measured_from"] == "emitted_at_unix_micros" and lat["count"] == f["received"]
