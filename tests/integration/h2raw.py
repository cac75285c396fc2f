"""Raw HTTP/2 gRPC clients for the hostile-client tests (Debian python3-h2).

A well-behaved grpcio client cannot stall its flow-control window, reset
streams in a tight loop, or send headers before it has acknowledged the
server's SETTINGS. These helpers speak HTTP/2 over a plain socket so a test
can do exactly that, and read what the server sends back: headers, gRPC
messages (5-byte prefix + protobuf), trailers, RST_STREAM, GOAWAY.

Everything that waits takes a timeout. The module has no pytest dependency;
`require_h2()` skips the calling test loudly when python3-h2 is missing.
"""
import socket
import struct
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    HAVE_H2 = True
except ImportError:  # pragma: no cover - reported by require_h2()
    HAVE_H2 = False


def require_h2():
    """Skips the calling test, loudly, when python3-h2 is not installed."""
    if not HAVE_H2:
        import pytest
        pytest.skip("python3-h2 is not installed (scripts/deps installs it): "
                    "the raw HTTP/2 test was NOT run")


def grpc_frame(payload):
    """One gRPC length-prefixed message: flag 0, 4-byte big-endian length."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field, value):
    """A length-delimited protobuf field (string, bytes or message), built by
    hand so it can carry what a checking runtime would refuse to encode."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return varint(field << 3 | 2) + varint(len(value)) + value


def pb_varint(field, value):
    return varint(field << 3) + varint(value)


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


class Stream:
    """What one HTTP/2 stream received."""

    def __init__(self, sid):
        self.id = sid
        self.headers = None
        self.trailers = None
        self.reset = None  # the error code of an RST_STREAM from the server
        self.buf = b""
        self.messages = []  # gRPC messages, protobuf bytes each
        self.data_bytes = 0
        self.unacked = 0  # flow-controlled bytes not yet granted back

    @property
    def ended(self):
        return self.trailers is not None or self.reset is not None

    def status(self):
        """(grpc-status int, grpc-message str, trailers dict) once ended with
        trailers; headers-only responses (trailers-only) count too."""
        t = self.trailers or {}
        code = t.get("grpc-status")
        return (int(code) if code is not None else None, t.get("grpc-message", ""), t)

    def _data(self, data):
        self.buf += data
        self.data_bytes += len(data)
        while len(self.buf) >= 5:
            n = struct.unpack(">I", self.buf[1:5])[0]
            if len(self.buf) < 5 + n:
                break
            self.messages.append(self.buf[5:5 + n])
            self.buf = self.buf[5 + n:]


