#!/usr/bin/env bash
# Builds tickfan-go-peer, the Go peer server used in performance comparisons.
#
#   perf/peers/go/build.sh [--test] [OUT_DIR]   (default: perf/peers/go/out)
#
# Installs what it needs from Debian (golang-go, grpc-go and the protobuf Go
# runtime, protoc and its Go plugins) when missing, generates the Go code of
# the contract into a GOPATH under perf/peers/go/build/, and builds
# OUT_DIR/tickfan-go-peer in GOPATH mode against Debian's Go packages (no Go
# module is downloaded). Idempotent; a rebuild with nothing changed takes about a
# second. --test also runs go vet and the unit tests.
set -euo pipefail

test=0
if [[ ${1:-} == --test ]]; then
    test=1
    shift
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here/out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=$here/build
gopath=$build/gopath

# ---- toolchain from Debian --------------------------------------------------
need_pkgs=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in golang-go golang-google-grpc-dev golang-google-protobuf-dev \
         protobuf-compiler protoc-gen-go protoc-gen-go-grpc; do
    have_pkg "$p" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    echo "build.sh: installing ${need_pkgs[*]}" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"; then
        "${sudo[@]}" apt-get update -q
        "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
    fi
fi

GO=/usr/bin/go # Debian's Go 1.19: the grpc-go it ships is built for it
export GO111MODULE=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode"
export GOCACHE=${GOCACHE:-$build/gocache}
export CGO_ENABLED=0

# ---- generated code (regenerated only when a proto or a plugin changed) -----
protos=(events/v1/watcher.proto market/v1/tick.proto)
stamp=$build/gen.stamp
want=$( (cd "$root/proto" && sha256sum "${protos[@]}";
         protoc --version; dpkg-query -W protoc-gen-go protoc-gen-go-grpc) | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    rm -rf "$gopath/src/tickfan/gen"
    mkdir -p "$gopath/src"
    # go_package is "tickfan/gen/<pkg>/v1;..." in each proto: the files land
    # in $gopath/src/tickfan/gen/...
    protoc -I "$root/proto" \
        --go_out="$gopath/src" \
        --go-grpc_out="$gopath/src" \
        "${protos[@]/#/$root/proto/}"
    echo "$want" >"$stamp"
fi

# ---- build --------------------------------------------------------------------
cd "$here/peer"
if ((test)); then
    "$GO" vet . >&2
    "$GO" test -count=1 . >&2
fi
"$GO" build -trimpath -o "$out/tickfan-go-peer" .
echo "$out/tickfan-go-peer"
