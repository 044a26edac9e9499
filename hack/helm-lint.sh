#!/usr/bin/env bash
# Checks the Helm chart without a cluster: its CRD copy matches crds/, `helm lint --strict` passes,
# and tests/hermetic/chart.rs renders it with `helm template` for the default values and each toggle and
# reads the objects back into the Kubernetes types to assert what each toggle promises (and that
# settings the chart refuses are refused). Run by `make helm-lint`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=hack/lib.sh
. hack/lib.sh
HELM=${HELM:-.tools/bin/helm}
CARGO=${CARGO:-cargo}

[ -x "$HELM" ] || { echo "helm-lint: $HELM is missing: make helm" >&2; exit 1; }
if [ ! -f "$HELM_CHART/files/crds/pythonexecution.yaml" ]; then
  echo "helm-lint: $HELM_CHART/files/crds/pythonexecution.yaml is missing: make sync-chart-crd (after generating crds/)" >&2
  exit 1
fi
bash hack/sync-chart-crd.sh --check
"$HELM" lint --strict "$HELM_CHART" --namespace "$HELM_NAMESPACE"
HELM=$(realpath "$HELM") "$CARGO" test --locked --test chart
echo "helm-lint: chart CRD in sync, helm lint --strict clean, tests/hermetic/chart.rs passed"
