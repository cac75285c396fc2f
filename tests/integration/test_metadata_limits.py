"""The metadata limit (GRPC_ARG_MAX_METADATA_SIZE, 16 KiB in src/server/server.c)
as gRPC C core 1.51 enforces it: these tests record inherited behaviour, so
that a gRPC upgrade that changes it shows up here, and docs/operations.md
"Security" says the same.

- Oversize metadata on one stream closes the whole HTTP/2 connection: every
  other stream on it ends with RESOURCE_EXHAUSTED "received initial metadata
  size exceeds limit" and no tickfan-cursor trailer, sent by gRPC's
  transport, not by tickfand. (The C subscriber library resumes on exactly
  that: tests/unit/subscriber_test.c.)
- Headers sent before the client has acknowledged the server's SETTINGS are
  checked against HTTP/2's defaults, not against the limit: 50 streams with
  ~1 MiB of metadata each are accepted and held.
"""
import time

import grpc

import h2raw
from h2raw import WATCH, pb_bytes
from tickfan_harness import Watch, pb, pb_grpc, proc_rss_kib

LIMIT_TEXT = "received initial metadata size exceeds limit"
OVERSIZE = [("x-pad", "v" * 20000)]  # over 16 KiB
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def test_oversize_metadata_on_one_stream_ends_every_stream_of_its_connection_raw_h2(tickfand):
    """Inherited from gRPC 1.51 (recorded, not wanted): a healthy Watch and,
    on the same connection, a request with 20 KB of metadata. The healthy
    stream gets trailers RESOURCE_EXHAUSTED with gRPC's text and no
    tickfan-cursor, then the connection is closed. tickfand logs the
    healthy stream as a failed send and a cancel."""
    h2raw.require_h2()
    srv = tickfand("--sim-rate", "500")
    with h2raw.Conn(srv.addr) as c:
        healthy = c.request(WATCH, pb_bytes(1, "sim"), end_stream=False)
        assert c.pump_until(lambda: len(healthy.messages) >= 3, 10), "no events on the Watch"
        big = c.request(WATCH, pb_bytes(1, "sim"), metadata=OVERSIZE, end_stream=False)
        c.pump_until(lambda: (healthy.ended and big.ended) or c.closed, 10)
        c.pump_until(lambda: c.closed, 5)
        closed = c.closed
    code, message, trailers = healthy.status()
    print(f"\nhealthy stream: status {code} {message!r}, trailers {trailers}, "
          f"RST_STREAM {healthy.reset}; oversize stream: {big.status()[:2]}; "
          f"connection closed: {closed}, GOAWAY {c.goaway}")
    assert (code, message) == (RESOURCE_EXHAUSTED, LIMIT_TEXT), healthy.status()
    assert "tickfan-cursor" not in trailers, trailers
    assert big.status()[:2] == (RESOURCE_EXHAUSTED, LIMIT_TEXT), big.status()
    assert closed, "the connection stayed open"
    srv.wait_event("stream_closed", reason="cancelled")


def test_oversize_metadata_on_one_stream_ends_every_stream_of_its_channel_grpcio(tickfand):
    """Inherited from gRPC 1.51, as a grpcio client sees it: two calls on one
    channel (one connection), the second with 20 KB of metadata. Both end
    with RESOURCE_EXHAUSTED and gRPC's text; the healthy one carries no
    tickfan-cursor, so a client cannot tell where to resume from the status
    alone (it resumes from the last cursor it processed)."""
    srv = tickfand("--sim-rate", "500")
    channel = grpc.insecure_channel(srv.addr)
    stub = pb_grpc.WatcherStub(channel)
    healthy = Watch(stub, topic="sim")
    healthy.next_data()
    try:
        for ev in stub.Watch(pb.WatchRequest(topic="sim"), metadata=OVERSIZE, timeout=10):
            raise AssertionError(f"an event on the oversize call: {ev}")
    except grpc.RpcError as e:
        big = (e.code(), e.details())
    ended, _ = healthy.end(10)
    channel.close()
    print(f"\ngrpcio: oversize call {big}; healthy call {ended.code} {ended.details!r} "
          f"trailers {ended.trailers}")
    assert big == (grpc.StatusCode.RESOURCE_EXHAUSTED, LIMIT_TEXT), big
    assert (ended.code, ended.details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, LIMIT_TEXT), ended
    assert "tickfan-cursor" not in ended.trailers, ended.trailers


def test_headers_before_the_settings_ack_bypass_the_metadata_limit(tickfand):
    """Inherited from gRPC 1.51 (recorded, not wanted): a client writes its
    preface and SETTINGS, then at once, before reading (so before it has
    ACKed the server's SETTINGS), 50 Watch requests with 1 MiB of metadata
    each (16 headers of 64,000 bytes). All 50 are accepted and held open:
    the server's RSS grows by tens of MiB. Once the client has ACKed, the
    same request is refused, and that closes the connection with the 50."""
    h2raw.require_h2()
    srv = tickfand("--sim-rate", "100", "--log-size", "4M")
    pid = srv.proc.pid
    time.sleep(1)
    base = proc_rss_kib(pid)
    md = [(f"x-pad-{i}", "v" * 64000) for i in range(16)]
    with h2raw.Conn(srv.addr, ack_settings=False, huffman=False) as c:
        streams = [c.request(WATCH, pb_bytes(1, "sim"), metadata=md, end_stream=False)
                   for _ in range(50)]
        c.pump_until(lambda: all(st.messages for st in streams) or c.closed, 20)
        time.sleep(0.5)
        held = proc_rss_kib(pid)
        accepted = sum(1 for st in streams if st.messages and not st.ended)
        # reading ACKed the server's SETTINGS: from here on the limit holds
        late = c.request(WATCH, pb_bytes(1, "sim"), metadata=md, end_stream=False)
        c.pump_until(lambda: late.ended or c.closed, 10)
        c.pump_until(lambda: all(st.ended for st in streams) or c.closed, 10)
        ended_with_it = sum(1 for st in streams if st.ended)
    print(f"\nbefore the SETTINGS ACK: {accepted} of 50 streams with 1 MiB of metadata accepted, "
          f"VmRSS {base / 1024:.1f} -> {held / 1024:.1f} MiB (+{(held - base) / 1024:.1f}); "
          f"after the ACK the same request: {late.status()[:2]}; streams it ended: "
          f"{ended_with_it}")
    assert accepted == 50, f"only {accepted} of the 50 streams were accepted"
    assert held - base > 32 * 1024, f"VmRSS grew by only {held - base} KiB"
    assert late.status()[:2] == (RESOURCE_EXHAUSTED, LIMIT_TEXT), late.status()
    assert ended_with_it == 50, f"{ended_with_it} of the 50 streams ended with the refused one"
