"""Subscribe against the real tickfand, fed by Publish so every count is
exact: per-subscription filters and order, an event shared by several
subscriptions sent once with all their ids, events byte for byte what
Watch sends, batching when busy and a lone event when idle, every
per-subscription error ending that subscription only, remove, an
undecodable request ending the stream, and drain."""
import queue
import signal
import threading

import grpc

from events.v1 import publisher_pb2 as ppb
from events.v1 import publisher_pb2_grpc as ppb_grpc
from tickfan_harness import Watch, cursor_parts, make_cursor, pb

FLAGS = ("--feed", "none", "--topic", "pub", "--topic", "other")
OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, OUT_OF_RANGE, UNAVAILABLE = 0, 3, 5, 8, 11, 14


def publish(srv, n, start=1, topic="pub"):
    stub = ppb_grpc.PublisherStub(grpc.insecure_channel(srv.addr))

    def records():
        for i in range(start, start + n):
            yield ppb.PublishRequest(topic=topic, kind="trade" if i % 3 == 0 else "quote",
                                     key=f"K{i % 5}", body=f"body-{i}".encode(),
                                     emitted_at_unix_micros=1000 + i, source_seq=i)
    assert stub.Publish(records(), timeout=30).accepted == n


def add(sub_id, **fields):
    return pb.SubscribeRequest(add=pb.SubscriptionAdd(id=sub_id, request=pb.WatchRequest(**fields)))


def remove(sub_id):
    return pb.SubscribeRequest(remove=pb.SubscriptionRemove(id=sub_id))


class Stream:
    """One Subscribe call: requests sent with send(), responses read on a
    thread into a queue; per id, what arrived (events and the end)."""

    def __init__(self, srv):
        self.requests = queue.Queue()
        self.responses = queue.Queue()
        self.status = None
        self.events = {}  # id -> [WatchEvent]
        self.ends = {}  # id -> [SubscriptionEnd]
        self.sizes = []  # deliveries per response
        self.shared = []  # ids of deliveries with more than one
        self.call = srv.stub().Subscribe(self._gen())
        threading.Thread(target=self._run, daemon=True).start()

    def _gen(self):
        while True:
            r = self.requests.get()
            if r is None:
                return
            yield r

    def _run(self):
        try:
            for resp in self.call:
                self.responses.put(resp)
        except grpc.RpcError as e:
            self.responses.put(e)
        else:
            self.responses.put(None)

    def send(self, *reqs):
        for r in reqs:
            self.requests.put(r)

    def pump(self, until, timeout=15.0):
        """Reads responses until until(self) holds; fails on timeout."""
        import time
        deadline = time.monotonic() + timeout
        while not until(self):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out: events {({i: len(e) for i, e in self.events.items()})}" \
                             f" ends {self.ends} status {self.status}"
            try:
                resp = self.responses.get(timeout=left)
            except queue.Empty:
                continue
            if resp is None or isinstance(resp, grpc.RpcError):
                self.status = resp
                assert until(self), f"stream ended: {resp}"
                return
            self.sizes.append(len(resp.deliveries))
            for d in resp.deliveries:
                assert d.ids, "a delivery without ids"
                if len(d.ids) > 1:
                    self.shared.append(list(d.ids))
                for i in d.ids:
                    assert i not in self.ends, f"delivery for {i} after its SubscriptionEnd"
                    if d.HasField("end"):
                        self.ends.setdefault(i, []).append(d.end)
                    else:
                        self.events.setdefault(i, []).append(d.event)

    def data(self, sub_id):
        return [e.data for e in self.events.get(sub_id, []) if e.HasField("data")]

    def eob(self, sub_id):
        return any(e.HasField("end_of_backlog") for e in self.events.get(sub_id, []))

    def cancel(self):
        self.call.cancel()


def test_filters_order_shared_ids_and_bytes_as_watch(tickfand):
    srv = tickfand(*FLAGS)
    publish(srv, 3000)
    s = Stream(srv)
    s.send(add(1, topic="pub"), add(2, topic="pub", keys=["K1"]), add(3, topic="pub"),
           add(4, topic="pub", kinds=["trade"]))
    s.pump(lambda s: all(s.eob(i) for i in (1, 2, 3, 4)))
    all_seqs = list(range(1, 3001))
    assert [d.seq for d in s.data(1)] == all_seqs
    assert [d.seq for d in s.data(3)] == all_seqs
    assert [d.seq for d in s.data(2)] == [i for i in all_seqs if i % 5 == 1]
    assert [d.seq for d in s.data(4)] == [i for i in all_seqs if i % 3 == 0]
    # a busy stream carries many deliveries per message
    assert max(s.sizes) > 10, s.sizes[:20]
    # every event is byte for byte what Watch sends at that position
    w = Watch(srv.stub(), topic="pub")
    watch_bytes = [w.next_data().SerializeToString() for _ in range(3000)]
    w.cancel()
    sub_bytes = [e.SerializeToString() for e in s.events[1] if e.HasField("data")]
    assert sub_bytes == watch_bytes
    # live: an idle stream sends a lone event at once
    before = len(s.sizes)
    publish(srv, 1, start=3001)
    s.pump(lambda s: len(s.data(1)) == 3001 and len(s.data(3)) == 3001)
    assert s.sizes[before:] == [1], s.sizes[before:]
    assert s.data(1)[-1].seq == 3001
    # live, in step: the same event at the same place goes out once, with
    # the ids of every subscription that wants it
    shared_before = len(s.shared)
    publish(srv, 300, start=3002)
    s.pump(lambda s: len(s.data(1)) == 3301 and len(s.data(3)) == 3301 and
           len(s.data(2)) == sum(1 for i in range(1, 3302) if i % 5 == 1) and
           len(s.data(4)) == sum(1 for i in range(1, 3302) if i % 3 == 0))
    live_shared = s.shared[shared_before:]
    assert any(set(ids) == {1, 3} for ids in live_shared), live_shared[:5]
    assert any(set(ids) == {1, 2, 3, 4} for ids in live_shared), live_shared[:5]
    assert [d.seq for d in s.data(2)] == [i for i in range(1, 3302) if i % 5 == 1]
    assert [d.seq for d in s.data(4)] == [i for i in range(1, 3302) if i % 3 == 0]
    s.cancel()


