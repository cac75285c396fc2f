"""Stress: hundreds of Watch streams connecting, cancelling mid-stream and
disconnecting abruptly while two simulator feeds run, over 2 shards; then
SIGTERM with streams still open.

This is the run the sanitizer builds are judged by (ctest label `tsan`; the
ASan and plain builds run it too). It checks that the server survives the
whole run, that every stream that was not killed saw contiguous data, that
tickfand exits 0 on SIGTERM, and that a sanitizer build printed no report.

Load (per churn cycle of ~1.5 s, for TICKFAN_STRESS_SECONDS, default 25):
- tickfan-bench processes on topic `sim` (a log that does not wrap): one
  whose 40 streams cancel themselves after a number of events (its own
  check: seq +1, no Gap, no early end), and one with 40 streams that is
  killed with SIGKILL 0.3-2.5 s after it started (connections reset, calls
  half open, some not yet accepted);
- a Python channel with 8 streams on both topics, of which some are
  cancelled and the rest are dropped by closing the channel under them.
Across the whole run: two long bench runs on `sim` (60 streams, one of them
replaying from the earliest record through a key filter) that must end
clean, and Python streams on `wrap`, a 64 KiB log that the writer laps many
times, including slow consumers that stall and so overflow (drop, conflate,
disconnect): there, a jump in the sequence is allowed only where a Gap says
exactly what was skipped.
"""
import os
import random
import signal
import subprocess
import threading
import time

import grpc
import pytest

import tickfan_harness as h
from tickfan_harness import cursor_parts, pb, pb_grpc

DURATION = float(os.environ.get("TICKFAN_STRESS_SECONDS", "25"))
BENCH = os.path.join(h.BIN_DIR, "perf", "bench", "tickfan-bench")
REPORT_MARKERS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                  "runtime error:")


class CheckedStream:
    """One Watch call read by a thread that checks every event as it comes.

    Unfiltered streams: each Data is exactly the previous seq + 1, except
    right after a Gap, where it must be the Gap's cursor + 1 and the Gap's
    `missed` must be exactly what lies between its from_cursor and cursor.
    Filtered streams: seq strictly increasing. Snapshot values (snapshot
    start, conflation) are not part of the sequence. `stall_after` events
    in, the reader stops for `stall_s` seconds (a slow consumer)."""

    def __init__(self, stub, name, request, stall_after=0, stall_s=0.0, deadline=600):
        self.name = name
        self.request = request
        self.filtered = bool(request.kinds or request.keys)
        self.stall_after, self.stall_s = stall_after, stall_s
        self.call = stub.Watch(request, timeout=deadline)
        self.errors = []
        self.data = 0
        self.gaps = 0
        self.last_seq = None
        self.ended = None  # the grpc.RpcError the stream ended with
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _fail(self, what):
        if len(self.errors) < 5:
            self.errors.append(f"{self.name} {self.request}: {what}")

    def _check(self, ev):
        kind = ev.WhichOneof("payload")
        if kind == "gap":
            _, at = cursor_parts(ev.cursor)
            _, frm = cursor_parts(ev.gap.from_cursor)
            if self.last_seq is not None and frm != self.last_seq and not self.filtered:
                self._fail(f"Gap from {frm} but the last Data was {self.last_seq}: {ev}")
            if not self.filtered and ev.gap.missed != at - frm:
                self._fail(f"Gap missed={ev.gap.missed} but it spans {frm}..{at}: {ev}")
            self.gaps += 1
            self.last_seq = at
        elif kind == "data" and not ev.data.snapshot:
            seq = ev.data.seq
            if self.last_seq is not None:
                if not self.filtered and seq != self.last_seq + 1:
                    self._fail(f"seq {seq} after {self.last_seq}")
                if self.filtered and seq <= self.last_seq:
                    self._fail(f"seq {seq} not after {self.last_seq}")
            self.last_seq = seq
            self.data += 1

    def _run(self):
        n = 0
        try:
            for ev in self.call:
                self._check(ev)
                n += 1
                if n == self.stall_after:
                    time.sleep(self.stall_s)
        except grpc.RpcError as e:
            self.ended = e
        except Exception as e:  # a bug in the check itself: fail loudly
            self._fail(f"reader failed: {e!r}")
        finally:
            self.done.set()

    def cancel(self):
        self.call.cancel()


class Bench:
    """A tickfan-bench process (stdout and stderr to a file)."""

    def __init__(self, tmp, name, addr, *args):
        self.name = name
        self.out_path = tmp / f"{name}.out"
        self.args = [BENCH, "--server", addr, *[str(a) for a in args]]
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.out.close()

    def wait(self, timeout):
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self.out.close()
        return code

    def output(self):
        with open(self.out_path) as f:
            return f.read()[-3000:]


