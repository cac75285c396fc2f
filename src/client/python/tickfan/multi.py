"""tickfan.MultiSubscriber: many subscriptions over one Subscribe stream,
each resumed from its own cursor.

    import tickfan
    mux = tickfan.MultiSubscriber("localhost:50051")
    aapl = mux.add("sim", keys=["AAPL"], cursor_file="aapl.cursor")
    fx = mux.add("fx", kinds=["quote"])
    for sub, msg in mux:             # (Subscription, WatchEvent | SubscriptionEnd)
        if tickfan.is_end(msg):      # that subscription is over (sub.end says why)
            continue
        if msg.WhichOneof("payload") == "data":
            handle(sub.topic, msg.data)

One connection and one Subscribe stream carry every subscription
(docs/contract.md, "Subscribe: many subscriptions over one stream"). add()
and remove() work
at any time, from any thread, before or during iteration. The rules are
those of tickfan.Subscriber, per subscription:

- every event handed out carries a cursor; a subscription remembers the
  cursor of the last event the caller took, and whatever resumes it
  starts right after that one: nothing twice, nothing skipped;
- a broken stream (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN,
  ABORTED, a CANCELLED not asked for, a drain) is reopened with backoff
  and full jitter, and every live subscription is added again from its own
  cursor;
- a subscription the server ends with a code a Watch stream would resume
  on (tickfan.resumable: a drain's UNAVAILABLE, a slow-consumer
  RESOURCE_EXHAUSTED, ...) is added again on the same stream from the
  end's cursor (else the last one taken); the caller sees nothing of it;
- any other end (NOT_FOUND, INVALID_ARGUMENT, OUT_OF_RANGE with its
  earliest cursor, RESOURCE_EXHAUSTED over the per-stream limit, and OK
  after remove()) is handed to the caller as (sub, SubscriptionEnd), once:
  nothing more comes for that subscription, and sub.end holds it;
- a heartbeat watchdog: nothing at all on the stream for 3x the heartbeat
  cadence cancels it and resumes on a new channel;
- a snapshot is asked for again only if the subscription had not yet taken
  the first event after its snapshot;
- with cursor_file, a subscription's cursor is written (atomically) every
  commit_every events it takes, when it ends and when iteration stops, and
  read when it is added.

A stream status that resuming would only repeat (UNIMPLEMENTED from an old
server, INVALID_ARGUMENT, ...) raises StreamError from the iteration.
Threads: iterate from one thread; add(), remove() and stop() from any.
"""
import collections
import queue
import random
import threading
import time

import grpc

from events.v1 import watcher_pb2 as pb
from events.v1 import watcher_pb2_grpc as pb_grpc

from . import _RESUMABLE, TRAILER_CURSOR, StreamError, _read_cursor, _Taken, resumable

__all__ = ["MultiSubscriber", "Subscription", "is_end"]

_QUEUE_RESPONSES = 4  # responses read ahead of the caller (flow control does the rest)


def is_end(msg):
    """Whether an item of the iteration is a SubscriptionEnd (else it is a
    WatchEvent)."""
    return isinstance(msg, pb.SubscriptionEnd)


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _end_resumable(end):
    """A subscription the server ended but that may go on from its cursor:
    the rules of a Watch stream's status, its cursor field for the trailer."""
    code = _CODES.get(end.code, grpc.StatusCode.UNKNOWN)
    return resumable(code, end.message, {TRAILER_CURSOR: end.cursor} if end.cursor else {})


def _removed(sub):
    """The end of a subscription removed while no stream could say it."""
    return pb.SubscriptionEnd(code=grpc.StatusCode.OK.value[0], message="removed",
                              cursor=sub.cursor)


