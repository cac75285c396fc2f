"""Readers that never read: a stream whose send HTTP/2 flow control holds
still gets its overflow policy when it crosses its lag budget, not when (if
ever) it reads again.

The readers are raw HTTP/2 clients (tests/integration/h2raw.py) with a
1,024-byte stream window that they never grant back: the server's send
blocks after a few messages, the way a stalled desk application or a hostile
client holds it. The topic is fed by Publish, so every count is exact:
DISCONNECT must end such a stream at once with RESOURCE_EXHAUSTED naming a
cursor the client holds whole; DROP and CONFLATE must be counted and logged
when the budget is crossed, and the Gap (then the conflated values) must be
the next thing the reader gets when it reads again.
"""
import re
import time

import grpc
import pytest

import h2raw
from events.v1 import publisher_pb2 as ppb
from events.v1 import publisher_pb2_grpc as ppb_grpc
from h2raw import pb_bytes, pb_varint
from test_metrics import scrape, value
from tickfan_harness import logfmt, pb

DISCONNECT, DROP, CONFLATE = 3, 1, 2
POLICY_NAME = {DISCONNECT: "disconnect", DROP: "drop", CONFLATE: "conflate"}
STREAMS = 12  # stalled streams per test, over CONNS connections
CONNS = 3
BUDGET = 1000
KEYS = 7
FLAGS = ("--feed", "none", "--topic", "pub", "--max-lag-events", str(BUDGET),
         "--metrics-listen", "127.0.0.1:0")
# A DISCONNECT stream's status waits behind its held message for three
# heartbeat cadences, then the call is cancelled with it.
NO_READ = FLAGS + ("--heartbeat-ms", "300")  # 0.9 s
READS_SOON = FLAGS + ("--heartbeat-ms", "5000")  # 15 s


class Publisher:
    def __init__(self, srv):
        self.stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))
        self.n = 0

    def publish(self, n):
        first = self.n + 1
        self.n += n
        reqs = (ppb.PublishRequest(topic="pub", kind="quote" if i % 2 else "trade",
                                   key=f"K{i % KEYS}", body=b"x" * 40)
                for i in range(first, first + n))
        assert self.stub.Publish(reqs, timeout=30).accepted == n


def stalled_streams(srv, policy):
    conns = [h2raw.Conn(srv.addr, window=1024, grant=False) for _ in range(CONNS)]
    req = pb_bytes(1, "pub") + pb_varint(5, pb.START_LIVE) + pb_varint(8, policy)
    streams = [(conns[i % CONNS], conns[i % CONNS].request(h2raw.WATCH, req))
               for i in range(STREAMS)]
    for c, st in streams:  # each is open: EndOfBacklog arrived
        assert c.pump_until(lambda: st.messages, 10.0), f"stream {st.id}: no EndOfBacklog"
    return conns, streams


