"""Poison records and names cut at NUL: every protobuf `string` tickfand
stores, matches or sends is valid UTF-8 without NUL.

protobuf-c checks neither; grpcio (and grpc-go, grpc-java, grpc-js) refuse
to decode a message whose string field is not UTF-8, so one such record in a
topic log would fail every checking client on it, again after each resume.
The requests here are hand-built protobuf bytes sent through grpcio's
generic calls (a checking runtime cannot even encode them), and raw feed
frames over UDP.
"""
import socket
import struct

import grpc
import pytest

from h2raw import pb_bytes
from test_metrics import scrape, value
from tickfan_harness import Watch, cursor_parts, logfmt, pb

PUBLISH = "/events.v1.Publisher/Publish"
WATCH = "/events.v1.Watcher/Watch"
BAD_UTF8 = b"\xc3\x28"  # a lead byte without its continuation


def record(topic=b"pub", kind=b"quote", key=b"K", body=b"b"):
    """A PublishRequest as bytes: topic=1, kind=2, key=3, body=4."""
    return pb_bytes(1, topic) + pb_bytes(2, kind) + pb_bytes(3, key) + pb_bytes(4, body)


def publish_raw(srv, reqs, timeout=10):
    ch = grpc.insecure_channel(srv.addr)
    call = ch.stream_unary(PUBLISH, request_serializer=None, response_deserializer=None)
    try:
        return None, call(iter(reqs), timeout=timeout)
    except grpc.RpcError as e:
        return e, None


def watch_raw(srv, request, timeout=10):
    """The status of a Watch with a hand-built request, after reading the
    first event (a valid request on a live topic gets one)."""
    ch = grpc.insecure_channel(srv.addr)
    call = ch.unary_stream(WATCH, request_serializer=None, response_deserializer=None)
    it = call(request, timeout=timeout)
    try:
        first = next(it)
    except grpc.RpcError as e:
        return e.code(), e.details(), None
    it.cancel()
    return grpc.StatusCode.OK, "", pb.WatchEvent.FromString(first)


def replay_all(srv, topic):
    """Every event of the topic up to EndOfBacklog, decoded by grpcio (which
    checks UTF-8: a poison record would end this with INTERNAL)."""
    w = Watch(srv.stub(), topic=topic, start=pb.START_EARLIEST)
    out = []
    while True:
        ev = w.next()
        if ev.WhichOneof("payload") == "end_of_backlog":
            break
        out.append(ev)
    w.cancel()
    return out


@pytest.mark.parametrize("field,bad,why", [
    ("key", BAD_UTF8, "key is not valid UTF-8"),
    ("kind", b"quo\xfft", "kind is not valid UTF-8"),
    ("key", b"AAPL\x00ZZZ", "key holds a NUL byte"),
    ("key", b"\xed\xa0\x80", "key is not valid UTF-8"),  # a UTF-16 surrogate
    ("key", b"\xc0\xaf", "key is not valid UTF-8"),  # an overlong '/'
])
def test_publish_refuses_a_poison_record_by_index_and_keeps_the_ones_before(
        tickfand, field, bad, why):
    srv = tickfand("--feed", "none", "--topic", "pub")
    good = [record(key=f"G{i}".encode()) for i in range(3)]
    poison = record(**{field: bad})
    err, _ = publish_raw(srv, good + [poison, record(key=b"AFTER")])
    assert err is not None, "a record with a bad string was accepted"
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert err.details() == f"record 3: {why}", err.details()
    trailers = dict(err.trailing_metadata())
    assert trailers["tickfan-accepted"] == "3"
    assert cursor_parts(trailers["tickfan-last-cursor"])[1] == 3
    # what came before is kept, and every event decodes in a checking client
    got = replay_all(srv, "pub")
    assert [e.data.key for e in got] == ["G0", "G1", "G2"]


def test_publish_refuses_a_topic_with_a_nul_instead_of_writing_to_its_prefix(tickfand):
    srv = tickfand("--feed", "none", "--topic", "pub")
    err, _ = publish_raw(srv, [record(key=b"G"), record(topic=b"pub\x00zzz", key=b"X")])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "record 1: topic holds a NUL byte", err.details()
    assert [e.data.key for e in replay_all(srv, "pub")] == ["G"]


