"""tickfan-bench driving the feed (perf/bench, --feed): the real tickfand on a
UDP feed, the bench subscribing and then sending that feed on a schedule.
Every tick sent reaches every stream, latency is measured from the scheduled
emit time the server carries through, and upstream loss told by the server
as a Gap is counted as a Gap, never as disorder."""
import json
import os
import socket
import subprocess

import tickfan_harness as h
from test_scale import run_bench

FEED = os.path.join(h.BIN_DIR, "feed", "tickfan-feed")
TOPIC = "bench"


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fed_server(tickfand):
    port = free_udp_port()
    srv = tickfand("--shards", "1", "--topic", TOPIC, "--feed", f"udp://127.0.0.1:{port}")
    return srv, f"udp://127.0.0.1:{port}"


# 20 streams x 200 ticks/s: far below what the machine delivers, so every
# tick must reach every stream, in order, within the drain.
def test_every_tick_sent_reaches_every_stream_and_is_measured_from_its_schedule(tickfand,
                                                                                tmp_path):
    srv, feed = fed_server(tickfand)
    code, out, r = run_bench(srv, tmp_path, "--topic", TOPIC, "--streams", 20, "--duration", 2,
                             "--feed", feed, "--rate", 200, "--payload-bytes", 64,
                             "--drain", 10, timeout=60)
    assert code == 0, f"tickfan-bench failed its checks (exit {code})"
    f = r["feed"]
    assert f["error"] == ""
    # the schedule: tick i at start + i/200, sent only once due
    assert 380 <= f["ticks_sent"] <= 2.2 * 200 + 1
    assert f["last_stamp_us"] - f["first_stamp_us"] == (f["ticks_sent"] - 1) * 5000
    assert f["received"] == 20 * f["ticks_sent"] and f["undelivered"] == 0
    assert r["order_violations"]["gaps"] == 0 and r["events"]["gaps"] == 0
    # each stream got exactly the ticks sent, from the first one
    assert r["messages"]["per_stream_min"] == r["messages"]["per_stream_max"] == f["ticks_sent"]
    assert r["seq"]["first_min"] == r["seq"]["first_max"] == 1
    lat, ingest = r["latency_us"], r["latency_from_ingest_us"]
    assert lat["measured_from"] == "emitted_at_unix_micros"
    assert lat["coordinated_omission_corrected"] is True and lat["censored"] == 0
    assert lat["count"] == ingest["count"] == f["received"]
    assert lat["negative"] == 0 and ingest["negative"] == 0
    # a tick is ingested after it was due: from the schedule is never shorter
    slack = 1.01  # the histograms' relative error
    for k in ("p50", "p99", "max"):
        assert lat[k] * slack >= ingest[k], (k, lat, ingest)
    assert "corrected for coordinated omission" in out


def test_upstream_loss_is_counted_as_gaps_not_as_disorder(tickfand, tmp_path):
    srv, feed = fed_server(tickfand)
    assert os.access(FEED, os.X_OK), f"{FEED} is not built"
    # the bench only subscribes here; tickfan-feed sends, leaving out 51 frames
    bench = subprocess.Popen(
        [os.path.join(h.BIN_DIR, "perf", "bench", "tickfan-bench"), "--server", srv.addr,
         "--topic", TOPIC, "--streams", "5", "--duration", "4",
         "--json", str(tmp_path / "b.json")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        srv.wait_event("stream_opened", timeout=10, streams_live=5)
        s = h.run_cli([FEED, "send", "--to", feed, "--topic", TOPIC, "--rate", "2000",
                       "--count", "600", "--drop", "100-149,500"], timeout=30)
        assert s.returncode == 0, s.stderr
        out, err = bench.communicate(timeout=30)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    r = json.loads((tmp_path / "b.json").read_text())["results"]
    assert bench.returncode == 1, f"a Gap must fail the run: {out} {err}"
    # two upstream losses (50 frames, then 1) per stream, each a Gap taking
    # one seq of its own: no seq jump left unexplained
    assert r["events"]["gaps"] == 2 * 5 and r["events"]["gap_missed"] == 51 * 5
    ov = r["order_violations"]
    assert (ov["gaps"], ov["repeats"], ov["reorders"], ov["gap_mismatches"], ov["malformed"]) \
        == (0, 0, 0, 0, 0), ov
    assert r["messages"]["per_stream_min"] == r["messages"]["per_stream_max"] == 600 - 51
