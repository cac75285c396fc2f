"""snapshot=true: before the stream's first event, the latest event of every
matching (kind, key) as of the start position, marked snapshot and carrying
the start position's cursor; then the events from the start position on, in
order, EndOfBacklog at the head, then live."""
import socket
import struct
import threading
import time

import grpc
import pytest

from tickfan_harness import Watch, cursor_parts, first_data, pb, plain, read_contiguous
from events.v1 import publisher_pb2 as ppb  # noqa: E402
from events.v1 import publisher_pb2_grpc as ppb_grpc  # noqa: E402

SYMBOLS = "AAPL,MSFT,GOOG"
# 3 symbols at 2000 ticks/s: every (kind, key) changes every few ms, so a
# snapshot has to be exact about the position it is taken at.
FLAGS = ("--sim-rate", "2000", "--sim-symbols", SYMBOLS)
PAIRS = {(k, s) for k in ("quote", "trade") for s in SYMBOLS.split(",")}


class History:
    """The topic's events as an unfiltered START_EARLIEST stream sees them."""

    def __init__(self, stub):
        self.watch = Watch(stub, topic="sim", deadline=60)
        self.data = []  # Data, seq 1, 2, 3 ...
        self.cursors = []  # their cursors

    def upto(self, seq):
        """Reads until the history holds seq 1..seq."""
        while len(self.data) < seq:
            ev = self.watch.next()
            if ev.WhichOneof("payload") == "data":
                assert ev.data.seq == len(self.data) + 1, f"history not contiguous: {ev}"
                self.data.append(ev.data)
                self.cursors.append(ev.cursor)
        return self.data[:seq]

    def latest(self, seq, kinds=(), keys=()):
        """{(kind, key): the latest Data with seq <= `seq`} over the matching
        pairs."""
        out = {}
        for d in self.upto(seq):
            if (not kinds or d.kind in kinds) and (not keys or d.key in keys):
                out[(d.kind, d.key)] = d
        return out

    def next_of(self, pair, seq, within=2000):
        """The seq of the first event of `pair` after `seq` (None if none
        within `within` more events)."""
        for d in self.upto(seq + within)[seq:]:
            if (d.kind, d.key) == pair:
                return d.seq
        return None

    def between(self, lo, hi, kinds=(), keys=()):
        """The matching Data with lo < seq <= hi."""
        return [d for d in self.upto(hi)[lo:]
                if (not kinds or d.kind in kinds) and (not keys or d.key in keys)]

    def close(self):
        self.watch.cancel()


def read_snapshot(w):
    """Reads the snapshot values at the head of stream `w`: (values, the
    first event after them)."""
    values = []
    while True:
        ev = w.next()
        if ev.WhichOneof("payload") == "data" and ev.data.snapshot:
            values.append(ev)
        else:
            return values, ev


def check_snapshot(values, history, what, kinds=(), keys=(), complete=True):
    """The snapshot values all carry one cursor, position S; they are exactly
    one per matching (kind, key) that occurred at seq <= S (with complete
    False: at most one), each equal to the latest such event. Returns
    (epoch, S)."""
    assert values, f"{what}: no snapshot values"
    cursors = {ev.cursor for ev in values}
    assert len(cursors) == 1, f"{what}: snapshot values carry several cursors: {cursors}"
    epoch, s = cursor_parts(cursors.pop())
    got = {}
    for ev in values:
        pair = (ev.data.kind, ev.data.key)
        assert pair not in got, f"{what}: two snapshot values of {pair}: {got[pair]} and {ev}"
        got[pair] = ev.data
    want = history.latest(s, kinds, keys)
    missing = sorted(set(want) - set(got)) if complete else []
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, (
        f"{what}: snapshot at position {s}: missing "
        f"{[(p, want[p].seq, history.next_of(p, s)) for p in missing]} "
        f"(pair, its latest seq <= {s}, its next seq), "
        f"unexpected {[(p, got[p].seq) for p in extra]}; "
        f"got {sorted((p, d.seq) for p, d in got.items())}")
    for pair, d in got.items():
        assert d.seq <= s, f"{what}: snapshot value of {pair} is newer than its position {s}: {d}"
        assert plain(d) == want[pair], \
            f"{what}: snapshot value of {pair} is seq {d.seq}, the latest at {s} is " \
            f"seq {want[pair].seq}"
    return epoch, s


