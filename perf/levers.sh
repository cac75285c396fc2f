#!/usr/bin/env bash
# perf/levers.sh: what each gRPC lever is worth, measured on and off with the
# same binary, the same feed and the same client (tickfan-bench), server
# pinned to CPU 0 and the bench to CPU 1, the way perf/run feeds a server
# (UDP feed, ticks stamped with their scheduled time: latency corrected for
# coordinated omission).
#
# Per variant (a set of tickfand flags) and scenario it prints one row:
# messages delivered in the window, p99 latency, server CPU per million
# messages (utime+stime of the server over the bench's run window, read by
# the bench with --server-pid; Data delivered in that window), the
# server's futex and sendmsg calls per 1,000 messages (SYSCALLS=1: perf
# stat on the server process, when perf can count syscall tracepoints
# here; the tracepoints cost the server CPU of their own, several seconds
# per million messages on this project's virtual machine, so the CPU
# column of such a run is not comparable with one without), and the
# bench's own CPU (a client near 100 % of its CPU makes the row no result).
#
# Usage: perf/levers.sh [BUILD_DIR]          (default: build)
# Environment: VARIANTS (a file of "name|flags" lines; default: the levers
# below), ROUNDS (default 2: variants alternate, each run ROUNDS times),
# RATES (default "100 200"), SINGLE (default 1: also the single stream),
# SECONDS_B (default 10), TICKFAND (default BUILD_DIR/tickfand),
# TICKFAN_BENCH_PORT (default 50161), SYSCALLS (default 0, above), BENCH_CLIENT (h2: the bench's own
# HTTP/2 reader, or grpc; see perf/run). Run it on a quiet machine.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
tickfand=${TICKFAND:-$build/tickfand}
bench=$build/perf/bench/tickfan-bench
port=${TICKFAN_BENCH_PORT:-50161}
rounds=${ROUNDS:-2}
bench_client=${BENCH_CLIENT:-h2}
secs_b=${SECONDS_B:-10}
out=$(mktemp -d /tmp/tickfan-levers.XXXXXX)
for f in "$tickfand" "$bench"; do
  [[ -x $f ]] || { echo "levers.sh: $f is not built" >&2; exit 2; }
done

variants=()
if [[ -n ${VARIANTS:-} ]]; then
  mapfile -t variants <"$VARIANTS"
else
  variants=(
    "all levers on|--cq-thread-cache=true --grpc-lean-filters=true --grpc-deadlock-detection=false --shard-balance=connection"
    "cq thread cache off|--cq-thread-cache=false --grpc-lean-filters=true --grpc-deadlock-detection=false --shard-balance=connection"
    "default filters|--cq-thread-cache=true --grpc-lean-filters=false --grpc-deadlock-detection=false --shard-balance=connection"
    "deadlock detector on|--cq-thread-cache=true --grpc-lean-filters=true --grpc-deadlock-detection=true --shard-balance=connection"
    "balance streams|--cq-thread-cache=true --grpc-lean-filters=true --grpc-deadlock-detection=false --shard-balance=stream"
    "all levers off|--cq-thread-cache=false --grpc-lean-filters=false --grpc-deadlock-detection=true --shard-balance=stream"
  )
fi

perf_ok=0
if [[ ${SYSCALLS:-0} == 1 ]] && command -v perf >/dev/null 2>&1 &&
  perf stat -e syscalls:sys_enter_futex -- true >/dev/null 2>&1; then
  perf_ok=1
fi

server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; [[ -n ${KEEP:-} ]] || rm -rf "$out"' EXIT

free_udp_port() {
  python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME FLAGS SCENARIO BENCH_ARGS...: one server, one bench run, one row.
run() {
  local name=$1 flags=$2 scen=$3
  shift 3
  rm -rf "$out/data"
  feed=udp://127.0.0.1:$(free_udp_port)
  # shellcheck disable=SC2086
  taskset -c 0 "$tickfand" --listen "127.0.0.1:$port" --data-dir "$out/data" --topic bench \
    --feed "$feed" --udp-rcvbuf 32M $flags >"$out/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q "msg=listening" "$out/server.log" && break
    sleep 0.1
  done
  local c0 perf_pid=
  c0=$(cpu_ticks "$server_pid")
  if ((perf_ok)); then
    perf stat -x, -e syscalls:sys_enter_futex,syscalls:sys_enter_sendmsg -p "$server_pid" \
      -o "$out/perf.txt" &
    perf_pid=$!
  fi
  taskset -c 1 "$bench" --server "127.0.0.1:$port" --topic bench --json "$out/b.json" \
    --client "$bench_client" --server-pid "$server_pid" --feed "$feed" "$@" \
    >"$out/bench.txt" 2>&1 || true
  local c1
  c1=$(cpu_ticks "$server_pid")
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
  fi
  stop_server
  python3 - "$out/b.json" "$((c1 - c0))" "$(getconf CLK_TCK)" "$out/perf.txt" "$name" "$scen" <<'PY'
import json, os, sys
path, ticks, hz, perf, name, scen = sys.argv[1:7]
r = json.load(open(path))["results"]
msgs = total = r["messages"]["total"]
cpu_s = int(ticks) / int(hz)
if r.get("server_cpu") and r["messages"].get("window"):
    # steady state: the server's CPU and the Data of the run window only
    msgs = r["messages"]["window"]
    cpu_s = r["server_cpu"]["user_s"] + r["server_cpu"]["sys_s"]
calls = {}
if os.path.exists(perf):
    for line in open(perf):
        parts = line.strip().split(",")
        if len(parts) > 2 and parts[0].isdigit():
            calls[parts[2].split(":")[-1]] = int(parts[0])
# perf stat counts over the whole run: per message of the whole run
per_k = lambda k: f"{calls[k] * 1000 / total:.1f}" if k in calls and total else "-"
client = r["client_cpu"]["user_s"] + r["client_cpu"]["sys_s"]
lat = r["latency_us"]
print(f"| {scen} | {name} | {msgs:,} | {lat['p99'] / 1000:.2f} ms | "
      f"{cpu_s * 1e6 / msgs if msgs else 0:.2f} s | {per_k('sys_enter_futex')} | "
      f"{per_k('sys_enter_sendmsg')} | {100 * client / max(r['window_s'], 1e-9):.0f} % |",
      flush=True)
PY
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  ($(nproc) CPUs, $(uname -r))"
echo "| scenario | variant | messages | p99 | server CPU per M msgs | futex per 1k msgs | sendmsg per 1k msgs | bench CPU |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
# RATES: ticks/s of the 1,000-stream scenario. At 200/s one CPU is full
# (CPU per message then only says that; p99 tells the levers apart); below
# it, CPU per message is the figure.
for rate in ${RATES:-100 200}; do
  for ((i = 0; i < rounds; i++)); do
    for v in "${variants[@]}"; do
      run "${v%%|*}" "${v#*|}" "1,000 x $rate/s" --streams 1000 --connections 8 \
        --duration "$secs_b" --rate "$rate"
    done
  done
done
if [[ ${SINGLE:-1} == 1 ]]; then
  for ((i = 0; i < rounds; i++)); do
    for v in "${variants[@]}"; do
      run "${v%%|*}" "${v#*|}" "1 x 100,000/s" --streams 1 --duration 5 --rate 100000
    done
  done
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
