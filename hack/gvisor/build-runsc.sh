#!/usr/bin/env bash
# Builds runsc and containerd-shim-runsc-v1 from the Go module proxy at a pinned gVisor
# pseudo-version and caches them OUTSIDE the repository:
#   ${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}/gvisor-<version>/bin/{runsc,containerd-shim-runsc-v1}
# A second run finds them there and returns at once. Prints the bin directory on stdout.
#
# The module gvisor.dev/gvisor is served from gVisor's generated `go` branch (the tree with the
# *_autogen.go files). The proxy refuses the query `@go` (403); `@latest` resolves to the `go`
# branch head, which is what GVISOR_VERSION pins (resolved 2026-11 as
# v0.0.0-20260905035102-160fafc42237; commit 160fafc42237 of the go branch).
set -euo pipefail
GVISOR_VERSION=${GVISOR_VERSION:-v0.0.0-20260905035102-160fafc42237}
CACHE_ROOT=${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}
out="$CACHE_ROOT/gvisor-$GVISOR_VERSION/bin"
log() { printf '[build-runsc] %s\n' "$*" >&2; }

if [ -x "$out/runsc" ] && [ -x "$out/containerd-shim-runsc-v1" ]; then
  log "reusing $out"
  echo "$out"; exit 0
fi
command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
# CGO off: static binaries that run in any rootfs and on any node.
export CGO_ENABLED=0 GOBIN="$tmp/bin"
ldflags="-s -w -X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION"
log "building gvisor.dev/gvisor/{runsc,shim}@$GVISOR_VERSION (cold build: several minutes on 2 cores)"
go install -trimpath -ldflags "$ldflags" \
  "gvisor.dev/gvisor/runsc@$GVISOR_VERSION" "gvisor.dev/gvisor/shim@$GVISOR_VERSION"
install -m 0755 "$tmp/bin/runsc" "$out/runsc"
install -m 0755 "$tmp/bin/shim" "$out/containerd-shim-runsc-v1"
echo "$GVISOR_VERSION" >"$out/../VERSION"
log "built in $(( $(date +%s) - start ))s into $out"
echo "$out"