def read_after_snapshot(w, first, s, n_live, what):
    """From `first` (the first event after the snapshot values) on: Data
    seq s+1, s+2 ... none marked snapshot, exactly one EndOfBacklog, then
    `n_live` more Data. Returns (all Data after the snapshot, events)."""
    data, events, eob_at = [], [], None
    ev = first
    while True:
        events.append(ev)
        kind = ev.WhichOneof("payload")
        assert kind in ("data", "end_of_backlog", "heartbeat"), f"{what}: unexpected {ev}"
        if kind == "end_of_backlog":
            assert eob_at is None, f"{what}: a second EndOfBacklog: {ev}"
            eob_at = len(data)
        elif kind == "data":
            assert not ev.data.snapshot, f"{what}: a snapshot value after the snapshot: {ev}"
            data.append(ev.data)
        if eob_at is not None and len(data) - eob_at >= n_live:
            return data, events
        ev = w.next()


def test_start_live_snapshot_is_the_latest_value_of_every_pair_then_live(tickfand):
    srv = tickfand(*FLAGS)
    stub = srv.stub()
    history = History(stub)
    history.upto(500)  # every pair has occurred many times by now
    # A snapshot is one moment; take many, so that a race with the writer
    # (every pair changes every few ms) has room to show.
    for i in range(50):
        what = f"START_LIVE snapshot #{i}"
        w = Watch(stub, topic="sim", start=pb.START_LIVE, snapshot=True)
        try:
            values, first = read_snapshot(w)
            epoch, s = check_snapshot(values, history, what)
            assert len(values) == len(PAIRS), what  # 3 symbols x (quote, trade), all seen
            data, events = read_after_snapshot(w, first, s, 20, what)
        finally:
            w.cancel()
        assert [d.seq for d in data] == list(range(s + 1, s + 1 + len(data))), \
            f"{what}: after the snapshot at {s}: seqs {[d.seq for d in data][:10]} ..."
        assert data == history.between(s, data[-1].seq), f"{what}: events differ from the log"
        assert {cursor_parts(e.cursor)[0] for e in events} == {epoch}, what
    history.close()


def test_snapshot_respects_the_filters(tickfand):
    srv = tickfand(*FLAGS)
    stub = srv.stub()
    history = History(stub)
    history.upto(500)
    kinds, keys = ["quote"], ["MSFT"]
    for i in range(5):
        what = f"snapshot kinds={kinds} keys={keys} #{i}"
        w = Watch(stub, topic="sim", start=pb.START_LIVE, snapshot=True, kinds=kinds, keys=keys)
        try:
            values, first = read_snapshot(w)
            _, s = check_snapshot(values, history, what, kinds, keys)
            assert [(v.data.kind, v.data.key) for v in values] == [("quote", "MSFT")], what
            data, _ = read_after_snapshot(w, first, s, 30, what)
        finally:
            w.cancel()
        assert data == history.between(s, data[-1].seq, kinds, keys), \
            f"{what}: after the snapshot, not exactly the MSFT quotes of the log"


