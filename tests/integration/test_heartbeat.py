"""Heartbeats: sent on idle streams within the cadence, cursor included."""
import time

from tickfan_harness import Watch, cursor_parts

CADENCE = 0.2  # --heartbeat-ms 200
# Clients time out at 3x the cadence; so do these tests. The lower bound only
# catches a server that sends heartbeats on a stream that is not idle.
MAX_SPACING = 3 * CADENCE
MIN_SPACING = CADENCE / 2


def test_idle_topic_gets_heartbeats_with_a_cursor_within_the_cadence(tickfand):
    srv = tickfand("--heartbeat-ms", "200", "--topic", "quiet")
    w = Watch(srv.stub(), topic="quiet")

    t_prev, eob = w.next_timed(timeout=5)
    assert eob.WhichOneof("payload") == "end_of_backlog", eob
    assert eob.cursor
    cursor_parts(eob.cursor)

    spacings = []
    for _ in range(6):
        t, ev = w.next_timed(timeout=5)
        assert ev.WhichOneof("payload") == "heartbeat", ev
        assert ev.cursor, f"heartbeat without cursor: {ev}"
        # Nothing was written to the topic: the position does not move.
        assert ev.cursor == eob.cursor
        assert abs(ev.heartbeat.server_unix_micros / 1e6 - time.time()) < 60, ev
        spacings.append(t - t_prev)
        t_prev = t
    w.cancel()
    assert max(spacings) <= MAX_SPACING, f"heartbeat spacing (s): {spacings}"
    assert min(spacings) >= MIN_SPACING, f"heartbeat spacing (s): {spacings}"


def test_filtered_stream_heartbeat_cursor_advances_with_the_topic(tickfand):
    srv = tickfand("--heartbeat-ms", "200", "--sim-rate", "500")
    w = Watch(srv.stub(), topic="sim", kinds=["nomatch"])

    eobs = 0
    beats = []  # (arrival, event)
    t_prev = time.monotonic()
    while len(beats) < 5:
        t, ev = w.next_timed(timeout=5)
        kind = ev.WhichOneof("payload")
        assert kind in ("end_of_backlog", "heartbeat"), f"filter let through: {ev}"
        assert ev.cursor
        if kind == "end_of_backlog":
            eobs += 1
            assert not beats, "EndOfBacklog after heartbeats"
        else:
            beats.append((t, ev))
        if beats:
            assert t - t_prev <= MAX_SPACING, f"{t - t_prev:.3f} s without any event"
        t_prev = t
    w.cancel()

    assert eobs == 1
    positions = [cursor_parts(ev.cursor) for _, ev in beats]
    assert len({epoch for epoch, _ in positions}) == 1
    seqs = [seq for _, seq in positions]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), \
        f"heartbeat cursors did not advance on a filtered stream: {[ev.cursor for _, ev in beats]}"
