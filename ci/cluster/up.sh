#!/usr/bin/env bash
# Brings up a real single-node Kubernetes on this machine (make cluster-up):
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (runc + gVisor's
#   runsc), kubelet, a bridge CNI network without uplink, kube-network-policies (the NetworkPolicy
#   enforcer), and the RuntimeClass `gvisor`.
# Binaries come from the cache (ci/cluster/build-*.sh build what is missing), all state is under
# $CLUSTER_RUN_DIR, every process has a pid file in $CLUSTER_RUN_DIR/pids. ci/cluster/down.sh
# undoes all of it; a failed bring-up calls it itself.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/cluster/config.sh
. "$HERE/config.sh"

[ "$(id -u)" = 0 ] || cdie "the cluster needs root (containerd, kubelet, network, cgroups)"
START_MS=$(( $(date +%s%N) / 1000000 ))
elapsed() { local ms=$(( $(date +%s%N) / 1000000 - START_MS )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

if [ -d "$PIDS" ] && [ -n "$(ls -A "$PIDS" 2>/dev/null)" ]; then
  cdie "a cluster is already up ($PIDS has pid files): make cluster-down first"
fi

# --- binaries ----------------------------------------------------------------------------------
bash "$HERE/deps.sh"
bash "$HERE/build-k8s.sh" >/dev/null
bash "$HERE/build-etcd.sh" >/dev/null
PYEXEC_CLUSTER_CACHE=$PYEXEC_CLUSTER_CACHE GVISOR_VERSION=$GVISOR_VERSION bash "$REPO/hack/gvisor/build-runsc.sh" >/dev/null
PYEXEC_CLUSTER_CACHE=$PYEXEC_CLUSTER_CACHE GVISOR_VERSION=$GVISOR_VERSION bash "$HERE/build-runsc-shim.sh" >/dev/null
PYEXEC_CLUSTER_CACHE=$PYEXEC_CLUSTER_CACHE KNP_VERSION=$KNP_VERSION bash "$HERE/build-network-policies.sh" >/dev/null
for b in "$BIN_K8S"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kubectl} "$BIN_ETCD/etcd" \
  "$BIN_GVISOR/runsc" "$BIN_GVISOR_SHIM/containerd-shim-runsc-v1" "$BIN_KNP/kube-network-policies" \
  "$CNI_BIN_DIR"/{bridge,host-local,loopback}; do
  [ -x "$b" ] || cdie "missing $b"
done
clog "binaries ready ($(elapsed)s): kubernetes $K8S_VERSION, etcd $ETCD_VERSION, gvisor $GVISOR_VERSION, $(containerd --version | awk '{print $1, $3}'), $(runc --version | head -1)"

# From here on, a failure tears down what was started.
trap 'rc=$?; if [ $rc -ne 0 ]; then clog "bring-up failed (exit $rc); logs in $LOGS; tearing down"; for f in "$LOGS"/*.log; do [ -f "$f" ] && { echo "--- tail of $f" >&2; tail -n 15 "$f" >&2; }; done; bash "$HERE/down.sh" || true; fi' EXIT

mkdir -p "$CLUSTER_RUN_DIR" "$LOGS" "$PIDS"
# What down.sh needs to undo this run: the binary cache (to find its processes) and the host's
# IPv4 forwarding setting (restored if anything changed it).
echo "$PYEXEC_CLUSTER_CACHE" >"$CLUSTER_RUN_DIR/cache-dir"
[ -f "$CLUSTER_RUN_DIR/ip_forward.orig" ] || cat /proc/sys/net/ipv4/ip_forward >"$CLUSTER_RUN_DIR/ip_forward.orig"
# Bridged pod-to-pod traffic must pass netfilter's IPv4 hooks for the NetworkPolicy enforcer.
BRIDGE_NF=/proc/sys/net/bridge/bridge-nf-call-iptables
[ -f "$BRIDGE_NF" ] || cdie "no $BRIDGE_NF: the kernel needs br_netfilter for NetworkPolicy between pods on the bridge"
[ -f "$CLUSTER_RUN_DIR/bridge-nf-call-iptables.orig" ] || cat "$BRIDGE_NF" >"$CLUSTER_RUN_DIR/bridge-nf-call-iptables.orig"
echo 1 >"$BRIDGE_NF"
bash "$HERE/pki.sh"

# start <name> <command...>: runs it in its own session, logs to $LOGS/<name>.log, pid file.
start() {
  local name=$1; shift
  if [ -d "${ACCT_CGROUP%/*}" ] && mkdir -p "$ACCT_CGROUP/$name" 2>/dev/null; then
    # Into its accounting cgroup before it execs, so that all its children are counted there too.
    set -- sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$ACCT_CGROUP/$name" "$@"
  fi
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}
# wait_for <what> <seconds> <command...>
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  local f
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || cdie "$what did not come up within ${secs}s"
    for f in "$PIDS"/*.pid; do
      kill -0 "$(cat "$f")" 2>/dev/null || cdie "$(basename "$f" .pid) exited (waiting for $what); see $LOGS/$(basename "$f" .pid).log"
    done
    sleep 0.2
  done
  clog "$what up ($(elapsed)s)"
}
alive() { local p; p=$(cat "$PIDS/$1.pid") && kill -0 "$p"; }

# --- network: the bridge pods attach to ---------------------------------------------------------
if ! ip link show "$CLUSTER_BRIDGE" >/dev/null 2>&1; then
  ip link add "$CLUSTER_BRIDGE" type bridge
fi
# A fixed MAC: a bridge without one takes the lowest MAC of its ports, which changes as sandbox
# pods come and go; the other pods' ARP entries for the node then go stale, and their traffic to
# the API server and the kubelet's probes stall for tens of seconds.
ip link set "$CLUSTER_BRIDGE" address "$CLUSTER_BRIDGE_MAC"
ip addr replace "$NODE_IP/${POD_SUBNET#*/}" dev "$CLUSTER_BRIDGE"
ip addr replace "$KUBERNETES_SERVICE_IP/32" dev "$CLUSTER_BRIDGE"
ip link set "$CLUSTER_BRIDGE" up
[ "$(cat /proc/sys/net/ipv4/ip_forward)" = 0 ] ||
  clog "warning: net.ipv4.ip_forward is 1 on this host; pods still have no route beyond their subnet"

# isGateway false: the bridge's address is set above, and a gateway bridge would also make the
# plugin switch on the host's IPv4 forwarding.
mkdir -p "$CLUSTER_RUN_DIR/cni/net.d" "$CLUSTER_RUN_DIR/cni/ipam"
cat >"$CLUSTER_RUN_DIR/cni/net.d/10-pyexec.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "pyexec",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CLUSTER_BRIDGE",
      "isGateway": false,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CLUSTER_RUN_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "$POD_RANGE_START", "rangeEnd": "$POD_RANGE_END", "gateway": "$NODE_IP"}]],
        "routes": []
      }
    }
  ]
}
EOF

