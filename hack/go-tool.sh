#!/usr/bin/env bash
# Builds a Go command at a pinned version from the Go module proxy into .tools/bin (ignored by git).
# Usage: hack/go-tool.sh <binary> <package path> <module version> [ldflags]
#   e.g. hack/go-tool.sh helm helm.sh/helm/v3/cmd/helm v3.21.4
# The binary is installed under <binary>, whatever the package's last path element is.
# Skipped (in well under a second) when .tools/bin/<binary> was already built from that version
# with those ldflags, as the stamp file beside it records.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: $0 <binary> <package path> <module version> [ldflags]" >&2
  exit 2
fi
name=$1 package=$2 version=$3 ldflags=${4:-}
bin_dir=${TOOLS_BIN:-$PWD/.tools/bin}
target=$bin_dir/$name
stamp=$bin_dir/.$name.stamp
wanted="$package@$version $ldflags"

log() { printf '[go-tool] %s\n' "$*" >&2; }

if [ -x "$target" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
command -v go >/dev/null || { log "Go is needed to build $name $version (https://go.dev/dl/)"; exit 1; }

log "building $name $version from $package (a few minutes on 2 cores)"
mkdir -p "$bin_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
# CGO off: a static binary that runs on any Linux.
GOBIN=$tmp CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -trimpath -ldflags "$ldflags" "$package@$version"
install -m 0755 "$tmp/${package##*/}" "$target"
printf '%s\n' "$wanted" >"$stamp"
log "built $target in $(( $(date +%s) - start ))s"
