"""start=START_AT_TIME: the stream begins at the first event ingested at or
after start_unix_micros (the live head when there is none yet); a time <= 0
is INVALID_ARGUMENT."""
import time

import grpc

from tickfan_harness import Watch, cursor_parts, expect_status, pb, read_contiguous

FLAGS = ("--sim-rate", "2000")


def now_us():
    return int(time.time() * 1e6)


def reference(stub, n):
    """The first n events of the topic, from an unfiltered START_EARLIEST
    stream; ingest times must not go back along the sequence (that is what
    makes "the first event ingested at or after T" one position)."""
    w = Watch(stub, topic="sim")
    try:
        data = [e.data for e in read_contiguous(w, n, 1, "reference")]
    finally:
        w.cancel()
    for a, b in zip(data, data[1:]):
        assert a.ingested_at_unix_micros <= b.ingested_at_unix_micros, \
            f"ingest time went back from seq {a.seq} to {b.seq}: {a} {b}"
    return data


def at_time(stub, t, n, **filters):
    """The first n Data of a START_AT_TIME stream at t (nothing but Data,
    heartbeats and EndOfBacklog allowed)."""
    w = Watch(stub, topic="sim", start=pb.START_AT_TIME, start_unix_micros=t, **filters)
    try:
        return [w.next_data().data for _ in range(n)]
    finally:
        w.cancel()


def test_start_at_time_begins_at_the_first_event_ingested_at_or_after_it(tickfand):
    srv = tickfand(*FLAGS)
    stub = srv.stub()
    ref = reference(stub, 1200)
    ing = [d.ingested_at_unix_micros for d in ref]

    # T strictly between two consecutive events' ingest times.
    i = next(i for i in range(300, 900) if ing[i] - ing[i - 1] >= 2)
    t = (ing[i - 1] + ing[i]) // 2
    assert ing[i - 1] < t < ing[i]
    got = at_time(stub, t, 300)
    assert got[0] == ref[i], \
        f"T={t} between seq {ref[i - 1].seq} ({ing[i - 1]}) and {ref[i].seq} ({ing[i]}): " \
        f"first delivered seq {got[0].seq} ({got[0].ingested_at_unix_micros})"
    assert got == ref[i:i + 300], f"T={t}: not the log's events from seq {ref[i].seq} on"

    # T exactly an event's ingest time: that event is the first ("at or after").
    j = next(j for j in range(600, 1100) if ing[j] > ing[j - 1])
    got = at_time(stub, ing[j], 100)
    assert got[0] == ref[j], \
        f"T={ing[j]} = ingest time of seq {ref[j].seq}: first delivered seq {got[0].seq}"
    assert got == ref[j:j + 100]

    # With a filter: the first matching event at or after T.
    trades = [d for d in ref[i:] if d.kind == "trade"][:20]
    got = at_time(stub, t, 20, kinds=["trade"])
    assert got == trades, f"T={t}, kinds=[trade]: {[d.seq for d in got]} != " \
        f"{[d.seq for d in trades]}"

    # T before the oldest event: the whole log, from seq 1.
    got = at_time(stub, 1, 50)
    assert got == ref[:50], f"T=1: first delivered seq {got[0].seq}"


def test_start_at_time_in_the_future_starts_at_the_live_head(tickfand):
    """No event is ingested at or after a time an hour ahead: the stream is
    positioned at the live head. Asserted: its first message is EndOfBacklog
    (no backlog), whose position E is at least the head before asking (where
    a START_LIVE stream opened just before was positioned) and no later than
    the head when it arrived (event E was ingested by then); then the live
    events E+1, E+2 ... contiguous, the log's own."""
    srv = tickfand(*FLAGS)
    stub = srv.stub()
    ref = Watch(stub, topic="sim", deadline=60)  # every event, to compare
    time.sleep(0.2)
    # The head before asking: where a START_LIVE stream is positioned.
    probe = Watch(stub, topic="sim", start=pb.START_LIVE)
    eob = probe.next()
    probe.cancel()
    assert eob.WhichOneof("payload") == "end_of_backlog", eob
    head_before = cursor_parts(eob.cursor)[1]
    assert head_before > 0, "no events after 0.2 s at 2000/s"
    seen = {}

    w = Watch(stub, topic="sim", start=pb.START_AT_TIME, start_unix_micros=now_us() + 3600 * 10**6)
    try:
        first = w.next()
        t_eob = now_us()
        assert first.WhichOneof("payload") == "end_of_backlog", \
            f"START_AT_TIME an hour ahead began with {first}"
        e = cursor_parts(first.cursor)[1]
        live = read_contiguous(w, 100, e + 1, "after the EndOfBacklog")
    finally:
        w.cancel()
    assert e >= head_before, f"positioned at {e}, before the earlier head {head_before}"
    while max(seen, default=0) < e + 100:
        ev = ref.next_data()
        seen[ev.data.seq] = ev.data
    ref.cancel()
    assert seen[e].ingested_at_unix_micros <= t_eob, \
        f"positioned at {e}, an event ingested after the EndOfBacklog arrived"
    assert [x.data for x in live] == [seen[s] for s in range(e + 1, e + 101)]


def test_start_at_time_not_after_the_epoch_is_invalid_argument(tickfand):
    srv = tickfand(*FLAGS)
    stub = srv.stub()
    for t in (0, -1, -now_us()):
        ended = expect_status(stub, grpc.StatusCode.INVALID_ARGUMENT, topic="sim",
                              start=pb.START_AT_TIME, start_unix_micros=t)
        assert "start_unix_micros" in ended.details, f"T={t}: {ended}"
    # The server is fine afterwards.
    assert at_time(stub, 1, 1)[0].seq == 1
