"""Watch over the simulated feed: order, cursors, EndOfBacklog, resume, start."""
import pytest

import tickfan_harness as h
from tickfan_harness import Watch, cursor_parts, pb, tick_pb2

SIM_SYMBOLS = {"AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "JPM"}


def read_data(w, n, timeout=10.0):
    return [w.next_data(timeout=timeout) for _ in range(n)]


def seqs(events):
    return [e.data.seq for e in events]


@pytest.mark.parametrize("coalescing", ["true", "false"])
def test_data_arrives_in_topic_order_with_cursors_and_one_end_of_backlog(tickfand, coalescing):
    srv = tickfand("--sim-rate", "2000", f"--write-coalescing={coalescing}")
    stub = srv.stub()
    # Let the topic build a backlog first, so the stream below has one to replay.
    warm = Watch(stub, topic="sim")
    backlog = read_data(warm, 300)
    warm.cancel()
    assert seqs(backlog) == list(range(1, 301))

    w = Watch(stub, topic="sim")
    events = []
    eob_index = None
    data_after_eob = 0
    while data_after_eob < 400:
        ev = w.next()
        events.append(ev)
        kind = ev.WhichOneof("payload")
        assert kind in ("data", "end_of_backlog", "heartbeat"), f"unexpected {kind}: {ev}"
        if kind == "end_of_backlog":
            assert eob_index is None, f"second EndOfBacklog at event {len(events)}"
            eob_index = len(events) - 1
        elif kind == "data" and eob_index is not None:
            data_after_eob += 1
    w.cancel()

    assert eob_index is not None
    data = [e for e in events if e.WhichOneof("payload") == "data"]
    data_before_eob = [e for e in events[:eob_index] if e.WhichOneof("payload") == "data"]
    assert len(data_before_eob) >= 300, "EndOfBacklog came before the replayed backlog"

    # Full replay from the start of a fresh log, contiguous, no duplicates.
    assert seqs(data) == list(range(1, len(data) + 1))

    # Every event carries a cursor of the topic's one epoch; Data cursors
    # strictly advance, and no cursor ever goes back.
    epochs = set()
    prev_pos = -1
    prev_data_pos = -1
    for ev in events:
        assert ev.cursor, f"event without cursor: {ev}"
        epoch, pos = cursor_parts(ev.cursor)
        epochs.add(epoch)
        assert pos >= prev_pos, f"cursor went back: {ev.cursor} after position {prev_pos}"
        prev_pos = pos
        if ev.WhichOneof("payload") == "data":
            assert pos > prev_data_pos, f"Data cursor {ev.cursor} did not advance"
            prev_data_pos = pos
    assert len(epochs) == 1, f"cursors of several epochs: {epochs}"

    # The same events as the first reader saw (encoded once, served to all).
    assert [e.data for e in data[:300]] == [e.data for e in backlog]

    for ev in data:
        d = ev.data
        assert d.kind in ("quote", "trade"), d
        assert d.key in SIM_SYMBOLS, d
        assert not d.snapshot, d
        assert d.emitted_at_unix_micros > 0 and d.ingested_at_unix_micros > 0, d
        tick = tick_pb2.Tick.FromString(d.body)
        assert tick.symbol == d.key, (tick, d)
        assert tick.WhichOneof("body") == d.kind, (tick, d)


def test_resume_from_cursor_delivers_exactly_the_later_events(tickfand):
    srv = tickfand("--sim-rate", "2000")
    stub = srv.stub()
    w = Watch(stub, topic="sim")
    got = read_data(w, 200)
    w.cancel()
    assert seqs(got) == list(range(1, 201))

    for j in (0, 57, 199):
        r = Watch(stub, topic="sim", cursor=got[j].cursor)
        after = read_data(r, 250)
        r.cancel()
        start = got[j].data.seq + 1
        assert seqs(after) == list(range(start, start + 250)), f"resume after event {j}"
        # The overlap with the first read is the very same events.
        overlap = [e.data for e in got[j + 1:]]
        assert [e.data for e in after[:len(overlap)]] == overlap


def test_resume_from_end_of_backlog_cursor_continues_after_the_last_event(tickfand):
    srv = tickfand("--sim-rate", "2000")
    stub = srv.stub()
    w = Watch(stub, topic="sim")
    last_data = None
    while True:
        ev = w.next()
        kind = ev.WhichOneof("payload")
        if kind == "end_of_backlog":
            eob = ev
            break
        assert kind in ("data", "heartbeat"), ev
        if kind == "data":
            last_data = ev
    w.cancel()
    r = Watch(stub, topic="sim", cursor=eob.cursor)
    first = r.next_data()
    r.cancel()
    expected = last_data.data.seq + 1 if last_data else 1
    assert first.data.seq == expected


def test_cursor_takes_precedence_over_start_position(tickfand):
    srv = tickfand("--sim-rate", "2000")
    stub = srv.stub()
    w = Watch(stub, topic="sim")
    got = read_data(w, 50)
    w.cancel()
    r = Watch(stub, topic="sim", cursor=got[9].cursor, start=pb.START_LIVE)
    after = read_data(r, 20)
    r.cancel()
    assert seqs(after) == list(range(got[9].data.seq + 1, got[9].data.seq + 21))


def test_start_live_skips_the_backlog(tickfand):
    srv = tickfand("--sim-rate", "2000")
    stub = srv.stub()
    # A parallel full reader: once it has passed its EndOfBacklog and seq 500,
    # the head is at least there.
    a = Watch(stub, topic="sim")
    saw_eob = False
    head_before = 0
    while not (saw_eob and head_before >= 500):
        ev = a.next()
        if ev.WhichOneof("payload") == "end_of_backlog":
            saw_eob = True
        elif ev.WhichOneof("payload") == "data":
            head_before = ev.data.seq

    b = Watch(stub, topic="sim", start=pb.START_LIVE)
    events = []
    while len([e for e in events if e.WhichOneof("payload") == "data"]) < 200:
        ev = b.next()
        assert ev.WhichOneof("payload") in ("data", "end_of_backlog", "heartbeat"), ev
        events.append(ev)
    b.cancel()
    a.cancel()

    data = [e for e in events if e.WhichOneof("payload") == "data"]
    first = data[0].data.seq
    assert first > head_before, f"START_LIVE replayed: first seq {first} <= head {head_before}"
    assert seqs(data) == list(range(first, first + len(data)))
    eobs = [e for e in events if e.WhichOneof("payload") == "end_of_backlog"]
    assert len(eobs) == 1, f"{len(eobs)} EndOfBacklog events on a live stream"
    assert all(e.cursor for e in events)
