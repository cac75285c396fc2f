"""Feeds end to end: the real tickfan-feed sends market data in the feed wire
format (feed/FORMAT.md) to the real tickfand over every kind of source (UDP
unicast and multicast, TCP in both directions of connection set-up, capture
files), and a grpcio subscriber gets every frame once, in order, as Data
with the right kind, key and body. Malformed input is counted and logged by
reason and never stops the good frames around it; upstream loss becomes a
Gap in the right place; io_uring and epoll ingest the same file identically.

tickfan-feed is found at $TICKFAN_BIN_DIR/feed/tickfan-feed.
"""
import os
import queue
import resource
import socket
import struct
import subprocess
import threading
import time

import pytest

import tickfan_harness as h
from tickfan_harness import Watch, cursor_parts, logfmt, pb, tick_pb2

FEED = os.path.join(h.BIN_DIR, "feed", "tickfan-feed")
TOPIC = "md"
HB_MS = 200  # an idle stream gets a heartbeat soon after the last event
SERVER_FLAGS = ("--heartbeat-ms", str(HB_MS), "--log-size", "4M")
MCAST_GROUP = "239.255.77.1"
SYMBOLS = "AAPL,MSFT,GOOG,IBM,ORCL"


# ---- the wire format, written independently of the C code ------------------

HDR = struct.Struct("<2sBBIIIQqBBHI")
assert HDR.size == 40


def frame(topic, kind, key, body, seq=0, channel=0, time_us=0, version=1, ftype=1,
          length=None, magic=b"TF"):
    """One frame; every header field can be forced to a wrong value."""
    t, k, y = topic.encode(), kind.encode(), key.encode()
    n = HDR.size + len(t) + len(k) + len(y) + len(body)
    return HDR.pack(magic, version, ftype, n if length is None else length, channel, 0, seq,
                    time_us, len(t), len(k), len(y), len(body)) + t + k + y + body


def tick_body(symbol, price=1000000):
    t = tick_pb2.Tick(symbol=symbol, venue="TEST", price_exponent=-4)
    t.quote.bid_price = price
    t.quote.ask_price = price + 1
    return t.SerializeToString()


def good(key, seq=0, topic=TOPIC):
    return frame(topic, "quote", key, tick_body(key), seq=seq)