class Subscription(_Taken):
    """One subscription of a MultiSubscriber (what add() returns). topic,
    cursor (of the last event taken), end (the SubscriptionEnd once it is
    over, else None), events, data_events, readds (times it was added again
    after the server ended it with a cursor)."""

    def __init__(self, topic, request, cursor, snapshot, cursor_file, commit_every, tag):
        self.topic = topic
        self.tag = tag  # anything of the caller's
        self.cursor = cursor
        self.end = None
        self.readds = 0
        self._request = request  # a WatchRequest without cursor
        self._snapshot = snapshot
        self.cursor_file = cursor_file
        self.commit_every = commit_every
        self._id = 0  # the id of its current add; 0 when not on a stream
        self._removing = False

    def __repr__(self):
        return f"<Subscription {self.topic} cursor={self.cursor!r} end={self.end is not None}>"

    def _watch_request(self):
        r = pb.WatchRequest()
        r.CopyFrom(self._request)
        if self.cursor:
            r.cursor = self.cursor
            r.ClearField("start")
            r.start_unix_micros = 0
        r.snapshot = bool(self._snapshot and not self.past_snapshot)
        return r


class _Stream:
    """One Subscribe call: its request queue and the reader of its responses."""

    def __init__(self, channel):
        self.channel = channel
        self.requests = queue.Queue()
        self.responses = queue.Queue(maxsize=_QUEUE_RESPONSES)
        self.call = None

    def request_iter(self):
        while True:
            r = self.requests.get()
            if r is None:
                return
            yield r

    def send(self, r):
        self.requests.put(r)

    def read(self):
        """Reader thread: responses into the queue, then ("end", None)."""
        def put(item):
            while True:
                try:
                    self.responses.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    if self.call.done():
                        return False
        try:
            for resp in self.call:
                if not put(("resp", resp)):
                    return
        except grpc.RpcError:
            pass
        put(("end", None))

    def close(self):
        self.requests.put(None)
        if self.call is not None:
            self.call.cancel()


