#!/usr/bin/env bash
# Fails if anything of the local cluster is still there: a process, a mount, the bridge or a veth
# on it, a KUBE-/CNI- iptables chain, the NetworkPolicy enforcer's nftables table, a pod cgroup,
# or the run directory. down.sh ends with it.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/cluster/config.sh
. "$HERE/config.sh"
adopt_running_cluster
status=0
fail() { printf '[cluster] leftover: %s\n' "$*" >&2; status=1; }

for p in $(own_pids); do
  fail "process $p: $( { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null)"
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
if command -v nft >/dev/null && nft list table inet "$KNP_NFT_TABLE" >/dev/null 2>&1; then
  fail "nftables table inet $KNP_NFT_TABLE"
fi
for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
  for top in kubepods kubepods.slice k8s.io "$ACCT_CGROUP_TOP"; do
    [ -d "$h$top" ] && fail "cgroup $h$top"
  done
done
[ -e "$CLUSTER_RUN_DIR" ] && fail "run directory $CLUSTER_RUN_DIR"
[ "$status" = 0 ] && clog "cluster down: no process, mount, network device, iptables chain, nftables table or cgroup left"
exit "$status"
