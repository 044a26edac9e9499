#!/usr/bin/env bash
# Checks the Helm chart without a cluster: its CRD copy matches crds/, `helm lint --strict` passes
# and `helm template` renders for the default values and for each toggle, with the resources
# each toggle promises; settings the chart refuses are refused. Run by `make helm-lint`.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM=${HELM:-.tools/bin/helm}
HELM_CHART=${HELM_CHART:-charts/pyexec}
RELEASE=pyexec
NAMESPACE=pyexec

[ -x "$HELM" ] || { echo "helm-lint: $HELM is missing: make helm" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
value_sets=0

fail() { echo "helm-lint: FAIL: $*" >&2; failures=$((failures + 1)); }

chart_crd=$HELM_CHART/files/crds/pythonexecution.yaml
if [ ! -f "$chart_crd" ]; then
  echo "helm-lint: FAIL: $chart_crd is missing: make sync-chart-crd (after generating crds/)" >&2
  exit 1
fi
bash hack/sync-chart-crd.sh --check || fail "the chart's CRD copy is stale"

# render NAME [helm flags...]: lint --strict and template with these values into $tmp/NAME.yaml.
render() {
  local name=$1; shift
  value_sets=$((value_sets + 1))
  if ! "$HELM" lint --strict --quiet "$HELM_CHART" --namespace "$NAMESPACE" "$@" >"$tmp/$name.lint" 2>&1; then
    cat "$tmp/$name.lint" >&2
    fail "$name: helm lint --strict"
  fi
  if ! "$HELM" template "$RELEASE" "$HELM_CHART" --namespace "$NAMESPACE" "$@" >"$tmp/$name.yaml" 2>"$tmp/$name.err"; then
    cat "$tmp/$name.err" >&2
    fail "$name: helm template"
  fi
}

# count NAME KIND: how many top-level objects of KIND the rendering NAME holds.
count() { grep -c "^kind: $2\$" "$tmp/$1.yaml" || true; }

# expect NAME KIND N: the rendering NAME holds exactly N objects of KIND.
expect() {
  local got
  got=$(count "$1" "$2")
  [ "$got" = "$3" ] || fail "$1: expected $3 $2, rendered $got"
}

# expect_line NAME TEXT: the rendering NAME has a line that is exactly TEXT (ignoring indentation).
expect_line() {
  sed -E 's/^[[:space:]]*(- )?//' "$tmp/$1.yaml" | grep -xF -- "$2" >/dev/null || fail "$1: no line '$2'"
}

# refuse NAME [helm flags...]: helm template must fail with these values.
refuse() {
  local name=$1; shift
  value_sets=$((value_sets + 1))
  if "$HELM" template "$RELEASE" "$HELM_CHART" --namespace "$NAMESPACE" "$@" >/dev/null 2>&1; then
    fail "$name: helm template accepted values it should refuse ($*)"
  fi
}

"$HELM" lint --strict "$HELM_CHART" --namespace "$NAMESPACE" || fail "defaults: helm lint --strict"

render defaults
for kind_count in CustomResourceDefinition:1 Namespace:1 NetworkPolicy:1 Deployment:2 Service:1 \
  ServiceAccount:2 Role:2 RoleBinding:2 RuntimeClass:0 ClusterRole:1 ClusterRoleBinding:1 \
  ValidatingAdmissionPolicy:1 ValidatingAdmissionPolicyBinding:1 ResourceQuota:1; do
  expect defaults "${kind_count%:*}" "${kind_count#*:}"
done
expect_line defaults 'helm.sh/resource-policy: keep'
expect_line defaults 'value: "pyexec-sandbox:dev"'
expect_line defaults 'command: ["pyexec", "serve", "--executor", "kubernetes"]'
expect_line defaults 'command: ["pyexec", "controller"]'
expect_line defaults 'value: "nsjail"'
# The admission policy: bound to the sandbox namespace, only the controller's service account,
# the sandbox image, the profile's three capabilities; the network probe is off.
expect_line defaults 'kubernetes.io/metadata.name: pyexec-sandbox'
expect_line defaults "expression: \"request.userInfo.username == 'system:serviceaccount:pyexec:pyexec-controller'\""
expect_line defaults "expression: \"object.spec.containers.all(c, c.image == 'pyexec-sandbox:dev')\""
expect_line defaults "c.securityContext.capabilities.add.all(a, !variables.probe && a in ['SYS_ADMIN', 'SETUID', 'SETGID'])))"
expect_line defaults "'' != '' && request.userInfo.username == '' &&"
expect_line defaults 'message: "a sandbox container is not privileged"'
# Fail closed on the runtime: the controller may read its one RuntimeClass, runs with gVisor.
expect_line defaults 'resourceNames: ["gvisor"]'
expect_line defaults 'value: "runsc"'
expect_line defaults 'pods: "64"'
# The restricted security context, on both pods and both containers.
for line_count in 'runAsNonRoot: true:4' 'type: RuntimeDefault:2' 'allowPrivilegeEscalation: false:2' \
  'readOnlyRootFilesystem: true:2' '- ALL:2'; do
  got=$(grep -cxE "[[:space:]]*${line_count%:*}" "$tmp/defaults.yaml" || true)
  [ "$got" = "${line_count##*:}" ] || fail "defaults: expected ${line_count##*:} lines '${line_count%:*}', rendered $got"
done

render no-crds --set crds.install=false
expect no-crds CustomResourceDefinition 0

render crds-not-kept --set crds.keep=false
expect crds-not-kept CustomResourceDefinition 1
grep -q 'helm.sh/resource-policy' "$tmp/crds-not-kept.yaml" && fail "crds-not-kept: still annotated keep"

render runtimeclass --set runtimeClass.create=true
expect runtimeclass RuntimeClass 1
expect_line runtimeclass 'handler: runsc'

render existing-namespace --set sandbox.namespace.create=false --set sandbox.namespace.name=executions
expect existing-namespace Namespace 0
expect_line existing-namespace 'namespace: executions'

render no-gvisor-no-policy --set sandbox.runtimeClassName= --set sandbox.withoutGvisor=true \
  --set sandbox.networkPolicy.enabled=false
expect no-gvisor-no-policy NetworkPolicy 0
expect no-gvisor-no-policy ClusterRole 0
expect_line no-gvisor-no-policy "(variables.probe ? '' : '')"

render no-admission-no-quota --set sandbox.admission.enabled=false --set sandbox.resourceQuota.enabled=false
expect no-admission-no-quota ValidatingAdmissionPolicy 0
expect no-admission-no-quota ValidatingAdmissionPolicyBinding 0
expect no-admission-no-quota ResourceQuota 0

render network-probe --set sandbox.admission.networkProbeUser=pyexec-admin
expect_line network-probe "'pyexec-admin' != '' && request.userInfo.username == 'pyexec-admin' &&"

render restricted --set sandbox.security=restricted
expect_line restricted "c.securityContext.capabilities.add.all(a, !variables.probe && a in [])))"

render privileged --set sandbox.security=privileged
grep -q 'a sandbox container is not privileged' "$tmp/privileged.yaml" && fail "privileged: the policy still refuses privileged"

render digests --set image.digest=sha256:0123 --set sandbox.image.digest=sha256:4567
expect_line digests 'image: "pyexec-service@sha256:0123"'
expect_line digests 'value: "pyexec-sandbox@sha256:4567"'

# Values files give floats: whole numbers must still reach the environment without an exponent.
printf 'sandbox:\n  limits:\n    maxMemoryMb: 1048576\n    timeoutSeconds: 2.5\n' >"$tmp/numbers-values.yaml"
render numbers -f "$tmp/numbers-values.yaml"
expect_line numbers 'value: "1048576"'
expect_line numbers 'value: "2.5"'

refuse sandbox-is-release-namespace --set sandbox.namespace.name=$NAMESPACE
refuse isolating-the-release --set sandbox.namespace.create=false --set sandbox.namespace.name=$NAMESPACE
refuse bad-log-format --set logFormat=xml
refuse bad-sandbox-security --set sandbox.security=root
refuse no-runtime-class-with-gvisor --set sandbox.runtimeClassName=

if [ "$failures" -ne 0 ]; then
  echo "helm-lint: $failures check(s) failed" >&2
  exit 1
fi
echo "helm-lint: chart CRD in sync; $value_sets value sets linted (--strict) and rendered or refused as expected"
