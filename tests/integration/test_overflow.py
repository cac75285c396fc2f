"""Overflow: a live subscriber that stops reading falls behind its lag budget
and, when it reads again, gets exactly what its policy says, with exact
counts: DROP a Gap, CONFLATE a Gap then the latest value of every (kind, key)
that changed, DISCONNECT RESOURCE_EXHAUSTED with the cursor to resume from.
The budget is in bytes (--max-lag-bytes) and in events (--max-lag-events);
crossing either one applies the policy."""
import re
import signal
import time

import grpc

from tickfan_harness import Watch, cursor_parts, logfmt, pb, pb_grpc

# 20,000 events/s of ~130 bytes: a 256 KiB lag budget is exceeded within
# ~0.1 s of stalling, long before the 64 MiB log (~25 s of events) could lap
# the subscriber or the history replay the conflation check reads.
FLAGS = ("--sim-rate", "20000", "--log-size", "64M", "--max-lag-bytes", "256K",
         "--heartbeat-ms", "1000")
STALL_S = 2.0


# A byte budget far beyond what a 2 s stall builds up (~10,000 events, ~1.3 MB
# of the 64 MiB log), so that only --max-lag-events can trigger the policy;
# 5,000 events/s leaves a Python client ample room to catch up after it.
EVENTS_FLAGS = ("--sim-rate", "5000", "--log-size", "64M", "--max-lag-bytes", "48M",
                "--heartbeat-ms", "1000")


def stalled_stream(srv, **fields):
    """A Watch that reads up to EndOfBacklog, then stops reading for STALL_S
    seconds. BDP probing is off so the client's flow-control window stays
    small and the server's send really blocks. Returns (events read before
    the stall, the still-open call iterator, the channel)."""
    ch = grpc.insecure_channel(srv.addr, options=[("grpc.http2.bdp_probe", 0)])
    call = pb_grpc.WatcherStub(ch).Watch(
        pb.WatchRequest(topic="sim", start=pb.START_LIVE, **fields), timeout=60)
    before = []
    for ev in call:
        before.append(ev)
        if ev.WhichOneof("payload") == "end_of_backlog":
            break
    time.sleep(STALL_S)
    return before, call, ch


def read_until_data_after_gap(call, limit=200000):
    """Reads until a Gap and then 50 live (non-snapshot) Data events."""
    events, seen_gap, live_after = [], False, 0
    for ev in call:
        events.append(ev)
        kind = ev.WhichOneof("payload")
        if kind == "gap":
            seen_gap = True
        elif kind == "data" and seen_gap and not ev.data.snapshot:
            live_after += 1
            if live_after == 50:
                return events
        assert len(events) < limit, "no Gap after the stall"
    raise AssertionError("stream ended early")


def split_at_gap(events):
    i = next(i for i, ev in enumerate(events) if ev.WhichOneof("payload") == "gap")
    return events[:i], events[i], events[i + 1:]


def slow_consumer_lines(srv, policy):
    return [logfmt(line) for line in srv.lines
            if "msg=slow_consumer " in line and f"policy={policy}" in line]


def episode_totals(srv, policy, first=None):
    """What the server logged each slow-consumer episode skipped in all (the
    `first` episodes only, if given). A stalled reader (its send held by
    flow control) is logged when it crosses the budget (stalled=1, the count
    then) and its Gap may widen while it stays stalled;
    msg=slow_consumer_told gives the total when the Gap is sent. Otherwise
    the slow_consumer line has the total.

    A test compares the episodes whose Gaps its client read: a Python
    reader that goes on after its Gap at 20,000 events/s may fall behind
    again before it stops reading, under load, which is a later episode of
    its own (seen in CI: a second one 45 ms after the first was told)."""
    lines = [logfmt(line) for line in srv.lines]
    out = []
    for i, kv in enumerate(lines):
        if first is not None and len(out) == first:
            break
        if kv.get("msg") != "slow_consumer" or kv.get("policy") != policy:
            continue
        if kv.get("stalled") != "1":
            out.append(int(kv["missed"]))
            continue
        told = [t for t in lines[i + 1:] if t.get("msg") == "slow_consumer_told"
                and t.get("id") == kv["id"]]
        assert told, f"no slow_consumer_told line after {kv}"
        assert int(kv["missed"]) <= int(told[0]["missed"]), (kv, told[0])
        out.append(int(told[0]["missed"]))
    return out


