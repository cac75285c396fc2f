"""The Python client's MultiSubscriber (src/client/python/tickfan/multi.py):
many subscriptions over one Subscribe stream, each exactly once across
broken streams, and the ends it hands out or hides.

The real tickfand runs the simulator on two topics ('sim' and 'fx') on a
fixed port behind the acceptance tests' TCP proxy, which can reset or
silently stall every connection. The truth each subscription is checked
against is read back from the server afterwards with a plain Watch."""
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

import tickfan_harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "acceptance"))
PKG_DIR = os.path.join(h.BIN_DIR, "python")
if not os.path.isfile(os.path.join(PKG_DIR, "tickfan", "multi.py")):
    pytest.skip(f"{PKG_DIR}/tickfan is not built (cmake --build builds it with the stubs): "
                "the Python Subscribe tests were NOT run", allow_module_level=True)
sys.path.insert(0, PKG_DIR)

import run_exactly_once as rx  # noqa: E402
import tickfan  # noqa: E402
from events.v1 import watcher_pb2_grpc as pb_grpc  # noqa: E402

HB_MS = 100
EARLIEST = tickfan.pb.START_EARLIEST


def start_server(tmp_path, *extra):
    srv = rx.Server(h.TICKFAND, rx.free_port(), str(tmp_path / "data"), 500, HB_MS,
                    str(tmp_path / "tickfand.log"), 64)
    srv.cmd += ["--feed", "sim", "--feed", "sim:fx", *extra]
    srv.start()
    return srv


@pytest.fixture
def server(tmp_path):
    srv = start_server(tmp_path)
    yield srv
    srv.kill()


def truth(srv, topic, through, kinds=(), keys=()):
    """The Data events of topic up to seq `through` that match, read with Watch."""
    out = []
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = pb_grpc.WatcherStub(ch)
        call = stub.Watch(tickfan.pb.WatchRequest(topic=topic, start=EARLIEST), timeout=30)
        for ev in call:
            if ev.WhichOneof("payload") != "data":
                continue
            d = ev.data
            if (not kinds or d.kind in kinds) and (not keys or d.key in keys):
                out.append(d.seq)
            if d.seq >= through:
                break
        call.cancel()
    return out


