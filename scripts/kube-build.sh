#!/usr/bin/env bash
# Builds a real Kubernetes control plane from Go modules (tools/kubeenv): kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd and kwok, into a cache outside the clone (so a
# clean clone — CI — reuses it):
#   ${XDG_CACHE_HOME:-~/.cache}/tidemark/kubeenv/bin   (override with KUBEENV_BIN=/abs/dir)
# It rebuilds only when tools/kubeenv's go.mod/go.sum, the mains or this script change (a stamp
# file holds their hash). Every go command runs under `nice -n 19`: it only takes idle CPU.
# Prints the binary directory on its last line.
#   scripts/kube-build.sh          build if needed
#   scripts/kube-build.sh --force  build even if the stamp matches
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/tools/kubeenv
BIN=${KUBEENV_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tidemark/kubeenv/bin}
FORCE=${1:-}

command -v go >/dev/null 2>&1 || export PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null 2>&1 || { echo "kube-build: go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
GO=(nice -n 19 go)

BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)
inputs=("$SRC/go.mod" "$SRC/go.sum" "$SRC/kwok/go.mod" "$SRC/kwok/go.sum" "${BASH_SOURCE[0]}")
inputs+=("$SRC"/cmd/*/main.go)
hash=$( { cat "${inputs[@]}"; go version; } | sha256sum | cut -d' ' -f1)

mkdir -p "$BIN"
exec 9>"$BIN/.lock"
flock 9                                  # one build at a time (parallel test runs wait here)

up_to_date() {
  [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$hash" ] || return 1
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  [ -f "$BIN/kwok-stages.yaml" ]
}
if [ "$FORCE" != --force ] && up_to_date; then
  echo "kube-build: up to date ($BIN)" >&2
  echo "$BIN"
  exit 0
fi

start=$(date +%s)
# Version stamps, as kubernetes' hack/lib/version.sh sets them, so that `kubectl version` and
# the components report the real release and not v0.0.0-master.
KV=$(cd "$SRC" && "${GO[@]}" list -m -f '{{.Version}}' k8s.io/kubernetes)          # e.g. v1.36.3
MAJOR=${KV#v}; MAJOR=${MAJOR%%.*}
MINOR=${KV#v*.}; MINOR=${MINOR%%.*}
# Build date: the release's own time from the module proxy (reproducible builds).
DATE=$(cd "$SRC" && "${GO[@]}" list -m -json k8s.io/kubernetes | sed -n 's#^[[:space:]]*"Time": "\(.*\)",*$#\1#p' | head -1)
DATE=${DATE:-1970-01-01T00:00:00Z}
LD="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD+=" -X $pkg.gitVersion=$KV -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
  LD+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=$DATE"
done

tmp=$(mktemp -d "$BIN/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0
echo "kube-build: building Kubernetes $KV control plane + etcd into $BIN (niced; a cold build takes many minutes)" >&2
(cd "$SRC" && "${GO[@]}" build -mod=readonly -buildvcs=false -trimpath -ldflags "$LD" -o "$tmp/" ./cmd/...)
echo "kube-build: building kwok" >&2
(cd "$SRC/kwok" && "${GO[@]}" build -mod=readonly -buildvcs=false -trimpath -ldflags "-s -w" -o "$tmp/" sigs.k8s.io/kwok/cmd/kwok)
# kwok's Stage objects, as kwokctl uses them by default (fast node initialisation, heartbeat with
# a Lease, fast pod ready/complete/delete), from the kwok module in the module cache.
KWOK_DIR=$(cd "$SRC/kwok" && "${GO[@]}" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  echo "---"
  cat "$KWOK_DIR/kustomize/stage/$f"
done >"$tmp/kwok-stages.yaml"
for b in "${BINARIES[@]}" kwok-stages.yaml; do mv -f "$tmp/$b" "$BIN/$b"; done
echo "$hash" > "$BIN/.stamp"
echo "kube-build: done in $(( $(date +%s) - start ))s: $("$BIN/kube-apiserver" --version), etcd $("$BIN/etcd" --version | sed -n 's/^etcd Version: //p')" >&2
echo "$BIN"