def test_drop_sends_a_gap_with_the_exact_number_skipped_then_continues(tickfand):
    srv = tickfand(*FLAGS)
    before, call, ch = stalled_stream(srv, overflow=pb.OVERFLOW_DROP)
    events = read_until_data_after_gap(call)
    call.cancel()
    ch.close()
    pre, gap, post = split_at_gap(events)
    data_pre = [ev.data.seq for ev in before + pre if ev.WhichOneof("payload") == "data"]
    data_post = [ev.data.seq for ev in post if ev.WhichOneof("payload") == "data"]
    assert gap.gap.reason == pb.GAP_SLOW_CONSUMER
    assert gap.gap.missed > 0
    # unfiltered: the skipped events are exactly those between the two sides
    assert data_post[0] - data_pre[-1] - 1 == gap.gap.missed, (data_pre[-1], data_post[0], gap)
    assert cursor_parts(gap.gap.from_cursor)[1] == data_pre[-1]
    assert cursor_parts(gap.cursor)[1] == data_post[0] - 1
    assert data_post == list(range(data_post[0], data_post[0] + len(data_post)))
    assert not any(ev.data.snapshot for ev in post if ev.WhichOneof("payload") == "data")
    logged = slow_consumer_lines(srv, "drop")
    assert episode_totals(srv, "drop", first=1) == [gap.gap.missed], logged


def test_conflate_sends_the_gap_then_the_latest_value_of_each_changed_pair(tickfand):
    srv = tickfand(*FLAGS)
    before, call, ch = stalled_stream(srv, overflow=pb.OVERFLOW_CONFLATE)
    events = read_until_data_after_gap(call)
    call.cancel()
    ch.close()
    pre, gap, post = split_at_gap(events)
    last_pre = [ev.data.seq for ev in before + pre if ev.WhichOneof("payload") == "data"][-1]
    assert gap.gap.reason == pb.GAP_SLOW_CONSUMER and gap.gap.missed > 0
    resume_seq = cursor_parts(gap.cursor)[1]  # the stream continues after this
    assert resume_seq - last_pre == gap.gap.missed
    snaps = [ev for ev in post if ev.WhichOneof("payload") == "data" and ev.data.snapshot]
    live = [ev for ev in post if ev.WhichOneof("payload") == "data" and not ev.data.snapshot]
    # the conflated values come first, one per (kind, key), from the skipped range
    assert post[:len(snaps)] == snaps
    pairs = [(ev.data.kind, ev.data.key) for ev in snaps]
    assert len(pairs) == len(set(pairs)) and 0 < len(pairs) <= 16, pairs
    for ev in snaps:
        assert last_pre < ev.data.seq <= resume_seq, (last_pre, ev.data.seq, resume_seq)
        assert ev.cursor == gap.cursor
    assert [ev.data.seq for ev in live] == list(range(resume_seq + 1, resume_seq + 1 + len(live)))
    logged = slow_consumer_lines(srv, "conflate")
    assert episode_totals(srv, "conflate", first=1) == [gap.gap.missed], logged
    assert int(logged[0]["conflated_keys"]) == len(pairs), (logged, pairs)
    # exactly the latest record of every pair that changed in the skipped
    # range: check against the topic's history, replayed from the start
    latest = {}
    history = Watch(srv.stub(), topic="sim", start=pb.START_EARLIEST, deadline=60)
    while True:
        ev = history.next_data(timeout=20)
        if ev.data.seq > resume_seq:
            break
        if ev.data.seq > last_pre:
            latest[(ev.data.kind, ev.data.key)] = ev.data
    history.cancel()
    assert {(ev.data.kind, ev.data.key): ev.data.seq for ev in snaps} == \
        {pair: d.seq for pair, d in latest.items()}
    for ev in snaps:
        d = latest[(ev.data.kind, ev.data.key)]
        assert ev.data.body == d.body and ev.data.ingested_at_unix_micros == d.ingested_at_unix_micros


def test_conflate_with_a_kinds_filter_counts_and_conflates_only_matching_events(tickfand):
    srv = tickfand(*FLAGS)
    before, call, ch = stalled_stream(srv, overflow=pb.OVERFLOW_CONFLATE, kinds=["trade"])
    events = read_until_data_after_gap(call)
    call.cancel()
    ch.close()
    pre, gap, post = split_at_gap(events)
    kinds = {ev.data.kind for ev in before + pre + post if ev.WhichOneof("payload") == "data"}
    assert kinds == {"trade"}, kinds
    snaps = [ev for ev in post if ev.WhichOneof("payload") == "data" and ev.data.snapshot]
    assert 0 < len(snaps) <= 8
    # missed counts trades only: far fewer than the topic events skipped
    skipped_topic = cursor_parts(gap.cursor)[1] - cursor_parts(gap.gap.from_cursor)[1]
    assert 0 < gap.gap.missed < skipped_topic, (gap.gap.missed, skipped_topic)