class MultiSubscriber:
    """Many subscriptions over one Subscribe stream that resume by
    themselves. add() subscriptions, then iterate for (sub, msg). Stats:
    streams, resumes, responses, deliveries."""

    def __init__(self, target, heartbeat_s=5.0, resume=True, backoff_min_s=0.1,
                 backoff_max_s=5.0, healthy_s=10.0, options=()):
        self.target = target
        self.watchdog_s = 3 * heartbeat_s
        self.resume = resume
        self.backoff_min_s, self.backoff_max_s, self.healthy_s = (backoff_min_s, backoff_max_s,
                                                                  healthy_s)
        self.options = list(options)
        self.streams = 0
        self.resumes = 0
        self.responses = 0
        self.deliveries = 0
        self._lock = threading.Lock()
        self._subs = []  # live subscriptions, in the order added
        self._by_id = {}  # id of the current add -> Subscription
        self._next_id = 1
        self._stream = None
        self._pending_ends = collections.deque()  # ended off the stream, to hand out
        self._stopped = threading.Event()

    # --- public -------------------------------------------------------------

    def add(self, topic, cursor=None, kinds=(), keys=(), start=None, start_unix_micros=0,
            snapshot=False, overflow=None, allow_gap=False, cursor_file=None,
            commit_every=1000, tag=None):
        """A new subscription with Watch's semantics (the arguments are
        WatchRequest's fields); a cursor, else the one in cursor_file, else
        start. It begins at once if the stream is open, else when it opens."""
        r = pb.WatchRequest(topic=topic, kinds=list(kinds), keys=list(keys),
                            allow_gap=allow_gap)
        if start is not None:
            r.start = start
            r.start_unix_micros = start_unix_micros
        if overflow is not None:
            r.overflow = overflow
        cur = cursor or (_read_cursor(cursor_file) if cursor_file else "") or ""
        sub = Subscription(topic, r, cur, snapshot, cursor_file, commit_every, tag)
        with self._lock:
            self._subs.append(sub)
            if self._stream is not None:
                self._send_add(sub)
        return sub

    def remove(self, sub):
        """Ends a subscription: the iteration hands out its events up to the
        server's SubscriptionEnd{OK}, then that end."""
        with self._lock:
            if sub.end is not None or sub._removing:
                return
            sub._removing = True
            if sub._id and self._stream is not None:
                self._stream.send(pb.SubscribeRequest(remove=pb.SubscriptionRemove(id=sub._id)))
                return
            # not on a stream: it ends here
            self._ended(sub, _removed(sub))
            self._pending_ends.append(sub)

    def subscriptions(self):
        with self._lock:
            return list(self._subs)

    def stop(self):
        """Ends the iteration (any thread)."""
        self._stopped.set()
        with self._lock:
            if self._stream is not None:
                self._stream.close()

    def __iter__(self):
        try:
            yield from self._items()
        finally:
            with self._lock:
                subs = list(self._subs)
            for sub in subs:
                sub._commit()

    # --- the loop -----------------------------------------------------------

    def _send_add(self, sub):
        """Under the lock, with a stream."""
        sub._id = self._next_id
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        self._by_id[sub._id] = sub
        self._stream.send(pb.SubscribeRequest(
            add=pb.SubscriptionAdd(id=sub._id, request=sub._watch_request())))

    def _ended(self, sub, end):
        """Under the lock: sub is over for good."""
        sub.end = end
        sub._id = 0
        if sub in self._subs:
            self._subs.remove(sub)
        sub._commit()

    def _items(self):
        attempt = 0
        while not self._stopped.is_set():
            opened = time.monotonic()
            channel = grpc.insecure_channel(self.target, options=self.options)
            st = _Stream(channel)
            with self._lock:
                if self._stopped.is_set():
                    channel.close()
                    return
                self._by_id = {}
                self._stream = st
                st.call = pb_grpc.WatcherStub(channel).Subscribe(st.request_iter())
                for sub in list(self._subs):
                    if sub._removing:  # its remove went out on a stream that broke
                        self._ended(sub, _removed(sub))
                        self._pending_ends.append(sub)
                    else:
                        self._send_add(sub)
            self.streams += 1
            reader = threading.Thread(target=st.read, daemon=True)
            reader.start()
            try:
                while True:
                    while self._pending_ends:
                        sub = self._pending_ends.popleft()
                        yield sub, sub.end
                    try:
                        kind, resp = st.responses.get(timeout=self.watchdog_s)
                    except queue.Empty:
                        code, details = grpc.StatusCode.UNAVAILABLE, "watchdog"
                        break
                    if kind == "end":
                        code, details = self._status(st.call)
                        break
                    self.responses += 1
                    yield from self._deliver(resp)
                    if time.monotonic() - opened > self.healthy_s:
                        attempt = 0
            finally:
                with self._lock:
                    self._stream = None
                    for sub in self._subs:
                        sub._id = 0
                st.close()
                reader.join(5)
                channel.close()
            if self._stopped.is_set() or code == grpc.StatusCode.OK:
                return
            if not (self.resume and code in _RESUMABLE):
                raise StreamError(code, details, "")
            self.resumes += 1
            cap = min(self.backoff_max_s, self.backoff_min_s * (2 ** attempt))
            attempt += 1
            if self._stopped.wait(random.uniform(0, cap)):
                return

    def _deliver(self, resp):
        for d in resp.deliveries:
            self.deliveries += 1
            payload = d.WhichOneof("payload")
            for i in d.ids:
                with self._lock:
                    sub = self._by_id.get(i)
                    if sub is None:
                        continue  # not ours (any more): nothing to take
                    if payload == "end":
                        del self._by_id[i]
                        if not sub._removing and self.resume and _end_resumable(d.end):
                            # at this point the caller has taken every event
                            # before the end: go on from the end's cursor
                            # (past filtered events too), else from its own
                            sub.cursor = d.end.cursor or sub.cursor
                            sub.readds += 1
                            self._send_add(sub)  # on this stream, still current
                            continue
                        self._ended(sub, d.end)
                if payload == "end":
                    yield sub, d.end
                    continue
                ev = d.event
                try:
                    yield sub, ev
                except GeneratorExit:
                    sub._took(ev)  # a break after handling it
                    raise
                sub._took(ev)

    @staticmethod
    def _status(call):
        try:
            code, details = call.code(), call.details()
        except Exception:  # a call that never started
            code, details = grpc.StatusCode.UNAVAILABLE, "no status"
        if code is None:
            code = grpc.StatusCode.UNAVAILABLE
        return code, details or ""
