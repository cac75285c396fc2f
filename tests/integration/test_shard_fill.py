"""--shard-fill: shards take calls one per CPU at first and one more joins
each time every active shard serves --shard-fill streams; the others wait
outside gRPC, hold no stream, and stop with the server."""
import contextlib
import os
import time

from tickfan_harness import Watch, metric, scrape_metrics
from test_admin import list_subscribers


@contextlib.contextmanager
def one_cpu():
    """Runs what is started inside on the first CPU this test may use, so
    the server it starts sees one CPU (its first active shard count)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def per_shard(samples, nshards):
    return [int(metric(samples, "tickfan_streams", shard=str(i))) for i in range(nshards)]


def open_live(stub, n, into):
    """Opens n Watch streams one after another, each taken by the server
    (its first event read) before the next is opened."""
    for _ in range(n):
        w = Watch(stub, topic="sim")
        w.next(timeout=10)
        into.append(w)


def test_shards_start_one_per_cpu_and_join_as_the_active_ones_fill(tickfand):
    with one_cpu():
        srv = tickfand("--shards", "4", "--shard-fill", "3", "--sim-rate", "50",
                       "--metrics-listen", "127.0.0.1:0")
    kv, _ = srv.wait_event("listening")
    assert (kv["shards"], kv["shards_active"], kv["shard_fill"]) == ("4", "1", "3")
    assert metric(scrape_metrics(srv), "tickfan_shards_active") == 1

    stub = srv.stub()
    streams = []
    open_live(stub, 3, streams)  # up to the fill: all on the one shard, the next joins
    m = scrape_metrics(srv)
    assert per_shard(m, 4) == [3, 0, 0, 0]
    seen_active = int(metric(m, "tickfan_shards_active"))
    assert seen_active in (1, 2)
    counts = per_shard(m, 4)
    while not all(counts) and len(streams) < 80:
        open_live(stub, 1, streams)
        m = scrape_metrics(srv)
        active = int(metric(m, "tickfan_shards_active"))
        counts = per_shard(m, 4)
        assert seen_active <= active <= 4, (seen_active, active)
        seen_active = active
        # a shard that waits holds no stream
        assert all(n == 0 for n in counts[active:]), (active, counts)
        assert sum(counts) == len(streams), counts
    print(f"{len(streams)} streams: {counts}")
    assert seen_active == 4 and all(counts), f"{len(streams)} streams: {counts}"
    started = [int(srv.wait_event("shard_started", shards_active=k)[0]["shard"])
               for k in (2, 3, 4)]
    assert started == [1, 2, 3]
    # every stream still flows, wherever it went
    for w in streams:
        w.next_data(timeout=10)
    for w in streams:
        w.cancel()


def test_shard_fill_0_starts_every_shard(tickfand):
    with one_cpu():
        srv = tickfand("--shards", "4", "--shard-fill", "0", "--metrics-listen", "127.0.0.1:0")
    kv, _ = srv.wait_event("listening")
    assert (kv["shards_active"], kv["shard_fill"]) == ("4", "0")
    assert metric(scrape_metrics(srv), "tickfan_shards_active") == 4


def test_connection_balance_starts_every_shard(tickfand):
    # a connection's calls stay on the queue gRPC gave it: every queue is served
    with one_cpu():
        srv = tickfand("--shards", "3", "--shard-balance", "connection")
    kv, _ = srv.wait_event("listening")
    assert kv["shards_active"] == "3"


def test_waiting_shards_answer_the_admin_view_and_stop_with_the_server(tickfand):
    with one_cpu():
        srv = tickfand("--shards", "8", "--shard-fill", "1000", "--sim-rate", "50")
    kv, _ = srv.wait_event("listening")
    assert kv["shards_active"] == "1"
    stub = srv.stub()
    streams = []
    open_live(stub, 2, streams)
    t0 = time.monotonic()
    subs = list_subscribers(srv)
    assert len(subs) == 2
    assert {s.shard for s in subs} == {0}
    print(f"ListSubscribers answered in {time.monotonic() - t0:.3f} s")
    for w in streams:
        w.cancel()
    srv.stop()  # exits 0 within the grace period, the 7 waiting shards with it
