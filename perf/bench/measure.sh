#!/usr/bin/env bash
# Runs the three standard tickfan-bench measurements of tickfand alone,
# server pinned to CPU 0 (default --shards) and load generator to CPU 1, fed
# the way perf/run feeds it: no simulator; tickfan-bench sends 100-byte ticks
# to the server's UDP feed on a fixed schedule (--feed/--rate), stamped with
# their scheduled time, so latency is corrected for coordinated omission:
#   a) one stream, the feed at A_RATE ticks/s (default 100000)
#   b) 1,000 streams over 8 connections, 200 ticks/s (200,000 deliveries/s)
#   c) server VmRSS with 10,000 idle streams over 16 connections
# For comparisons with the grpc-go peer use perf/run, which runs these and
# more against both servers.
# Usage: perf/bench/measure.sh [BUILD_DIR] [OUT_DIR]
# (defaults: build, perf/results/tmp/<UTC time>). Each run leaves its JSON
# and the server log in OUT_DIR; a summary goes to stdout.
# Environment: TICKFAND (server binary, default BUILD_DIR/tickfand), A_RATE,
# TICKFAN_BENCH_PORT (gRPC port, default 50151).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
out=${2:-$root/perf/results/tmp/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
tickfand=${TICKFAND:-$build/tickfand}
bench=$build/perf/bench/tickfan-bench
port=${TICKFAN_BENCH_PORT:-50151}
for f in "$tickfand" "$bench"; do
  [[ -x $f ]] || { echo "measure.sh: $f is not built" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "measure.sh: needs python3 (to pick free UDP ports)" >&2; exit 2; }
rmem_max=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo 0)
if ((rmem_max < 32 * 1024 * 1024)); then
  echo "measure.sh: net.core.rmem_max $rmem_max caps the 32 MiB feed buffer; at high rates the" \
    "kernel may drop feed datagrams (perf/run raises it for its runs)" >&2
fi

server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 200); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "measure.sh: tickfand still running 20 s after SIGTERM: SIGKILL" >&2
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

free_udp_port() {
  python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME FLAGS...: a fresh data dir, topic "bench" fed on a fresh
# UDP port (sets feed), CPU 0, waits for "listening".
start_server() {
  local name=$1
  shift
  rm -rf "$out/$name.data"
  feed=udp://127.0.0.1:$(free_udp_port)
  taskset -c 0 "$tickfand" --listen "127.0.0.1:$port" --data-dir "$out/$name.data" \
    --topic bench --feed "$feed" --udp-rcvbuf 32M "$@" >"$out/$name.server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q "msg=listening" "$out/$name.server.log" && return 0
    sleep 0.1
  done
  echo "measure.sh: tickfand did not start; see $out/$name.server.log" >&2
  exit 1
}

rss_kib() {
  awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"
}

run_bench() {
  local name=$1
  shift
  echo "\$ taskset -c 1 tickfan-bench $*" | tee "$out/$name.bench.txt"
  taskset -c 1 "$bench" --server "127.0.0.1:$port" --topic bench --json "$out/$name.json" "$@" \
    | tee -a "$out/$name.bench.txt" || true
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  ($(nproc) CPUs, $(uname -r))"

# a) one stream, the feed at A_RATE ticks/s
start_server a
run_bench a --streams 1 --duration 10 --feed "$feed" --rate "${A_RATE:-100000}"
stop_server

# b) 1,000 streams x 200 ticks/s over 8 connections
start_server b
run_bench b --streams 1000 --connections 8 --threads 1 --duration 15 --feed "$feed" --rate 200
stop_server

# c) server memory per idle stream: 10,000 streams filtered to a key that
#    never comes (heartbeats only)
start_server c
sleep 1
before=$(rss_kib)
run_bench c --streams 10000 --connections 16 --threads 1 --duration 20 --keys NONE &
bench_pid=$!
sleep 15
during=$(rss_kib)
wait "$bench_pid"
sleep 2
after=$(rss_kib)
stop_server
{
  echo "c) server VmRSS: before ${before} KiB, with 10000 streams ${during} KiB," \
    "after they ended ${after} KiB"
  echo "   $(((during - before) * 1024 / 10000)) bytes per idle stream"
} | tee "$out/c.rss.txt"

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "results in $out"
