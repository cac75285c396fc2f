"""tickfan-bench --client h2 (perf/bench/h2conn.c) against a raw HTTP/2
server written here with python3-h2, which frames its answers as no gRPC
server would choose to but any may: messages split at every byte offset,
the gRPC prefix split from its message, many messages in one DATA frame,
errors in trailers, in a trailers-only answer, and as RST_STREAM. The bench
must read exactly what was sent and end each stream with the status sent.
The real tickfand is driven through --client h2 by test_scale.py."""
import json
import os
import socket
import subprocess
import threading
import urllib.parse

import pytest

import tickfan_harness as h

h2 = pytest.importorskip("h2.connection", reason="python3-h2 is needed (scripts/deps installs it)")
import h2.config  # noqa: E402
import h2.events  # noqa: E402

from test_scale import BENCH, h2_client_built  # noqa: E402

pb = h.pb
if os.access(BENCH, os.X_OK) and not h2_client_built():
    pytest.skip("SKIPPED LOUDLY: tickfan-bench was built without libnghttp2 (--client h2); "
                "scripts/deps installs libnghttp2-dev", allow_module_level=True)
N = 60  # Data per stream


def grpc_frame(msg):
    raw = msg.SerializeToString()
    return b"\0" + len(raw).to_bytes(4, "big") + raw


def events(n):
    """EndOfBacklog, then Data seq 1..n, as one gRPC body."""
    body = grpc_frame(pb.WatchEvent(end_of_backlog=pb.EndOfBacklog(), cursor="c0"))
    for seq in range(1, n + 1):
        body += grpc_frame(pb.WatchEvent(
            data=pb.Data(kind="quote", key="K", body=b"x" * (seq % 7), seq=seq,
                         ingested_at_unix_micros=1, emitted_at_unix_micros=1),
            cursor=f"c{seq}"))
    return body


def odd_chunks(body):
    """Chunks of 1, 2, 3, 5, 7, 11, 13 ... bytes, then the rest at once."""
    sizes, out, i, k = [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29], [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)] if k < 200 else len(body)
        out.append(body[i:i + n])
        i += n
        k += 1
    return out


