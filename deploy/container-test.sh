#!/usr/bin/env bash
# Builds the tickfan image (deploy/Containerfile) with podman and checks it
# from outside the container:
#   (a) a subscriber on the host (build/tickfan tail sim --count 3) gets data;
#   (b) grpc.health.v1.Health/Check answers SERVING (and the image's own
#       HEALTHCHECK passes);
#   (c) /metrics answers (the image serves it by default) and counts (a)'s
#       stream;
#   (d) podman stop (SIGTERM) drains: an open Watch ends with UNAVAILABLE and
#       a resume cursor, the container exits 0 within the grace period, and
#       the logs show msg=draining and msg=stopped.
# The container runs as it would in Kubernetes: non-root, read-only root
# filesystem with no tmpfs, all capabilities dropped, no-new-privileges.
#
# Needs root. Installs podman, runc and debootstrap if missing. Without a
# registry, the base image is made locally with debootstrap from the apt
# mirror and cached as localhost/debian:bookworm-slim.
#
# Exit: 0 passed; 1 failed; 77 skipped (the environment cannot run it; the
# reason is printed as "SKIP: container test: ...").
# Environment: TICKFAN_IMAGE (tag to build, default localhost/tickfan:test).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${TICKFAN_IMAGE:-localhost/tickfan:test}
base=localhost/debian:bookworm-slim
drain_ms=5000 # TICKFAN_DRAIN_TIMEOUT_MS inside the container
grace=15      # podman stop -t: longer than the drain
py=/usr/bin/python3
t0=$SECONDS
containers=()
work=""

say() { printf '[container-test %4ss] %s\n' "$((SECONDS - t0))" "$*"; }
skip() {
  echo
  echo "************************************************************"
  echo "SKIP: container test: $*"
  echo "************************************************************"
  exit 77
}
fail() {
  echo "FAIL: container test: $*" >&2
  exit 1
}
cleanup() {
  local c
  for c in "${containers[@]}"; do
    pm rm -f -v "$c" >/dev/null 2>&1 || true
  done
  [[ -n "$work" ]] && rm -rf "$work"
}
trap cleanup EXIT

((EUID == 0)) || skip "needs root (podman as root with runc, debootstrap)"

# --- tools ---------------------------------------------------------------
missing=()
for p in podman runc debootstrap python3-grpcio; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -q >/dev/null &&
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }; then
    skip "cannot install ${missing[*]} with apt-get"
  fi
fi
runc=$(command -v runc || echo /usr/sbin/runc)
[[ -x "$runc" ]] || skip "runc not found"

work=$(mktemp -d /var/tmp/tickfan-ctest.XXXXXX)
# Hosts that forbid setrlimit in containers need: no default ulimits, no
# pids limit (both would be applied with setrlimit/cgroups by the runtime).
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []
pids_limit = 0
EOF
export CONTAINERS_CONF="$work/containers.conf"
pm() { podman --runtime "$runc" "$@"; }
pm info >"$work/info.log" 2>&1 || skip "podman does not work here: $(tail -n 3 "$work/info.log")"
say "podman $(podman --version | awk '{print $3}'), runtime $runc"

# --- base image (cached) --------------------------------------------------
if pm image exists "$base"; then
  say "base image $base: cached"
