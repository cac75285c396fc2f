#!/usr/bin/env bash
# Runs the three standard tickfan-bench measurements against a freshly
# started tickfand, server pinned to CPU 0 and load generator to CPU 1:
#   a) one stream, simulator unthrottled (--sim-rate 200000)
#   b) 1,000 streams over 8 connections, --sim-rate 200 (200,000 deliveries/s)
#   c) server VmRSS with 10,000 idle streams over 16 connections
# Usage: perf/bench/measure.sh [BUILD_DIR] [OUT_DIR]
# (defaults: build, perf/results/tmp/<UTC time>). Each run leaves its JSON
# and the server log in OUT_DIR; a summary goes to stdout.
# Environment: TICKFAND (server binary, default BUILD_DIR/tickfand), A_RATE
# (simulator rate of run a, default 200000), TICKFAN_BENCH_PORT.
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

# start_server NAME FLAGS...: a fresh data dir, CPU 0, waits for "listening".
start_server() {
  local name=$1
  shift
  rm -rf "$out/$name.data"
  taskset -c 0 "$tickfand" --listen "127.0.0.1:$port" --data-dir "$out/$name.data" "$@" \
    >"$out/$name.server.log" 2>&1 &
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
  taskset -c 1 "$bench" --server "127.0.0.1:$port" --json "$out/$name.json" "$@" \
    | tee -a "$out/$name.bench.txt" || true
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  ($(nproc) CPUs, $(uname -r))"

# a) one stream, unthrottled simulator: what ingest + one stream can do
start_server a --shards 1 --sim-rate "${A_RATE:-200000}"
sleep 1
run_bench a --streams 1 --duration 10
stop_server

# b) 1,000 streams x 200 events/s over 8 connections
start_server b --shards 1 --sim-rate 200
sleep 1
run_bench b --streams 1000 --connections 8 --threads 1 --duration 15
stop_server

# c) server memory per idle stream: 10,000 streams on a quiet topic
start_server c --shards 1 --sim-rate 1
sleep 2
before=$(rss_kib)
run_bench c --streams 10000 --connections 16 --threads 1 --duration 20 &
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
