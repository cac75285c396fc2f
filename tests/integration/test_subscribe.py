"""Subscribe (many subscriptions over one bidi stream) against the real
tickfand, judged by the contract in proto/events/v1/watcher.proto.

Topics are fed by Publish, so every count is exact: event i of a topic has
seq i, kind "trade" when i % 3 == 0 (else "quote") and key K{i % 5}. The
Subscribe stream is a generic grpcio call that hands the test the response
bytes as they came off the wire: the test walks the SubscribeResponse
itself, so it sees each delivery's WatchEvent bytes exactly as the server
wrote them (to compare with what Watch sends) and the size of each
message (against --max-batch-bytes).

Covered: filters per subscription against Watch; ten subscriptions on three
topics resumed across kill -9 and stream resets, each from its own cursor;
add/remove while live; every SubscriptionEnd code with the others going
on; the whole stream's statuses (undecodable request, half-close, drain,
--max-streams); a stalled stream with DROP and DISCONNECT subscriptions;
shared deliveries; batching; bytes as Watch; the Subscribe metrics.
"""
import queue
import random
import signal
import threading
import time

import grpc
import pytest

import h2raw
from events.v1 import publisher_pb2 as ppb
from events.v1 import publisher_pb2_grpc as ppb_grpc
from test_metrics import scrape, value
from tickfan_harness import cursor_parts, make_cursor, pb, proc_rss_kib, sanitizer

SUBSCRIBE = "/events.v1.Watcher/Subscribe"
WATCH = "/events.v1.Watcher/Watch"
OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, OUT_OF_RANGE, UNAVAILABLE = 0, 3, 5, 8, 11, 14
TOPICS = ("a", "b", "c")
FLAGS = ("--feed", "none", "--topic", "a", "--topic", "b", "--topic", "c")


# --- the published events ----------------------------------------------------

def kind_of(i):
    return "trade" if i % 3 == 0 else "quote"


def key_of(i):
    return f"K{i % 5}"


def matches(i, kinds=(), keys=()):
    return (not kinds or kind_of(i) in kinds) and (not keys or key_of(i) in keys)


class Publisher:
    """Publishes to the topics of one server, remembering how many each has."""

    def __init__(self, srv, body=16):
        self.heads = {}
        self.last_cursor = {}
        self.body = body
        self.connect(srv)

    def connect(self, srv):
        self.stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))

    def publish(self, n, topic="a"):
        first = self.heads.get(topic, 0) + 1
        pad = b"." * self.body

        def records():
            for i in range(first, first + n):
                yield ppb.PublishRequest(topic=topic, kind=kind_of(i), key=key_of(i),
                                         body=b"%s-%d-" % (topic.encode(), i) + pad,
                                         emitted_at_unix_micros=1_000_000 + i)
        resp = self.stub.Publish(records(), timeout=60)
        assert resp.accepted == n, resp
        self.heads[topic] = first + n - 1
        self.last_cursor[topic] = resp.last_cursor
        assert cursor_parts(resp.last_cursor)[1] == self.heads[topic], \
            f"topic {topic}: the last record published is not seq {self.heads[topic]}: {resp}"

    def expected(self, topic, kinds=(), keys=(), after=0):
        return [i for i in range(after + 1, self.heads.get(topic, 0) + 1)
                if matches(i, kinds, keys)]


# --- the wire -------------------------------------------------------------------

def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def wire_fields(buf):
    """(field number, wire type, value) of a protobuf message: value is the
    raw bytes of a length-delimited field, the number of a varint."""
    i = 0
    while i < len(buf):
        tag, i = read_varint(buf, i)
        field, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v = bytes(buf[i:i + n])
            assert len(v) == n, "a length-delimited field runs past the message"
            i += n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        else:
            raise AssertionError(f"wire type {wt} in a SubscribeResponse")
        yield field, wt, v


class Delivery:
    def __init__(self, raw):
        self.ids, self.event_bytes, self.end = [], None, None
        for field, wt, v in wire_fields(raw):
            if field == 1:
                self.event_bytes = v
            elif field == 3:
                self.end = pb.SubscriptionEnd.FromString(v)
            elif field == 2 and wt == 2:
                j = 0
                while j < len(v):
                    x, j = read_varint(v, j)
                    self.ids.append(x)
            elif field == 2 and wt == 0:
                self.ids.append(v)
        assert (self.event_bytes is None) != (self.end is None), \
            f"a delivery with neither or both of event and end: {raw!r}"
        self.event = pb.WatchEvent.FromString(self.event_bytes) if self.event_bytes else None


def parse_response(raw):
    """The deliveries of a SubscribeResponse, in order; also checks that the
    Python runtime decodes the same message."""
    pb.SubscribeResponse.FromString(raw)
    out = []
    for field, wt, v in wire_fields(raw):
        assert field == 1 and wt == 2, f"field {field} (wire type {wt}) in a SubscribeResponse"
        out.append(Delivery(v))
    return out


def add(sub_id, **fields):
    return pb.SubscribeRequest(add=pb.SubscriptionAdd(id=sub_id, request=pb.WatchRequest(**fields)))


def remove(sub_id):
    return pb.SubscribeRequest(remove=pb.SubscriptionRemove(id=sub_id))