def test_errors_end_only_their_subscription(tickfand):
    srv = tickfand(*FLAGS, "--max-subscriptions-per-stream", "4")
    publish(srv, 10)
    epoch = cursor_parts(Watch(srv.stub(), topic="pub").next_data().cursor)[0]
    s = Stream(srv)
    s.send(add(1, topic="pub", start=pb.START_LIVE),
           add(2, topic="nope"),
           add(3, topic="pub", cursor="not-a-cursor"),
           add(0, topic="pub"),
           add(1, topic="pub"),
           add(5, topic="pub", cursor=make_cursor(epoch, 999999)),
           remove(42),
           add(6, topic="pub", kinds=[""]),
           add(7, topic="pub"), add(8, topic="pub"), add(9, topic="pub"),
           add(10, topic="pub"))
    s.pump(lambda s: all(i in s.ends for i in (2, 3, 0, 1, 5, 42, 6, 10)))
    assert s.ends[2][0].code == NOT_FOUND and "nope" in s.ends[2][0].message
    assert s.ends[3][0].code == INVALID_ARGUMENT and "cursor" in s.ends[3][0].message
    assert s.ends[0][0].code == INVALID_ARGUMENT
    assert s.ends[1][0].code == INVALID_ARGUMENT and "duplicate" in s.ends[1][0].message
    assert s.ends[5][0].code == OUT_OF_RANGE and s.ends[5][0].earliest_cursor
    # resuming from it replays from the first record the topic holds
    assert cursor_parts(s.ends[5][0].earliest_cursor)[1] == 0
    assert s.ends[42][0].code == INVALID_ARGUMENT
    assert s.ends[6][0].code == INVALID_ARGUMENT and "filter" in s.ends[6][0].message
    assert s.ends[10][0].code == RESOURCE_EXHAUSTED and "max 4" in s.ends[10][0].message
    # the duplicate's End does not end the live subscription 1: it goes on
    del s.ends[1]
    publish(srv, 5, start=11)
    s.pump(lambda s: len(s.data(1)) == 5 and all(len(s.data(i)) == 15 for i in (7, 8, 9)))
    assert [d.seq for d in s.data(1)] == list(range(11, 16))
    s.cancel()


def test_remove_ends_with_ok_after_its_last_event(tickfand):
    srv = tickfand(*FLAGS)
    publish(srv, 100)
    s = Stream(srv)
    s.send(add(1, topic="pub"), add(2, topic="pub"))
    s.pump(lambda s: s.eob(1) and s.eob(2))
    s.send(remove(2))
    s.pump(lambda s: 2 in s.ends)
    assert s.ends[2][0].code == OK
    publish(srv, 50, start=101)
    s.pump(lambda s: len(s.data(1)) == 150)
    assert len(s.data(2)) == 100  # nothing after the end (pump asserts it too)
    # the id may be used again once its end arrived
    del s.ends[2]
    s.events.pop(2)
    s.send(add(2, topic="pub", keys=["K0"]))
    s.pump(lambda s: s.eob(2))
    assert [d.seq for d in s.data(2)] == list(range(5, 151, 5))
    s.cancel()


def test_undecodable_request_ends_the_stream(tickfand):
    srv = tickfand(*FLAGS)
    ch = grpc.insecure_channel(srv.addr)
    call = ch.stream_stream("/events.v1.Watcher/Subscribe", request_serializer=None,
                            response_deserializer=None)
    try:
        for _ in call(iter([b"\x0a\xff\xff\xff"]), timeout=10):
            pass
        raise AssertionError("the stream went on")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "SubscribeRequest" in e.details()


def test_half_close_is_not_an_end_and_drain_tells_every_subscription(tickfand):
    srv = tickfand(*FLAGS)
    publish(srv, 20)
    s = Stream(srv)
    s.send(add(1, topic="pub"), add(2, topic="pub", keys=["K2"]), None)  # then half-close
    s.pump(lambda s: s.eob(1) and s.eob(2))
    publish(srv, 5, start=21)
    s.pump(lambda s: len(s.data(1)) == 25)
    srv.signal(signal.SIGTERM)
    s.pump(lambda s: s.status is not None, timeout=20)
    assert s.status.code() == grpc.StatusCode.UNAVAILABLE, s.status
    # the drain ends the process by itself (a second SIGTERM from the
    # teardown while it still drains would make it exit 1 at once)
    assert srv.wait_exit(15) == 0
    for i, last in ((1, 25), (2, 22)):
        end = s.ends[i][0]
        assert end.code == UNAVAILABLE and end.cursor, end
        # the cursor is where this subscription is: after everything scanned
        assert cursor_parts(end.cursor)[1] == 25, (i, end.cursor)
        assert s.data(i)[-1].seq == last
