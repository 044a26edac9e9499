#!/usr/bin/env bash
# containerd-shim-runsc-v1 for machines that refuse a negative oom_score_adj, at the pinned
# GVISOR_VERSION (hack/defaults.env), cached OUTSIDE the repository (go_build_cached, hack/lib.sh):
#   $PYEXEC_CLUSTER_CACHE/gvisor-<version>-shim-oomfix/bin/containerd-shim-runsc-v1
#
# Why: gVisor's shim sets its own oom_score_adj to -999 right after starting and fails the whole
# start when the kernel refuses ("failed to set OOM Score on shim: write /proc/N/oom_score_adj:
# permission denied"), which some machines do even for root. containerd's
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
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/../../hack/lib.sh"
top="${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}/gvisor-$GVISOR_VERSION-shim-oomfix"

# ignore_oom_permission SRC: the shim's OOM-score call tolerates a permission error.
ignore_oom_permission() {
  local manager="$1/pkg/shim/v1/manager.go"
  local needle='if err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil {'
  grep -qF "$needle" "$manager" || { build_log "the OOM-score call in $manager changed; update this patch"; exit 1; }
  sed -i "s|$needle|if err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil \&\& !os.IsPermission(err) {|" "$manager"
  grep -q 'os.IsPermission(err)' "$manager"
}

go_build_cached --patch ignore_oom_permission "$top" gvisor.dev/gvisor "$GVISOR_VERSION" \
  containerd-shim-runsc-v1.real=gvisor.dev/gvisor/shim >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/wrapper" <<'WRAPPER'
#!/bin/sh
# containerd 1.6 <-> gVisor shim (containerd 2 shim API): see ci/cluster/build-runsc-shim.sh.
real="$(dirname "$0")/containerd-shim-runsc-v1.real"
for arg in "$@"; do last=$arg; done
if [ "${last:-}" != start ]; then exec "$real" "$@"; fi
out=$("$real" "$@") || { rc=$?; printf '%s' "$out"; exit "$rc"; }
case "$out" in
  "{"*) printf '%s' "$out" | sed -n 's/.*"address":"\([^"]*\)".*/\1/p' | tr -d '\n' ;;
  *) printf '%s' "$out" ;;
esac
WRAPPER
# Rewritten only when it differs (a running cluster's containerd may be executing it).
cmp -s "$tmp/wrapper" "$top/bin/containerd-shim-runsc-v1" || install -m 0755 "$tmp/wrapper" "$top/bin/containerd-shim-runsc-v1"
echo "$top/bin"
