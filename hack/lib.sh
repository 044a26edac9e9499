# Shared by hack/kind/cluster.sh (the kind cluster) and ci/cluster/config.sh (the packaged
# cluster): the defaults and the names of the release's objects. The sourcing script defines
# kube(), its kubectl. Also sourced by the binary builds (ci/cluster/build-*.sh,
# hack/gvisor/build-runsc.sh), for the version pins of hack/defaults.env and go_build_cached.
# shellcheck shell=bash

# Sets each KEY of hack/defaults.env that the environment does not set (an empty value counts as
# set: CLUSTER_RUNTIME_CLASS= means runc), and exports it.
load_defaults() {
  local key value
  while IFS='=' read -r key value; do
    [[ $key =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
    [ -n "${!key+set}" ] || export "$key=$value"
  done <"$(dirname "${BASH_SOURCE[0]}")/defaults.env"
}

# release_object KIND COMPONENT: the name of the release's one KIND of that component, found by
# the chart's labels in $HELM_NAMESPACE (so no copy of the chart's naming rules lives here).
release_object() {
  local names
  names=$(kube -n "$HELM_NAMESPACE" get "$1" -o name \
    -l "app.kubernetes.io/name=pyexec,app.kubernetes.io/instance=$HELM_RELEASE,app.kubernetes.io/component=$2") || return 1
  [ -n "$names" ] && [ "$(wc -l <<<"$names")" = 1 ] ||
    { echo "release $HELM_RELEASE in $HELM_NAMESPACE: expected one $1 of component $2, found '${names//$'\n'/ }'" >&2; return 1; }
  echo "${names#*/}"
}

# The Secret the API reads its bearer token from, as its Deployment mounts it.
api_token_secret() {
  kube -n "$HELM_NAMESPACE" get deployment "$(release_object deployment api)" \
    -o jsonpath='{.spec.template.spec.volumes[?(@.name=="api-token")].secret.secretName}'
}

# chart_flags PROBE_USER: sets CHART_FLAGS to the `helm upgrade --install` flags both paths deploy
# with (everything else is the chart's own default, charts/pyexec/values.yaml): the release
# namespace, the images, the sandbox namespace and RuntimeClass (empty: runc, so without gVisor),
# and the user the e2e suite's NetworkPolicy probe pod is admitted for.
chart_flags() {
  local without_gvisor=false
  [ -n "$CLUSTER_RUNTIME_CLASS" ] || without_gvisor=true
  CHART_FLAGS=(--namespace "$HELM_NAMESPACE" --create-namespace
    --set-string "image.repository=$SERVICE_IMAGE_REPO" --set-string "image.tag=$IMAGE_TAG"
    --set-string "sandbox.image.repository=$SANDBOX_IMAGE_REPO" --set-string "sandbox.image.tag=$IMAGE_TAG"
    --set-string "sandbox.namespace.name=$SANDBOX_NAMESPACE"
    --set-string "sandbox.runtimeClassName=$CLUSTER_RUNTIME_CLASS" --set "sandbox.withoutGvisor=$without_gvisor"
    --set-string "sandbox.admission.networkProbeUser=$1")
}

# build_log MESSAGE: MESSAGE on stderr, tagged with the running script's name.
build_log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# go_build_cached [--go GO_VERSION] [--go-mod FUNC] [--patch FUNC] [--ldflags FLAGS] [--tags TAGS]
#   DIR MODULE VERSION BINARY=PACKAGE...
# Builds each PACKAGE of MODULE at VERSION from the Go module proxy into DIR/bin/BINARY, unless that
# is there already, and prints DIR/bin on stdout. DIR is a cache OUTSIDE the repository (under
# $PYEXEC_CLUSTER_CACHE: CI clones afresh, the machine is reused). The build runs in a consumer
# module, DIR/module, whose go.mod requires MODULE at VERSION, so MODULE's own requirements pin the
# rest (minimal version selection), and has MODULE's own go line, so the binaries get the GODEBUG
# defaults MODULE's authors chose (as `go install PACKAGE@VERSION` would). The binaries are static
# (CGO off), -trimpath, -s -w.
#   --go GO_VERSION  that go line instead (newer GODEBUG defaults than MODULE's)
#   --go-mod FUNC    FUNC SRC prints more lines for that go.mod (SRC: MODULE's source, read only)
#   --patch FUNC     the build uses a copy of MODULE's source (DIR/src, through a replace directive;
#                    removed afterwards), which FUNC SRC_COPY patches first
#   --ldflags FLAGS  linker flags besides -s -w (-X version stamps)
#   --tags TAGS      build tags
# Call it directly under `set -e`, not inside $(...), so that a failed step stops the script.
go_build_cached() {
  local go_version="" go_mod_hook="" patch_hook="" ldflags="-s -w" tags=""
  while [ $# -gt 0 ]; do
    case $1 in
      --go) go_version=$2 ;;
      --go-mod) go_mod_hook=$2 ;;
      --patch) patch_hook=$2 ;;
      --ldflags) ldflags+=" $2" ;;
      --tags) tags=$2 ;;
      *) break ;;
    esac
    shift 2
  done
  local dir=$1 module=$2 version=$3
  shift 3
  local out=$dir/bin missing=() bin start t0 src
  for bin in "$@"; do [ -x "$out/${bin%%=*}" ] || missing+=("$bin"); done
  if [ ${#missing[@]} -eq 0 ]; then build_log "reusing $out"; echo "$out"; return 0; fi
  command -v go >/dev/null || { build_log "go is not installed"; return 1; }
  start=$(date +%s)
  mkdir -p "$out" "$dir/module"
  local head="module pyexec.dev/$(basename "$0" .sh)"
  echo "$head" >"$dir/module/go.mod"
  src=$(cd "$dir/module" && GOFLAGS=-mod=mod go mod download -json "$module@$version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || { build_log "could not download $module@$version"; return 1; }
  [ -n "$go_version" ] || go_version=$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' "$src/go.mod")
  printf '%s\n\ngo %s\n\nrequire %s %s\n' "$head" "${go_version:?no go line in the go.mod of $module}" \
    "$module" "$version" >"$dir/module/go.mod"
  if [ -n "$go_mod_hook" ]; then "$go_mod_hook" "$src" >>"$dir/module/go.mod"; fi
  if [ -n "$patch_hook" ]; then
    rm -rf "$dir/src"
    cp -r "$src" "$dir/src"
    chmod -R u+w "$dir/src"
    "$patch_hook" "$dir/src"
    printf '\nreplace %s => ../src\n' "$module" >>"$dir/module/go.mod"
  fi
  (cd "$dir/module" && GOFLAGS=-mod=mod go get "$module@$version" >&2)
  rm -rf "$dir/staging"
  for bin in "${missing[@]}"; do
    build_log "building ${bin%%=*} from ${bin#*=}@$version"
    t0=$(date +%s)
    (cd "$dir/module" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -tags "$tags" \
      -ldflags "$ldflags" -o "$dir/staging/${bin%%=*}" "${bin#*=}")
    install -m 0755 "$dir/staging/${bin%%=*}" "$out/${bin%%=*}"
    build_log "built ${bin%%=*} in $(($(date +%s) - t0))s"
  done
  rm -rf "$dir/staging" "$dir/src"
  echo "$version" >"$dir/VERSION"
  build_log "built $module@$version in $(($(date +%s) - start))s into $out"
  echo "$out"
}

load_defaults
