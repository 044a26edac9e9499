#!/usr/bin/env bash
# Builds the Kubernetes node and control-plane binaries from the Go module proxy at a pinned
# version and caches them OUTSIDE the repository (CI clones afresh, the machine is reused):
#   $PYEXEC_CLUSTER_CACHE/kubernetes-<version>/bin/{kube-apiserver,kube-controller-manager,
#                                                  kube-scheduler,kubelet,kubectl}
# Skipped when all five are there. Prints the bin directory on stdout.
#
# k8s.io/kubernetes replaces each staging module (k8s.io/api, client-go, kubelet, cri-api, ...)
# with ./staging/..., which a consumer module cannot see; the consumer module written here
# replaces each with its published v0.<minor>.<patch>, generated from that version's own go.mod
# (the same approach as aws/eks-distro's projects/kubernetes/kubernetes/1-34/go.mod).
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.34.4}
CACHE_ROOT=${PYEXEC_CLUSTER_CACHE:-/var/cache/pyexec-cluster}
out="$CACHE_ROOT/kubernetes-$K8S_VERSION/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
log() { printf '[build-k8s] %s\n' "$*" >&2; }

missing=()
for b in "${BINARIES[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  log "reusing $out"
  echo "$out"; exit 0
fi
command -v go >/dev/null || { log "go is not installed"; exit 1; }
start=$(date +%s)
mkdir -p "$out"
work="$CACHE_ROOT/kubernetes-$K8S_VERSION/module"
mkdir -p "$work"

# The staging replace list, from the module's own go.mod.
upstream_mod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$upstream_mod" ] || { log "could not download the go.mod of k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
staging_version="v0.${K8S_VERSION#v1.}"
{
  echo "module pyexec.dev/cluster-build"
  echo
  grep -E '^go [0-9]' "$upstream_mod"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$upstream_mod"
  echo ")"
} >"$work/go.mod"
count=$(grep -c '=> k8s.io' "$work/go.mod")
log "k8s.io/kubernetes@$K8S_VERSION: $count staging modules replaced with $staging_version"
# Resolve the rest of the graph as k8s.io/kubernetes pins it (minimal version selection).
(cd "$work" && GOFLAGS=-mod=mod go mod download k8s.io/kubernetes >/dev/null &&
  GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$K8S_VERSION" >&2)

# The version stamps kubectl version / the kubelet report (hack/lib/version.sh's variables).
gitmajor=1
gitminor=$(echo "$K8S_VERSION" | cut -d. -f2)
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$gitmajor -X $pkg.gitMinor=$gitminor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=v0-proxy-$K8S_VERSION"
done
tmpbin=$(mktemp -d); trap 'rm -rf "$tmpbin"' EXIT
for b in "${missing[@]}"; do
  log "building $b $K8S_VERSION"
  t0=$(date +%s)
  (cd "$work" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" \
    go build -trimpath -tags providerless -ldflags "$ldflags" -o "$tmpbin/$b" "k8s.io/kubernetes/cmd/$b")
  install -m 0755 "$tmpbin/$b" "$out/$b"
  log "built $b in $(( $(date +%s) - t0 ))s"
done
echo "$K8S_VERSION" >"$out/../VERSION"
log "built ${missing[*]} in $(( $(date +%s) - start ))s into $out"
echo "$out"