class Run:
    """A MultiSubscriber iterated in a thread: per subscription its Data
    seqs and its ends."""

    def __init__(self, target, **kw):
        self.mux = tickfan.MultiSubscriber(target, heartbeat_s=HB_MS / 1000,
                                           backoff_max_s=0.5, **kw)
        self.seqs = {}
        self.ends = {}
        self.error = None
        self.lock = threading.Lock()
        self.thread = None

    def add(self, name, topic, **kw):
        with self.lock:
            self.seqs[name] = []
        return self.mux.add(topic, tag=name, **kw)

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        try:
            for sub, msg in self.mux:
                with self.lock:
                    if tickfan.is_end(msg):
                        self.ends.setdefault(sub.tag, []).append(msg)
                    elif msg.WhichOneof("payload") == "data":
                        self.seqs[sub.tag].append(msg.data.seq)
                    elif msg.WhichOneof("payload") == "gap":
                        self.error = AssertionError(f"{sub.tag}: a Gap {msg.gap}")
        except Exception as e:  # reported by the test
            self.error = e

    def count(self, name):
        with self.lock:
            return len(self.seqs[name])

    def wait(self, pred, what, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.thread.is_alive():
            with self.lock:
                if pred():
                    return
            time.sleep(0.02)
        assert False, (f"timed out waiting for {what}; error {self.error!r}; streams "
                       f"{self.mux.streams} resumes {self.mux.resumes} alive {self.thread.is_alive()}")

    def wait_all(self, n, timeout=30.0):
        self.wait(lambda: all(len(s) >= n for s in self.seqs.values()),
                  f"{n} events on every subscription", timeout)

    def stop(self):
        self.mux.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the MultiSubscriber did not stop"
        assert self.error is None, self.error


def test_two_filters_on_one_topic_each_get_exactly_their_events(server):
    r = Run(f"127.0.0.1:{server.port}")
    r.add("trades", "sim", kinds=["trade"], start=EARLIEST)
    r.add("aapl", "sim", keys=["AAPL"], start=EARLIEST)
    r.add("fx", "fx", start=EARLIEST)
    r.start().wait_all(30)
    r.stop()
    for name, topic, kw in (("trades", "sim", {"kinds": ["trade"]}),
                            ("aapl", "sim", {"keys": ["AAPL"]}), ("fx", "fx", {})):
        got = r.seqs[name]
        assert got == truth(server, topic, got[-1], **kw), f"{name}: not exactly its events"
    assert r.mux.streams == 1 and r.mux.resumes == 0, (r.mux.streams, r.mux.resumes)
    assert r.mux.deliveries < sum(len(s) for s in r.seqs.values()) + 200 + r.mux.responses


def test_ten_subscriptions_on_two_topics_exactly_once_across_kills_resets_stalls_drains(server):
    proxy = rx.Proxy(server.port).start()
    try:
        r = Run(f"127.0.0.1:{proxy.port}")
        specs = {}
        for i in range(10):
            topic = "sim" if i % 2 == 0 else "fx"
            kw = {"kinds": ["trade"]} if i % 3 == 0 else {}
            specs[f"s{i}"] = (topic, kw)
            r.add(f"s{i}", topic, start=EARLIEST, **kw)
        r.start()
        r.wait_all(20)
        for breakage in ["kill", "reset", "stall", "drain", "kill", "reset"]:
            est = proxy.counts()[0]
            if breakage == "kill":
                server.kill()
                server.start()
            elif breakage == "reset":
                assert proxy.reset_all() > 0, "no connection to reset"
            elif breakage == "stall":  # silent: only the watchdog can tell
                assert proxy.stall_all() > 0, "no connection to stall"
                time.sleep(4 * HB_MS / 1000)
                proxy.release_all()
            else:
                assert server.stop() == 0
                server.start()
            # working again: a new connection, and events on every subscription after it
            r.wait(lambda: proxy.counts()[0] > est, f"a new connection after {breakage}")
            at = {k: len(v) for k, v in r.seqs.items()}
            r.wait(lambda: all(len(r.seqs[k]) > at[k] for k in at),
                   f"events on every subscription after {breakage}")
        r.stop()
        assert r.mux.resumes >= 6, r.mux.resumes
        assert not r.ends, f"subscriptions ended: {r.ends}"
        for name, (topic, kw) in specs.items():
            got = r.seqs[name]
            assert got == truth(server, topic, got[-1], **kw), \
                f"{name} ({topic} {kw}): an event twice, skipped or out of order"
    finally:
        proxy.stop()


def test_add_and_remove_while_live(server):
    r = Run(f"127.0.0.1:{server.port}")
    first = r.add("first", "sim")
    r.start().wait_all(10)
    second = r.add("second", "fx", start=EARLIEST)
    r.wait(lambda: len(r.seqs["second"]) >= 10, "events for a subscription added live")
    r.mux.remove(first)
    r.wait(lambda: "first" in r.ends, "the end of the removed subscription")
    at = r.count("first")
    time.sleep(0.3)
    assert r.count("first") == at, "events after the end of a removed subscription"
    [end] = r.ends["first"]
    assert end.code == grpc.StatusCode.OK.value[0] and first.end is end
    assert r.mux.subscriptions() == [second]
    n = r.count("second")
    r.wait(lambda: len(r.seqs["second"]) > n + 10, "the other subscription going on")
    r.stop()
    got = r.seqs["second"]
    assert got == truth(server, "fx", got[-1])


def test_ends_that_resuming_would_repeat_are_handed_out_once(server):
    r = Run(f"127.0.0.1:{server.port}")
    r.add("nope", "nope")
    r.add("bad", "sim", cursor="not-a-cursor")
    r.add("badkey", "sim", keys=[""])
    r.add("ok", "sim")
    r.start()
    r.wait(lambda: len(r.ends) == 3 and len(r.seqs["ok"]) >= 10, "three ends and events")
    time.sleep(0.3)
    r.stop()
    codes = {k: [e.code for e in v] for k, v in r.ends.items()}
    S = grpc.StatusCode
    assert codes == {"nope": [S.NOT_FOUND.value[0]], "bad": [S.INVALID_ARGUMENT.value[0]],
                     "badkey": [S.INVALID_ARGUMENT.value[0]]}, codes
    assert r.mux.resumes == 0 and [s.tag for s in r.mux.subscriptions()] == ["ok"]


def test_a_slow_consumer_disconnect_is_resumed_on_the_same_stream(tmp_path):
    # a lag budget of 50 events: a caller that stops reading for a while is
    # ended RESOURCE_EXHAUSTED with its cursor, and added again from it
    srv = start_server(tmp_path, "--max-lag-events", "50", "--overflow", "disconnect")
    try:
        # small HTTP/2 windows, so that a caller who stops reading stops the stream
        mux = tickfan.MultiSubscriber(f"127.0.0.1:{srv.port}", heartbeat_s=5,
                                      options=[("grpc.http2.lookahead_bytes", 16384),
                                               ("grpc.http2.bdp_probe", 0)])
        sub = mux.add("sim")
        seqs = []
        deadline = time.monotonic() + 30
        for s, msg in mux:
            assert time.monotonic() < deadline, f"no slow-consumer end in 30 s: {sub}"
            assert not tickfan.is_end(msg), msg
            if msg.WhichOneof("payload") == "data":
                seqs.append(msg.data.seq)
            if len(seqs) == 5:
                time.sleep(2)  # 1000 events at 500/s: far over the budget
            if sub.readds >= 1 and len(seqs) > 400:
                break
        mux.stop()
        assert sub.readds >= 1, "never ended for being slow"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "an event twice or skipped"
        assert mux.streams == 1, mux.streams
    finally:
        srv.kill()


def test_cursor_files_carry_each_subscription_over_to_the_next_run(server, tmp_path):
    target = f"127.0.0.1:{server.port}"
    files = {t: str(tmp_path / f"{t}.cursor") for t in ("sim", "fx")}
    runs = []
    for _ in range(2):
        mux = tickfan.MultiSubscriber(target, heartbeat_s=HB_MS / 1000)
        for t, f in files.items():
            mux.add(t, start=EARLIEST, cursor_file=f, commit_every=7)
        got = {t: [] for t in files}
        for sub, msg in mux:
            if msg.WhichOneof("payload") == "data":
                got[sub.topic].append(msg.data.seq)
            if min(len(v) for v in got.values()) >= 40:
                break  # the events taken are in the files
        runs.append(got)
    for t in files:
        a, b = runs[0][t], runs[1][t]
        assert a == list(range(1, len(a) + 1)), a
        assert b == list(range(len(a) + 1, len(a) + 1 + len(b))), (t, a[-3:], b[:3])


def test_the_example_tails_several_topics(server):
    ex = os.path.join(HERE, "..", "..", "src", "client", "python", "examples", "tail_many.py")
    out = subprocess.run([sys.executable, ex, "--server", f"127.0.0.1:{server.port}",
                          "--count", "100", "--live", "sim", "fx"],
                         env={**os.environ, "PYTHONPATH": PKG_DIR}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 100, lines
    topics = {ln.split(" ", 1)[0] for ln in lines}
    assert topics == {"sim", "fx"}, topics