# --- etcd ----------------------------------------------------------------------------------------
start etcd "$BIN_ETCD/etcd" --name pyexec --data-dir "$CLUSTER_RUN_DIR/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster pyexec=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
  --unsafe-no-fsync --quota-backend-bytes 1073741824 --log-level warn

# --- containerd (runc and gVisor) --------------------------------------------------------------------
mkdir -p "$CLUSTER_RUN_DIR/containerd" "$LOGS/runsc"
# runsc's and the shim's debug logs cost every sandbox's start and end CPU and disk writes, so
# they are written only when asked for (PYEXEC_CLUSTER_RUNSC_DEBUG=1, to diagnose a sandbox).
runsc_debug=
if [ "${PYEXEC_CLUSTER_RUNSC_DEBUG:-0}" = 1 ]; then
  runsc_debug="log_path = \"$LOGS/runsc/shim-%ID%.log\"
log_level = \"debug\""
  runsc_debug_log="  debug-log = \"$LOGS/runsc/%ID%/\""
fi
cat >"$CLUSTER_RUN_DIR/containerd/runsc.toml" <<EOF
# containerd-shim-runsc-v1 options. [runsc_config] keys are runsc flags without dashes.
binary_name = "$BIN_GVISOR/runsc"
root = "$CLUSTER_RUN_DIR/containerd/runsc-root"
$runsc_debug
[runsc_config]
  # No network inside the sandbox at all (docs/gvisor.md: nsjail cannot make a netns there).
  network = "none"
  platform = "systrap"
