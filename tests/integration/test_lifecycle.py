"""Stream lifecycle: client cancel frees the call; SIGTERM drains every stream
with UNAVAILABLE and a resume cursor, then exits 0."""
import signal
import time

import grpc

from tickfan_harness import Watch, cursor_parts


def test_client_cancel_frees_the_call_on_the_server(tickfand):
    srv = tickfand("--sim-rate", "200")
    stub = srv.stub()
    mark = srv.mark()
    streams = [Watch(stub, topic="sim") for _ in range(3)]
    for w in streams:
        w.next()  # open and flowing

    opened = {}
    i = mark
    for _ in range(3):
        kv, i = srv.wait_event("stream_opened", since=i)
        i += 1
        opened[kv["id"]] = kv
    assert len(opened) == 3, f"stream ids not distinct: {list(opened)}"
    assert max(int(kv["streams_live"]) for kv in opened.values()) == 3, opened

    mark = srv.mark()
    for w in streams:
        w.cancel()
        assert w.ended is not None and w.ended.code == grpc.StatusCode.CANCELLED, w.ended
    for sid in opened:
        srv.wait_event("stream_closed", since=mark, id=sid, reason="cancelled")
    srv.wait_event("stream_closed", since=mark, streams_live=0)


def drain_streams(srv):
    """Two live streams (one unfiltered, one filtered), then SIGTERM. Returns
    [(watch, StreamEnded)] once the server has exited 0."""
    stub = srv.stub()
    streams = [Watch(stub, topic="sim"), Watch(stub, topic="sim", keys=["AAPL"])]
    for w in streams:
        for _ in range(20):
            w.next_data()
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    out = []
    for w in streams:
        ended, _ = w.end(timeout=10)
        out.append((w, ended))
    code = srv.wait_exit(timeout=10)
    elapsed = time.monotonic() - t0
    assert code is not None, "tickfand still running 10 s after SIGTERM"
    assert code == 0, f"tickfand exited {code} after SIGTERM"
    assert elapsed < 8, f"tickfand took {elapsed:.1f} s to exit"
    return out


def test_sigterm_ends_streams_unavailable_with_resume_cursor_and_exits_0(tickfand):
    srv = tickfand("--sim-rate", "2000", "--drain-timeout-ms", "3000")
    for w, ended in drain_streams(srv):
        assert ended.code == grpc.StatusCode.UNAVAILABLE, ended
        assert "cursor" in ended.details, f"details do not mention the cursor: {ended.details!r}"
        cursor = ended.trailers.get("tickfan-cursor")
        assert cursor, f"no tickfan-cursor trailer: {ended}"
        epoch, pos = cursor_parts(cursor)
        last = w.last_event
        assert cursor_parts(last.cursor)[0] == epoch
        if not w.request.keys:
            # Unfiltered: the resume point is right after the last event received.
            assert pos == last.data.seq, f"tickfan-cursor {cursor}, last received {last}"
        else:
            assert pos >= cursor_parts(last.cursor)[1], f"tickfan-cursor {cursor} < {last}"


def test_resume_after_sigterm_and_restart_is_exact_or_explicitly_refused(tickfand, tmp_path):
    """After a restart on the same data directory, a drain cursor resumes
    exactly (log recovered, same epoch), or, if the log was recreated, is
    refused with OUT_OF_RANGE naming the new log's earliest cursor. Never a
    silent skip or replay."""
    data_dir = tmp_path / "restart"
    flags = ("--sim-rate", "2000", "--drain-timeout-ms", "3000")
    drained = drain_streams(tickfand(*flags, data_dir=data_dir))
    old_epoch = cursor_parts(drained[0][1].trailers["tickfan-cursor"])[0]

    srv2 = tickfand(*flags, data_dir=data_dir)
    stub = srv2.stub()
    ref = Watch(stub, topic="sim")  # unfiltered replay of the log as it is now
    everything = [ref.next_data()]
    new_epoch = cursor_parts(everything[0].cursor)[0]

    for w, ended in drained:
        cursor = ended.trailers["tickfan-cursor"]
        last_seq = w.last_event.data.seq
        r = Watch(stub, topic="sim", cursor=cursor, keys=list(w.request.keys))
        if new_epoch != old_epoch:
            e, events = r.end(timeout=10)
            assert e.code == grpc.StatusCode.OUT_OF_RANGE, \
                f"cursor {cursor} of the old log ({old_epoch}) on a new log ({new_epoch}): {e}"
            assert not events, f"events before OUT_OF_RANGE: {events[:3]}"
            earliest = e.trailers.get("tickfan-earliest-cursor", "")
            assert earliest.startswith(f"1-{new_epoch}-"), e
            continue
        got = [r.next_data() for _ in range(30)]
        r.cancel()
        while everything[-1].data.seq < got[-1].data.seq:
            everything.append(ref.next_data())
        keys = set(w.request.keys)
        expected = [e.data for e in everything
                    if last_seq < e.data.seq <= got[-1].data.seq
                    and (not keys or e.data.key in keys)]
        assert [g.data for g in got] == expected, f"resume from {cursor} after seq {last_seq}"
    ref.cancel()
