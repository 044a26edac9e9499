#!/usr/bin/env bash
# Builds the Kubernetes node and control-plane binaries from the Go module proxy at the pinned
# K8S_VERSION (hack/defaults.env) and caches them OUTSIDE the repository (CI clones afresh, the
# machine is reused):
#   $PYEXEC_CLUSTER_CACHE/kubernetes-<version>/bin/{kube-apiserver,kube-controller-manager,
#                                                  kube-scheduler,kubelet,kubectl}
# Builds those of the five that are missing (go_build_cached, hack/lib.sh). Prints the bin
# directory on stdout.
#
# k8s.io/kubernetes replaces each staging module (k8s.io/api, client-go, kubelet, cri-api, ...)
# with ./staging/..., which a consumer module cannot see; the consumer module's go.mod replaces
# each with its published v0.<minor>.<patch>, generated from that version's own go.mod (the same
# approach as aws/eks-distro's projects/kubernetes/kubernetes/1-34/go.mod).
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/../../hack/lib.sh"

# staging_replacements SRC: the replace block for the consumer module, from SRC/go.mod.
staging_replacements() {
  local staging_version="v0.${K8S_VERSION#v1.}"
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$1/go.mod"
  echo ")"
  build_log "k8s.io/kubernetes@$K8S_VERSION: $(grep -c '=> \./staging/' "$1/go.mod") staging modules replaced with $staging_version"
}

# The version stamps kubectl version / the kubelet report (hack/lib/version.sh's variables).
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ) -X $pkg.gitCommit=v0-proxy-$K8S_VERSION"
done
binaries=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do binaries+=("$b=k8s.io/kubernetes/cmd/$b"); done
go_build_cached --go-mod staging_replacements --tags providerless --ldflags "$ldflags" \
  "${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}/kubernetes-$K8S_VERSION" k8s.io/kubernetes "$K8S_VERSION" \
  "${binaries[@]}"
