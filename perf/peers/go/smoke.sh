#!/usr/bin/env bash
# Smoke test of tickfan-go-peer, with the project's own client (build/tickfan
# tail, which speaks the same contract) and a small Python feed sender.
#
#   perf/peers/go/smoke.sh [PEER_BIN]
#
# PEER_BIN defaults to the output of build.sh (run first). TICKFAN_CLI
# overrides the client (default: build/tickfan of the main build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
peer=${1:-}
if [[ -z $peer ]]; then
    peer=$("$here/build.sh" --test | tail -1) # vet + unit tests too
fi
cli=${TICKFAN_CLI:-$root/build/tickfan}
[[ -x $cli ]] || { echo "smoke: $cli not found: build the project first (cmake --build build)" >&2; exit 1; }
py=/usr/bin/python3

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { # check NAME CMD...
    local name=$1
    shift
    if "$@" >"$work/check.out" 2>&1; then ok "$name"; else bad "$name"; fi
    sed 's/^/     /' "$work/check.out"
}

# start_peer LOG ARGS...: starts the peer, waits for msg=listening, sets $pid.
start_peer() {
    local log=$1
    shift
    "$peer" --listen 127.0.0.1:0 "$@" 2>"$log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        grep -q 'msg=listening' "$log" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "smoke: peer did not start:" >&2
    cat "$log" >&2
    exit 1
}
addr_of() { grep -o "$1[^ ]*" "$2" | head -1 | sed 's/.*addr=//'; }

# ---- peer A: simulator + UDP + TCP feeds -------------------------------------
start_peer "$work/a.log" --sim-rate 1000 --heartbeat-ms 200 --topic ext \
    --feed sim --feed udp://127.0.0.1:0 --feed tcp-listen://127.0.0.1:0
peer_a=$pid
grpc_addr=$(addr_of 'msg=listening addr=' "$work/a.log")
udp_addr=$(grep 'source="udp://' "$work/a.log" | grep -o 'addr=[^ ]*' | cut -d= -f2)
tcp_addr=$(grep 'source="tcp-listen://' "$work/a.log" | grep -o 'addr=[^ ]*' | cut -d= -f2)
echo "peer A: grpc $grpc_addr udp $udp_addr tcp $tcp_addr"

# 1. replay: 100 events from the start, seq 1..100, cursors matching.
"$cli" tail sim --server "$grpc_addr" --count 100 --json --no-resume >"$work/t1.jsonl"
check "tail 100 sim events: seq 1..100 contiguous, cursor per event" $py - "$work/t1.jsonl" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
data = [e for e in ev if e["type"] == "data"]
seqs = [e["seq"] for e in data]
assert seqs == list(range(1, 101)), seqs[:10]
assert all(e["cursor"].endswith("-%d" % e["seq"]) for e in data)
assert all(e["kind"] in ("quote", "trade") and e["key"] for e in data)
assert all(("quote" in e) != ("trade" in e) for e in data), "body is not a Tick"
print("data events:", len(data))
PY

# 2. live, filtered to nothing: EndOfBacklog, then heartbeats whose cursor moves.
timeout 1.5 "$cli" tail sim --server "$grpc_addr" --start live --keys NONE --json --no-resume \
    >"$work/t2.jsonl" 2>/dev/null || true
check "EndOfBacklog then heartbeats every 200 ms, cursor advancing over filtered events" \
    $py - "$work/t2.jsonl" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert ev and ev[0]["type"] == "end_of_backlog", ev[:1]
hb = [e for e in ev if e["type"] == "heartbeat"]
assert len(hb) >= 4, len(hb)
pos = [int(e["cursor"].rsplit("-", 1)[1]) for e in ev]
assert pos == sorted(pos) and pos[-1] > pos[0] + 500, pos
assert not [e for e in ev if e["type"] == "data"]
print("heartbeats:", len(hb), "cursor", pos[0], "->", pos[-1])
PY

# 3. feed: UDP datagrams with several frames each, a sequence gap, junk;
#    then the same topic over TCP in odd-sized writes.
$py - "$udp_addr" "$tcp_addr" <<'PY'
import socket, struct, sys, time
def frame(topic, kind, key, body, seq, channel=7, ts=1700000000000000):
    t, k, y = topic.encode(), kind.encode(), key.encode()
    n = 40 + len(t) + len(k) + len(y) + len(body)
    return struct.pack("<2sBBIIIQqBBHI", b"TF", 1, 1, n, channel, 0, seq, ts,
                       len(t), len(k), len(y), len(body)) + t + k + y + body