def test_resume_from_a_cursor_received_after_the_snapshot_is_exact(tickfand):
    srv = tickfand(*FLAGS)
    stub = srv.stub()
    history = History(stub)
    history.upto(300)
    w = Watch(stub, topic="sim", start=pb.START_LIVE, snapshot=True)
    try:
        values, first = read_snapshot(w)
        # Whether the snapshot is complete is the business of the START_LIVE
        # test above; here what it sent must be right and resumable.
        _, s = check_snapshot(values, history, "snapshot", complete=False)
        data, events = read_after_snapshot(w, first, s, 200, "snapshot stream")
    finally:
        w.cancel()
    # The snapshot's own cursor (the start position), the EndOfBacklog's, and
    # Data cursors before and after it: each resumes right after itself.
    eob = next(e for e in events if e.WhichOneof("payload") == "end_of_backlog")
    picks = [values[-1].cursor, eob.cursor] + [events[i].cursor for i in (0, len(events) // 2)]
    for cursor in picks:
        after = cursor_parts(cursor)[1]
        r = Watch(stub, topic="sim", cursor=cursor)
        try:
            got = read_contiguous(r, 50, after + 1, f"resume from {cursor}")
        finally:
            r.cancel()
        assert [e.data for e in got] == history.between(after, after + 50), \
            f"resume from {cursor}: events differ from the log"
        want = [d for d in data if d.seq > after][:50]
        assert [e.data for e in got][:len(want)] == want, \
            f"resume from {cursor}: not what the snapshot stream delivered after it"
    # Resuming from the cursor of a snapshot value is resuming from the start
    # position: the filtered view of it is exact too.
    r = Watch(stub, topic="sim", cursor=values[0].cursor, kinds=["trade"])
    try:
        got = [r.next_data().data for _ in range(10)]
    finally:
        r.cancel()
    assert got == history.between(s, got[-1].seq, kinds=["trade"])[:10]


def test_snapshot_with_start_earliest_on_an_unwrapped_log_sends_no_values(tickfand):
    """On a log that never wrapped, START_EARLIEST starts at seq 1: nothing
    is before the start position, so no snapshot value is due. Asserted: the
    first event is Data seq 1, not marked snapshot, and no event marked
    snapshot arrives at all; the stream is seq 1, 2, 3 ... contiguous with
    one EndOfBacklog, exactly the log's events."""
    srv = tickfand(*FLAGS)
    stub = srv.stub()
    history = History(stub)
    history.upto(300)
    w = Watch(stub, topic="sim", snapshot=True)
    try:
        first = w.next()
        assert first.WhichOneof("payload") == "data", f"first event: {first}"
        assert not first.data.snapshot and first.data.seq == 1, \
            f"snapshot + START_EARLIEST on an unwrapped log began with {first}"
        data, _ = read_after_snapshot(w, first, 0, 50, "snapshot + START_EARLIEST")
    finally:
        w.cancel()
    assert [d.seq for d in data] == list(range(1, len(data) + 1))
    assert data == history.upto(len(data))


def test_snapshot_from_a_past_cursor_is_the_state_as_of_that_cursor(tickfand):
    """With a cursor, the start position is right after it: the snapshot is
    every pair's latest value at or before the cursor's position, although
    every pair has changed since; then the events after the cursor."""
    srv = tickfand(*FLAGS)
    stub = srv.stub()
    history = History(stub)
    history.upto(1500)
    c_seq = 500  # every pair occurred before it and changed many times after
    cursor = history.cursors[c_seq - 1]
    later = history.latest(1500)
    assert all(d.seq > c_seq for d in later.values()), \
        f"precondition: a pair did not change after {c_seq}: {later}"

    w = Watch(stub, topic="sim", cursor=cursor, snapshot=True)
    try:
        values, first = read_snapshot(w)
        what = f"snapshot from cursor {cursor}"
        assert values, f"{what}: no snapshot values; first event {first}"
        assert {v.cursor for v in values} == {cursor}, f"{what}: value cursors differ from it"
        check_snapshot(values, history, what)
        data, _ = read_after_snapshot(w, first, c_seq, 10, what)
    finally:
        w.cancel()
    assert [d.seq for d in data] == list(range(c_seq + 1, c_seq + 1 + len(data)))


def test_snapshot_after_kill9_restart_is_the_recovered_last_values(tickfand):
    """The last-value cache is rebuilt from the recovered log: restarted
    without a feed (nothing changes any more), a START_LIVE snapshot is the
    latest event of every pair in the log, byte for byte."""
    srv = tickfand(*FLAGS)
    history = History(srv.stub())
    history.upto(1000)
    srv.kill()
    history.close()
    srv = tickfand.restart(srv, ("--feed", "none", "--topic", "sim"))
    kv = srv.log_opened()
    assert kv.get("epoch_kept") == "true", kv
    head = int(kv["head_seq"])
    stub = srv.stub()
    history = History(stub)
    history.upto(head)
    w = Watch(stub, topic="sim", start=pb.START_LIVE, snapshot=True)
    try:
        values, first = read_snapshot(w)
        _, s = check_snapshot(values, history, "snapshot after restart")
        assert s == head, f"snapshot position {s}, recovered head {head}"
        assert len(values) == len(PAIRS)
        assert first.WhichOneof("payload") == "end_of_backlog", first
    finally:
        w.cancel()
    history.close()


def test_a_snapshot_value_neither_the_log_nor_the_cache_holds_is_told_by_a_gap(tickfand):
    """A value too large for the cache (which then keeps only its log
    position) that the log has overwritten since cannot be sent: the
    snapshot is every value there is, then a Gap{GAP_RETENTION} counting
    the ones lost, at the snapshot's position, then the stream goes on."""
    srv = tickfand("--feed", "none", "--topic", "pub", "--log-size", "64K")
    pub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))

    def records():
        yield ppb.PublishRequest(topic="pub", kind="quote", key="BIG", body=b"x" * 1000)
        for i in range(2000):  # ~180 KB: BIG is long gone from the 64 KiB log
            yield ppb.PublishRequest(topic="pub", kind="quote", key=f"S{i % 5}",
                                     body=f"small-{i}".encode())

    assert pub.Publish(records(), timeout=30).accepted == 2001
    w = Watch(srv.stub(), topic="pub", start=pb.START_LIVE, snapshot=True)
    try:
        values, first = read_snapshot(w)
        assert sorted(v.data.key for v in values) == [f"S{i}" for i in range(5)], values
        assert first.WhichOneof("payload") == "gap", \
            f"after a snapshot short of one value: {first} (no Gap tells the loss)"
        assert first.gap.reason == pb.GAP_RETENTION and first.gap.missed == 1, first
        assert first.cursor == values[0].cursor == first.gap.from_cursor, (first, values[0])
        assert w.next().WhichOneof("payload") == "end_of_backlog"
    finally:
        w.cancel()
    kv, _ = srv.wait_event("snapshot_incomplete", topic="pub")
    assert kv["lost"] == "1" and kv["sent"] == "5", kv