def read_to_disconnect(srv, **fields):
    """A stalled stream read until its status, which must be
    RESOURCE_EXHAUSTED with the tickfan-cursor trailer, that cursor in the
    message, and be the cursor of the last event delivered (resuming from it
    loses nothing). Returns (events, status message)."""
    before, call, ch = stalled_stream(srv, **fields)
    got = list(before)
    try:
        for ev in call:
            got.append(ev)
        raise AssertionError("the stream ended without a status")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        trailers = dict(e.trailing_metadata() or ())
        cursor = trailers.get("tickfan-cursor")
        assert cursor and cursor in e.details(), (e.details(), trailers)
        details = e.details()
    finally:
        ch.close()
    assert cursor == got[-1].cursor, (cursor, got[-1])
    return got, details


def test_disconnect_ends_with_resource_exhausted_and_the_resume_cursor(tickfand):
    srv = tickfand(*FLAGS)
    got, details = read_to_disconnect(srv, overflow=pb.OVERFLOW_DISCONNECT)
    assert "over its lag budget of 262144 bytes" in details, details
    assert not any(ev.WhichOneof("payload") == "gap" for ev in got)
    assert slow_consumer_lines(srv, "disconnect")


def check_drop_gap(srv, before, events):
    """The Gap of a DROP stream is exact; returns it."""
    pre, gap, post = split_at_gap(events)
    data_pre = [ev.data.seq for ev in before + pre if ev.WhichOneof("payload") == "data"]
    data_post = [ev.data.seq for ev in post if ev.WhichOneof("payload") == "data"]
    assert gap.gap.reason == pb.GAP_SLOW_CONSUMER
    assert data_post[0] - data_pre[-1] - 1 == gap.gap.missed, (data_pre[-1], data_post[0], gap)
    assert data_post == list(range(data_post[0], data_post[0] + len(data_post)))
    return gap.gap


def test_the_events_budget_is_per_topic_and_live_on_sighup(tickfand, tmp_path):
    conf = tmp_path / "t.ini"
    conf.write_text("[topic sim]\nmax-lag-events = 0\n")
    srv = tickfand(*EVENTS_FLAGS, "--max-lag-events", "2000", "--config", str(conf))
    # the section's 0 (no limit in events) overrides the global 2,000, and the
    # byte budget is out of reach: the stall costs nothing, every event comes
    before, call, ch = stalled_stream(srv, overflow=pb.OVERFLOW_DROP)
    resumed_us = time.time() * 1e6
    seqs = [ev.data.seq for ev in before if ev.WhichOneof("payload") == "data"]
    for ev in call:
        kind = ev.WhichOneof("payload")
        assert kind != "gap", ev
        if kind == "data":
            seqs.append(ev.data.seq)
            if ev.data.ingested_at_unix_micros >= resumed_us:
                break  # caught up with what the stall left behind
    call.cancel()
    ch.close()
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len(seqs) > 5000, len(seqs)  # the stall really left thousands behind
    assert not slow_consumer_lines(srv, "drop")
    # without the section's value the topic has the global 2,000, at once
    conf.write_text("[topic sim]\n")
    mark = srv.mark()
    srv.signal(signal.SIGHUP)
    fields, _ = srv.wait_event("reloaded", since=mark)
    assert "topic.sim.max-lag-events" in fields["changed"], fields
    before, call, ch = stalled_stream(srv, overflow=pb.OVERFLOW_DROP)
    events = read_until_data_after_gap(call)
    call.cancel()
    ch.close()
    gap = check_drop_gap(srv, before, events)
    assert gap.missed > 2000, gap  # unfiltered: the events behind, all skipped
    fields, _ = srv.wait_event("slow_consumer", since=mark)
    assert fields["policy"] == "drop" and episode_totals(srv, "drop", first=1) == [gap.missed], fields


def test_the_events_budget_disconnect_names_the_budget_and_the_cursor(tickfand):
    srv = tickfand(*EVENTS_FLAGS, "--max-lag-events", "2000")
    _, details = read_to_disconnect(srv, overflow=pb.OVERFLOW_DISCONNECT)
    m = re.match(r"slow consumer: (\d+) events behind the head of topic 'sim', over its "
                 r"lag budget of 2000 events;", details)
    assert m and int(m.group(1)) > 2000, details
