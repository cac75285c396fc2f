#!/usr/bin/env bash
# ingest_bench: how many ticks per second tickfand ingests on one core.
#
# For each I/O engine (io_uring multishot, io_uring one-shot recvmsg, epoll): tickfand pinned to CPU $SERVER_CPU
# with one UDP feed and one topic, tickfan-feed pinned to CPU $FEED_CPU
# sending $BODY-byte-body ticks in datagrams at each of $RATES a second for
# $DURATION s. Then a capture file of $REPLAY_FRAMES ticks replayed by
# tickfand itself (--feed file:) as fast as it goes. Prints one table row
# per run; see README.md here for the columns and how to read them.
#
# Environment (defaults): BUILD (build dir: the repository's build/),
# DURATION (10), RATES (offered rates, one table each: "1000000 0"; 0 = as
# fast as the sender goes), BATCH
# (frames per datagram; empty = as many as fit 1,472 bytes), BODY (100),
# IOS ("uring uring-oneshot epoll"; uring-oneshot = --udp-multishot=false), PORT (19557), SERVER_CPU (0), FEED_CPU (1),
# REPLAY_FRAMES (3000000; 0 skips the replay), REPLAY_IOS ("epoll uring"),
# REPLAY_TIMEOUT (20 s), WORK (a fresh directory under /dev/shm or /tmp).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
BUILD=${BUILD:-$root/build}
DURATION=${DURATION:-10}
RATES=${RATES:-1000000 0}
BATCH=${BATCH:-}
BODY=${BODY:-100}
IOS=${IOS:-uring uring-oneshot epoll}
PORT=${PORT:-19557}
SERVER_CPU=${SERVER_CPU:-0}
FEED_CPU=${FEED_CPU:-1}
REPLAY_FRAMES=${REPLAY_FRAMES:-3000000}
REPLAY_IOS=${REPLAY_IOS:-epoll uring}
REPLAY_TIMEOUT=${REPLAY_TIMEOUT:-20}

tickfand=$BUILD/tickfand
tickfan=$BUILD/tickfan
feed=$BUILD/feed/tickfan-feed
for b in "$tickfand" "$tickfan" "$feed"; do
  [[ -x $b ]] || { echo "ingest_bench: $b is not built (cmake --build $BUILD)" >&2; exit 2; }
done
command -v taskset >/dev/null || { echo "ingest_bench: taskset is missing (util-linux)" >&2; exit 2; }
ncpu=$(nproc)
if ((SERVER_CPU >= ncpu || FEED_CPU >= ncpu)); then
  echo "ingest_bench: needs CPUs $SERVER_CPU and $FEED_CPU; this machine has $ncpu" >&2
  exit 2
fi

own_work=0
if [[ -z ${WORK:-} ]]; then
  base=/tmp
  [[ -w /dev/shm ]] && base=/dev/shm
  WORK=$(mktemp -d "$base/ingest_bench.XXXXXX")
  own_work=1
fi
hz=$(getconf CLK_TCK)
server_pid=