class Stream:
    """One Subscribe call over grpcio, responses as raw bytes.

    A reader thread queues what arrives; pump() takes it in on the test's
    thread and checks the stream's invariants as it goes: every delivery
    has ids, nothing arrives for an id after its SubscriptionEnd, every
    subscription's data events come in seq order and its cursors never go
    back. Per id: events (WatchEvent), the raw bytes of each, its end.
    """

    def __init__(self, addr, channel_options=()):
        self.channel = grpc.insecure_channel(addr, options=list(channel_options))
        self.requests = queue.Queue()
        self.q = queue.Queue()
        self.status = None  # grpc.RpcError, or "ok" if it ended without error
        self.events = {}
        self.raw = {}
        self.ends = {}
        # ids whose next SubscriptionEnd is expected to refuse a duplicate
        # add: it does not end the live subscription of that id
        self.duplicates = set()
        self.dup_ends = {}
        self.responses = []  # (arrival time, byte size, [Delivery])
        self.last_pos = {}
        self.seqs = {}  # id -> seqs of its (non-snapshot) data events
        self.eobs = {}  # id -> EndOfBacklogs received
        call = self.channel.stream_stream(
            SUBSCRIBE, request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=None)
        self.call = call(self._requests(), timeout=120)
        self.reading = threading.Event()  # cleared: the reader stops reading
        self.reading.set()
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self):
        while True:
            r = self.requests.get()
            if r is None:
                return  # half-close
            yield r

    def _read(self):
        try:
            while True:
                self.reading.wait()
                raw = next(self.call, None)
                if raw is None:
                    break
                self.q.put((time.monotonic(), raw))
        except grpc.RpcError as e:
            self.q.put((time.monotonic(), e))
        else:
            self.q.put((time.monotonic(), "ok"))

    def send(self, *reqs):
        for r in reqs:
            self.requests.put(r)

    def half_close(self):
        self.requests.put(None)

    def cancel(self):
        self.call.cancel()
        self.channel.close()

    def take(self, t, raw):
        dl = parse_response(raw)
        assert dl, "an empty SubscribeResponse"
        self.responses.append((t, len(raw), dl))
        for d in dl:
            assert d.ids, f"a delivery without ids: {d.event or d.end}"
            assert len(set(d.ids)) == len(d.ids), f"an id twice in one delivery: {d.ids}"
            for i in d.ids:
                assert i not in self.ends, \
                    f"a delivery for id {i} after its SubscriptionEnd {self.ends[i]}: " \
                    f"{d.event or d.end}"
                if d.end is not None and i in self.duplicates:
                    self.duplicates.discard(i)
                    self.dup_ends[i] = d.end
                    continue
                if d.end is not None:
                    self.ends[i] = d.end
                    continue
                ev = d.event
                pos = cursor_parts(ev.cursor)[1]
                if ev.HasField("data") and not ev.data.snapshot:
                    prev = self.seqs.setdefault(i, [])
                    assert not prev or ev.data.seq > prev[-1], \
                        f"id {i}: seq {ev.data.seq} after seq {prev[-1]}"
                    prev.append(ev.data.seq)
                elif ev.HasField("end_of_backlog"):
                    self.eobs[i] = self.eobs.get(i, 0) + 1
                assert pos >= self.last_pos.get(i, 0), \
                    f"id {i}: cursor went back from {self.last_pos[i]} to {pos}: {ev}"
                self.last_pos[i] = pos
                self.events.setdefault(i, []).append(ev)
                self.raw.setdefault(i, []).append(d.event_bytes)

    def pump(self, until, timeout=20.0, what=""):
        """Takes responses in until until(self) holds; fails on timeout or
        if the stream ends first."""
        deadline = time.monotonic() + timeout
        while not until(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out {what}: {self.summary()}")
            try:
                t, item = self.q.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if isinstance(item, bytes):
                self.take(t, item)
                continue
            self.status = item
            assert until(self), f"the stream ended ({item}) {what}: {self.summary()}"
            return

    def pump_to_end(self, timeout=20.0):
        self.pump(lambda s: s.status is not None, timeout, "waiting for the stream's status")
        return self.status

    def summary(self):
        return (f"data per id {({i: len(self.data_seqs(i)) for i in sorted(self.events)})}, "
                f"ends {({i: (e.code, e.message) for i, e in self.ends.items()})}, "
                f"status {self.status}")

    def data(self, i):
        return [e.data for e in self.events.get(i, []) if e.HasField("data")]

    def data_seqs(self, i):
        return self.seqs.get(i, [])

    def forget(self, i):
        """Drops what arrived for id i (ended), so the id can be used again."""
        for d in (self.events, self.raw, self.ends, self.last_pos, self.seqs, self.eobs):
            d.pop(i, None)

    def kinds(self, i):
        return [e.WhichOneof("payload") for e in self.events.get(i, [])]

    def eob(self, *ids):
        return all(self.eobs.get(i) for i in ids)

    def cursor(self, i):
        ev = self.events.get(i)
        return ev[-1].cursor if ev else ""


def raw_watch(srv, **fields):
    """A Watch read as raw WatchEvent bytes: (call, queue of bytes)."""
    ch = grpc.insecure_channel(srv.addr)
    call = ch.unary_stream(WATCH, request_serializer=pb.WatchRequest.SerializeToString,
                           response_deserializer=None)(pb.WatchRequest(**fields), timeout=60)
    q = queue.Queue()

    def run():
        try:
            for raw in call:
                q.put(raw)
        except grpc.RpcError as e:
            q.put(e)
    threading.Thread(target=run, daemon=True).start()
    return call, q


def watch_data_bytes(srv, n, **fields):
    """The raw bytes of the first n Data events of a Watch, and the Watch's
    Data (decoded)."""
    call, q = raw_watch(srv, **fields)
    out = []
    try:
        while len(out) < n:
            raw = q.get(timeout=20)
            assert isinstance(raw, bytes), f"the Watch ended: {raw}"
            if pb.WatchEvent.FromString(raw).HasField("data"):
                out.append(raw)
    finally:
        call.cancel()
    return out


def data_raw(s, i):
    return [r for r, e in zip(s.raw.get(i, []), s.events.get(i, [])) if e.HasField("data")]


# --- filters -------------------------------------------------------------------

def test_two_filters_on_one_topic_each_get_exactly_their_events(tickfand):
    srv = tickfand(*FLAGS)
    pub = Publisher(srv)
    pub.publish(600, "a")
    pub.publish(50, "b")  # another topic: must not leak in
    f1, f2 = dict(keys=["K1", "K2"]), dict(kinds=["trade"])
    s = Stream(srv.addr)
    s.send(add(1, topic="a", **f1), add(2, topic="a", **f2))
    s.pump(lambda s: s.eob(1, 2), what="for both EndOfBacklogs")
    pub.publish(300, "a")
    want1, want2 = pub.expected("a", **f1), pub.expected("a", **f2)
    s.pump(lambda s: len(s.data_seqs(1)) == len(want1) and len(s.data_seqs(2)) == len(want2),
           what="for the live events")
    assert s.data_seqs(1) == want1
    assert s.data_seqs(2) == want2
    for i, f in ((1, f1), (2, f2)):
        assert all(matches(d.seq, **f) and d.key == key_of(d.seq) and d.kind == kind_of(d.seq)
                   for d in s.data(i))
        assert s.kinds(i).count("end_of_backlog") == 1
        # the same filters over Watch: the same events, byte for byte
        assert data_raw(s, i) == watch_data_bytes(srv, len(s.data(i)), topic="a", **f)
    s.cancel()


# --- resume across kill -9 and stream resets ---------------------------------------

SUBS10 = {  # id: (topic, filters)
    1: ("a", {}), 2: ("a", {"kinds": ["trade"]}), 3: ("a", {"keys": ["K0", "K3"]}),
    4: ("a", {"kinds": ["quote"], "keys": ["K4"]}),
    5: ("b", {}), 6: ("b", {"keys": ["K2"]}), 7: ("b", {"kinds": ["trade"], "keys": ["K1"]}),
    8: ("c", {}), 9: ("c", {"kinds": ["quote"]}), 10: ("c", {"keys": ["K0", "K1", "K2"]}),
}


class Resumer:
    """The client side of the resume test: per subscription, every event
    processed (in order) and the last cursor processed."""

    def __init__(self):
        self.seqs = {i: [] for i in SUBS10}
        self.cursor = {i: "" for i in SUBS10}
        self.eobs = {i: 0 for i in SUBS10}

    def open(self, srv):
        s = Stream(srv.addr)
        for i, (topic, f) in SUBS10.items():
            s.send(add(i, topic=topic, cursor=self.cursor[i], **f))
        return s

    def process(self, s):
        """Everything stream s delivered (it is over now) is processed."""
        for i in SUBS10:
            assert i not in s.ends, f"id {i} ended: {s.ends[i]}"
            for ev in s.events.get(i, []):
                kind = ev.WhichOneof("payload")
                assert kind in ("data", "end_of_backlog", "heartbeat"), f"id {i}: {ev}"
                if kind == "data":
                    self.seqs[i].append(ev.data.seq)
                if kind == "end_of_backlog":
                    self.eobs[i] += 1
                self.cursor[i] = ev.cursor


def test_ten_subscriptions_on_three_topics_resume_exactly_across_kill9_and_resets(tickfand):
    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    srv = tickfand(*FLAGS, "--log-size", "8M")
    pub = Publisher(srv)
    client = Resumer()
    breaks = ["kill"] * 4 + ["cancel"] * 8
    rng.shuffle(breaks)
    for n, how in enumerate(breaks, 1):
        for t in TOPICS:
            pub.publish(rng.randint(150, 400), t)
        s = client.open(srv)
        # break at a random point of the stream: once a random share of
        # what is due has arrived (sometimes nothing at all yet)
        due = sum(len(pub.expected(SUBS10[i][0], **SUBS10[i][1])) - len(client.seqs[i])
                  for i in SUBS10)
        at = int(due * rng.choice([0.0, rng.uniform(0.05, 0.95)]))
        s.pump(lambda s: sum(len(s.data_seqs(i)) for i in SUBS10) >= at,
               what=f"break {n} ({how}, seed {seed}): for {at} of {due} events")
        if how == "cancel":
            s.cancel()
        else:
            srv.kill()
            st = s.pump_to_end()
            assert st.code() == grpc.StatusCode.UNAVAILABLE, st
            srv = tickfand.restart(srv)
            pub.connect(srv)
        client.process(s)
    pub.publish(100, "a")
    s = client.open(srv)
    want = {i: pub.expected(t, **f) for i, (t, f) in SUBS10.items()}
    s.pump(lambda s: all(len(client.seqs[i]) + len(s.data_seqs(i)) >= len(want[i])
                         for i in SUBS10), timeout=30, what=f"for the rest (seed {seed})")
    client.process(s)
    s.cancel()
    for i in SUBS10:
        assert client.seqs[i] == want[i], \
            f"id {i} {SUBS10[i]} (seed {seed}): got {len(client.seqs[i])} events, " \
            f"want {len(want[i])}; first difference at " \
            f"{next((k for k, (a, b) in enumerate(zip(client.seqs[i], want[i])) if a != b), None)}"
        assert client.eobs[i] >= 1


# --- add and remove while live ------------------------------------------------------

def test_add_and_remove_while_live(tickfand):
    srv = tickfand(*FLAGS)
    pub = Publisher(srv)
    pub.publish(100, "a")
    s = Stream(srv.addr)
    s.send(add(1, topic="a"), add(2, topic="a", kinds=["quote"]))
    s.pump(lambda s: s.eob(1, 2))
    pub.publish(50, "a")
    s.pump(lambda s: len(s.data_seqs(1)) == 150)
    # added while the stream is live: from a cursor in the middle, and live
    s.send(add(3, topic="a", cursor=s.events[1][40].cursor), add(4, topic="a", start=pb.START_LIVE))
    s.pump(lambda s: s.eob(3, 4))
    seq41 = s.events[1][40].data.seq
    assert s.data_seqs(3) == list(range(seq41 + 1, 151))
    assert s.data_seqs(4) == []
    # removed while live: its end is OK and comes after its last event
    s.send(remove(2))
    s.pump(lambda s: 2 in s.ends)
    assert s.ends[2].code == OK, s.ends[2]
    assert s.data_seqs(2) == pub.expected("a", kinds=["quote"])
    pub.publish(60, "a")
    s.pump(lambda s: all(len(s.data_seqs(i)) and s.data_seqs(i)[-1] == 210 for i in (1, 3, 4)))
    assert s.data_seqs(1) == list(range(1, 211))
    assert s.data_seqs(4) == list(range(151, 211))
    # nothing after its end (pump checks it as well)
    assert s.data_seqs(2) == [x for x in pub.expected("a", kinds=["quote"]) if x <= 150]
    # removed in the middle of a replay: an exact prefix, then OK, then nothing
    pub.publish(3000, "b")
    s.send(add(5, topic="b"), remove(5))
    s.pump(lambda s: 5 in s.ends)
    assert s.ends[5].code == OK
    assert s.data_seqs(5) == list(range(1, len(s.data_seqs(5)) + 1))
    # the ids are free again once their end arrived
    s.forget(2)
    s.send(add(2, topic="b", keys=["K4"]))
    s.pump(lambda s: s.eob(2))
    assert s.data_seqs(2) == pub.expected("b", keys=["K4"])
    s.cancel()


# --- every SubscriptionEnd code, the others unaffected -------------------------------

def test_every_subscription_end_code_ends_only_that_subscription(tickfand):
    # a 64K log that Publish wraps: the stale cursor is stale for sure
    srv = tickfand(*FLAGS, "--log-size", "64K", "--max-subscriptions-per-stream", "5")
    pub = Publisher(srv, body=100)
    pub.publish(2000, "a")
    pub.publish(20, "b")
    s = Stream(srv.addr)
    s.send(add(1, topic="b"), add(2, topic="b", keys=["K1"]))
    s.pump(lambda s: s.eob(1, 2))
    epoch = cursor_parts(pub.last_cursor["a"])[0]
    s.send(add(10, topic="nope"),
           add(11, topic="b", cursor="not-a-cursor"),
           add(12, topic="b", kinds=[""]),
           add(13, topic="b", keys=["x" * 300]),
           add(14, topic="a", cursor=make_cursor(epoch, 0)),
           add(0, topic="b"),
           add(1, topic="b", keys=["K3"]),  # 1 is live
           remove(99))
    s.duplicates.add(1)
    errs = (10, 11, 12, 13, 14, 0, 99)
    s.pump(lambda s: all(i in s.ends for i in errs) and 1 in s.dup_ends)
    e = dict(s.ends)
    e[1] = s.dup_ends[1]
    assert e[10].code == NOT_FOUND and "nope" in e[10].message, e[10]
    assert e[11].code == INVALID_ARGUMENT and "cursor" in e[11].message, e[11]
    assert e[12].code == INVALID_ARGUMENT and "filter" in e[12].message, e[12]
    assert e[13].code == INVALID_ARGUMENT and "filter" in e[13].message, e[13]
    assert e[14].code == OUT_OF_RANGE and e[14].earliest_cursor, e[14]
    assert e[0].code == INVALID_ARGUMENT, e[0]
    assert e[1].code == INVALID_ARGUMENT, e[1]
    assert e[99].code == INVALID_ARGUMENT, e[99]
    for i in (10, 11, 12, 13, 14, 0, 99):
        assert i not in s.events, f"id {i} got events before its end: {s.events[i][:3]}"
    # the earliest cursor is of the log, and resumes at the first event retained
    e_epoch, e_seq = cursor_parts(e[14].earliest_cursor)
    assert e_epoch == epoch and 0 < e_seq < 2000, e[14]
    s.send(add(14, topic="a", cursor=e[14].earliest_cursor))
    del s.ends[14]
    s.pump(lambda s: s.eob(14))
    assert s.data_seqs(14) == list(range(e_seq + 1, 2001))
    assert 1 not in s.ends, "the duplicate add ended the live subscription 1"
    # over --max-subscriptions-per-stream (1, 2, 14 live: 3 and 4 fit, 5 does not)
    s.send(add(3, topic="b"), add(4, topic="b"), add(5, topic="b"))
    s.pump(lambda s: 5 in s.ends and s.eob(3, 4))
    assert s.ends[5].code == RESOURCE_EXHAUSTED, s.ends[5]
    assert 3 not in s.ends and 4 not in s.ends
    pub.publish(30, "b")
    pub.publish(10, "a")
    s.pump(lambda s: all(len(s.data_seqs(i)) == 50 for i in (1, 3, 4)) and
           len(s.data_seqs(14)) == 2010 - e_seq and
           len(s.data_seqs(2)) == len(pub.expected("b", keys=["K1"])))
    for i in (1, 3, 4):
        assert s.data_seqs(i) == list(range(1, 51))
    assert s.data_seqs(2) == pub.expected("b", keys=["K1"])
    assert s.data_seqs(14)[-1] == 2010
    # once one ends, a slot is free again
    s.send(remove(3), add(5, topic="b", start=pb.START_LIVE))
    del s.ends[5]
    s.pump(lambda s: 3 in s.ends and s.eob(5))
    assert s.ends[3].code == OK and 5 not in s.ends
    s.cancel()


# --- the whole stream ----------------------------------------------------------------

def test_an_undecodable_request_ends_the_stream_with_invalid_argument(tickfand):
    srv = tickfand(*FLAGS)
    pub = Publisher(srv)
    pub.publish(10, "a")
    ch = grpc.insecure_channel(srv.addr)
    call = ch.stream_stream(SUBSCRIBE, request_serializer=None, response_deserializer=None)
    good = pb.SubscribeRequest(add=pb.SubscriptionAdd(
        id=1, request=pb.WatchRequest(topic="a"))).SerializeToString()
    sent = threading.Event()

    def reqs():
        yield good
        sent.wait(10)
        yield b"\x0a\xff\xff\xff\x0f"  # field 1, a length past the message

    it = call(reqs(), timeout=20)
    got = []
    try:
        for raw in it:
            got += parse_response(raw)
            if any(d.event and d.event.HasField("end_of_backlog") for d in got):
                sent.set()
        raise AssertionError("the stream went on after an undecodable request")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    # the subscription that was live before it had its events
    assert [d.event.data.seq for d in got if d.event and d.event.HasField("data")] == \
        list(range(1, 11))
    ch.close()
    # the server serves on
    s = Stream(srv.addr)
    s.send(add(1, topic="a"))
    s.pump(lambda s: s.eob(1))
    s.cancel()


def test_half_close_goes_on_and_drain_ends_every_subscription_with_its_cursor(tickfand):
    srv = tickfand(*FLAGS, "--log-size", "8M")
    pub = Publisher(srv)
    for t in TOPICS:
        pub.publish(30, t)
    s = Stream(srv.addr)
    subs = {1: ("a", {}), 2: ("a", {"keys": ["K2"]}), 3: ("b", {"kinds": ["trade"]}),
            4: ("c", {})}
    for i, (t, f) in subs.items():
        s.send(add(i, topic=t, **f))
    s.half_close()
    s.pump(lambda s: s.eob(*subs))
    # the client's half-close is no end: live events keep coming
    for t in TOPICS:
        pub.publish(20, t)
    want = {i: pub.expected(t, **f) for i, (t, f) in subs.items()}
    s.pump(lambda s: all(s.data_seqs(i) == want[i] for i in subs), what="after half-close")
    assert s.status is None
    # drain: each live subscription is told UNAVAILABLE with its cursor,
    # then the stream ends UNAVAILABLE
    srv.signal(signal.SIGTERM)
    st = s.pump_to_end()
    assert st.code() == grpc.StatusCode.UNAVAILABLE, st
    assert srv.wait_exit(15) == 0
    for i, (t, f) in subs.items():
        end = s.ends.get(i)
        assert end is not None, f"id {i}: no SubscriptionEnd before the stream's status"
        assert end.code == UNAVAILABLE and end.cursor, (i, end)
        assert cursor_parts(end.cursor)[1] >= cursor_parts(s.cursor(i))[1], (i, end)
        assert cursor_parts(end.cursor)[1] <= pub.heads[t], (i, end)
    # every cursor resumes exactly after it, on the restarted server
    srv = tickfand.restart(srv)
    pub.connect(srv)
    for t in TOPICS:
        pub.publish(15, t)
    s2 = Stream(srv.addr)
    for i, (t, f) in subs.items():
        s2.send(add(i, topic=t, cursor=s.ends[i].cursor, **f))
    want = {i: pub.expected(t, **f) for i, (t, f) in subs.items()}
    s2.pump(lambda s2: all(s.data_seqs(i) + s2.data_seqs(i) == want[i] for i in subs),
            what="resumed from the drain cursors")
    s2.cancel()


def test_max_streams_counts_subscribe_streams_and_metrics_count_them(tickfand):
    srv = tickfand(*FLAGS, "--max-streams", "2", "--metrics-listen", "127.0.0.1:0")
    pub = Publisher(srv)
    pub.publish(5, "a")
    s1, s2 = Stream(srv.addr), Stream(srv.addr)
    s1.send(add(1, topic="a"), add(2, topic="b"), add(3, topic="c"))
    s2.send(add(1, topic="a"))
    s1.pump(lambda s: s.eob(1, 2, 3))
    s2.pump(lambda s: s.eob(1))
    m = scrape(srv)
    assert value(m, "tickfan_subscribe_streams_live") == 2, m
    assert value(m, "tickfan_subscriptions_live") == 4
    # 5 events and an EndOfBacklog each on two streams, two lone
    # EndOfBacklogs: 14 deliveries, none shared (each stream has one
    # subscription per topic)
    assert value(m, "tickfan_subscribe_deliveries_total") == 14, m
    assert 2 <= value(m, "tickfan_subscribe_responses_total") <= 14
    # and the admin view lists each subscription
    from test_admin import list_subscribers
    rows = list_subscribers(srv)
    assert sorted(r.topic for r in rows) == ["a", "a", "b", "c"], rows
    assert all(r.cursor.startswith("1-") for r in rows), rows
    # a third stream, Subscribe or Watch, is refused
    s3 = Stream(srv.addr)
    s3.send(add(1, topic="a"))
    st = s3.pump_to_end()
    assert st.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, st
    assert not s3.events
    ch = grpc.insecure_channel(srv.addr)
    try:
        for ev in ch.unary_stream(WATCH, request_serializer=pb.WatchRequest.SerializeToString,
                                  response_deserializer=pb.WatchEvent.FromString)(
                                      pb.WatchRequest(topic="a"), timeout=10):
            raise AssertionError(f"a Watch over --max-streams got {ev}")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
    ch.close()
    # a slot comes back when a stream ends, and the gauges follow
    s1.send(remove(3))
    s1.pump(lambda s: 3 in s.ends)
    s2.cancel()
    deadline = time.monotonic() + 10
    while True:
        m = scrape(srv)
        if value(m, "tickfan_subscribe_streams_live") == 1:
            break
        assert time.monotonic() < deadline, "the cancelled stream is still counted"
        time.sleep(0.05)
    assert value(m, "tickfan_subscriptions_live") == 2
    s4 = Stream(srv.addr)
    s4.send(add(7, topic="a"))
    s4.pump(lambda s: s.eob(7))
    assert s4.data_seqs(7) == [1, 2, 3, 4, 5]
    s1.cancel()
    s4.cancel()


# --- a stalled client ----------------------------------------------------------------

BUDGET = 300
STALL_SUBS = {  # id: (topic, filters, policy)
    1: ("a", {}, pb.OVERFLOW_DROP),
    2: ("a", {"kinds": ["trade"]}, pb.OVERFLOW_DROP),
    3: ("a", {"keys": ["K1", "K2"]}, pb.OVERFLOW_DROP),
    4: ("b", {}, pb.OVERFLOW_DROP),
    5: ("a", {}, pb.OVERFLOW_DISCONNECT),
}


def h2_add(i, topic, filters, policy):
    return add(i, topic=topic, start=pb.START_LIVE, overflow=policy, **filters).SerializeToString()


def h2_deliveries(st):
    out = []
    for raw in st.messages:
        out += parse_response(raw)
    return out


def test_a_stalled_stream_tells_each_drop_subscription_its_exact_gap(tickfand):
    """A raw HTTP/2 client with a 1,024-byte window it never grants back:
    the stream's sends stall. Each subscription has its own budget: the
    DROP ones get a Gap whose missed is exact once the client reads again,
    then contiguous events; the DISCONNECT one ends RESOURCE_EXHAUSTED with
    the cursor of the last event it got, and resumes from it without loss."""
    h2raw.require_h2()
    srv = tickfand(*FLAGS, "--max-lag-events", str(BUDGET), "--heartbeat-ms", "5000",
                   "--metrics-listen", "127.0.0.1:0")
    pub = Publisher(srv, body=40)
    conn = h2raw.Conn(srv.addr, window=1024, grant=False)
    try:
        st = stalled_subscribe(conn, {i: (t, dict(start=pb.START_LIVE, overflow=p, **f))
                                      for i, (t, f, p) in STALL_SUBS.items()})
        for t in ("a", "b"):
            pub.publish(4 * BUDGET, t)
        # each over its own budget while stalled: counted at once
        wait_metric(srv, conn, lambda m: value(m, "tickfan_slow_consumer_total", policy="drop") >= 4
                    and value(m, "tickfan_slow_consumer_total", policy="disconnect") >= 1)
        held = len(st.messages)
        conn.start_reading()

        def told():
            dl = h2_deliveries(st)
            return all(any(i in d.ids and d.event and d.event.HasField("gap") for d in dl)
                       for i in (1, 2, 3, 4)) and any(5 in d.ids and d.end for d in dl)
        assert conn.pump_until(told, 15), \
            f"no Gap or end after reading again; ended {st.ended} {st.status()}"
        for t in ("a", "b"):  # live events after the Gaps
            pub.publish(30, t)
        want = {i: pub.expected(t, **f) for i, (t, f, _) in STALL_SUBS.items()}

        def caught_up():
            last = {}
            for d in h2_deliveries(st):
                for i in d.ids:
                    if d.event and d.event.HasField("data"):
                        last[i] = d.event.data.seq
            return all(last.get(i) == want[i][-1] for i in (1, 2, 3, 4))
        assert conn.pump_until(caught_up, 20), \
            f"not caught up after reading again; ended {st.ended} {st.status()}"
        assert len(st.messages) > held
        dl = h2_deliveries(st)
        for i in (1, 2, 3, 4):
            evs = [d.event for d in dl if i in d.ids]
            assert all(e is not None for e in evs), f"id {i} ended"
            kinds = [e.WhichOneof("payload") for e in evs]
            assert kinds.count("gap") == 1, f"id {i}: {kinds.count('gap')} Gaps"
            g = kinds.index("gap")
            gap = evs[g]
            assert gap.gap.reason == pb.GAP_SLOW_CONSUMER, gap
            before = [e.data.seq for e in evs[:g] if e.HasField("data")]
            after = [e.data.seq for e in evs[g + 1:] if e.HasField("data")]
            at = cursor_parts(gap.cursor)[1]
            frm = cursor_parts(gap.gap.from_cursor)[1]
            # where the missed range starts: at or after the last event it
            # got (a filtered one's position moves over hidden events too)
            assert frm >= cursor_parts(evs[g - 1].cursor)[1], (i, gap, evs[g - 1])
            # exact: what it got before, what it was told it missed, and
            # what it got after are all its matching events, in order
            assert before == [x for x in want[i] if x <= frm], i
            assert gap.gap.missed == len([x for x in want[i] if frm < x <= at]), (i, gap, frm, at)
            assert after == [x for x in want[i] if x > at], (i, at, after[:5])
            assert gap.gap.missed == len(want[i]) - len(before) - len(after) > 0, (i, gap)
        # the DISCONNECT one: ended over its budget, with the cursor of the
        # last event it got; nothing after its end
        evs5 = [d for d in dl if 5 in d.ids]
        end = evs5[-1].end
        assert end is not None and end.code == RESOURCE_EXHAUSTED and end.cursor, evs5[-1:]
        got5 = [d.event for d in evs5[:-1]]
        assert not any(e.HasField("gap") for e in got5)
        assert end.cursor == got5[-1].cursor, (end, got5[-1])
        seqs5 = [e.data.seq for e in got5 if e.HasField("data")]
        assert seqs5 == list(range(1, len(seqs5) + 1))
        # and the others go on, live; 5 resumed from its cursor misses nothing
        conn.send_message(st, add(5, topic="a", cursor=end.cursor).SerializeToString())
        pub.publish(40, "a")
        pub.publish(40, "b")
        n0 = len(dl)

        def later(i):
            return [d.event.data.seq for d in h2_deliveries(st)[n0:]
                    if i in d.ids and d.event and d.event.HasField("data")]
        assert conn.pump_until(lambda: later(5)[-1:] == [pub.heads["a"]] and
                               later(4)[-1:] == [pub.heads["b"]], 20), \
            (later(5)[-3:], later(4)[-3:])
        assert later(5) == list(range(cursor_parts(end.cursor)[1] + 1, pub.heads["a"] + 1))
        assert later(1) == list(range(pub.heads["a"] - 39, pub.heads["a"] + 1))
        assert later(4) == list(range(pub.heads["b"] - 39, pub.heads["b"] + 1))
    finally:
        conn.close()


def stalled_subscribe(conn, subs):
    """A Subscribe stream on conn (which grants no window) with subs {id:
    (topic, WatchRequest fields)}, once every one has its EndOfBacklog."""
    items = list(subs.items())
    (i0, (t0, f0)), rest = items[0], items[1:]
    st = conn.request(SUBSCRIBE, add(i0, topic=t0, **f0).SerializeToString(), end_stream=False)
    for i, (t, f) in rest:
        conn.send_message(st, add(i, topic=t, **f).SerializeToString())

    def eob():
        return {i for d in h2_deliveries(st) if d.event and d.event.HasField("end_of_backlog")
                for i in d.ids}
    assert conn.pump_until(lambda: eob() == set(subs), 10), f"EndOfBacklog for {eob()} only"
    return st


def wait_metric(srv, conn, pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(srv)
        if pred(m):
            return m
        assert time.monotonic() < deadline, f"metrics never got there: {m}"
        conn.pump(0.05)


def test_a_stalled_stream_keeps_server_memory_bounded(tickfand):
    """Twenty DROP subscriptions on a stream that never reads while 60 MB
    go through their topic: the server holds at most its log and a batch,
    not what the stalled subscriptions did not get."""
    if sanitizer():
        pytest.skip(f"{sanitizer()} sanitizer build: tickfand runs without jemalloc and the "
                    "sanitizer keeps freed memory in quarantine, so RSS says nothing here; the "
                    "plain build runs this case")
    h2raw.require_h2()
    srv = tickfand(*FLAGS, "--log-size", "8M", "--max-lag-events", str(BUDGET),
                   "--metrics-listen", "127.0.0.1:0")
    pub = Publisher(srv, body=2000)
    pub.publish(10, "c")
    conn = h2raw.Conn(srv.addr, window=1024, grant=False)
    try:
        subs = {i: ("c", dict(start=pb.START_LIVE, overflow=pb.OVERFLOW_DROP,
                              keys=[] if i % 2 else ["K1", "K2", "K3"])) for i in range(1, 21)}
        st = stalled_subscribe(conn, subs)
        m = scrape(srv)
        assert value(m, "tickfan_subscriptions_live") == 20
        assert value(m, "tickfan_subscribe_streams_live") == 1
        rss0 = proc_rss_kib(srv.proc.pid)
        for _ in range(6):
            pub.publish(5000, "c")
            conn.pump(0)
        grown = proc_rss_kib(srv.proc.pid) - rss0
        # the 8 MiB log is touched at most once; 60 MB pending would be far more
        assert grown < 24 * 1024, f"RSS grew {grown} KiB while 60 MB went past a stalled stream"
        conn.start_reading()
        pub.publish(1, "c")

        def last(i):
            seqs = [d.event.data.seq for d in h2_deliveries(st)
                    if i in d.ids and d.event and d.event.HasField("data")]
            return seqs[-1] if seqs else 0
        want = {i: pub.expected("c", **{k: v for k, v in f.items() if k == "keys"})[-1]
                for i, (_, f) in subs.items()}
        assert conn.pump_until(lambda: all(last(i) == want[i] for i in subs), 30), \
            {i: last(i) for i in subs}
        for i in subs:
            gaps = [d.event.gap for d in h2_deliveries(st) if i in d.ids and d.event and
                    d.event.HasField("gap")]
            assert gaps and all(g.reason == pb.GAP_SLOW_CONSUMER for g in gaps), (i, gaps)
    finally:
        conn.close()


# --- shared deliveries, batching, bytes as Watch ------------------------------------

@pytest.mark.parametrize("n", [3, 100])
def test_an_event_wanted_by_several_subscriptions_goes_out_once_with_all_their_ids(tickfand, n):
    """n subscriptions, same topic, same filter, same start; one more with
    another filter. Once they are live and in step, every event they all
    want goes out in one delivery carrying all n ids: alone (published one
    at a time) and in bursts."""
    srv = tickfand(*FLAGS)
    pub = Publisher(srv)
    pub.publish(500, "a")
    ids = list(range(1, n + 1))
    s = Stream(srv.addr)
    s.send(*[add(i, topic="a", kinds=["quote"]) for i in ids],
           add(1000, topic="a", kinds=["trade"]))
    s.pump(lambda s: s.eob(*ids, 1000))
    want = pub.expected("a", kinds=["quote"])
    assert all(s.data_seqs(i) == want for i in ids)

    def live_deliveries(mark):
        return [d for _, _, dl in s.responses[mark:] for d in dl
                if d.event and d.event.HasField("data")]

    def check(mark, what):
        want = pub.expected("a", kinds=["quote"])
        s.pump(lambda s: all(s.data_seqs(i) == want for i in ids) and
               s.data_seqs(1000) == pub.expected("a", kinds=["trade"]), what=what)
        live = live_deliveries(mark)
        quotes = [d for d in live if d.event.data.kind == "quote"]
        split = [(d.event.data.seq, len(d.ids)) for d in quotes if sorted(d.ids) != ids]
        events = len({d.event.data.seq for d in quotes})
        assert not split, \
            f"{what}: {len(quotes)} deliveries for {events} quotes; split ones " \
            f"(seq, ids in the delivery): {split[:12]}"
        assert all(d.ids == [1000] for d in live if d.event.data.kind == "trade")

    # alone: each event published by itself once the last one arrived
    mark = len(s.responses)
    for _ in range(12):
        pub.publish(1, "a")
        head = pub.heads["a"]
        got = ids if kind_of(head) == "quote" else [1000]
        s.pump(lambda s: all(s.data_seqs(i)[-1:] == [head] for i in got))
    check(mark, "events published one at a time")
    # in bursts
    mark = len(s.responses)
    for k in range(4):
        pub.publish(150 if k % 2 == 0 else 1, "a")
    check(mark, "bursts")
    s.cancel()


def test_subscriptions_at_the_same_place_follow_one_read_and_each_gets_its_own(tickfand):
    """Unfiltered subscriptions of a shard at the same place in a topic take
    the step the first of them read (tickfan_subscribe_followed_total): the
    log is read once per event, whichever stream they are on. A filtered
    one reads for itself; each still gets exactly its events."""
    srv = tickfand(*FLAGS, "--shards", "1", "--heartbeat-ms", "10000",
                   "--metrics-listen", "127.0.0.1:0")
    pub = Publisher(srv)
    s1, s2 = Stream(srv.addr), Stream(srv.addr)
    s1.send(add(1, topic="a", start=pb.START_LIVE), add(2, topic="a", start=pb.START_LIVE),
            add(3, topic="a", start=pb.START_LIVE),
            add(4, topic="a", keys=[key_of(1)], start=pb.START_LIVE))
    s2.send(add(7, topic="a", start=pb.START_LIVE))
    s1.pump(lambda s: s.eob(1, 2, 3, 4))
    s2.pump(lambda s: s.eob(7))
    # one event at a time, each delivered to all before the next: one read
    # (the leader's), three follows; the filtered one is not among them
    for k in range(1, 6):
        before = value(scrape(srv), "tickfan_subscribe_followed_total")
        pub.publish(1, "a")
        s1.pump(lambda s: all(len(s.data_seqs(i)) == k for i in (1, 2, 3)))
        s2.pump(lambda s: len(s.data_seqs(7)) == k)
        assert value(scrape(srv), "tickfan_subscribe_followed_total") - before == 3
    # a burst: still at least one read per event, and never for the filter
    m0 = scrape(srv)
    pub.publish(200, "a")
    want = pub.expected("a")
    s1.pump(lambda s: all(s.data_seqs(i) == want for i in (1, 2, 3)) and
            s.data_seqs(4) == pub.expected("a", keys=[key_of(1)]))
    s2.pump(lambda s: s.data_seqs(7) == want)
    followed = value(scrape(srv), "tickfan_subscribe_followed_total") - \
        value(m0, "tickfan_subscribe_followed_total")
    assert 0 < followed <= 3 * 200, followed
    s1.cancel()
    s2.cancel()


def test_busy_streams_batch_and_an_idle_stream_sends_a_lone_event_at_once(tickfand):
    """Busy: while a message is in flight (here held by flow control: the
    client reads nothing for a while, its window is 64 KiB with BDP probing
    off), everything that piles up goes out in the next messages, each at
    most --max-batch-bytes. Idle: one event goes out alone, at once."""
    max_batch = 16384
    srv = tickfand(*FLAGS, "--max-batch-bytes", str(max_batch), "--heartbeat-ms", "10000",
                   "--metrics-listen", "127.0.0.1:0")
    pub = Publisher(srv, body=200)
    s = Stream(srv.addr, channel_options=[("grpc.http2.bdp_probe", 0)])
    s.send(add(1, topic="a", start=pb.START_LIVE),
           add(2, topic="a", keys=["K1"], start=pb.START_LIVE))
    s.pump(lambda s: s.eob(1, 2))
    m0 = scrape(srv)
    mark = len(s.responses)
    s.reading.clear()
    pub.publish(5000, "a")  # ~1.3 MB: far past the window
    s.reading.set()
    s.pump(lambda s: len(s.data_seqs(1)) == 5000 and len(s.data_seqs(2)) == 1000)
    busy = s.responses[mark:]
    sizes = [len(dl) for _, _, dl in busy]
    nbytes = [n for _, n, _ in busy]
    assert max(nbytes) <= max_batch, f"a SubscribeResponse of {max(nbytes)} bytes"
    assert max(nbytes) > max_batch // 2, f"never a full batch: largest {max(nbytes)} bytes"
    assert max(sizes) >= 40, sizes[:30]
    # the window holds ~240 lone events; the rest went in full batches
    assert len(busy) < 5000 / 5, f"{len(busy)} responses for 5,000 events: {sizes[:30]}"
    m1 = scrape(srv)
    d_resp = value(m1, "tickfan_subscribe_responses_total") - \
        value(m0, "tickfan_subscribe_responses_total")
    d_del = value(m1, "tickfan_subscribe_deliveries_total") - \
        value(m0, "tickfan_subscribe_deliveries_total")
    assert d_resp == len(busy), (d_resp, len(busy))
    assert d_del == sum(sizes), (d_del, sum(sizes))
    # idle: one event goes out alone, long before any timer could send it
    for k in range(1, 4):
        mark = len(s.responses)
        t0 = time.monotonic()
        pub.publish(1, "a")
        s.pump(lambda s: len(s.data_seqs(1)) == 5000 + k, timeout=5)
        (t, _, dl), = s.responses[mark:]
        assert len(dl) == 1 and dl[0].event.data.seq == 5000 + k, [d.ids for d in dl]
        assert t - t0 < 2.0, f"a lone event took {t - t0:.3f} s (heartbeat cadence 10 s)"
    s.cancel()


def test_every_delivered_event_is_byte_for_byte_what_watch_sends(tickfand):
    srv = tickfand(*FLAGS, "--log-size", "8M")
    pub = Publisher(srv)
    pub.publish(700, "c")
    f2 = dict(kinds=["trade"], keys=["K0", "K3"])
    s = Stream(srv.addr)
    s.send(add(1, topic="c"), add(2, topic="c", **f2),
           add(3, topic="c", start=pb.START_LIVE, snapshot=True))
    # a Watch with the same snapshot request at the same head
    w_snap = watch_data_bytes(srv, 10, topic="c", start=pb.START_LIVE, snapshot=True)
    s.pump(lambda s: s.eob(1, 2, 3))
    pub.publish(300, "c")
    s.pump(lambda s: len(s.data_seqs(1)) == 1000 and len(s.data_seqs(3)) == 300 and
           len(s.data_seqs(2)) == len(pub.expected("c", **f2)))
    assert data_raw(s, 1) == watch_data_bytes(srv, 1000, topic="c")
    assert data_raw(s, 2) == watch_data_bytes(srv, len(s.data(2)), topic="c", **f2)
    # the snapshot values (every (kind, key) of the topic: 2 x 5), then live
    snap = data_raw(s, 3)
    assert len([d for d in s.data(3) if d.snapshot]) == 10
    assert snap[:10] == w_snap
    assert snap[10:] == data_raw(s, 1)[700:], "after the snapshot: the log, as everyone else"
    s.cancel()
