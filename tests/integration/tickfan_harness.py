"""Harness for the integration tests: the real tickfand, real grpcio clients.

TICKFAN_BIN_DIR names the build directory holding tickfand and tickfan;
TICKFAN_PY_DIR the Python stubs the build generates from proto/ (namespace
packages events.v1 and market.v1, no __init__.py needed).

Everything that waits takes a timeout, so no test can hang: server start,
log lines, stream events, process exit.
"""
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import grpc

BIN_DIR = os.environ.get("TICKFAN_BIN_DIR", "")
PY_DIR = os.environ.get("TICKFAN_PY_DIR", "")

if not BIN_DIR or not PY_DIR:
    raise RuntimeError(
        "TICKFAN_BIN_DIR and TICKFAN_PY_DIR must be set (ctest sets them; "
        "by hand: TICKFAN_BIN_DIR=build TICKFAN_PY_DIR=build/py)")
BIN_DIR = os.path.abspath(BIN_DIR)
PY_DIR = os.path.abspath(PY_DIR)
_stub = os.path.join(PY_DIR, "events", "v1", "watcher_pb2.py")
if not os.path.isfile(_stub):
    raise RuntimeError(
        f"{_stub} is missing: the build generates it (needs protoc and "
        "grpc_python_plugin, see scripts/deps)")
if PY_DIR not in sys.path:
    sys.path.insert(0, PY_DIR)

from events.v1 import watcher_pb2 as pb  # noqa: E402
from events.v1 import watcher_pb2_grpc as pb_grpc  # noqa: E402
from market.v1 import tick_pb2  # noqa: E402

# A regular package called "events" elsewhere on sys.path would shadow our
# namespace package; say so instead of failing in odd ways later.
if not os.path.abspath(pb.__file__).startswith(PY_DIR + os.sep):
    raise RuntimeError(f"events.v1 was imported from {pb.__file__}, not from {PY_DIR}")

TICKFAND = os.path.join(BIN_DIR, "tickfand")
TICKFAN = os.path.join(BIN_DIR, "tickfan")

# Sanitizer builds are slower to start and stop.
START_TIMEOUT = 20.0
STOP_GRACE = 15.0

LISTEN_RE = re.compile(r"\bmsg=listening\b.*?\baddr=(\S+)")
_LOGFMT_RE = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt(line):
    """Parses one logfmt line into a dict (quoted values unquoted)."""
    out = {}
    for k, v in _LOGFMT_RE.findall(line):
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[k] = v
    return out


def cursor_parts(cursor):
    """(epoch hex text, seq int) of a cursor "1-<16 hex epoch>-<decimal seq>".

    Cursors are opaque to clients; the tests look inside only to check that
    they advance and to forge stale or foreign ones.
    """
    m = re.fullmatch(r"1-([0-9a-fA-F]{16})-([0-9]+)", cursor)
    assert m, f"cursor {cursor!r} is not of the form 1-<16 hex>-<decimal>"
    return m.group(1), int(m.group(2))


def make_cursor(epoch_hex, seq):
    return f"1-{epoch_hex}-{seq}"


