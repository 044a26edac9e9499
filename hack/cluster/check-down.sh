#!/usr/bin/env bash
# Fails if anything of the local cluster is still there: a process, a mount, the bridge or a veth
# on it, a KUBE-/CNI- iptables chain, a pod cgroup, or the run directory. down.sh ends with it.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/config.sh
. "$HERE/config.sh"
# The binary cache the running cluster was started from (up.sh records it).
if [ -f "$CLUSTER_RUN_DIR/cache-dir" ]; then PYEXEC_CLUSTER_CACHE=$(cat "$CLUSTER_RUN_DIR/cache-dir"); fi
# This script and the processes that started it (make's shell has the run directory in its
# command line) are never counted or killed.
ANCESTORS=""
a=$$
while [ -n "$a" ] && [ "$a" != 0 ] && [ "$a" != 1 ]; do
  ANCESTORS="$ANCESTORS $a"
  a=$(awk '/^PPid:/ {print $2}' "/proc/$a/status" 2>/dev/null)
done
status=0
fail() { printf '[cluster] leftover: %s\n' "$*" >&2; status=1; }

for p in /proc/[0-9]*; do
  p=${p#/proc/}
  [ "$p" = "$$" ] && continue
  cmd=$( { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
  case " $ANCESTORS " in *" $p "*) continue ;; esac
  exe=$(readlink "/proc/$p/exe" 2>/dev/null || true)
  case "$cmd|$exe" in
    *"$CLUSTER_RUN_DIR"*|*"|$PYEXEC_CLUSTER_CACHE/"*/bin/*)
      case "$cmd" in *check-down.sh*|*down.sh*) continue ;; esac
      fail "process $p: $cmd" ;;
  esac
done
grep -q " $CLUSTER_RUN_DIR" /proc/self/mountinfo && fail "mounts: $(awk -v d="$CLUSTER_RUN_DIR" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | head -3)"
ip link show "$CLUSTER_BRIDGE" >/dev/null 2>&1 && fail "network device $CLUSTER_BRIDGE"
ip link show cni0 >/dev/null 2>&1 && fail "network device cni0"
# The bridge plugin names the host ends veth<hex>.
if veths=$(ip -o link show type veth 2>/dev/null | awk -F': ' '$2 ~ /^veth/ {print $2}') && [ -n "$veths" ]; then
  fail "veth devices: $(echo "$veths" | head -3 | tr '\n' ' ')"
fi
for table in filter nat mangle; do
  chains=$(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^(KUBE|CNI)-/) {print $2}')
  [ -n "$chains" ] && fail "iptables $table chains: $(echo "$chains" | head -3 | tr '\n' ' ')"
done
for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
  for top in kubepods kubepods.slice k8s.io; do
    [ -d "$h$top" ] && fail "cgroup $h$top"
  done
done
[ -e "$CLUSTER_RUN_DIR" ] && fail "run directory $CLUSTER_RUN_DIR"
[ "$status" = 0 ] && clog "cluster down: no process, mount, network device, iptables chain or cgroup left"
exit "$status"
