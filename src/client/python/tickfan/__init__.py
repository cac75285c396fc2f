"""tickfan: a Python client for tickfand's Watch and Subscribe, with auto-resume.

    import tickfan
    sub = tickfan.Subscriber("localhost:50051", "sim", keys=["AAPL"],
                             cursor_file="aapl.cursor")
    for ev in sub:                   # events.v1.WatchEvent messages
        if ev.WhichOneof("payload") == "data":
            handle(ev.data)
    # or: sub.run(handler) with handler(ev) returning False to stop

Follows the resume rules of docs/subscribers.md, so a broken stream is
invisible to the caller apart from its cost:

- every event handed out carries a cursor; the subscriber remembers the
  cursor of the last event the caller took (it asked for the next one,
  broke out of the loop after it, or the handler returned), and a resumed
  stream starts right after it: nothing twice, nothing skipped;
- resumes on UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ABORTED, a
  CANCELLED it did not ask for, and RESOURCE_EXHAUSTED from a slow-consumer
  disconnect (a tickfan-cursor trailer, or a message starting
  "slow consumer: "), with exponential backoff and full jitter (100 ms
  doubling to 5 s; the cap starts again after 10 s of a healthy stream);
- a heartbeat watchdog: nothing at all for 3x the heartbeat cadence
  (default 15 s) cancels the stream and resumes on a new channel;
- OUT_OF_RANGE raises OutOfRange with the earliest cursor; other codes
  (INVALID_ARGUMENT, NOT_FOUND, ...) raise StreamError: repeating the
  request would only repeat the error;
- a snapshot is asked for again only if the stream broke before the first
  event after the snapshot;
- with cursor_file, the cursor is written (atomically) every commit_every
  events and when the subscriber stops, and read at start.

tickfan.MultiSubscriber carries many subscriptions over one Subscribe
stream, each resumed from its own cursor by the same rules (tickfan/multi.py).

The protobuf stubs are generated from proto/ at build time (cmake --build
puts this package and the stubs in BUILD/python); they are never committed.
Threads: one Subscriber is used from one thread; grpcio runs its own.
"""
import os
import queue
import random
import threading
import time

import grpc

from events.v1 import watcher_pb2 as pb
from events.v1 import watcher_pb2_grpc as pb_grpc

__all__ = ["Subscriber", "MultiSubscriber", "Subscription", "is_end", "StreamError",
           "OutOfRange", "pb"]

TRAILER_CURSOR = "tickfan-cursor"
TRAILER_EARLIEST = "tickfan-earliest-cursor"

_RESUMABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED,
              grpc.StatusCode.CANCELLED}


class StreamError(Exception):
    """The stream ended with a status that resuming would only repeat."""

    def __init__(self, code, details, cursor):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.cursor = cursor  # the last cursor taken, to resume from by hand


class OutOfRange(StreamError):
    """The cursor is older than the topic retains (or from another epoch of
    its log): start again from earliest_cursor, or with allow_gap=True to
    be told by a Gap how much was missed."""

    def __init__(self, code, details, cursor, earliest_cursor):
        super().__init__(code, details, cursor)
        self.earliest_cursor = earliest_cursor


def resumable(code, details, trailers):
    """Whether a stream that ended with (code, details, trailers) may be
    reopened from its cursor, per the rules of docs/subscribers.md."""
    if code in _RESUMABLE:
        return True
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return TRAILER_CURSOR in trailers or (details or "").startswith("slow consumer: ")
    return False


class _Watchdog(Exception):
    pass


class _Taken:
    """What a subscription took: the cursor of the last event, whether it is
    past its snapshot, counts, and the cursor file written every
    commit_every events. Shared by Subscriber and multi.Subscription, which
    set cursor, cursor_file and commit_every."""

    past_snapshot = False
    events = 0
    data_events = 0
    _since_commit = 0

    def _took(self, ev):
        if ev.cursor:
            self.cursor = ev.cursor
        if not (ev.WhichOneof("payload") == "data" and ev.data.snapshot):
            self.past_snapshot = True
        self.events += 1
        if ev.WhichOneof("payload") == "data":
            self.data_events += 1
        self._since_commit += 1
        if self.commit_every and self._since_commit >= self.commit_every:
            self._commit()

    def _commit(self):
        self._since_commit = 0
        if self.cursor_file and self.cursor:
            _write_cursor(self.cursor_file, self.cursor)