stop_server() {
  [[ -n $server_pid ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null
  for _ in $(seq 50); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    echo "ingest_bench: tickfand $server_pid ignored SIGTERM for 10 s: SIGKILL" >&2
    kill -KILL "$server_pid" 2>/dev/null
  fi
  wait "$server_pid" 2>/dev/null
  server_pid=
}
trap 'stop_server; ((own_work)) && rm -rf "${WORK:?}"' EXIT

# start_server LOG ARGS...: tickfand on $SERVER_CPU; sets server_pid, addr.
start_server() {
  local log=$1
  shift
  rm -rf "$WORK/data"
  taskset -c "$SERVER_CPU" "$tickfand" --listen 127.0.0.1:0 --data-dir "$WORK/data" \
    --topic bench --log-size 256M --heartbeat-ms 1000 "$@" >"$log" 2>&1 &
  server_pid=$!
  addr=
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*msg=listening addr=\([^ ]*\).*/\1/p' "$log" | head -1)
    [[ -n $addr ]] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "ingest_bench: tickfand did not start:" >&2
  tail -5 "$log" >&2
  server_pid=
  return 1
}

# CPU seconds (user+system) of a process, or of its busiest thread.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    echo "$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0) ${t##*/}"
  done
}

# The topic's head sequence number: the cursor of a live stream's
# EndOfBacklog.
head_seq() {
  timeout 10 "$tickfan" tail bench --server "$addr" --start live --json 2>/dev/null |
    head -1 | sed -n 's/.*"cursor":"1-[0-9a-f]*-\([0-9]*\)".*/\1/p'
}

# Sums over the server log: kernel drops (the last udp_overflow
# dropped_total), upstream gaps and the frames they missed, rejected frames.
log_counts() {
  awk '
    /msg=udp_overflow/ { for (i = 1; i <= NF; i++) if ($i ~ /^dropped_total=/) { split($i, a, "="); ovfl = a[2] } }
    /msg=upstream_gap/ { gaps++; for (i = 1; i <= NF; i++) if ($i ~ /^missed=/) { split($i, a, "="); missed += a[2] } }
    /msg=feed_reject/ { rej++; for (i = 1; i <= NF; i++) if ($i ~ /^suppressed=/) { split($i, a, "="); rej += a[2] } }
    END { printf "%d %d %d %d\n", ovfl, gaps, missed, rej }' "$1"
}

ts_of() { # the ts= of the first line matching $2 in log $1, as seconds
  local ts
  ts=$(grep -m1 "$2" "$1" | sed -n 's/^ts=\([^ ]*\).*/\1/p')
  [[ -n $ts ]] && date -d "$ts" +%s.%N
}

# Other work on these CPUs shows up as drops and lower rates: say how busy
# the machine was.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($ncpu CPUs)"
trap 'stop_server; echo "load average after: $(cut -d" " -f1-3 /proc/loadavg)"; ((own_work)) && rm -rf "${WORK:?}"' EXIT

batch_args=()
[[ -n $BATCH ]] && batch_args=(--batch "$BATCH")
for RATE in $RATES; do
  printf '\nUDP: %s-byte bodies, %s frames/datagram, offered %s/s for %s s; tickfand on CPU %s, tickfan-feed on CPU %s\n' \
    "$BODY" "${BATCH:-MTU-fill}" "$([[ $RATE == 0 ]] && echo max || echo "$RATE")" "$DURATION" \
    "$SERVER_CPU" "$FEED_CPU"
  printf '%-13s %10s %9s %9s %10s %9s %10s %8s %7s %8s %11s %10s\n' io sent sender/s dgrams \
    ingested ingest/s kern_drops lost rejects cpu_s ns/tick ingest_ns
  for io in $IOS; do
    log=$WORK/tickfand-$io.log
    io_args=(--io "$io")
    [[ $io == uring-oneshot ]] && io_args=(--io uring --udp-multishot=false)
    start_server "$log" "${io_args[@]}" --feed "udp://127.0.0.1:$PORT" || continue
    c0=$(cpu_ticks "$server_pid")
    t0=$(thread_ticks "$server_pid")
    out=$(taskset -c "$FEED_CPU" "$feed" send --to "udp://127.0.0.1:$PORT" --topic bench \
      --rate "$RATE" --duration "$DURATION" --body-size "$BODY" "${batch_args[@]}" 2>&1)
    sleep 1 # let ingest drain what is queued
    c1=$(cpu_ticks "$server_pid")
    t1=$(thread_ticks "$server_pid")
    head=$(head_seq)
    read -r ovfl gaps missed rej < <(log_counts "$log")
    stop_server
    sent=$(sed -n 's/.* frames=\([0-9]*\) .*/\1/p' <<<"$out")
    secs=$(sed -n 's/.* seconds=\([0-9.]*\) .*/\1/p' <<<"$out")
    srate=$(sed -n 's/.* frames_per_s=\([0-9]*\).*/\1/p' <<<"$out")
    dgrams=$(sed -n 's/.* datagrams=\([0-9]*\) .*/\1/p' <<<"$out")
    ingested=$((${head:-0} - gaps))
    # the busiest thread over the run is the ingest thread
    busiest=$(join -j 2 <(sort -k2 <<<"$t0") <(sort -k2 <<<"$t1") | awk '{d = $3 - $2; if (d > m) m = d} END {print m + 0}')
    awk -v io="$io" -v sent="$sent" -v srate="$srate" -v dg="$dgrams" -v ing="$ingested" \
      -v secs="$secs" -v ovfl="$ovfl" -v lost=$((sent - ingested)) -v rej="$rej" \
      -v cpu=$((c1 - c0)) -v busy="$busiest" -v hz="$hz" -v dur="$DURATION" 'BEGIN {
        n = ing > 0 ? ing : 1
        printf "%-13s %10d %9d %9d %10d %9.0f %10d %8d %7d %8.2f %11.0f %10.0f\n", io, sent, srate, dg,
          ing, ing / secs, ovfl, lost, rej, cpu / hz, 1e9 * cpu / hz / n, 1e9 * busy / hz / n }'
    [[ -z $head ]] && echo "  (no head seq: the live stream did not answer; see $log)"
  done
done
echo "  kern_drops: datagrams the kernel dropped (SO_RXQ_OVFL); lost: frames sent and not ingested"
echo "  cpu_s: tickfand's CPU time over the run and a 1 s drain; ns/tick: that per ingested"
echo "  tick (all threads); ingest_ns: the same for its busiest thread, the ingest thread:"
echo "  1e9 / ingest_ns is what one core could ingest"

((REPLAY_FRAMES > 0)) || exit 0
cap=$WORK/replay.tkfcap
"$feed" record --out "$cap" --topic bench --count "$REPLAY_FRAMES" --rate 1000000 \
  --body-size "$BODY" >/dev/null || { echo "ingest_bench: record failed" >&2; exit 1; }
printf '\nReplay: tickfand --feed file: (pace=max), %s frames of %s-byte bodies (%s MiB), CPU %s\n' \
  "$REPLAY_FRAMES" "$BODY" "$(($(stat -c %s "$cap") >> 20))" "$SERVER_CPU"
printf '%-9s %12s %10s %12s\n' io frames seconds frames/s
for io in $REPLAY_IOS; do
  log=$WORK/replay-$io.log
  start_server "$log" --io "$io" --feed "file:$cap" || continue
  done_line=
  for _ in $(seq $((REPLAY_TIMEOUT * 10))); do
    done_line=$(grep -m1 'msg=feed_replay_done' "$log")
    [[ -n $done_line ]] && break
    sleep 0.1
  done
  if [[ -z $done_line ]]; then
    head=$(head_seq)
    printf '%-9s %12s %10s %12s  NOT DONE after %s s (head seq %s)\n' "$io" - - - \
      "$REPLAY_TIMEOUT" "${head:-?}"
    stop_server
    continue
  fi
  t0=$(ts_of "$log" 'msg=listening')
  t1=$(ts_of "$log" 'msg=feed_replay_done')
  frames=$(sed -n 's/.* frames=\([0-9]*\).*/\1/p' <<<"$done_line")
  stop_server
  awk -v io="$io" -v n="$frames" -v t0="$t0" -v t1="$t1" 'BEGIN {
    printf "%-9s %12d %10.3f %12.0f\n", io, n, t1 - t0, n / (t1 - t0) }'
done
