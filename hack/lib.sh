# Shared by hack/cluster.sh (kind) and hack/cluster/config.sh (the local cluster): the defaults
# and the names of the release's objects. The sourcing script defines kube(), its kubectl.
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

load_defaults
