"""Stream lifecycle: client cancel frees the call; SIGTERM drains every stream
with UNAVAILABLE and a resume cursor, then exits 0; after a restart on the
same data directory those cursors resume exactly."""
import signal
import time

import grpc

from tickfan_harness import StreamEnded, Watch, cursor_parts


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
    [(watch, StreamEnded)] once the server has exited 0; watch.last_data is
    the last Data event the stream delivered."""
    stub = srv.stub()
    streams = [Watch(stub, topic="sim"), Watch(stub, topic="sim", keys=["AAPL"])]
    for w in streams:
        for _ in range(20):
            w.last_data = w.next_data()
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    out = []
    for w in streams:
        ended, events = w.end(timeout=10)
        for ev in events:
            if ev.WhichOneof("payload") == "data":
                w.last_data = ev
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
            assert pos == cursor_parts(last.cursor)[1] == w.last_data.data.seq, \
                f"tickfan-cursor {cursor}, last received {last}"
        else:
            assert pos >= cursor_parts(last.cursor)[1], f"tickfan-cursor {cursor} < {last}"


def test_resume_after_sigterm_and_restart_is_exact(tickfand, tmp_path):
    """After a clean stop and a restart on the same data directory the log is
    recovered with its epoch, and each drain cursor resumes exactly: the
    matching events right after it, none twice, none skipped."""
    flags = ("--sim-rate", "2000", "--drain-timeout-ms", "3000")
    srv1 = tickfand(*flags, data_dir=tmp_path / "restart")
    drained = drain_streams(srv1)
    old_epoch = cursor_parts(drained[0][1].trailers["tickfan-cursor"])[0]
    last_seq = max(w.last_data.data.seq for w, _ in drained)

    srv2 = tickfand.restart(srv1)
    kv = srv2.log_opened()
    assert kv.get("created") == "false" and kv.get("epoch_kept") == "true", \
        f"log not recovered with its epoch after SIGTERM: {kv}"
    assert kv.get("epoch", "").lower() == old_epoch.lower(), \
        f"log epoch {kv.get('epoch')}, drain cursors of epoch {old_epoch}: {kv}"
    assert int(kv["head_seq"]) >= last_seq, f"recovered head below seq {last_seq} delivered: {kv}"
    stub = srv2.stub()
    ref = Watch(stub, topic="sim")  # unfiltered replay of the log as it is now
    everything = [ref.next_data()]
    assert cursor_parts(everything[0].cursor)[0] == old_epoch, everything[0]

    for w, ended in drained:
        cursor = ended.trailers["tickfan-cursor"]
        last_seq = w.last_data.data.seq
        r = Watch(stub, topic="sim", cursor=cursor, keys=list(w.request.keys))
        try:
            got = [r.next_data() for _ in range(30)]
        except StreamEnded as e:
            raise AssertionError(
                f"resume from drain cursor {cursor} after a restart: {e}") from None
        finally:
            r.cancel()
        while everything[-1].data.seq < got[-1].data.seq:
            everything.append(ref.next_data())
        keys = set(w.request.keys)
        expected = [e.data for e in everything
                    if last_seq < e.data.seq <= got[-1].data.seq
                    and (not keys or e.data.key in keys)]
        assert [g.data for g in got] == expected, f"resume from {cursor} after seq {last_seq}"
        assert {cursor_parts(g.cursor)[0] for g in got} == {old_epoch}, got[0]
    ref.cancel()