def read_capture(path):
    """The records of a capture file: [(recv_time_us, fields of the frame)]."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"TKFCAP01", data[:8]
    assert struct.unpack_from("<I", data, 8)[0] == 1
    out, off = [], 24
    while off < len(data):
        (rec_us,) = struct.unpack_from("<q", data, off)
        (magic, ver, ftype, n, channel, _, seq, time_us, tl, kl, yl, bl) = \
            HDR.unpack_from(data, off + 8)
        assert (magic, ver, ftype) == (b"TF", 1, 1) and n == 40 + tl + kl + yl + bl
        p = off + 8 + 40
        topic, kind = data[p:p + tl].decode(), data[p + tl:p + tl + kl].decode()
        key = data[p + tl + kl:p + tl + kl + yl].decode()
        body = data[p + tl + kl + yl:p + n - 40]
        out.append((rec_us, dict(topic=topic, kind=kind, key=key, body=body, seq=seq,
                                 channel=channel, time_us=time_us)))
        off += 8 + n
    assert off == len(data), "capture file ends inside a record"
    return out


# ---- tickfan-feed ------------------------------------------------------------

def run_feed(*args, timeout=30.0):
    """Runs tickfan-feed to completion; returns the fields of its summary line."""
    assert os.access(FEED, os.X_OK), f"{FEED} is not built"
    r = h.run_cli([FEED, *args], timeout=timeout)
    assert r.returncode == 0, f"tickfan-feed {args} exited {r.returncode}: {r.stderr}"
    done = [ln for ln in r.stdout.splitlines() if ln.startswith("msg=done")]
    assert len(done) == 1, f"no summary line: stdout={r.stdout!r} stderr={r.stderr!r}"
    return logfmt(done[0])


class FeedProcess:
    """A tickfan-feed in the background (tcp-listen waits for tickfand)."""

    def __init__(self, *args):
        assert os.access(FEED, os.X_OK), f"{FEED} is not built"
        self.args = args
        self.proc = subprocess.Popen([FEED, *map(str, args)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, prefix, timeout=10.0):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"tickfan-feed printed no {prefix!r} line: {seen}")
            seen.append(line)
            if line.startswith(prefix):
                return logfmt(line)

    def finish(self, timeout=30.0):
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError(f"tickfan-feed {self.args} still running after {timeout} s")
        assert self.proc.returncode == 0, f"tickfan-feed {self.args} exited {self.proc.returncode}"
        done = [ln for ln in out.splitlines() if ln.startswith("msg=done")]
        assert len(done) == 1, f"no summary line: {out!r}"
        return logfmt(done[0])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def feeds():
    started = []

    def start(*args):
        p = FeedProcess(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_ticks(tmp_path, count, seed, name="expected.tkfcap", drop=None, topic=TOPIC):
    """The (kind, key, Tick without its time) sequence tickfan-feed generates
    for these options, taken from a capture file it records."""
    path = tmp_path / name
    args = ["record", "--out", path, "--topic", topic, "--count", count, "--seed", seed,
            "--symbols", SYMBOLS]
    if drop:
        args += ["--drop", drop]
    s = run_feed(*args)
    assert int(s["frames"]) == count - int(s["dropped"])
    return [(f["kind"], f["key"], untimed(f["body"])) for _, f in read_capture(path)]


def untimed(body):
    t = tick_pb2.Tick.FromString(body)
    t.exchange_time_unix_nanos = 0
    return t.SerializeToString(deterministic=True)


# ---- the subscriber side -----------------------------------------------------

def collect(srv, n_data, topic=TOPIC, timeout=20.0):
    """Reads a topic from the start until n_data Data events, then until the
    first heartbeat after them, which must carry the head's cursor: nothing
    came after. Returns the Data and Gap events, in order, with their log
    sequence numbers checked contiguous from 1."""
    w = Watch(srv.stub(), topic=topic, start=pb.START_EARLIEST, deadline=timeout + 10)
    try:
        events, n = [], 0
        deadline = time.monotonic() + timeout
        while n < n_data:
            ev = w.next(max(0.1, deadline - time.monotonic()))
            kind = ev.WhichOneof("payload")
            if kind in ("data", "gap"):
                events.append(ev)
                n += kind == "data"
        while True:
            hb = w.next(5.0)
            kind = hb.WhichOneof("payload")
            assert kind in ("heartbeat", "end_of_backlog"), \
                f"after the {n_data} Data events expected, got more: {hb}"
            if kind == "heartbeat":
                break
    finally:
        w.cancel()
    seqs = [cursor_parts(ev.cursor)[1] for ev in events]
    assert seqs == list(range(1, len(events) + 1)), f"log seqs not contiguous: {seqs[:50]}"
    for ev in events:
        if ev.WhichOneof("payload") == "data":
            assert ev.data.seq == cursor_parts(ev.cursor)[1]
    assert cursor_parts(hb.cursor)[1] == len(events), \
        f"heartbeat at {hb.cursor}, the last event at seq {len(events)}"
    return events


def data_of(events):
    return [ev.data for ev in events if ev.WhichOneof("payload") == "data"]


def check_ticks(datas, expected):
    """Every Data is a market tick whose symbol is its key, and the sequence
    is exactly the one tickfan-feed generates."""
    for d in datas:
        assert d.kind in ("quote", "trade"), d
        t = tick_pb2.Tick.FromString(d.body)
        assert t.symbol == d.key, d
        assert t.WhichOneof("body") == d.kind, d
    got = [(d.kind, d.key, untimed(d.body)) for d in datas]
    assert len(got) == len(expected), f"{len(got)} Data events, {len(expected)} expected"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"event {i + 1}: got {g[:2]}, expected {e[:2]}"


def rejects(srv, source_prefix):
    return [kv for kv in map(logfmt, list(srv.lines))
            if kv.get("msg") == "feed_reject" and kv.get("source", "").startswith(source_prefix)]


# ---- each source end to end -------------------------------------------------

UDP_MODES = {  # each way of receiving UDP: flags, and what the server must log
    "multishot": (("--io", "uring"), "multishot"),
    "recvmsg": (("--io", "uring", "--udp-multishot=false"), "recvmsg"),
    "epoll": (("--io", "epoll"), "epoll"),
}


@pytest.mark.parametrize("mode", sorted(UDP_MODES))
def test_udp_unicast_delivers_every_frame_once_in_order(tickfand, tmp_path, mode):
    port = free_port()
    flags, logged = UDP_MODES[mode]
    srv = tickfand(*SERVER_FLAGS, *flags, "--topic", TOPIC, "--feed", f"udp://127.0.0.1:{port}")
    got, _ = srv.wait_event("udp_receive")
    assert got["bound"] == f"127.0.0.1:{port}", got
    if logged == "multishot" and got["mode"] != "multishot":
        pytest.skip(f"SKIPPED LOUDLY: this kernel has no multishot recvmsg ({got}); the "
                    f"multishot receive path was NOT tested")
    assert got["mode"] == logged, got
    n = 3000
    s = run_feed("send", "--to", f"udp://127.0.0.1:{port}", "--topic", TOPIC, "--count", n,
                 "--rate", 50000, "--seed", 7, "--symbols", SYMBOLS)
    assert int(s["frames"]) == n
    events = collect(srv, n)
    check_ticks(data_of(events), expected_ticks(tmp_path, n, 7))
    assert not rejects(srv, "udp://")


def test_udp_port_0_binds_a_free_port_and_logs_it(tickfand, tmp_path):
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", "udp://127.0.0.1:0")
    got, _ = srv.wait_event("udp_receive", source="udp://127.0.0.1:0")
    host, port = got["bound"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0, got
    run_feed("send", "--to", f"udp://127.0.0.1:{port}", "--topic", TOPIC, "--count", 50,
             "--rate", 0, "--seed", 3, "--symbols", SYMBOLS)
    check_ticks(data_of(collect(srv, 50)), expected_ticks(tmp_path, 50, 3))


def multicast_on_loopback():
    """None when a group joined on 127.0.0.1 receives what is sent to it
    there, else why not."""
    port = free_port()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as r, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            r.bind((MCAST_GROUP, port))
            r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                         socket.inet_aton(MCAST_GROUP) + socket.inet_aton("127.0.0.1"))
            r.settimeout(1.0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
            s.sendto(b"probe", (MCAST_GROUP, port))
            if r.recv(16) != b"probe":
                return "the probe datagram came back altered"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None


def test_udp_multicast_on_loopback_delivers_every_frame(tickfand, tmp_path):
    why = multicast_on_loopback()
    if why:
        pytest.skip(f"SKIPPED LOUDLY: multicast on the loopback interface does not work here "
                    f"({why}); the multicast source was NOT tested")
    port = free_port()
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC,
                   "--feed", f"udp://{MCAST_GROUP}:{port}?iface=127.0.0.1")
    n = 2000
    s = run_feed("send", "--to", f"udp://{MCAST_GROUP}:{port}", "--iface", "127.0.0.1",
                 "--ttl", 0, "--topic", TOPIC, "--count", n, "--rate", 0, "--batch", 5,
                 "--seed", 11, "--symbols", SYMBOLS)
    assert int(s["frames"]) == n
    assert int(s["datagrams"]) == n // 5, s  # --batch 5, all due at once: full datagrams
    events = collect(srv, n)
    check_ticks(data_of(events), expected_ticks(tmp_path, n, 11))
    assert not rejects(srv, "udp://")


def test_tcp_tickfand_connects_to_a_listening_sender(tickfand, feeds, tmp_path):
    n = 2500
    feed = feeds("send", "--to", "tcp-listen://127.0.0.1:0", "--topic", TOPIC, "--count", n,
                 "--rate", 20000, "--seed", 3, "--symbols", SYMBOLS)
    addr = feed.wait_line("msg=listening")["addr"]
    spec = f"tcp://{addr}"
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", spec)
    feed.wait_line("msg=connected")
    s = feed.finish()
    assert int(s["frames"]) == n
    events = collect(srv, n)
    check_ticks(data_of(events), expected_ticks(tmp_path, n, 3))
    srv.wait_event("feed_connected", source=spec)
    srv.wait_event("feed_disconnected", source=spec, frames=n)
    assert not rejects(srv, "tcp://")


def test_tcp_sender_connects_to_tickfand(tickfand, tmp_path):
    port = free_port(socket.SOCK_STREAM)
    spec = f"tcp-listen://127.0.0.1:{port}"
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", spec)
    n = 2500
    s = run_feed("send", "--to", f"tcp://127.0.0.1:{port}", "--topic", TOPIC, "--count", n,
                 "--rate", 0, "--seed", 5, "--symbols", SYMBOLS)
    assert int(s["frames"]) == n
    events = collect(srv, n)
    check_ticks(data_of(events), expected_ticks(tmp_path, n, 5))
    kv, _ = srv.wait_event("feed_disconnected", frames=n)
    assert kv["source"].startswith(spec + "<-127.0.0.1:"), kv
    assert not rejects(srv, "tcp-listen://")


def test_capture_file_replays_every_frame_with_its_source_time(tickfand, tmp_path):
    n = 4000
    path = tmp_path / "day.tkfcap"
    s = run_feed("record", "--out", path, "--topic", TOPIC, "--count", n, "--rate", 1000,
                 "--seed", 9, "--symbols", SYMBOLS)
    assert int(s["frames"]) == n
    records = read_capture(path)
    assert len(records) == n
    # records stamped on the schedule of --rate 1000: 1 ms apart, and the
    # frame's source time is its record time
    assert [r[0] - records[0][0] for r in records[:5]] == [0, 1000, 2000, 3000, 4000]
    assert all(rec_us == f["time_us"] for rec_us, f in records)
    assert [f["seq"] for _, f in records] == list(range(1, n + 1))
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", f"file:{path}")
    srv.wait_event("feed_replay_done", frames=n, rejected=0)
    datas = data_of(collect(srv, n))
    check_ticks(datas, expected_ticks(tmp_path, n, 9))
    assert [d.emitted_at_unix_micros for d in datas] == [f["time_us"] for _, f in records]



def test_replay_sends_a_capture_at_the_recorded_pace(tickfand, tmp_path):
    n = 1000
    path = tmp_path / "paced.tkfcap"
    run_feed("record", "--out", path, "--topic", TOPIC, "--count", n, "--rate", 2000,
             "--seed", 17, "--symbols", SYMBOLS)
    records = read_capture(path)
    port = free_port()
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", f"udp://127.0.0.1:{port}")
    s = run_feed("replay", path, "--to", f"udp://127.0.0.1:{port}", "--speed", "recorded")
    assert int(s["frames"]) == n
    # 999 gaps of 0.5 ms between the records
    assert 0.45 <= float(s["seconds"]) < 2.0, s
    datas = data_of(collect(srv, n))
    check_ticks(datas, expected_ticks(tmp_path, n, 17))
    assert [d.emitted_at_unix_micros for d in datas] == [f["time_us"] for _, f in records]


def test_send_keeps_a_steady_rate_and_bad_options_exit_2():
    s = run_feed("send", "--to", f"udp://127.0.0.1:{free_port()}", "--topic", TOPIC,
                 "--count", 1500, "--rate", 3000)
    assert int(s["frames"]) == 1500
    assert 0.45 <= float(s["seconds"]) < 1.5, s  # the last frame is due at 0.4997 s
    for args, named in ((["send", "--to", "udp://127.0.0.1:9", "--topic", TOPIC, "--rate", "x"],
                         "--rate: 'x'"),
                        (["send", "--to", "udp://127.0.0.1:9", "--topic", "a b"], "--topic: 'a b'"),
                        (["send", "--to", "udp://127.0.0.1:9", "--topic", TOPIC, "--drop", "5-2"],
                         "--drop: range '5-2'"),
                        (["record", "--out", "/dev/null", "--topic", TOPIC, "--count", 1,
                          "--speed", "max"], "--speed: not an option of 'record'"),
                        (["send", "--to", "smtp://x:1", "--topic", TOPIC], "'smtp://x:1'"),
                        (["frobnicate"], "'frobnicate'")):
        r = h.run_cli([FEED, *args])
        assert r.returncode == 2 and named in r.stderr, (args, r.returncode, r.stderr)
    r = h.run_cli([FEED, "--help"])
    assert r.returncode == 0 and "EXAMPLES" in r.stdout

# ---- io_uring and epoll ------------------------------------------------------

def test_io_uring_and_epoll_ingest_a_capture_file_identically(tickfand, tmp_path):
    n = 6000
    path = tmp_path / "both.tkfcap"
    run_feed("record", "--out", path, "--topic", TOPIC, "--count", n, "--seed", 13,
             "--drop", "100,2000-2009,6000", "--body-size", 100)
    sent = n - 12
    results = {}
    for io in ("uring", "epoll"):
        try:
            srv = tickfand(*SERVER_FLAGS, "--io", io, "--topic", TOPIC, "--feed", f"file:{path}")
        except AssertionError as e:
            if io == "uring" and "io_uring is not available" in str(e):
                pytest.skip(f"SKIPPED LOUDLY: --io uring cannot start here: {e}")
            raise
        kv, _ = srv.wait_event("listening")
        assert kv["io"] == {"uring": "io_uring", "epoll": "epoll"}[io], kv
        done, _ = srv.wait_event("feed_replay_done")
        events = collect(srv, sent)
        results[io] = (done["frames"], done["rejected"],
                       [(ev.WhichOneof("payload"), cursor_parts(ev.cursor)[1], ev.data.kind,
                         ev.data.key, ev.data.body, ev.data.emitted_at_unix_micros, ev.gap.missed,
                         ev.gap.reason) for ev in events])
    u, e = results["uring"], results["epoll"]
    assert u[:2] == e[:2] == (str(sent), "0"), (u[:2], e[:2])
    assert len(u[2]) == len(e[2]) == sent + 2  # two Gaps: the last tick's loss is not seen
    for i, (a, b) in enumerate(zip(u[2], e[2])):
        assert a == b, f"event {i + 1}: io_uring {a[:4]} vs epoll {b[:4]}"
    assert [x[6] for x in u[2] if x[0] == "gap"] == [1, 10]
    assert all(len(x[4]) == 100 for x in u[2] if x[0] == "data")


# ---- malformed input ---------------------------------------------------------

def test_malformed_datagrams_are_counted_by_reason_and_good_frames_kept(tickfand):
    pa, pb_ = free_port(), free_port()
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", f"udp://127.0.0.1:{pa}",
                   "--feed", f"udp://127.0.0.1:{pb_}")
    half = good("CUT")[:30]
    # (datagram, reason or None); the source's log lines are rate-limited to
    # 5 a second, so the reasons are spread over two sources
    to_a = [
        (good("A1"), None),
        (b"not a frame at all", "bad_magic"),
        (good("A2") + good("CUTX")[:-3], "truncated"),  # frame cut short: A2 kept
        (good("BADLEN")[:4] + struct.pack("<I", 41) + good("BADLEN")[8:], "bad_length"),
        (good("A3") + good("VER")[:2] + b"\x02" + good("VER")[3:], "bad_version"),
        (good("A4"), None),
    ]
    to_b = [
        (good("B1") + frame("bad topic!", "quote", "X", b"") + good("B2"), "bad_topic"),
        (good("TYPE")[:3] + b"\x07" + good("TYPE")[4:], "bad_type"),
        (HDR.pack(b"TF", 1, 1, (1 << 20) + 1, 0, 0, 0, 0, 2, 0, 0, (1 << 20) - 41) + b"md",
         "oversize"),
        (half, "truncated"),  # a lone header fragment
        (good("B3"), None),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for port, dgrams in ((pa, to_a), (pb_, to_b)):
            for d, _ in dgrams:
                s.sendto(d, ("127.0.0.1", port))
    keys = [d.key for d in data_of(collect(srv, 7))]
    # the two sources interleave; each source's own frames keep their order
    assert [k for k in keys if k[0] == "A"] == ["A1", "A2", "A3", "A4"], keys
    assert [k for k in keys if k[0] == "B"] == ["B1", "B2", "B3"], keys
    for port, dgrams in ((pa, to_a), (pb_, to_b)):
        want = [(str(i + 1), r) for i, (_, r) in enumerate(dgrams) if r]
        src = f"udp://127.0.0.1:{port}"
        srv.wait_event("feed_reject", source=src, reason=want[-1][1], offset=want[-1][0])
        got = [(kv["offset"], kv["reason"]) for kv in rejects(srv, src)]
        assert got == want, f"{src}: rejects logged {got}, expected {want}"
    assert srv.proc.poll() is None


def test_a_frame_that_cannot_be_framed_ends_its_datagram_only(tickfand):
    """Garbage, a header cut short, an empty datagram, a frame with an empty
    topic (its length cannot be trusted: the rest of its datagram is lost,
    K4 with it), and the next datagrams are read as usual."""
    port = free_port()
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", f"udp://127.0.0.1:{port}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in (good("K1"), b"\x00" * 100, good("K2") + b"TF\x01", b"",
                  good("K3") + frame("", "quote", "E", b"") + good("K4")):
            s.sendto(d, ("127.0.0.1", port))
    assert [d.key for d in data_of(collect(srv, 3))] == ["K1", "K2", "K3"]
    got = [kv["reason"] for kv in rejects(srv, "udp://")]
    assert got == ["bad_magic", "truncated", "bad_length"], got


def test_tcp_peer_that_sends_half_a_frame_and_closes_loses_that_frame_only(tickfand):
    port = free_port(socket.SOCK_STREAM)
    spec = f"tcp-listen://127.0.0.1:{port}"
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", spec)

    def connection(payload, chunks=1):
        mark = srv.mark()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            step = max(1, len(payload) // chunks)
            for i in range(0, len(payload), step):
                c.sendall(payload[i:i + step])
                time.sleep(0.01)
        kv, _ = srv.wait_event("feed_disconnected", since=mark)
        return kv

    cut = good("T3")
    kv = connection(good("T1") + good("T2") + cut[:len(cut) // 2], chunks=7)
    assert kv["frames"] == "2" and kv["reason"] == "closed by peer", kv
    # a bad header ends the connection (the stream cannot be framed any more)
    bad = good("BAD")
    kv = connection(good("T4") + bad[:4] + struct.pack("<I", 39) + bad[8:] + good("LOST"))
    assert kv["frames"] == "1" and kv["reason"] == "unframeable bytes", kv
    # a bad topic does not: the frame is skipped, the next one kept
    kv = connection(good("T5") + frame("no/slash", "quote", "X", b"") + good("T6"))
    assert kv["frames"] == "2" and kv["reason"] == "closed by peer", kv
    keys = [d.key for d in data_of(collect(srv, 5))]
    assert keys == ["T1", "T2", "T4", "T5", "T6"], keys
    got = [kv["reason"] for kv in rejects(srv, spec)]
    assert got == ["truncated", "bad_length", "bad_topic"], got
    assert srv.proc.poll() is None


def test_capture_file_with_bad_records_replays_the_good_ones(tickfand, tmp_path):
    path = tmp_path / "bad.tkfcap"
    recs = [good("F1"), frame("bad topic", "quote", "X", b""), good("F2"), good("F3")[:50]]
    with open(path, "wb") as f:
        f.write(b"TKFCAP01" + struct.pack("<IIq", 1, 0, 0))
        for i, r in enumerate(recs):
            f.write(struct.pack("<q", 1000 * i) + r)
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", f"file:{path}")
    srv.wait_event("feed_replay_done", frames=2, rejected=2)
    assert [d.key for d in data_of(collect(srv, 2))] == ["F1", "F2"]
    assert [kv["reason"] for kv in rejects(srv, "file:")] == ["bad_topic", "truncated"]


# ---- upstream loss and unknown topics ----------------------------------------

def test_dropped_source_seqs_become_upstream_gaps_in_place(tickfand, tmp_path):
    port = free_port()
    spec = f"udp://127.0.0.1:{port}"
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", spec)
    n = 60
    s = run_feed("send", "--to", spec, "--topic", TOPIC, "--count", n, "--rate", 5000,
                 "--seed", 21, "--symbols", SYMBOLS, "--drop", "10,20-22,40-49")
    assert (int(s["frames"]), int(s["dropped"])) == (n - 14, 14)
    events = collect(srv, n - 14)
    full = expected_ticks(tmp_path, n, 21)  # every tick, dropped ones included
    want, src = [], 0
    for seq in range(1, n + 1):
        if seq in (10, 20, 40):
            want.append(("gap", {10: 1, 20: 3, 40: 10}[seq]))
        if seq in (10, 20, 21, 22) or 40 <= seq <= 49:
            continue
        want.append(("data", full[seq - 1]))
    got = []
    for ev in events:
        if ev.WhichOneof("payload") == "gap":
            assert ev.gap.reason == pb.GAP_UPSTREAM_LOSS, ev
            got.append(("gap", ev.gap.missed))
        else:
            got.append(("data", (ev.data.kind, ev.data.key, untimed(ev.data.body))))
    assert [g if g[0] == "gap" else ("data", g[1][:2]) for g in got] == \
        [w if w[0] == "gap" else ("data", w[1][:2]) for w in want]
    assert got == want
    gaps = [kv for kv in map(logfmt, srv.lines) if kv.get("msg") == "upstream_gap"]
    assert [(g["missed"], g["expected"], g["got"]) for g in gaps] == \
        [("1", "10", "11"), ("3", "20", "23"), ("10", "40", "50")], gaps


def test_frames_for_an_undeclared_topic_are_counted_and_others_delivered(tickfand, tmp_path):
    port = free_port()
    spec = f"udp://127.0.0.1:{port}"
    srv = tickfand(*SERVER_FLAGS, "--topic", TOPIC, "--feed", spec)
    # the unknown-topic lines are rate-limited (5 a second): "other" first
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(good("U1", topic="other") + good("U2"), ("127.0.0.1", port))
    srv.wait_event("feed_unknown_topic", source=spec, topic="other")
    run_feed("send", "--to", spec, "--topic", "nosuch", "--count", 20, "--rate", 0)
    srv.wait_event("feed_unknown_topic", source=spec, topic="nosuch")
    s = run_feed("send", "--to", spec, "--topic", TOPIC, "--count", 30, "--rate", 0,
                 "--seed", 4, "--symbols", SYMBOLS)
    datas = data_of(collect(srv, 31))
    assert datas[0].key == "U2"
    check_ticks(datas[1:], expected_ticks(tmp_path, 30, 4))
    assert not rejects(srv, "udp://")


# ---- running out of file descriptors -----------------------------------------

def cpu_seconds(pid):
    """User + system CPU time of a process (/proc/PID/stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("io", ["uring", "epoll"])
def test_tcp_listen_out_of_fds_backs_off_then_accepts_again(tickfand, io):
    """With no descriptor left for a new connection (EMFILE) tickfand must
    not spin on accept: it waits and retries, says so in a rate-limited line,
    and takes connections again once descriptors are free."""
    port = free_port(socket.SOCK_STREAM)
    spec = f"tcp-listen://127.0.0.1:{port}"
    try:
        srv = tickfand(*SERVER_FLAGS, "--io", io, "--topic", TOPIC, "--feed", spec)
    except AssertionError as e:
        if io == "uring" and "io_uring is not available" in str(e):
            pytest.skip(f"SKIPPED LOUDLY: --io uring cannot start here: {e}")
        raise
    pid = srv.proc.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    conns = []
    try:
        # room for two connections, then EMFILE
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + 2,
                                                       limits[1]))
        mark = srv.mark()
        for _ in range(8):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for _ in range(2):
            _, mark = srv.wait_event("feed_connected", since=mark)
            mark += 1
        time.sleep(0.5)  # accept fails from here on
        before = cpu_seconds(pid)
        time.sleep(2.0)
        used = cpu_seconds(pid) - before
        assert used < 0.5, f"tickfand used {used:.2f} s of CPU in 2 s while out of descriptors"
        kv, _ = srv.wait_event("feed_accept_failed", timeout=2)
        assert kv["error"] == "Too many open files" and kv["source"] == spec, kv
        assert sum("msg=feed_accept_failed" in ln for ln in srv.lines) <= 2, \
            "the accept failure is not rate-limited"
        for c in conns:
            c.close()
        conns = []
        # the backlog drains as descriptors come back; then a new sender works
        time.sleep(1.0)
        mark = srv.mark()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            me = c.getsockname()[1]
            c.sendall(good("AFTER"))
            srv.wait_log(rf"msg=feed_connected source=\S+:{me}\"", timeout=5, since=mark)
            assert [d.key for d in data_of(collect(srv, 1))] == ["AFTER"]
    finally:
        for c in conns:
            c.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