class Server:
    """One thread per connection; answers every Watch call as `mode` says."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.requests = []  # (headers, WatchRequest)
        self.resets = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        heads, bodies = {}, {}
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    heads[ev.stream_id] = dict((k.decode() if isinstance(k, bytes) else k,
                                                v.decode() if isinstance(v, bytes) else v)
                                               for k, v in ev.headers)
                    bodies[ev.stream_id] = b""
                elif isinstance(ev, h2.events.DataReceived):
                    bodies[ev.stream_id] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    body = bodies[ev.stream_id]
                    req = pb.WatchRequest.FromString(body[5:5 + int.from_bytes(body[1:5], "big")])
                    with self.lock:
                        self.requests.append((heads[ev.stream_id], req))
                    self.answer(conn, ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    with self.lock:
                        self.resets += 1
            sock.sendall(conn.data_to_send())

    def answer(self, conn, sid):
        ok = [(":status", "200"), ("content-type", "application/grpc")]
        if self.mode == "trailers-only":
            msg = urllib.parse.quote("unknown topic 'x': 100% sure", safe=" '")
            conn.send_headers(sid, ok + [("grpc-status", "5"), ("grpc-message", msg)],
                              end_stream=True)
            return
        conn.send_headers(sid, ok)
        if self.mode == "split":
            for chunk in odd_chunks(events(N)):
                conn.send_data(sid, chunk)
        elif self.mode == "more":
            conn.send_data(sid, events(N + 20))  # one frame: more than --messages asks
        elif self.mode == "huge":
            # two Data, then a prefix announcing 5 MiB (over gRPC's 4 MiB limit)
            conn.send_data(sid, events(2) + b"\0" + (5 << 20).to_bytes(4, "big") + b"x" * 100)
        elif self.mode == "error":
            for chunk in odd_chunks(events(3)):
                conn.send_data(sid, chunk)
            msg = urllib.parse.quote("slow consumer: 100% behind", safe=" ")
            conn.send_headers(sid, [("grpc-status", "8"), ("grpc-message", msg),
                                    ("tickfan-cursor", "c3")], end_stream=True)
        elif self.mode == "reset":
            conn.send_data(sid, events(2))
            conn.reset_stream(sid, error_code=2)

    def close(self):
        self.sock.close()


def bench(srv, tmp_path, *args):
    out = tmp_path / "b.json"
    p = subprocess.run([BENCH, "--server", srv.addr, "--topic", "t", "--client", "h2",
                        "--streams", "3", "--connections", "1", "--duration", "2",
                        "--connect-timeout", "5", "--json", str(out)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=60)
    assert out.exists(), p.stdout + p.stderr
    return p.returncode, json.loads(out.read_text())["results"], p.stdout + p.stderr


@pytest.fixture
def server():
    made = []

    def make(mode):
        made.append(Server(mode))
        return made[-1]
    yield make
    for s in made:
        s.close()


def test_split_messages_are_read_exactly_and_the_request_is_a_grpc_call(server, tmp_path):
    assert os.access(BENCH, os.X_OK), f"{BENCH} is not built"
    srv = server("split")
    code, r, out = bench(srv, tmp_path, "--messages", N)
    assert code == 0, out
    st, m, ov = r["streams"], r["messages"], r["order_violations"]
    assert st["connected"] == 3 and st["failed"] == 0 and st["ended_early"] == 0, (st, out)
    assert m["per_stream_min"] == m["per_stream_max"] == N, m
    assert (r["seq"]["first_min"], r["seq"]["last_max"]) == (1, N), r["seq"]
    assert all(v == 0 for k, v in ov.items() if k != "first") and ov["first"] == "", ov
    assert r["events"]["end_of_backlogs"] == 3, r["events"]
    # each stream was cancelled once it had its N (RST_STREAM CANCEL)
    assert srv.resets == 3
    assert len(srv.requests) == 3
    for headers, req in srv.requests:
        assert headers[":method"] == "POST" and headers[":path"] == "/events.v1.Watcher/Watch"
        assert headers["content-type"] == "application/grpc" and headers["te"] == "trailers"
        assert headers[":authority"] == srv.addr, headers
        assert req.topic == "t", req


def test_a_stream_cancelled_at_its_count_takes_nothing_more_from_the_same_read(server, tmp_path):
    srv = server("more")
    code, r, out = bench(srv, tmp_path, "--messages", N)
    assert code == 0, out
    m = r["messages"]
    assert m["per_stream_min"] == m["per_stream_max"] == N, m
    assert (r["seq"]["first_min"], r["seq"]["last_max"]) == (1, N), r["seq"]
    assert srv.resets == 3


def ended_early(srv, tmp_path, status, text, data):
    """Runs the bench against srv, whose every stream (3) ends after `data`
    Data with `status`; `text` must be in the first failure. Returns r."""
    code, r, out = bench(srv, tmp_path)
    assert code == 1, f"streams ended early must fail the run: {out}"
    st = r["streams"]
    assert st["connected"] == 3 and st["ended_early"] == 3, st
    assert r["failure_statuses"] == {status: 3}, r["failure_statuses"]
    assert text in r["first_failure"], r
    assert r["messages"]["per_stream_min"] == r["messages"]["per_stream_max"] == data, r["messages"]
    return r


def test_a_status_in_trailers_ends_the_stream_with_its_decoded_message(server, tmp_path):
    ended_early(server("error"), tmp_path, "RESOURCE_EXHAUSTED",
                'status 8 "slow consumer: 100% behind" after 3 Data', 3)


def test_a_message_over_the_limit_ends_the_stream_saying_so(server, tmp_path):
    srv = server("huge")
    ended_early(srv, tmp_path, "RESOURCE_EXHAUSTED",
                "a message of 5242880 bytes, over the 4194304-byte limit", 2)
    assert srv.resets == 3  # the client reset each stream


def test_a_trailers_only_answer_fails_the_stream_with_its_status(server, tmp_path):
    srv = server("trailers-only")
    code, r, out = bench(srv, tmp_path)
    assert code != 0, out
    st = r["streams"]
    assert st["connected"] == 0 and st["failed"] == 3, st
    assert r["failure_statuses"] == {"NOT_FOUND": 3}, r["failure_statuses"]
    assert "status 5 \"unknown topic 'x': 100% sure\"" in r["first_failure"], r


def test_a_stream_reset_by_the_server_ends_unavailable(server, tmp_path):
    ended_early(server("reset"), tmp_path, "UNAVAILABLE",
                "stream reset by the server (HTTP/2 error 2)", 2)
