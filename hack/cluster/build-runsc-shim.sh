#!/usr/bin/env bash
# containerd-shim-runsc-v1 for machines that refuse a negative oom_score_adj, cached OUTSIDE the
# repository:  $PYEXEC_CLUSTER_CACHE/gvisor-<version>-shim-oomfix/bin/containerd-shim-runsc-v1
#
# Why: gVisor's shim sets its own oom_score_adj to -999 right after starting and fails the whole
# start when the kernel refuses ("failed to set OOM Score on shim: write /proc/N/oom_score_adj:
# permission denied"), which is what this VM does even for root (CLUSTER-NOTES.md). containerd's
# runc shim tolerates the same refusal. The fix here: the same gVisor version, with that one
# call's permission error ignored (pkg/shim/v1/manager.go; the module is copied from the module
# cache and the copy patched, then used through a replace directive). runsc itself is the
# unpatched one of build-runsc.sh.
#
# Second difference, for containerd 1.6 (Debian bookworm's): the current shim answers `start` with
# containerd 2's JSON bootstrap parameters ({"version":2,"address":"unix://...","protocol":"ttrpc"})
# where containerd 1.6 expects the bare address ("failed to start shim: start failed: dial unix
# {\"version\":2,...}: connect: invalid argument"). containerd-shim-runsc-v1 here is therefore a
# small wrapper that runs the real shim (containerd-shim-runsc-v1.real) and, for `start` only,
# prints the address alone. Every other action is the real binary, exec'd unchanged.
set -euo pipefail
GVISOR_VERSION=${GVISOR_VERSION:-v0.0.0-20260905035102-160fafc42237}
CACHE_ROOT=${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}
top="$CACHE_ROOT/gvisor-$GVISOR_VERSION-shim-oomfix"
out="$top/bin"
log() { printf '[build-runsc-shim] %s\n' "$*" >&2; }
if [ -x "$out/containerd-shim-runsc-v1" ] && [ -x "$out/containerd-shim-runsc-v1.real" ]; then log "reusing $out"; echo "$out"; exit 0; fi
command -v go >/dev/null || { log "go is not installed"; exit 1; }
start=$(date +%s)
mkdir -p "$out" "$top/module"
cd "$top/module"
printf 'module pyexec.dev/runsc-shim-build\n\ngo 1.26.3\n\nrequire gvisor.dev/gvisor %s\n' "$GVISOR_VERSION" >go.mod
dir=$(GOFLAGS=-mod=mod go mod download -json "gvisor.dev/gvisor@$GVISOR_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
src="$dir/pkg/shim/v1/manager.go"
[ -f "$src" ] || { log "no $src"; exit 1; }
needle='if err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil {'
grep -qF "$needle" "$src" || { log "the OOM-score call in $src changed; update this patch"; exit 1; }
rm -rf "$top/src"
cp -r "$dir" "$top/src"
chmod -R u+w "$top/src"
sed -i "s|$needle|if err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil \&\& !os.IsPermission(err) {|" "$top/src/pkg/shim/v1/manager.go"
grep -q 'os.IsPermission(err)' "$top/src/pkg/shim/v1/manager.go"
printf 'module pyexec.dev/runsc-shim-build\n\ngo 1.26.3\n\nrequire gvisor.dev/gvisor %s\n\nreplace gvisor.dev/gvisor => ../src\n' "$GVISOR_VERSION" >go.mod
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
  -ldflags "-s -w" -o "$tmp/shim" gvisor.dev/gvisor/shim
install -m 0755 "$tmp/shim" "$out/containerd-shim-runsc-v1.real"
cat >"$tmp/wrapper" <<'WRAPPER'
#!/bin/sh
# containerd 1.6 <-> gVisor shim (containerd 2 shim API): see hack/cluster/build-runsc-shim.sh.
real="$(dirname "$0")/containerd-shim-runsc-v1.real"
for arg in "$@"; do last=$arg; done
if [ "${last:-}" != start ]; then exec "$real" "$@"; fi
out=$("$real" "$@") || { rc=$?; printf '%s' "$out"; exit "$rc"; }
case "$out" in
  "{"*) printf '%s' "$out" | sed -n 's/.*"address":"\([^"]*\)".*/\1/p' | tr -d '\n' ;;
  *) printf '%s' "$out" ;;
esac
WRAPPER
install -m 0755 "$tmp/wrapper" "$out/containerd-shim-runsc-v1"
rm -rf "$top/src"  # only needed for the build
log "built in $(( $(date +%s) - start ))s into $out"
echo "$out"
