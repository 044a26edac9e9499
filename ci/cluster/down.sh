#!/usr/bin/env bash
# Tears the local cluster down (make cluster-down) and leaves nothing behind: no process, mount,
# network device (the bridge, veths, network namespaces), iptables rule, nftables table or cgroup. Safe to run
# at any time, also after a failed or half-done bring-up, and twice. Keeps the binary cache and
# copies the run's logs to $CLUSTER_LOG_KEEP. Exits non-zero if something could not be removed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/cluster/config.sh
. "$HERE/config.sh"
adopt_running_cluster
[ "$(id -u)" = 0 ] || cdie "cluster-down needs root"

# Pids in the cluster's pod cgroups (container processes of runc pods).
pod_pids() {
  local d
  for d in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods /sys/fs/cgroup/cpu/kubepods; do
    [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}
stop_pidfile() {
  local name=$1 sig=${2:-TERM} f=$PIDS/$1.pid p i
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill "-$sig" "$p" 2>/dev/null
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  fi
  rm -f "$f"
}

clog "tearing down the cluster in $CLUSTER_RUN_DIR"
# 1. The kubelet first, so it does not restart what is stopped next.
stop_pidfile kubelet
# 2. Every pod container and sandbox, through containerd while it still runs.
if [ -S "$CONTAINERD_SOCK" ] && timeout 5 ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
  for t in $(timeout 10 ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    timeout 10 ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
  done
  sleep 0.5
  for t in $(timeout 10 ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    timeout 10 ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
  done
  for c in $(timeout 10 ctr --address "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    timeout 10 ctr --address "$CONTAINERD_SOCK" -n k8s.io containers delete "$c" >/dev/null 2>&1 || true
  done
fi
# 3. The NetworkPolicy enforcer (SIGINT is what makes it remove its nftables table), the control
# plane and containerd.
stop_pidfile kube-network-policies INT
for c in kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do stop_pidfile "$c"; done
# 4. Whatever is left: shims, runsc sandboxes/gofers, container processes.
for round in 1 2 3; do
  left=$( { own_pids; pod_pids; } | sort -un)
  [ -z "$left" ] && break
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null
  sleep 0.5
done

# 5. Mounts under the run directory (pod volumes, rootfs, network namespaces, runsc), deepest first.
for round in 1 2 3; do
  mounts=$(awk -v d="$CLUSTER_RUN_DIR" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  [ -z "$mounts" ] && break
  for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
done

# 6. Network: veths on the bridge, the bridge, iptables chains a CNI plugin or kubelet made.
if ip link show "$CLUSTER_BRIDGE" >/dev/null 2>&1; then
  for v in $(ip -o link show master "$CLUSTER_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$v" 2>/dev/null || true
  done
  ip link delete "$CLUSTER_BRIDGE" 2>/dev/null || true
fi
for table in filter nat mangle; do
  # Rules that jump to, and then the chains named, KUBE-* or CNI-* (nothing else is touched).
  iptables -t "$table" -S 2>/dev/null | grep -E '^-A .* -j (KUBE|CNI)-' | sed 's/^-A/-D/' | while read -r rule; do
    # shellcheck disable=SC2086
    iptables -t "$table" $rule 2>/dev/null || true
  done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^(KUBE|CNI)-/) {print $2}'); do
    iptables -t "$table" -F "$chain" 2>/dev/null || true
  done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^(KUBE|CNI)-/) {print $2}'); do
    iptables -t "$table" -X "$chain" 2>/dev/null || true
  done
done

# The enforcer's nftables table, if it could not remove it itself.
if command -v nft >/dev/null && nft list table inet "$KNP_NFT_TABLE" >/dev/null 2>&1; then
  nft delete table inet "$KNP_NFT_TABLE" 2>/dev/null || true
fi

# 7. cgroups the kubelet, containerd and runsc made (v1 hierarchies and the unified one), and the
#    components' accounting cgroups (config.sh, ACCT_CGROUP).
for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
  for top in kubepods kubepods.slice k8s.io "$ACCT_CGROUP_TOP"; do
    [ -d "$h$top" ] || continue
    find "$h$top" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
done

# 8. The host's IPv4 forwarding and bridge netfilter settings as they were before cluster-up.
if [ -f "$CLUSTER_RUN_DIR/ip_forward.orig" ]; then
  orig=$(cat "$CLUSTER_RUN_DIR/ip_forward.orig")
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$orig" ] || echo "$orig" >/proc/sys/net/ipv4/ip_forward
fi
if [ -f "$CLUSTER_RUN_DIR/bridge-nf-call-iptables.orig" ]; then
  orig=$(cat "$CLUSTER_RUN_DIR/bridge-nf-call-iptables.orig")
  [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = "$orig" ] || echo "$orig" >/proc/sys/net/bridge/bridge-nf-call-iptables
fi

# 9. Keep the logs, remove the run directory.
if [ -d "$LOGS" ]; then
  rm -rf "$CLUSTER_LOG_KEEP"; mkdir -p "$CLUSTER_LOG_KEEP"
  cp -r "$LOGS"/. "$CLUSTER_LOG_KEEP"/ 2>/dev/null || true
  [ -d "$CLUSTER_RUN_DIR/pod-logs" ] && cp -r "$CLUSTER_RUN_DIR/pod-logs" "$CLUSTER_LOG_KEEP/" 2>/dev/null
fi
rm -rf "$CLUSTER_RUN_DIR" 2>/dev/null || { sleep 1; rm -rf "$CLUSTER_RUN_DIR"; }

PYEXEC_CLUSTER_CACHE=$PYEXEC_CLUSTER_CACHE CLUSTER_RUN_DIR=$CLUSTER_RUN_DIR bash "$HERE/check-down.sh"