def python_wave(srv, rng, i):
    """A channel of its own (its own connection) with 8 mixed streams on both
    topics; reads a little, cancels some, then closes the channel under the
    rest. Returns the streams (to check what they read)."""
    ch = grpc.insecure_channel(srv.addr, options=[("grpc.use_local_subchannel_pool", 1),
                                                  ("tickfan.stress.wave", i)])
    stub = pb_grpc.WatcherStub(ch)
    reqs = [
        pb.WatchRequest(topic="sim"),
        pb.WatchRequest(topic="sim", keys=["AAPL", "NVDA"]),
        pb.WatchRequest(topic="sim", start=pb.START_EARLIEST, kinds=["trade"]),
        pb.WatchRequest(topic="sim", snapshot=True),
        pb.WatchRequest(topic="wrap"),
        pb.WatchRequest(topic="wrap", start=pb.START_EARLIEST),
        pb.WatchRequest(topic="wrap", keys=["MSFT"], snapshot=True),
        pb.WatchRequest(topic="wrap", kinds=["quote"], overflow=pb.OVERFLOW_CONFLATE),
    ]
    streams = [CheckedStream(stub, f"wave{i}.{j}", r, deadline=120) for j, r in enumerate(reqs)]
    time.sleep(rng.uniform(0.2, 1.0))
    for s in streams:
        if rng.random() < 0.5:
            s.cancel()
    ch.close()  # the others are still open: dropped with the channel
    return streams


