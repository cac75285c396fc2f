"""The Python client (src/client/python/tickfan): exactly once across broken
streams, and the resume rules of the contract.

The real tickfand runs on a fixed port (so a restarted server comes back on
the same address) behind the acceptance tests' TCP proxy, which can reset or
silently stall every connection. The package is imported from the build
(BUILD/python, where cmake puts it with its generated stubs)."""
import os
import sys
import threading
import time

import grpc
import pytest

import tickfan_harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "acceptance"))
PKG_DIR = os.path.join(h.BIN_DIR, "python")
if not os.path.isfile(os.path.join(PKG_DIR, "tickfan", "__init__.py")):
    pytest.skip(f"{PKG_DIR}/tickfan is not built (cmake --build builds it with the stubs): "
                "the Python client tests were NOT run", allow_module_level=True)
sys.path.insert(0, PKG_DIR)

import run_exactly_once as rx  # noqa: E402
import tickfan  # noqa: E402

HB_MS = 100


@pytest.fixture
def server(tmp_path):
    srv = rx.Server(h.TICKFAND, rx.free_port(), str(tmp_path / "data"), 500, HB_MS,
                    str(tmp_path / "tickfand.log"), 64)
    srv.start()
    yield srv
    srv.kill()


class Consumer:
    """A Subscriber in a thread, collecting Data seqs."""

    def __init__(self, target, **kw):
        self.sub = tickfan.Subscriber(target, "sim", heartbeat_s=HB_MS / 1000,
                                      backoff_max_s=0.5, **kw)
        self.seqs = []
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.sub:
                if ev.WhichOneof("payload") == "data":
                    self.seqs.append(ev.data.seq)
        except Exception as e:  # reported by the test
            self.error = e

    def wait_for(self, n, timeout=30.0):
        end = time.monotonic() + timeout
        while len(self.seqs) < n and time.monotonic() < end and self.thread.is_alive():
            time.sleep(0.02)
        assert len(self.seqs) >= n, f"{len(self.seqs)} of {n} events; error {self.error!r}"

    def stop(self):
        self.sub.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the subscriber did not stop"


def test_every_event_once_across_kills_resets_stalls_and_drains(server):
    proxy = rx.Proxy(server.port).start()
    try:
        c = Consumer(f"127.0.0.1:{proxy.port}", start=tickfan.pb.START_EARLIEST)
        n = 200
        c.wait_for(n)
        for i, breakage in enumerate(["kill", "reset", "stall", "drain", "kill", "reset"]):
            if breakage == "kill":
                server.kill()
                server.start()
            elif breakage == "reset":
                proxy.reset_all()
            elif breakage == "stall":  # silent: only the watchdog can tell
                proxy.stall_all()
                time.sleep(4 * HB_MS / 1000)
                proxy.release_all()
            else:
                assert server.stop() == 0
                server.start()
            n += 150
            c.wait_for(n)
        c.stop()
        assert c.error is None, c.error
        assert c.seqs == list(range(1, len(c.seqs) + 1)), "an event twice or skipped"
        assert c.sub.resumes >= 6, c.sub.resumes
    finally:
        proxy.stop()


def test_a_cursor_file_carries_a_subscription_over_to_the_next_run(server, tmp_path):
    target = f"127.0.0.1:{server.port}"
    cf = str(tmp_path / "sim.cursor")
    first = []
    for ev in tickfan.Subscriber(target, "sim", start=tickfan.pb.START_EARLIEST,
                                 cursor_file=cf, commit_every=10):
        if ev.WhichOneof("payload") == "data":
            first.append(ev.data.seq)
            if len(first) == 50:
                break  # taken: the file says so
    assert open(cf).read().strip()
    second = []
    for ev in tickfan.Subscriber(target, "sim", cursor_file=cf):
        if ev.WhichOneof("payload") == "data":
            second.append(ev.data.seq)
            if len(second) == 20:
                break
    assert first == list(range(1, 51)) and second == list(range(51, 71)), (first, second)


def test_a_stale_cursor_raises_out_of_range_with_the_earliest_cursor(server):
    target = f"127.0.0.1:{server.port}"
    epoch, _ = h.cursor_parts(next(iter(tickfan.Subscriber(target, "sim"))).cursor)
    stale = h.make_cursor("0" * 16 if epoch != "0" * 16 else "1" * 16, 1)
    with pytest.raises(tickfan.OutOfRange) as e:
        for _ in tickfan.Subscriber(target, "sim", cursor=stale):
            pass
    assert e.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert h.cursor_parts(e.value.earliest_cursor)[0] == epoch


def test_errors_that_resuming_would_repeat_are_raised_not_retried(server):
    target = f"127.0.0.1:{server.port}"
    for kw, code in (({"cursor": "not-a-cursor"}, grpc.StatusCode.INVALID_ARGUMENT),
                     ({"keys": [""]}, grpc.StatusCode.INVALID_ARGUMENT)):
        sub = tickfan.Subscriber(target, "sim", **kw)
        with pytest.raises(tickfan.StreamError) as e:
            for _ in sub:
                pass
        assert e.value.code == code and sub.resumes == 0, (e.value, sub.resumes)
    sub = tickfan.Subscriber(target, "nope")
    with pytest.raises(tickfan.StreamError) as e:
        next(iter(sub))
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_the_resume_rules_of_the_contract():
    R = grpc.StatusCode
    assert tickfan.resumable(R.UNAVAILABLE, "", {})
    assert tickfan.resumable(R.INTERNAL, "", {})
    # a slow-consumer disconnect: with its trailer, or (a stream that had
    # stopped reading, cancelled with the status) its message alone
    assert tickfan.resumable(R.RESOURCE_EXHAUSTED, "x", {"tickfan-cursor": "1-0-1"})
    assert tickfan.resumable(R.RESOURCE_EXHAUSTED, "slow consumer: 5 events behind ...", {})
    assert not tickfan.resumable(R.RESOURCE_EXHAUSTED, "too many streams", {})
    for code in (R.INVALID_ARGUMENT, R.NOT_FOUND, R.PERMISSION_DENIED, R.UNAUTHENTICATED,
                 R.UNIMPLEMENTED, R.OUT_OF_RANGE):
        assert not tickfan.resumable(code, "", {})