class Server:
    """One tickfand process, its address and its collected log."""

    def __init__(self, args, data_dir):
        self.args = [str(a) for a in args]
        self.data_dir = str(data_dir)
        self.proc = None
        self.addr = None
        self.lines = []
        self._cond = threading.Condition()
        self._reader = None
        # None: stopped deliberately with SIGKILL, exit code not checked.
        self.expect_exit_code = 0

    def fresh(self, args=None):
        """A new, not yet started Server on the same data directory, with the
        same flags unless `args` is given: the same appliance restarted."""
        return Server(self.args if args is None else args, self.data_dir)

    def start(self):
        for need in ("--listen", "--data-dir"):
            assert need not in self.args, f"the harness sets {need}"
        cmd = [TICKFAND, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir] + self.args
        assert os.access(TICKFAND, os.X_OK), f"{TICKFAND} is not built"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            m, _ = self.wait_log(LISTEN_RE, timeout=START_TIMEOUT)
        except AssertionError:
            self.kill()
            raise
        self.addr = m.group(1)
        return self

    def _read_log(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def port(self):
        return int(self.addr.rsplit(":", 1)[1])

    def mark(self):
        """Position in the log; pass as `since` to wait for later lines only."""
        with self._cond:
            return len(self.lines)

    def tail(self, n=80):
        with self._cond:
            return "\n".join(self.lines[-n:])

    def wait_log(self, pattern, timeout=10.0, since=0, pred=None):
        """Waits for a log line at index >= since matching `pattern` (and
        `pred(match)` if given). Returns (match, index)."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m and (pred is None or pred(m)):
                        return m, i
                    i += 1
                left = deadline - time.monotonic()
                exited = self.proc.poll() is not None and not self._reader.is_alive()
                if left <= 0 or exited:
                    why = "tickfand exited" if exited else f"{timeout:.1f} s passed"
                    raise AssertionError(
                        f"no log line matching {rx.pattern!r} ({why}); log tail:\n"
                        + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.2))

    def wait_event(self, msg, timeout=10.0, since=0, **fields):
        """Waits for a logfmt line with msg=`msg` whose fields include
        `fields` (compared as text). Returns (all fields, index)."""
        want = {k: str(v) for k, v in fields.items()}

        def match(m):
            kv = logfmt(m.string)
            return all(kv.get(k) == v for k, v in want.items())

        m, i = self.wait_log(r"\bmsg=" + re.escape(msg) + r"(\s|$)", timeout, since, match)
        return logfmt(m.string), i

    def channel(self):
        return grpc.insecure_channel(self.addr)

    def stub(self):
        return pb_grpc.WatcherStub(self.channel())

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Returns the exit code, or None if still running after timeout."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader:
            self._reader.join(timeout=5)
        return code

    def stop(self, timeout=STOP_GRACE):
        """Clean stop: SIGTERM, which must make tickfand exit 0 within
        `timeout` seconds."""
        self.signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        assert code is not None, f"tickfand {self.addr} still running {timeout:.0f} s after SIGTERM"
        assert code == 0, f"tickfand {self.addr} exited {code} after SIGTERM"

    def log_opened(self, topic="sim", timeout=10.0):
        """The fields of the msg=log_opened line of `topic` (logged at start,
        before msg=listening): created, records, first_seq, head_seq,
        epoch (16 hex digits), epoch_kept, reason ..."""
        kv, _ = self.wait_event("log_opened", timeout=timeout, topic=topic)
        return kv

    def kill(self):
        """SIGKILL on purpose (crash simulation): exit code is not checked."""
        self.expect_exit_code = None
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait(timeout=10)
        if self._reader:
            self._reader.join(timeout=5)

    def shutdown(self):
        """Teardown: SIGTERM, then SIGKILL after a grace period. Returns a
        list of problems (empty if the server stopped cleanly)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            code = self.wait_exit(STOP_GRACE)
            if code is None:
                problems.append(f"did not exit within {STOP_GRACE:.0f} s of SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._reader:
            self._reader.join(timeout=5)
        code = self.proc.returncode
        if self.expect_exit_code is not None and code != self.expect_exit_code:
            problems.append(f"exit code {code}, expected {self.expect_exit_code}")
        with self._cond:
            bad = [ln for ln in self.lines
                   if "Sanitizer" in ln or "runtime error:" in ln]
        if bad:
            problems.append("sanitizer reports in log:\n  " + "\n  ".join(bad[:20]))
        return problems


class StreamEnded(Exception):
    """The stream ended with a status: code, details, trailing metadata."""

    def __init__(self, err):
        self.err = err
        self.code = err.code()
        self.details = err.details() or ""
        self.trailers = dict(err.trailing_metadata() or ())
        super().__init__(f"stream ended: {self.code} {self.details!r} trailers={self.trailers}")


class Watch:
    """One Watch call read by a background thread.

    Events are queued with their arrival time (monotonic). The call has a
    gRPC deadline as a backstop; next() takes its own timeout.
    """

    def __init__(self, stub, request=None, deadline=30.0, **fields):
        if request is None:
            request = pb.WatchRequest(**fields)
        self.request = request
        self.call = stub.Watch(request, timeout=deadline)
        self._q = queue.Queue()
        self.ended = None  # StreamEnded once the call is over
        self.last_event = None  # the last event next() returned
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for ev in self.call:
                self._q.put((time.monotonic(), ev))
        except grpc.RpcError as e:
            self.ended = StreamEnded(e)
        except Exception as e:  # surfaced by next()
            self.ended = e
        finally:
            self._done.set()
            self._q.put(None)

    def next_timed(self, timeout=10.0):
        """(arrival time, event). Raises StreamEnded when the stream ended,
        AssertionError when nothing arrived within timeout."""
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout:.1f} s on {self.request}") from None
        if item is None:
            self._q.put(None)  # keep reporting the end
            if isinstance(self.ended, StreamEnded):
                raise self.ended
            raise AssertionError(f"stream failed: {self.ended!r}")
        self.last_event = item[1]
        return item

    def next(self, timeout=10.0):
        return self.next_timed(timeout)[1]

    def next_data(self, timeout=10.0, allow=("heartbeat", "end_of_backlog")):
        """Next Data event, skipping the payload kinds in `allow`; any other
        kind fails the test."""
        while True:
            ev = self.next(timeout)
            kind = ev.WhichOneof("payload")
            if kind == "data":
                return ev
            assert kind in allow, f"unexpected {kind} event: {ev}"

    def end(self, timeout=10.0):
        """Waits for the stream to end; returns (StreamEnded, events before it)."""
        events = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                events.append(self.next(max(0.0, deadline - time.monotonic())))
            except StreamEnded as e:
                return e, events

    def cancel(self):
        self.call.cancel()
        self._done.wait(10)


def expect_status(stub, code, timeout=10.0, **fields):
    """Opens a Watch that must fail with `code` before any Data; returns the
    StreamEnded."""
    w = Watch(stub, deadline=timeout + 5, **fields)
    ended, events = w.end(timeout)
    data = [e for e in events if e.WhichOneof("payload") == "data"]
    assert ended.code == code, f"expected {code}, got {ended} after {len(events)} events"
    assert not data, f"{len(data)} Data events before {code}: first {data[0]}"
    return ended


def first_data(stub, **fields):
    """The first Data event of a new Watch (which is then cancelled)."""
    w = Watch(stub, **fields)
    try:
        return w.next_data()
    finally:
        w.cancel()


def read_contiguous(w, n, first_seq, what):
    """Reads n Data events that must be exactly seq first_seq, first_seq+1, ...
    (heartbeats and one EndOfBacklog allowed in between, nothing else)."""
    got = []
    while len(got) < n:
        ev = w.next()
        kind = ev.WhichOneof("payload")
        assert kind in ("data", "heartbeat", "end_of_backlog"), \
            f"{what}: after {len(got)} events (seq {first_seq}..) got {ev}"
        if kind == "data":
            assert ev.data.seq == first_seq + len(got), \
                f"{what}: expected seq {first_seq + len(got)}, got {ev}"
            got.append(ev)
    return got


def plain(data):
    """A copy of a Data with snapshot cleared: a snapshot value compares equal
    to the log event it repeats."""
    out = pb.Data()
    out.CopyFrom(data)
    out.snapshot = False
    return out


def check_out_of_range(ended, epoch):
    """An OUT_OF_RANGE must name the earliest cursor in its details and its
    trailing metadata; returns (earliest cursor, its seq)."""
    assert ended.code == grpc.StatusCode.OUT_OF_RANGE, ended
    earliest = ended.trailers.get("tickfan-earliest-cursor")
    assert earliest, f"no tickfan-earliest-cursor trailer: {ended}"
    assert earliest in ended.details, f"details do not name {earliest}: {ended.details!r}"
    e_epoch, e_seq = cursor_parts(earliest)
    assert e_epoch == epoch, f"earliest cursor {earliest} is not of the log's epoch {epoch}"
    return earliest, e_seq


def run_cli(args, timeout=20.0):
    """Runs a binary from the build to completion; a hang is killed and fails."""
    try:
        return subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{args} did not finish within {timeout} s; "
                             f"stdout={e.stdout!r} stderr={e.stderr!r}") from None


def sanitizer():
    """The sanitizer the build under test was configured with ("" for none):
    TICKFAN_SANITIZE from the build directory's CMakeCache.txt."""
    try:
        with open(os.path.join(BIN_DIR, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("TICKFAN_SANITIZE:"):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return ""


def scrape_metrics(srv):
    """The server's /metrics (it must run with --metrics-listen), parsed:
    {(name, sorted label items): value}."""
    import urllib.request
    kv, _ = srv.wait_event("metrics_listening", timeout=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{kv['port']}/metrics", timeout=5) as r:
        return parse_metrics(r.read().decode())


def parse_metrics(text):
    """Prometheus text exposition as {(name, sorted label items): value};
    raises on text that does not parse."""
    from prometheus_client.parser import text_string_to_metric_families
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def metric(samples, name, **labels):
    """One sample of scrape_metrics(), 0 when absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def proc_rss_kib(pid):
    """VmRSS of a process, in KiB (/proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def proc_cpu_seconds(pid):
    """User + system CPU time of a process so far (/proc/PID/stat fields 14
    and 15), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