${runsc_debug_log:-}
EOF
cat >"$CLUSTER_RUN_DIR/containerd/config.toml" <<EOF
version = 2
root = "$CLUSTER_RUN_DIR/containerd/root"
state = "$CLUSTER_RUN_DIR/containerd/state"
# Some machines refuse a negative oom_score_adj even to root (see build-runsc-shim.sh).
oom_score = 0
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CLUSTER_RUN_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # Negative oom_score_adj is refused here: without this every pod sandbox fails under runc.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runsc.v1"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
        TypeUrl = "io.containerd.runsc.v1.options"
        ConfigPath = "$CLUSTER_RUN_DIR/containerd/runsc.toml"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CLUSTER_RUN_DIR/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF
# The runsc shim is found on PATH (the patched one, see build-runsc-shim.sh).
start containerd env PATH="$BIN_GVISOR_SHIM:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  containerd --config "$CLUSTER_RUN_DIR/containerd/config.toml"

wait_for etcd 30 curl -fsS http://127.0.0.1:2379/health
wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version

# The pause image must be there before the first pod (images.sh builds and caches it).
bash "$HERE/images.sh" pause
clog "pause image imported ($(elapsed)s)"

# --- control plane -----------------------------------------------------------------------------
start kube-apiserver "$BIN_K8S/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --secure-port="$APISERVER_PORT" --advertise-address="$NODE_IP" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --anonymous-auth=false --profiling=false
wait_for kube-apiserver 90 kc get --raw /readyz

start kube-controller-manager "$BIN_K8S/kube-controller-manager" \
  --kubeconfig="$KCFG/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$KCFG/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$KCFG/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --use-service-account-credentials=true --allocate-node-cidrs=false \
  --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
# The NetworkPolicy enforcer, before any pod exists: nftables rules (table inet
# $KNP_NFT_TABLE) queue the new connections of pods that a NetworkPolicy selects, and it drops
# what the policies do not allow (build-network-policies.sh says what was patched and why).
start kube-network-policies env KUBECONFIG="$ADMIN_KUBECONFIG" "$BIN_KNP/kube-network-policies" \
  --hostname-override="$NODE_NAME" --metrics-bind-address=127.0.0.1:9080 --v=1
start kube-scheduler "$BIN_K8S/kube-scheduler" \
  --kubeconfig="$KCFG/scheduler.kubeconfig" \
  --authentication-kubeconfig="$KCFG/scheduler.kubeconfig" \
  --authorization-kubeconfig="$KCFG/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --profiling=false

# --- kubelet -------------------------------------------------------------------------------------
mkdir -p "$CLUSTER_RUN_DIR/kubelet" "$CLUSTER_RUN_DIR/pod-logs"
: >"$CLUSTER_RUN_DIR/resolv.conf"
cat >"$CLUSTER_RUN_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
# cgroup v1 here, no systemd.
cgroupDriver: cgroupfs
cgroupRoot: /
cgroupsPerQOS: true
failSwapOn: false
# Some machines refuse a negative oom_score_adj (the kubelet's default -999 then only logs an error).
oomScoreAdj: 0
# Imported images cannot be pulled again: image GC never collects them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
podLogsDir: $CLUSTER_RUN_DIR/pod-logs
resolvConf: $CLUSTER_RUN_DIR/resolv.conf
clusterDomain: cluster.local
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 50
syncFrequency: 10s
fileCheckFrequency: 20s
nodeStatusUpdateFrequency: 10s
localStorageCapacityIsolation: true
EOF
start kubelet "$BIN_K8S/kubelet" --config="$CLUSTER_RUN_DIR/kubelet-config.yaml" \
  --kubeconfig="$KCFG/kubelet.kubeconfig" --root-dir="$CLUSTER_RUN_DIR/kubelet" \
  --cert-dir="$CLUSTER_RUN_DIR/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1

wait_for "node $NODE_NAME Ready" 120 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
wait_for "NetworkPolicy enforcer (nftables table $KNP_NFT_TABLE)" 60 nft list table inet "$KNP_NFT_TABLE"
for c in etcd containerd kube-apiserver kube-controller-manager kube-scheduler kube-network-policies kubelet; do
  alive "$c" || cdie "$c exited; see $LOGS/$c.log"
done

kc apply -f "$REPO/hack/kind/runtimeclass.yaml" >/dev/null
# Pods need the default service account before any can be created.
wait_for "default service account" 60 kc -n default get serviceaccount default
trap - EXIT
clog "cluster up in $(elapsed)s: export KUBECONFIG=$ADMIN_KUBECONFIG (kubectl: $KUBECTL_BIN)"
echo "$(elapsed)" >"$CLUSTER_RUN_DIR/bringup-seconds"