def pump_all(conns, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in conns:
            c.pump(0.02)


def slow_lines(srv, policy):
    return [kv for kv in map(logfmt, list(srv.lines))
            if kv.get("msg") == "slow_consumer" and kv.get("policy") == POLICY_NAME[policy]]


def wait_slow(srv, conns, policy, n, timeout=15.0):
    """Pumps the connections (acknowledging SETTINGS and PINGs, granting no
    window) until n slow_consumer lines of the policy are logged."""
    end = time.monotonic() + timeout
    while len(slow_lines(srv, policy)) < n and time.monotonic() < end:
        pump_all(conns, 0.1)
    got = slow_lines(srv, policy)
    assert len(got) >= n, (f"{len(got)} of {n} stalled streams got their {POLICY_NAME[policy]} "
                           f"policy in {timeout} s: {got}")
    return got


def stalled_over_budget(srv, policy):
    """STREAMS stalled streams, then 3 budgets published: each must get its
    policy while stalled (stalled=1)."""
    conns, streams = stalled_streams(srv, policy)
    Publisher(srv).publish(3 * BUDGET)
    lines = wait_slow(srv, conns, policy, STREAMS)
    assert all(kv["stalled"] == "1" for kv in lines), lines
    return conns, streams


def events(st):
    return [pb.WatchEvent.FromString(m) for m in st.messages]


def seq_of(cursor):
    return int(cursor.rsplit("-", 1)[1])


def test_a_stalled_disconnect_stream_that_never_reads_is_cancelled_with_a_cursor_it_holds(
        tickfand):
    srv = tickfand(*NO_READ)
    conns, streams = stalled_over_budget(srv, DISCONNECT)
    try:
        for c, st in streams:
            c.pump_until(lambda: st.ended, 10.0)
            assert st.ended, f"stream {st.id}: no status while its send is held"
            code, msg, _ = st.status()
            assert code == 8, (code, msg)  # RESOURCE_EXHAUSTED
            m = re.search(r"resume from cursor (\S+)$", msg)
            assert m and msg.startswith("slow consumer: "), msg
            # the cursor named is one the client received whole: resuming
            # from it loses nothing (a client resumes from its own last one)
            held = [e.cursor for e in events(st)]
            assert m.group(1) in held, (m.group(1), held)
        m = scrape(srv)
        assert value(m, "tickfan_slow_consumer_total", policy="disconnect") == STREAMS
        assert value(m, "tickfan_stream_status_total", code="RESOURCE_EXHAUSTED") == STREAMS
    finally:
        for c in conns:
            c.close()


def test_a_stalled_disconnect_stream_that_reads_again_gets_its_trailers_and_cursor(tickfand):
    """Ended when the budget is crossed; the status and its tickfan-cursor
    trailer follow the held message, so a reader that comes back within
    the grace period gets every message sent and then the status."""
    srv = tickfand(*READS_SOON)
    conns, streams = stalled_over_budget(srv, DISCONNECT)
    try:
        pump_all(conns, 0.5)
        assert not any(st.ended for _, st in streams)  # held behind the message
        for c in conns:
            c.start_reading()
        for c, st in streams:
            c.pump_until(lambda: st.ended, 10.0)
            code, msg, trailers = st.status()
            assert code == 8, (code, msg)
            got = events(st)
            assert trailers.get("tickfan-cursor") == got[-1].cursor, (trailers, got[-1])
            assert msg.endswith(f"resume from cursor {got[-1].cursor}"), msg
            seqs = [e.data.seq for e in got if e.WhichOneof("payload") == "data"]
            assert seqs == list(range(1, len(seqs) + 1))
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("policy", [DROP, CONFLATE], ids=["drop", "conflate"])
def test_a_stalled_drop_or_conflate_stream_is_counted_now_and_told_exactly_later(
        tickfand, policy):
    srv = tickfand(*READS_SOON)
    conns, streams = stalled_streams(srv, policy)
    pub = Publisher(srv)
    try:
        pub.publish(2 * BUDGET)
        lines = wait_slow(srv, conns, policy, STREAMS)
        assert all(kv["stalled"] == "1" for kv in lines), lines
        m = scrape(srv)
        assert value(m, "tickfan_slow_consumer_total", policy=POLICY_NAME[policy]) == STREAMS
        # over the budget twice more while still held: the same incident,
        # its Gap widened, no second line
        pub.publish(BUDGET + 100)
        pump_all(conns, 0.8)
        pub.publish(BUDGET + 100)
        pump_all(conns, 0.8)
        assert len(slow_lines(srv, policy)) == STREAMS, slow_lines(srv, policy)
        held = {st.id: len(st.messages) for _, st in streams}
        for c in conns:
            c.start_reading()
        for c, st in streams:
            c.pump_until(lambda: "gap" in [e.WhichOneof("payload") for e in events(st)], 10.0)
        pub.publish(20)  # live events after the Gap
        total = pub.n
        for c, st in streams:
            c.pump_until(lambda: events(st)[-1].WhichOneof("payload") == "data" and
                         events(st)[-1].data.seq == total, 10.0)
            got = events(st)
            kinds = [e.WhichOneof("payload") for e in got]
            assert kinds.count("gap") == 1, f"stream {st.id}: {kinds.count('gap')} Gaps"
            i = kinds.index("gap")
            assert i >= held[st.id], f"stream {st.id}: the Gap came before it read again"
            gap = got[i]
            assert gap.gap.reason == pb.GAP_SLOW_CONSUMER
            before = seq_of(got[i - 1].cursor)
            assert gap.gap.from_cursor == got[i - 1].cursor
            at = seq_of(gap.cursor)
            # everything between the last event sent and the head is counted
            assert gap.gap.missed == at - before > 2 * BUDGET, (gap.gap.missed, before, at)
            data_before = [e.data.seq for e in got[:i] if kinds[got.index(e)] == "data"]
            assert data_before == list(range(1, before + 1)), "not contiguous before the Gap"
            rest = got[i + 1:]
            if policy == CONFLATE:
                snap = [e for e in rest if e.WhichOneof("payload") == "data" and e.data.snapshot]
                pairs = [(e.data.kind, e.data.key) for e in snap]
                # every pair that changed in the skipped range, once each
                assert sorted(pairs) == sorted({("quote" if s % 2 else "trade", f"K{s % KEYS}")
                                                for s in range(before + 1, at + 1)}), pairs
                assert all(e.cursor == gap.cursor for e in snap)
                assert rest[:len(snap)] == snap, "conflated values not right after the Gap"
                rest = rest[len(snap):]
            seqs = [e.data.seq for e in rest if e.WhichOneof("payload") == "data"]
            assert seqs == list(range(at + 1, total + 1)), (at, total, seqs[:5])
        m = scrape(srv)
        assert value(m, "tickfan_slow_consumer_total", policy=POLICY_NAME[policy]) == STREAMS
    finally:
        for c in conns:
            c.close()