@pytest.mark.skipif(not os.access(BENCH, os.X_OK), reason=f"{BENCH} is not built")
def test_stream_churn_with_a_running_feed_keeps_data_contiguous_and_exits_0_clean(
        tickfand, tmp_path):
    san = h.sanitizer()
    # Sanitizer builds are several times slower: a lower rate keeps the
    # same churn without starving the clients.
    rate = {"": 400, "address": 150}.get(san, 60)
    conf = tmp_path / "stress.ini"
    conf.write_text("[topic wrap]\nlog-size = 64K\nmax-lag-bytes = 8K\n")
    srv = tickfand("--shards", "2", "--feed", "sim", "--feed", "sim:wrap", "--sim-rate", rate,
                   "--log-size", "16M", "--heartbeat-ms", "1000", "--drain-timeout-ms", "5000",
                   "--config", conf)
    rng = random.Random(int(os.environ.get("TICKFAN_STRESS_SEED", "1")))
    t0 = time.monotonic()

    def log(what):
        print(f"[{time.monotonic() - t0:5.1f} s] {what}", flush=True)

    log(f"sanitizer={san or 'none'} rate={rate}/s per topic duration={DURATION:.0f}s")

    # For the whole run: two bench processes that must end clean ...
    run_s = int(DURATION)
    survivors = [
        Bench(tmp_path, "survivor-live", srv.addr, "--streams", 40, "--connections", 2,
              "--duration", run_s),
        Bench(tmp_path, "survivor-earliest", srv.addr, "--streams", 20, "--connections", 1,
              "--start", "earliest", "--keys", "AAPL,MSFT,GOOG", "--duration", run_s),
    ]
    # ... and Python streams on the lapped log: readers that keep up, and
    # slow consumers of each policy that stall long enough to overflow.
    long_ch = grpc.insecure_channel(srv.addr)
    long_stub = pb_grpc.WatcherStub(long_ch)
    keepers = [
        CheckedStream(long_stub, "keeper.all", pb.WatchRequest(topic="wrap")),
        CheckedStream(long_stub, "keeper.earliest",
                      pb.WatchRequest(topic="wrap", start=pb.START_EARLIEST)),
        CheckedStream(long_stub, "keeper.aapl", pb.WatchRequest(topic="sim", keys=["AAPL"])),
    ]
    # A staller overflows once its flow-control window (1 KiB: BDP probing
    # off, small lookahead) and the 8 KiB lag budget of `wrap` are full: about
    # a second at 60 events/s of ~150 log bytes. Each on a connection of its
    # own, so its full window holds up no one else.
    stall_s = 5.0
    stall_chs = []
    stallers = []
    for p in ("drop", "conflate", "disconnect"):
        ch = grpc.insecure_channel(srv.addr, options=[("grpc.http2.bdp_probe", 0),
                                                      ("grpc.http2.lookahead_bytes", 1024),
                                                      ("grpc.use_local_subchannel_pool", 1),
                                                      ("tickfan.stress.staller", p)])
        stall_chs.append(ch)
        req = pb.WatchRequest(topic="wrap", overflow=getattr(pb, f"OVERFLOW_{p.upper()}"))
        stallers.append(CheckedStream(pb_grpc.WatcherStub(ch), f"staller.{p}", req,
                                      stall_after=5, stall_s=stall_s))

    finishers, victims, waves = [], [], []
    deadline = time.monotonic() + DURATION
    cycle = 0
    while time.monotonic() < deadline:
        assert srv.proc.poll() is None, f"tickfand died (exit {srv.proc.returncode})"
        filt = (["--kinds", "trade"], ["--keys", "AAPL"], [])[cycle % 3]
        share = (0.4, 1 / 8, 1.0)[cycle % 3]
        messages = max(10, int(rate * share * rng.uniform(1.0, 3.0)))
        if sum(b.proc.poll() is None for b in finishers) < 2:
            finishers.append(Bench(tmp_path, f"finisher{cycle}", srv.addr, "--streams", 40,
                                   "--connections", 2, "--messages", messages, "--duration", 120,
                                   *filt))
        live_victims = [v for v in victims if v.proc.poll() is None]
        for v in live_victims:
            if time.monotonic() - v.started > v.kill_after:
                v.kill()
        if len([v for v in victims if v.proc.poll() is None]) < 2:
            v = Bench(tmp_path, f"victim{cycle}", srv.addr, "--streams", 40, "--connections", 2,
                      "--duration", 300, *filt)
            v.kill_after = rng.uniform(0.3, 2.5)
            victims.append(v)
        waves += python_wave(srv, rng, cycle)
        cycle += 1
        time.sleep(0.5)

    for v in victims:
        v.kill()
    t_churn = time.monotonic()
    log(f"churn over: {cycle} cycles, {len(finishers)} finisher and {len(victims)} victim "
        f"benches, {len(waves)} Python wave streams")
    problems = []
    for b in finishers:
        code = b.wait(timeout=180)
        if code != 0:
            problems.append(f"{b.name} exit {code}: {' '.join(b.args)}\n{b.output()}")
    for b in survivors:
        code = b.wait(timeout=DURATION + 120)
        if code != 0:
            problems.append(f"{b.name} exit {code}: {' '.join(b.args)}\n{b.output()}")
    assert srv.proc.poll() is None, f"tickfand died (exit {srv.proc.returncode})"
    assert not problems, "\n\n".join(problems)
    log(f"benches done, {time.monotonic() - t_churn:.1f} s after the churn")

    # Streams still open at the end: the keepers, and a bench of 60 that the
    # drain ends (UNAVAILABLE: its exit code says so, and is not checked).
    last = Bench(tmp_path, "at-sigterm", srv.addr, "--streams", 60, "--connections", 3,
                 "--duration", 300)
    time.sleep(3.0)
    t_stop = time.monotonic()
    srv.signal(signal.SIGTERM)
    code = srv.wait_exit(h.STOP_GRACE)
    log(f"tickfand exit {code}, {time.monotonic() - t_stop:.1f} s after SIGTERM")
    last.kill()
    for ch in [long_ch] + stall_chs:
        ch.close()

    # A report first: it says more than the exit code a report causes (66).
    at = next((i for i, ln in enumerate(srv.lines) if any(m in ln for m in REPORT_MARKERS)), None)
    assert at is None, f"sanitizer report ({san or 'no'} sanitizer build):\n" + \
        "\n".join(srv.lines[at:at + 60])
    assert code is not None, f"tickfand still running {h.STOP_GRACE:.0f} s after SIGTERM"
    assert code == 0, f"tickfand exited {code} after SIGTERM"

    t_end = time.monotonic()
    everyone = waves + stallers + keepers
    for s in everyone:
        s.done.wait(max(0.0, t_end + 30 - time.monotonic()))
    stuck = [s.name for s in everyone if not s.done.is_set()]
    assert not stuck, f"streams still reading 30 s after tickfand exited: {stuck}"
    for s in stallers:
        log(f"{s.name}: {s.data} data, {s.gaps} gaps, ended {s.ended.code() if s.ended else None}")
    errors = [e for s in everyone for e in s.errors]
    assert not errors, "\n".join(errors)
    for s in keepers:
        assert s.ended is not None and s.ended.code() == grpc.StatusCode.UNAVAILABLE, \
            f"{s.name}: ended with {s.ended!r}, expected UNAVAILABLE from the drain"
        assert dict(s.ended.trailing_metadata() or ()).get("tickfan-cursor"), s.name
        assert s.data > 0, f"{s.name} read no data"
    assert sum(s.gaps for s in stallers) > 0, \
        "no slow consumer overflowed: the run did not exercise what it is meant to"
    assert sum(s.data for s in waves) > 0, "the Python waves read no data"
