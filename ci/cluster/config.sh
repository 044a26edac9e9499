# Settings of the local single-node cluster, sourced by the ci/cluster/*.sh scripts. Every value
# can be overridden from the environment (ci/cluster/cluster.mk passes the make variables through).
# shellcheck shell=bash

# The defaults both cluster paths share (hack/defaults.env: the release, namespaces, images,
# K8S_VERSION, ETCD_VERSION, KNP_VERSION, GVISOR_VERSION, ...) and the release's object names
# (release_object).
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"
# Kubernetes 1.34 (K8S_VERSION): the newest minor that runs on cgroup v1 without
# failCgroupV1=false and still supports containerd 1.6 (Debian bookworm's).
# Debian bookworm packages the node uses (installed by ci/cluster/deps.sh with apt-get).
DEBIAN_PACKAGES=${DEBIAN_PACKAGES:-containerd runc containernetworking-plugins buildah mmdebstrap iptables nftables iproute2 openssl curl gcc libc6-dev}

# Built binaries and the base image, kept between runs OUTSIDE the repository.
PYEXEC_CLUSTER_CACHE=${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}
# Everything a running cluster has (certificates, etcd data, containerd and kubelet state, logs,
# pid files); cluster-down removes it (the logs are copied to $CLUSTER_LOG_KEEP first).
CLUSTER_RUN_DIR=${CLUSTER_RUN_DIR:-/var/lib/pyexec-cluster/run}
CLUSTER_LOG_KEEP=${CLUSTER_LOG_KEEP:-/var/lib/pyexec-cluster/last-logs}

# Network. Pods are on a bridge with no uplink: each gets an address in POD_SUBNET and a route
# to that subnet only (no default route, no masquerade; the host does not forward). The first
# service IP (the `kubernetes` service, 10.88.128.1) is an address of the bridge itself and the
# API server listens on port 443, so pods reach the API server without kube-proxy.
CLUSTER_BRIDGE=${CLUSTER_BRIDGE:-pyexec0}
# Locally administered, fixed (see up.sh).
CLUSTER_BRIDGE_MAC=${CLUSTER_BRIDGE_MAC:-02:70:79:65:78:01}
POD_SUBNET=${POD_SUBNET:-10.88.0.0/16}
POD_RANGE_START=${POD_RANGE_START:-10.88.0.10}
POD_RANGE_END=${POD_RANGE_END:-10.88.127.250}
NODE_IP=${NODE_IP:-10.88.0.1}
SERVICE_CIDR=${SERVICE_CIDR:-10.88.128.0/17}
KUBERNETES_SERVICE_IP=${KUBERNETES_SERVICE_IP:-10.88.128.1}
APISERVER_PORT=443
NODE_NAME=${NODE_NAME:-pyexec-node}

BIN_K8S=$PYEXEC_CLUSTER_CACHE/kubernetes-$K8S_VERSION/bin
BIN_ETCD=$PYEXEC_CLUSTER_CACHE/etcd-$ETCD_VERSION/bin
BIN_GVISOR=$PYEXEC_CLUSTER_CACHE/gvisor-$GVISOR_VERSION/bin
# containerd-shim-runsc-v1 with its fatal -999 oom_score_adj made non-fatal (build-runsc-shim.sh).
BIN_GVISOR_SHIM=$PYEXEC_CLUSTER_CACHE/gvisor-$GVISOR_VERSION-shim-oomfix/bin
BIN_KNP=$PYEXEC_CLUSTER_CACHE/kube-network-policies-$KNP_VERSION-pyexec/bin
# The nftables table kube-network-policies keeps its rules in (inet family).
KNP_NFT_TABLE=kube-network-policies
CNI_BIN_DIR=${CNI_BIN_DIR:-/usr/lib/cni}

PKI=$CLUSTER_RUN_DIR/pki
KCFG=$CLUSTER_RUN_DIR/kubeconfig
LOGS=$CLUSTER_RUN_DIR/logs
PIDS=$CLUSTER_RUN_DIR/pids
# Each component runs in a cgroup of its own in the cpuacct hierarchy (v1 only, which schedules
# nothing): the exact CPU time of it and all its children (containerd's include the shims, the
# runsc commands and the CNI plugins), for make cluster-measure (ci/cluster/load.py).
ACCT_CGROUP_TOP=pyexec-cluster
ACCT_CGROUP=/sys/fs/cgroup/cpuacct/$ACCT_CGROUP_TOP
CONTAINERD_SOCK=$CLUSTER_RUN_DIR/containerd/containerd.sock
ADMIN_KUBECONFIG=$KCFG/admin.kubeconfig
KUBECTL_BIN=$BIN_K8S/kubectl

# An image name fully qualified, as containerd's CRI normalises the chart's short names.
qualify() { case "$1" in */*/*) echo "$1" ;; */*) echo "docker.io/$1" ;; *) echo "docker.io/library/$1" ;; esac; }
clog() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
cdie() { clog "ERROR: $*"; exit 1; }
kc() { "$KUBECTL_BIN" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
kube() { kc "$@"; }
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# For down.sh and check-down.sh: adopt the binary cache the running cluster was started from
# (up.sh records it), and list in ANCESTORS this script and the processes that started it
# (make's shell has the run directory in its command line), which are never counted or killed.
adopt_running_cluster() {
  if [ -f "$CLUSTER_RUN_DIR/cache-dir" ]; then PYEXEC_CLUSTER_CACHE=$(cat "$CLUSTER_RUN_DIR/cache-dir"); fi
  ANCESTORS=""
  local a=$$
  while [ -n "$a" ] && [ "$a" != 0 ] && [ "$a" != 1 ]; do
    ANCESTORS="$ANCESTORS $a"
    a=$(awk '/^PPid:/ {print $2}' "/proc/$a/status" 2>/dev/null)
  done
}
# Pids of processes whose command line or executable is under the run directory or the binary
# cache (the cluster's own processes: the components, shims, runsc sandboxes and gofers), less
# ANCESTORS and the tear-down scripts themselves.
own_pids() {
  local p cmd exe
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    cmd=$( { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
    case " $ANCESTORS " in *" $p "*) continue ;; esac
    case "$cmd" in *check-down.sh*|*down.sh*) continue ;; esac
    exe=$(readlink "/proc/$p/exe" 2>/dev/null || true)
    case "$cmd|$exe" in
      *"$CLUSTER_RUN_DIR"*|*"|$PYEXEC_CLUSTER_CACHE/"*/bin/*) echo "$p" ;;
    esac
  done
}