HDR = struct.Struct("<2sBBIIIQqBBHI")  # feed/FORMAT.md


def feed_frame(topic, kind, key, body):
    t, k, y = topic.encode(), kind.encode(), key.encode()
    n = HDR.size + len(t) + len(k) + len(y) + len(body)
    return HDR.pack(b"TF", 1, 1, n, 0, 0, 0, 0, len(t), len(k), len(y), len(body)) + t + k + y + body


def test_live_snapshot_overtaken_by_the_writer_keeps_the_pairs_only_the_cache_holds(tickfand):
    """A START_LIVE snapshot retries newer positions while the writer keeps
    changing matching pairs as the cache is read. When every retry is
    overtaken it must still carry the pairs whose value only the cache holds
    any more (the log overwrote them long ago): every matching pair is sent
    or counted in a Gap. Made real with 60,000 cold pairs (a long cache walk)
    and 10 hot pairs, created last so they are read last, that a TCP feed
    changes as fast as the ingest thread appends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = tickfand("--feed", f"tcp-listen://127.0.0.1:{port}", "--topic", "hot", "--log-size",
                   "1M", "--log-level", "debug")
    n_cold, hot = 60000, [f"H{i}" for i in range(10)]
    feed = socket.create_connection(("127.0.0.1", port), timeout=10)
    feed.sendall(b"".join(feed_frame("hot", "quote", f"C{i}", b"cold-%d" % i)
                          for i in range(n_cold)))
    hot_burst = b"".join(feed_frame("hot", "quote", hot[i % len(hot)], b"hot-%06d" % i)
                         for i in range(2000))
    stop = threading.Event()

    def keep_changing():
        while not stop.is_set():
            try:
                feed.sendall(hot_burst)
            except OSError:
                return

    writer = threading.Thread(target=keep_changing, daemon=True)
    writer.start()
    stub = srv.stub()
    try:
        deadline = time.monotonic() + 30
        while first_data(stub, topic="hot").data.seq <= n_cold:  # cold pairs: cache only
            assert time.monotonic() < deadline, "the log still holds cold records after 30 s"
            time.sleep(0.2)
        cold = [f"C{i}" for i in range(0, n_cold, 600)]
        mark = srv.mark()
        w = Watch(stub, topic="hot", start=pb.START_LIVE, snapshot=True, keys=cold + hot)
        try:
            values, first = read_snapshot(w)
        finally:
            w.cancel()
    finally:
        stop.set()
        writer.join(timeout=10)
        feed.close()
    got = {v.data.key for v in values}
    missing = sorted(set(cold) - got, key=lambda k: int(k[1:]))
    assert not missing, f"{len(missing)} pairs only the cache held are not in the snapshot " \
                        f"(first {missing[:5]}); got {len(values)} values, then {first}"
    lost = first.gap.missed if first.WhichOneof("payload") == "gap" else 0
    assert len(got & set(hot)) + lost == len(hot), (sorted(got & set(hot)), first)
    assert len({v.cursor for v in values}) == 1
    try:
        srv.wait_log(r"msg=snapshot_overtaken .*action=scan", timeout=2, since=mark)
    except AssertionError:
        pytest.skip("SKIPPED LOUDLY: the writer did not overtake the live snapshot on every "
                    "attempt; the case was NOT exercised")
