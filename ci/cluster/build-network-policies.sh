#!/usr/bin/env bash
# Builds the cluster's NetworkPolicy enforcer, sigs.k8s.io/kube-network-policies (the one kind
# ships: nftables rules send each pod's new connections to an NFQUEUE, a user-space program
# evaluates the NetworkPolicies and accepts or drops), from the Go module proxy at a pinned
# KNP_VERSION (hack/defaults.env), and caches it OUTSIDE the repository (go_build_cached, hack/lib.sh):
#   $PYEXEC_CLUSTER_CACHE/kube-network-policies-<version>-pyexec/bin/kube-network-policies
# up.sh runs it as a host process (its pid file, its log; down.sh stops it and removes its
# nftables table). Three changes to the upstream source, each checked before it is applied:
#  1. This kernel has no nftables `queue` expression (CONFIG_NFT_QUEUE is not set: adding such a
#     rule fails with "no such file or directory") but has nft_compat and xtables' NFQUEUE target
#     (CONFIG_NETFILTER_XT_TARGET_NFQUEUE=y), which is what iptables-nft uses for -j NFQUEUE: the
#     rules use that target (revision 3, one queue, bypass only with --fail-open) instead.
#  2. On this single-node cluster the API server, the kubelet and the `kubernetes` service IP are
#     addresses of the node itself, so a pod's traffic to them takes the INPUT hook, never the
#     POSTROUTING hook upstream filters on: the same rules are added to an `input` chain too.
#  3. It runs outside the cluster: its API server connection comes from $KUBECONFIG instead of
#     the in-cluster service account.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/../../hack/lib.sh"

# patch FILE PERL-SUBSTITUTION MARKER: applies the substitution and checks that MARKER is then there.
patch() {
  local file=$1 subst=$2 marker=$3
  perl -0pi -e "$subst" "$file"
  grep -qF -- "$marker" "$file" || { build_log "patching $file failed (upstream changed?): no '$marker'"; exit 1; }
}

# patch_source SRC: the three changes, in a writable copy of the module's source.
patch_source() {
  local pkg="$1/pkg/networkpolicy"
  command -v perl >/dev/null || { build_log "perl is needed to patch the source"; exit 1; }

  # 1. The xtables NFQUEUE target instead of the nftables queue expression.
  cat >"$pkg/pyexec_nfqueue.go" <<'GO'
package networkpolicy

// Added by pyexec's ci/cluster/build-network-policies.sh: kernels without CONFIG_NFT_QUEUE
// refuse the nftables queue expression; nft_compat's xtables NFQUEUE target does the same.

import (
	"encoding/binary"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// nfqueueTarget sends the packet to queue num (struct xt_NFQ_info_v3: queuenum, queues_total,
// flags; NFQ_FLAG_BYPASS accepts packets while no program listens on the queue).
func nfqueueTarget(num uint16, bypass bool) expr.Any {
	info := make([]byte, 8) // XT_ALIGN(6)
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	if bypass {
		binary.NativeEndian.PutUint16(info[4:], 1)
	}
	payload := xt.Unknown(info)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &payload}
}
GO
  patch "$pkg/controller.go" \
    's/queue := &expr\.Queue\{Num: uint16\(c\.config\.QueueID\)\}\n\s*if c\.config\.FailOpen \{\n\s*queue\.Flag = expr\.QueueFlagBypass\n\s*\}/queue := nfqueueTarget(uint16(c.config.QueueID), c.config.FailOpen)/g' \
    'queue := nfqueueTarget(uint16(c.config.QueueID), c.config.FailOpen)'
  patch "$pkg/dnsagent.go" \
    's/&expr\.Queue\{Num: uint16\(n\.nfQueueID\), Flag: expr\.QueueFlagBypass\}/nfqueueTarget(uint16(n.nfQueueID), true)/g' \
    'nfqueueTarget(uint16(n.nfQueueID), true)'
  if grep -n 'expr\.Queue' "$pkg"/*.go | grep -v _test.go; then build_log "an nftables queue expression is left"; exit 1; fi

  # 2. The postrouting chain's rules in an input chain as well.
  patch "$pkg/controller.go" \
    's/\tchain := nft\.AddChain\(&nftables\.Chain\{\n(\t\tName:     "postrouting",\n.*?\n\t\}\)\n)/\tpostrouting := nft.AddChain(&nftables.Chain{\n$1\t\/\/ pyexec: traffic to the node itself (API server, kubelet) takes the input hook.\n\tinput := nft.AddChain(&nftables.Chain{Name: "input", Table: table, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})\n\tfor _, chain := range []*nftables.Chain{postrouting, input} {\n/s' \
    'for _, chain := range []*nftables.Chain{postrouting, input} {'
  patch "$pkg/controller.go" \
    's/\n(\tif c\.config\.NetfilterBug1766Fix \{\n\t\tc\.addDNSRacersWorkaroundRules\(nft, table\)\n\t\})/\n\t} \/\/ pyexec: end of the chains loop\n\n$1/' \
    '} // pyexec: end of the chains loop'

  # 3. $KUBECONFIG instead of the in-cluster configuration.
  patch "$1/cmd/main.go" \
    's/config, err := rest\.InClusterConfig\(\)/config, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))/' \
    'clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))'
  patch "$1/cmd/main.go" 's#"k8s.io/client-go/rest"#"k8s.io/client-go/tools/clientcmd"#' '"k8s.io/client-go/tools/clientcmd"'
}

# go 1.24: Go 1.24's GODEBUG defaults (ML-KEM TLS key exchange, no RSA keys under 1024 bits, ...),
# not those of the module's own go 1.23.0.
go_build_cached --go 1.24 --patch patch_source \
  "${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}/kube-network-policies-$KNP_VERSION-pyexec" \
  sigs.k8s.io/kube-network-policies "$KNP_VERSION" kube-network-policies=sigs.k8s.io/kube-network-policies/cmd