def watch_request(topic=b"sim", cursor=None, kinds=(), keys=()):
    r = pb_bytes(1, topic)
    if cursor is not None:
        r += pb_bytes(2, cursor)
    for k in kinds:
        r += pb_bytes(3, k)
    for k in keys:
        r += pb_bytes(4, k)
    return r


@pytest.mark.parametrize("request_bytes,why", [
    (watch_request(keys=[b"AAPL\x00ZZZ"]), "keys holds a NUL byte"),
    (watch_request(keys=[b"AAPL", BAD_UTF8]), "keys is not valid UTF-8"),
    (watch_request(kinds=[b"quote\x00"]), "kinds holds a NUL byte"),
    (watch_request(kinds=[b"\xf8\x88\x80\x80\x80"]), "kinds is not valid UTF-8"),
    (watch_request(topic=b"sim\x00zzz"), "topic holds a NUL byte"),
    (watch_request(topic=b"s\xe9m"), "topic is not valid UTF-8"),
    (watch_request(cursor=b"1-0000000000000000-1\x00junk"), "cursor holds a NUL byte"),
], ids=["key-nul", "key-utf8", "kind-nul", "kind-utf8", "topic-nul", "topic-utf8", "cursor-nul"])
def test_a_watch_string_with_nul_or_bad_utf8_is_invalid_argument_not_cut(
        tickfand, request_bytes, why):
    srv = tickfand("--sim-rate", "200")
    code, details, _ = watch_raw(srv, request_bytes)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details == f"invalid WatchRequest: {why}", details


def test_valid_utf8_names_still_match_byte_for_byte(tickfand):
    """Multi-byte UTF-8 in keys is fine: a Publish with it is served to a
    filter naming it, through a checking client."""
    srv = tickfand("--feed", "none", "--topic", "pub")
    key = "€uro-ÄÖ-日本-😀"
    err, resp = publish_raw(srv, [record(key=b"A"), record(key=key.encode()),
                                  record(key=b"B")])
    assert err is None, err
    w = Watch(srv.stub(), topic="pub", keys=[key], start=pb.START_EARLIEST)
    d = w.next_data().data
    w.cancel()
    assert (d.key, d.seq) == (key, 2)


# ---- feed frames --------------------------------------------------------------

HDR = struct.Struct("<2sBBIIIQqBBHI")


def frame(kind, key, topic=b"md", body=b"x"):
    n = HDR.size + len(topic) + len(kind) + len(key) + len(body)
    return HDR.pack(b"TF", 1, 1, n, 0, 0, 0, 0, len(topic), len(kind), len(key),
                    len(body)) + topic + kind + key + body


def test_feed_frames_with_bad_text_are_rejected_counted_and_the_others_kept(tickfand):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = f"udp://127.0.0.1:{port}"
    srv = tickfand("--metrics-listen", "127.0.0.1:0", "--topic", "md", "--feed", spec)
    dgram = (frame(b"quote", b"G1") + frame(b"quote", b"AAPL" + BAD_UTF8) +
             frame(b"quote", b"G2") + frame(b"q\x00te", b"X") + frame(b"quote", b"G3"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(dgram, ("127.0.0.1", port))
    srv.wait_event("feed_reject", source=spec, reason="bad_text")
    w = Watch(srv.stub(), topic="md", start=pb.START_EARLIEST)
    got = [w.next_data().data for _ in range(3)]
    w.cancel()
    assert [(d.key, d.seq) for d in got] == [("G1", 1), ("G2", 2), ("G3", 3)]
    m = scrape(srv)
    assert value(m, "tickfan_ingest_rejected_total", reason="bad_text") == 2
    rejects = [kv for kv in map(logfmt, list(srv.lines)) if kv.get("msg") == "feed_reject"]
    assert [kv["reason"] for kv in rejects] == ["bad_text", "bad_text"], rejects
    assert srv.proc.poll() is None