class Subscriber(_Taken):
    """One Watch subscription that resumes by itself. Iterate it for
    WatchEvents; stop() (from any thread) or breaking out of the loop ends
    it. Stats: resumes, events, data_events."""

    def __init__(self, target, topic, cursor=None, kinds=(), keys=(), start=None,
                 start_unix_micros=0, snapshot=False, overflow=None, allow_gap=False,
                 heartbeat_s=5.0, cursor_file=None, commit_every=1000, resume=True,
                 backoff_min_s=0.1, backoff_max_s=5.0, healthy_s=10.0, options=()):
        self.target = target
        self.topic = topic
        self.kinds, self.keys = list(kinds), list(keys)
        self.start = start
        self.start_unix_micros = start_unix_micros
        self.snapshot = snapshot
        self.overflow = overflow
        self.allow_gap = allow_gap
        self.watchdog_s = 3 * heartbeat_s
        self.cursor_file = cursor_file
        self.commit_every = commit_every
        self.resume = resume
        self.backoff_min_s, self.backoff_max_s, self.healthy_s = (backoff_min_s, backoff_max_s,
                                                                  healthy_s)
        self.options = list(options)
        self.cursor = cursor or self._read_cursor_file() or ""
        self.past_snapshot = False
        self.resumes = 0
        self.events = 0
        self.data_events = 0
        self._since_commit = 0
        self._stopped = threading.Event()
        self._call = None

    # --- public -------------------------------------------------------------

    def __iter__(self):
        try:
            yield from self._events()
        finally:
            self._commit()

    def run(self, handler):
        """Calls handler(ev) for every event until it returns False (or
        stop()); raises StreamError / OutOfRange as iteration does."""
        for ev in self:
            if handler(ev) is False:
                break

    def stop(self):
        """Ends the subscription: the iterator returns (any thread)."""
        self._stopped.set()
        call = self._call
        if call is not None:
            call.cancel()

    # --- the loop -----------------------------------------------------------

    def _request(self):
        r = pb.WatchRequest(topic=self.topic, cursor=self.cursor, kinds=self.kinds,
                            keys=self.keys, allow_gap=self.allow_gap)
        if not self.cursor and self.start is not None:
            r.start = self.start
            r.start_unix_micros = self.start_unix_micros
        # a resume asks for the snapshot again only if the stream broke
        # before the first event after it
        r.snapshot = bool(self.snapshot and not self.past_snapshot)
        if self.overflow is not None:
            r.overflow = self.overflow
        return r

    def _events(self):
        attempt = 0
        while not self._stopped.is_set():
            opened = time.monotonic()
            channel = grpc.insecure_channel(self.target, options=self.options)
            try:
                stub = pb_grpc.WatcherStub(channel)
                self._call = call = stub.Watch(self._request())
                q = queue.Queue(maxsize=1)
                reader = threading.Thread(target=self._read, args=(call, q), daemon=True)
                reader.start()
                try:
                    while True:
                        try:
                            kind, item = q.get(timeout=self.watchdog_s)
                        except queue.Empty:
                            raise _Watchdog() from None
                        if kind == "end":
                            break
                        ev = item
                        try:
                            yield ev
                        except GeneratorExit:
                            self._took(ev)  # a break after handling it
                            raise
                        self._took(ev)  # the caller asked for the next one
                        if time.monotonic() - opened > self.healthy_s:
                            attempt = 0
                    code, details, trailers = self._status(call)
                finally:
                    call.cancel()
                    reader.join(5)
            except _Watchdog:
                code, details, trailers = grpc.StatusCode.UNAVAILABLE, "watchdog", {}
            finally:
                self._call = None
                channel.close()
            if self._stopped.is_set():
                return
            if code == grpc.StatusCode.OK:
                return
            if code == grpc.StatusCode.OUT_OF_RANGE:
                raise OutOfRange(code, details, self.cursor, trailers.get(TRAILER_EARLIEST))
            if not (self.resume and resumable(code, details, trailers)):
                raise StreamError(code, details, self.cursor)
            self.resumes += 1
            cap = min(self.backoff_max_s, self.backoff_min_s * (2 ** attempt))
            attempt += 1
            if self._stopped.wait(random.uniform(0, cap)):
                return

    @staticmethod
    def _read(call, q):
        """Reader thread: events into q one at a time (so the caller's pace
        is the stream's: HTTP/2 flow control does the rest), then ("end",
        None). Gives up once the call is cancelled."""
        def put(item):
            while True:
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    if call.done():
                        return False
        try:
            for ev in call:
                if not put(("event", ev)):
                    return
        except grpc.RpcError:
            pass
        put(("end", None))

    @staticmethod
    def _status(call):
        try:
            code, details = call.code(), call.details()
            trailers = dict(call.trailing_metadata() or ())
        except Exception:  # a call that never started
            code, details, trailers = grpc.StatusCode.UNAVAILABLE, "no status", {}
        return code, details or "", trailers

    def _read_cursor_file(self):
        return _read_cursor(self.cursor_file) if self.cursor_file else ""


def _read_cursor(path):
    """The cursor in a cursor file; "" when there is none yet."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def _write_cursor(path, cursor):
    """Writes a cursor file atomically (a crash leaves the old one or the new)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(cursor + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


from .multi import MultiSubscriber, Subscription, is_end  # noqa: E402