else
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
  [[ -n "$mirror" ]] ||
    mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  [[ -n "$mirror" ]] || skip "no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  say "base image: debootstrap --variant=minbase bookworm from $mirror"
  if ! debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 5 "$work/debootstrap.log"
    skip "debootstrap from $mirror failed (no network to the mirror?)"
  fi
  # Like the published slim image: no package lists or downloaded packages.
  rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/archives/*.deb \
    "$work/rootfs"/var/cache/apt/*.bin
  tar -C "$work/rootfs" -c . | pm import - "$base" >/dev/null ||
    fail "podman import of the debootstrap'd rootfs failed"
  rm -rf "$work/rootfs"
  say "base image $base: imported"
fi
pm run --rm --network host "$base" true >"$work/smoke.log" 2>&1 ||
  skip "podman cannot run a container here: $(tail -n 3 "$work/smoke.log")"

# --- image ----------------------------------------------------------------
say "building $image"
tb=$SECONDS
if ! pm build --network host --format docker --build-arg BASE="$base" \
  -f "$root/deploy/Containerfile" --ignorefile "$root/deploy/Containerfile.dockerignore" \
  -t "$image" "$root" >"$work/build.log" 2>&1; then
  tail -n 30 "$work/build.log"
  if grep -qE 'Could not resolve|Failed to fetch|Temporary failure resolving|Unable to connect' "$work/build.log"; then
    skip "apt-get inside the build cannot reach the mirror"
  fi
  fail "image build failed (log above)"
fi
say "built $image in $((SECONDS - tb)) s, $(pm image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
user=$(pm image inspect --format '{{.Config.User}}' "$image")
[[ "$user" == 10001:10001 ]] || fail "image user is '$user', expected 10001:10001"
if pm run --rm --network host --no-healthcheck --entrypoint /bin/sh "$image" -c 'command -v cc || command -v cmake' >/dev/null 2>&1; then
  fail "the runtime image contains a compiler or cmake"
fi

# --- run --------------------------------------------------------------------
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
mport=$(free_port)
name=tickfan-ctest-$$
containers+=("$name")
# --no-healthcheck: podman would schedule the HEALTHCHECK with systemd timers,
# and a host without systemd has none; its command is run by hand below.
pm run -d --name "$name" --network host \
  --read-only --read-only-tmpfs=false --cap-drop all --security-opt no-new-privileges \
  --no-healthcheck \
  -e TICKFAN_LISTEN="127.0.0.1:$port" -e TICKFAN_METRICS_LISTEN="127.0.0.1:$mport" \
  -e TICKFAN_LOG_SIZE=1M \
  -e TICKFAN_DRAIN_TIMEOUT_MS="$drain_ms" \
  "$image" >/dev/null || fail "podman run failed"
logs() { pm logs "$name" >"$work/container.log" 2>&1; }
for _ in $(seq 150); do
  logs
  grep -q 'msg=listening' "$work/container.log" && break
  [[ $(pm inspect --format '{{.State.Running}}' "$name") == true ]] || break
  sleep 0.2
done
logs
grep -q 'msg=listening' "$work/container.log" || {
  cat "$work/container.log"
  fail "tickfand did not log msg=listening (logs above)"
}
say "container $name listening on 127.0.0.1:$port (uid $(pm exec "$name" id -u))"

# (a) a subscriber on the host receives data
if [[ ! -x "$root/build/tickfan" ]]; then
  say "building build/tickfan"
  { cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
    cmake --build "$root/build" -j2 --target tickfan; } >"$work/host-build.log" 2>&1 || {
    tail -n 20 "$work/host-build.log"
    fail "cannot build build/tickfan"
  }
fi
out=$(timeout 30 "$root/build/tickfan" tail sim --server "127.0.0.1:$port" --count 3 2>&1)
rc=$?
printf '    %s\n' "${out//$'\n'/$'\n'    }"
((rc == 0)) || fail "(a) tickfan tail exited $rc"
(($(echo "$out" | grep -c 'seq=') >= 3)) || fail "(a) expected 3 events"
say "(a) PASS: subscriber received 3 events"

# (b) health: grpc.health.v1 from outside, and the image's HEALTHCHECK inside
"$py" "$root/deploy/grpc_check.py" health "127.0.0.1:$port" | sed 's/^/    /'
((PIPESTATUS[0] == 0)) || fail "(b) health check"
hc=$(pm image inspect --format '{{json .Config.Healthcheck.Test}}' "$image")
mapfile -t hc_cmd < <("$py" -c 'import json, sys
t = json.loads(sys.argv[1])
assert t and t[0] == "CMD", t
print("\n".join(t[1:]))' "$hc") || fail "(b) the image has no HEALTHCHECK CMD: $hc"
pm exec "$name" "${hc_cmd[@]}" || fail "(b) the image HEALTHCHECK command failed: ${hc_cmd[*]}"
say "(b) PASS: Health/Check SERVING; the image HEALTHCHECK command exits 0"

# (c) metrics: the image serves them by default; here on a free port (host
# network), counting the stream (a) opened
env=$(pm image inspect --format '{{json .Config.Env}}' "$image")
[[ $env == *'"TICKFAN_METRICS_LISTEN=0.0.0.0:9464"'* ]] ||
  fail "(c) the image does not set TICKFAN_METRICS_LISTEN=0.0.0.0:9464: $env"
opened=$("$py" - "127.0.0.1:$mport" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5) as r:
    text = r.read().decode()
for line in text.splitlines():
    if line.startswith("tickfan_streams_opened_total"):
        print(int(float(line.split()[-1])))
        break
else:
    print(-1)
PY
) || fail "(c) GET http://127.0.0.1:$mport/metrics failed"
((opened >= 1)) || fail "(c) tickfan_streams_opened_total is $opened, expected >= 1 after (a)"
say "(c) PASS: /metrics served, tickfan_streams_opened_total $opened"

# (d) SIGTERM drains an open stream, then exit 0 within the grace period
"$py" "$root/deploy/grpc_check.py" watch "127.0.0.1:$port" "$work/ready" >"$work/watch.log" 2>&1 &
watcher=$!
for _ in $(seq 100); do
  [[ -e "$work/ready" ]] && break
  sleep 0.1
done
[[ -e "$work/ready" ]] || fail "(d) the watcher got no event"
ts=$SECONDS
pm stop -t "$grace" "$name" >/dev/null || fail "(d) podman stop failed"
took=$((SECONDS - ts))
wait "$watcher"
wrc=$?
sed 's/^/    /' "$work/watch.log"
code=$(pm inspect --format '{{.State.ExitCode}}' "$name")
logs
grep -E 'msg=(draining|drain_timeout|stopped|exit_now)' "$work/container.log" | sed 's/^/    /'
((wrc == 0)) || fail "(d) the open stream did not end with UNAVAILABLE + cursor"
[[ "$code" == 0 ]] || fail "(d) exit code $code after podman stop, expected 0"
((took < grace)) || fail "(d) stop took ${took} s, not under the ${grace} s grace period"
grep -q 'msg=draining' "$work/container.log" || fail "(d) no msg=draining in the logs"
grep -q 'msg=stopped' "$work/container.log" || fail "(d) no msg=stopped in the logs"
say "(d) PASS: SIGTERM drained, exit 0 in ${took} s (grace ${grace} s)"

say "PASS: container test (total $((SECONDS - t0)) s)"