def body(i):
    return bytes([i % 256]) * (60 + i % 40)
host, port = sys.argv[1].rsplit(":", 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seqs = list(range(1, 21)) + list(range(23, 31))       # 21 and 22 lost upstream
for i in range(0, len(seqs), 5):                       # 5 frames per datagram
    u.sendto(b"".join(frame("ext", "trade" if s % 3 == 0 else "quote", "SYM%d" % (s % 4), body(s), s)
                      for s in seqs[i:i + 5]), (host, int(port)))
    time.sleep(0.005)
u.sendto(b"XX" + b"\0" * 60, (host, int(port)))                     # bad magic
u.sendto(frame("other", "quote", "K", b"x", 0), (host, int(port)))  # undeclared topic
u.sendto(frame("ext", "quote", "K", b"x" * 50, 0)[:70], (host, int(port)))  # cut short
time.sleep(0.2)
host, port = sys.argv[2].rsplit(":", 1)
c = socket.create_connection((host, int(port)))
blob = b"".join(frame("ext", "tcp", "T%d" % s, body(s), s, channel=1) for s in range(1, 11))
for i in range(0, len(blob), 37):
    c.sendall(blob[i:i + 37])
c.close()
PY
sleep 0.3
"$cli" tail ext --server "$grpc_addr" --count 38 --json --no-resume >"$work/t3.jsonl"
check "UDP frames (5 per datagram) and TCP frames arrive in order; upstream gap told" \
    $py - "$work/t3.jsonl" <<'PY'
import json, sys, base64
ev = [json.loads(l) for l in open(sys.argv[1])]
data = [e for e in ev if e["type"] == "data"]
gaps = [e for e in ev if e["type"] == "gap"]
assert [e["seq"] for e in data] == list(range(1, 21)) + list(range(22, 40)), [e["seq"] for e in data]
assert len(gaps) == 1 and gaps[0]["missed"] == 2 and gaps[0]["reason"] == "GAP_UPSTREAM_LOSS", gaps
src = list(range(1, 21)) + list(range(23, 31))
for e, s in zip(data[:28], src):
    assert e["key"] == "SYM%d" % (s % 4) and e["kind"] == ("trade" if s % 3 == 0 else "quote"), e
    assert base64.b64decode(e["body_base64"]) == bytes([s % 256]) * (60 + s % 40), e
    assert e["emitted_at_unix_micros"] == 1700000000000000
assert [e["key"] for e in data[28:]] == ["T%d" % s for s in range(1, 11)]
print("data:", len(data), "gap:", gaps[0]["missed"])
PY

# 4. status codes.
codes_out=$work/codes.txt
: >"$codes_out"
"$cli" tail sim --server "$grpc_addr" --cursor bogus --count 1 --no-resume 2>>"$codes_out" || true
"$cli" tail nosuch --server "$grpc_addr" --count 1 --no-resume 2>>"$codes_out" || true
"$cli" tail sim --server "$grpc_addr" --cursor 1-0000000000000001-5 --count 1 --no-resume 2>>"$codes_out" || true
check "INVALID_ARGUMENT malformed cursor" grep -q 'INVALID_ARGUMENT: malformed cursor' "$codes_out"
check "NOT_FOUND unknown topic" grep -q 'NOT_FOUND: unknown topic' "$codes_out"
check "OUT_OF_RANGE stale cursor, with the earliest cursor" grep -q 'earliest available cursor: 1-' "$codes_out"

# 5. SIGTERM: a live stream ends with UNAVAILABLE and its cursor; exit 0.
"$cli" tail sim --server "$grpc_addr" --start live --json --no-resume >"$work/t5.jsonl" 2>"$work/t5.err" &
tail_pid=$!
pids+=("$tail_pid")
sleep 0.5
kill -TERM "$peer_a"
rc=0
wait "$peer_a" || rc=$?
wait "$tail_pid" || true
check "SIGTERM: peer exits 0" test "$rc" -eq 0
check "SIGTERM: the stream ends UNAVAILABLE with the cursor to resume from" \
    grep -q 'UNAVAILABLE: server draining; resume from cursor 1-' "$work/t5.err"
check "feed counters: 28+10 frames, 1 upstream gap of 2, junk rejected per reason" $py - "$work/a.log" <<'PY'
import re, sys
log = open(sys.argv[1]).read()
udp = re.search(r'msg=feed_stats source="udp://[^"]*" (.*)', log).group(1)
tcp = re.search(r'msg=feed_stats source="tcp-listen://[^"]*" (.*)', log).group(1)
for want in ("frames=28 ", "rejected=2 ", "unknown_topic=1 ", "gaps=1 ", "missed=2 ", "bad_magic=1", "truncated=1"):
    assert want in udp + " ", (want, udp)
assert "frames=10 rejected=0 " in tcp, tcp
print("udp:", udp); print("tcp:", tcp)
PY

# ---- peer B: a consumer slower than the feed ----------------------------------
start_peer "$work/b.log" --sim-rate 50000 --buffer 16 --ring 200000 --heartbeat-ms 200
peer_b=$pid
grpc_b=$(addr_of 'msg=listening addr=' "$work/b.log")
# tail's output goes into a pipe nobody reads for 3 s: the stream stalls.
timeout 5 "$cli" tail sim --server "$grpc_b" --start live --json --no-resume 2>/dev/null |
    (sleep 3; cat) >"$work/t6.jsonl" || true
check "slow consumer: events dropped for it, told with Gap GAP_SLOW_CONSUMER, seqs consistent" \
    $py - "$work/t6.jsonl" <<'PY'
import json, sys
ev = []
for l in open(sys.argv[1]):
    try: ev.append(json.loads(l))
    except ValueError: pass  # the last line may be cut by timeout
gaps = [e for e in ev if e["type"] == "gap"]
assert gaps and all(g["reason"] == "GAP_SLOW_CONSUMER" for g in gaps), gaps[:2]
# every seq is accounted for: data contiguous except where a gap says so
pos = None
for e in ev:
    c = int(e["cursor"].rsplit("-", 1)[1])
    if e["type"] == "data":
        assert pos is None or e["seq"] == pos + 1, (pos, e["seq"])
    elif e["type"] == "gap":
        f = int(e["from_cursor"].rsplit("-", 1)[1])
        assert f == pos and c - f >= e["missed"], (pos, e)
    pos = c
print("events:", len(ev), "gaps:", len(gaps), "missed:", sum(g["missed"] for g in gaps))
PY
# 7. OVERFLOW_DISCONNECT and allow_gap, with the Python stubs of the main
#    build (build/py), when present.
if [[ -d $root/build/py/events ]] && $py -c 'import grpc' 2>/dev/null; then
    check "OVERFLOW_DISCONNECT: RESOURCE_EXHAUSTED + tickfan-cursor; allow_gap: Gap GAP_RETENTION" \
        env PYTHONPATH="$root/build/py" $py - "$grpc_b" <<'PY'
import sys, time, grpc
from events.v1 import watcher_pb2 as pb, watcher_pb2_grpc as pbg
ch = grpc.insecure_channel(sys.argv[1])
stub = pbg.WatcherStub(ch)
call = stub.Watch(pb.WatchRequest(topic="sim", start=pb.START_LIVE, overflow=pb.OVERFLOW_DISCONNECT))
n = 0
try:
    for ev in call:
        n += 1
        if n == 1:
            time.sleep(3)  # stall: the server's channel for us overflows
    raise SystemExit("stream did not end")
except grpc.RpcError as e:
    md = dict(e.trailing_metadata() or ())
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and md.get("tickfan-cursor"), (e.code(), md)
    print("disconnect:", e.code().name, "after", n, "events, tickfan-cursor", md["tickfan-cursor"])
first = next(iter(stub.Watch(pb.WatchRequest(topic="sim", start=pb.START_LIVE))))
epoch = first.cursor.split("-")[1]
other = "1-%016x-5" % (int(epoch, 16) ^ 1)
it = iter(stub.Watch(pb.WatchRequest(topic="sim", cursor=other, allow_gap=True)))
g = next(it)
assert g.WhichOneof("payload") == "gap" and g.gap.reason == pb.GAP_RETENTION, g
d = next(it)
assert d.WhichOneof("payload") == "data" and d.data.seq == int(g.cursor.rsplit("-", 1)[1]) + 1, (g, d)
print("allow_gap: gap then seq", d.data.seq)
PY
else
    echo "skip OVERFLOW_DISCONNECT/allow_gap (no build/py or no python3-grpcio)"
fi
kill -TERM "$peer_b"
wait "$peer_b" || true
check "slow drops counted" grep -Eq 'msg=topic_stats topic=sim .*slow_drops=[1-9]' "$work/b.log"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