class Conn:
    """One HTTP/2 connection speaking gRPC by hand.

    window: the client's INITIAL_WINDOW_SIZE (per stream). grant=False never
    sends WINDOW_UPDATE, so a stream stalls once the server has sent `window`
    bytes: a reader that never reads. ack_settings=False skips the handshake
    wait so requests can go out before the server's SETTINGS is acknowledged.
    huffman=False encodes header values as plain literals: much faster for
    python3-hpack to build when they are large (metadata-limit tests).
    """

    def __init__(self, addr, window=65535, grant=True, timeout=10.0, ack_settings=True,
                 max_frame=16384, huffman=True):
        host, port = addr.rsplit(":", 1)
        self.authority = addr
        self.timeout = timeout
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.grant = grant
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: max_frame,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            })
        if not huffman:
            encode = self.h2.encoder.encode
            self.h2.encoder.encode = lambda headers, huffman=True: encode(headers, huffman=False)
        self.h2.initiate_connection()
        self.streams = {}
        self.goaway = None  # (error code, additional data) of a GOAWAY
        self.closed = False
        self.settings_acked = False
        self.flush()
        if ack_settings:
            self.pump_until(lambda: self.settings_acked, timeout)

    def flush(self):
        data = self.h2.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def request(self, path, message=None, metadata=(), end_stream=True, flush=True):
        """Opens a stream with a gRPC request; `message` is protobuf bytes
        (or None for no message). flush=False leaves the frames queued for
        the next write (several frames in one TCP segment). Returns the
        Stream."""
        sid = self.h2.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path),
                   (":authority", self.authority), ("content-type", "application/grpc"),
                   ("te", "trailers")] + list(metadata)
        st = self.streams[sid] = Stream(sid)
        self.h2.send_headers(sid, headers, end_stream=message is None and end_stream)
        if message is not None:
            self.h2.send_data(sid, grpc_frame(message), end_stream=end_stream)
        if flush:
            self.flush()
        return st

    def send_message(self, st, message, end_stream=False):
        self.h2.send_data(st.id, grpc_frame(message), end_stream=end_stream)
        self.flush()

    def grant_window(self, st):
        """Gives back the window of what `st` received (WINDOW_UPDATE)."""
        if st.unacked and not st.ended:
            try:
                self.h2.acknowledge_received_data(st.unacked, st.id)
            except h2.exceptions.StreamClosedError:
                pass
        st.unacked = 0

    def start_reading(self, extra=1 << 20):
        """A stalled reader starts reading: grants back everything it held,
        widens every window by `extra` bytes so it can keep up, and keeps
        granting from now on."""
        self.grant = True
        for st in self.streams.values():
            self.grant_window(st)
            if extra and not st.ended:
                try:
                    self.h2.increment_flow_control_window(extra, stream_id=st.id)
                except h2.exceptions.StreamClosedError:
                    pass
        if extra:
            self.h2.increment_flow_control_window(extra)
        self.flush()

    def reset(self, st, code=8, flush=True):
        """RST_STREAM(code), CANCEL by default."""
        self.h2.reset_stream(st.id, error_code=code)
        if flush:
            self.flush()

    def raw(self, data):
        """Writes bytes as they are, bypassing h2's own checks."""
        self.sock.sendall(data)

    def pump(self, timeout=0.1):
        """Reads what is there (waiting up to `timeout`, 0: not at all);
        False once closed. Writes keep the connection's own timeout."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, BlockingIOError):
            return True
        except OSError:
            self.closed = True
            return False
        finally:
            if not self.closed:
                self.sock.settimeout(self.timeout)
        if not data:
            self.closed = True
            return False
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for ev in events:
            self._event(ev)
        self.flush()
        return True

    def _event(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.SettingsAcknowledged):
            self.settings_acked = True
        elif isinstance(ev, h2.events.ResponseReceived) and st:
            st.headers = dict(ev.headers)
            if ev.stream_ended or "grpc-status" in st.headers:
                st.trailers = st.headers  # trailers-only
        elif isinstance(ev, h2.events.TrailersReceived) and st:
            st.trailers = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived) and st:
            st._data(ev.data)
            st.unacked += ev.flow_controlled_length
            if self.grant:
                self.grant_window(st)
        elif isinstance(ev, h2.events.StreamReset) and st:
            st.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.error_code, ev.additional_data)

    def pump_until(self, pred, timeout=10.0):
        """Pumps until pred() holds; returns pred()'s last value."""
        end = time.monotonic() + timeout
        while not pred():
            left = end - time.monotonic()
            if left <= 0 or not self.pump(min(0.1, left)):
                return pred()
        return pred()

    def close(self):
        if not self.closed:
            try:
                self.h2.close_connection()
                self.flush()
            except Exception:
                pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


WATCH = "/events.v1.Watcher/Watch"
PUBLISH = "/events.v1.Publisher/Publish"


def rapid_reset(addr, count, path=WATCH, message=b"", conns=2, metadata=(), settle=1.0,
                split=False):
    """The rapid-reset attack (CVE-2023-44487): `count` streams over `conns`
    connections, each HEADERS + the request `message` then RST_STREAM(CANCEL)
    at once, reading what the server sends every few streams (its SETTINGS,
    PINGs, WINDOW_UPDATEs) so the connections stay usable. Then reads for
    `settle` seconds, so the server has taken every frame in, and closes.
    All three frames go in one write, so the server mostly sees the reset
    before the request; split=True writes the reset separately, so the
    request mostly arrives first and the stream is opened, then cancelled.

    Runs in the calling process: start it in another one (multiprocessing,
    spawn) to keep its CPU away from the client under test. Returns a dict:
    streams reset, seconds taken, connections closed by the server early,
    GOAWAYs received."""
    cs = [Conn(addr) for _ in range(conns)]
    start = time.monotonic()
    sent = 0
    for i in range(count):
        c = cs[i % conns]
        if c.closed:
            continue
        st = c.request(path, message, metadata=metadata, end_stream=False, flush=split)
        c.reset(st)
        del c.streams[st.id]  # nothing more to read on it
        sent += 1
        if i % 64 == 63:
            for x in cs:
                x.pump(0)
    took = time.monotonic() - start
    end = time.monotonic() + settle
    while time.monotonic() < end:
        for c in cs:
            c.pump(0.05)
    result = {"streams": sent, "seconds": took, "closed": sum(c.closed for c in cs),
              "goaway": [c.goaway for c in cs if c.goaway]}
    for c in cs:
        c.close()
    return result


def idle_connections(addr, count, hold):
    """Opens `count` HTTP/2 connections (preface, SETTINGS, both ACKed),
    keeps them open and idle for `hold` seconds (answering the server's
    PINGs), then closes them. Raises RLIMIT_NOFILE's soft limit to the hard
    one if it has to. Returns how many were open at once."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64 and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    cs = [Conn(addr) for _ in range(count)]
    end = time.monotonic() + hold
    while time.monotonic() < end:
        for c in cs:
            c.pump(0)
        time.sleep(0.05)
    open_ = sum(not c.closed for c in cs)
    for c in cs:
        c.close()
    return open_
