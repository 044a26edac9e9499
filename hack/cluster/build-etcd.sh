#!/usr/bin/env bash
# Builds etcd (>= 3.5.11, which Kubernetes requires; Debian bookworm has only 3.4) from the Go module
# proxy at a pinned version and caches it OUTSIDE the repository:
#   $PYEXEC_CLUSTER_CACHE/etcd-<version>/bin/etcd
# go.etcd.io/etcd/server/v3 is the etcd command (package main). Its go.mod replaces the sibling
# modules with ../api etc., which `go install pkg@version` refuses, so it is built from a small
# consumer module that requires it (its requirements name the siblings at the same version).
set -euo pipefail
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE_ROOT=${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}
out="$CACHE_ROOT/etcd-$ETCD_VERSION/bin"
log() { printf '[build-etcd] %s\n' "$*" >&2; }
if [ -x "$out/etcd" ]; then log "reusing $out"; echo "$out"; exit 0; fi
command -v go >/dev/null || { log "go is not installed"; exit 1; }
start=$(date +%s)
work="$CACHE_ROOT/etcd-$ETCD_VERSION/module"
mkdir -p "$out" "$work"
printf 'module pyexec.dev/etcd-build\n\ngo 1.24\n' >"$work/go.mod"
(cd "$work" && GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2)
tmpbin=$(mktemp -d); trap 'rm -rf "$tmpbin"' EXIT
(cd "$work" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
  -ldflags "-s -w" -o "$tmpbin/etcd" go.etcd.io/etcd/server/v3)
install -m 0755 "$tmpbin/etcd" "$out/etcd"
echo "$ETCD_VERSION" >"$out/../VERSION"
log "built etcd $ETCD_VERSION in $(( $(date +%s) - start ))s into $out"
echo "$out"
