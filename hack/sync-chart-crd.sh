#!/usr/bin/env bash
# Copies the generated CRD (crds/pythonexecution.yaml, from `pyexec crd`) into the Helm chart,
# which can only read files inside its own directory (charts/pyexec/files/crds/).
#   hack/sync-chart-crd.sh           copy it
#   hack/sync-chart-crd.sh --check   fail, with a diff, unless the two are identical (for tests)
set -euo pipefail
cd "$(dirname "$0")/.."

source_crd=crds/pythonexecution.yaml
chart_crd=charts/pyexec/files/crds/pythonexecution.yaml

if [ ! -f "$source_crd" ]; then
  echo "sync-chart-crd: $source_crd is missing; generate it first (pyexec crd > $source_crd)" >&2
  exit 1
fi

case "${1:-}" in
  --check)
    if ! diff -u "$source_crd" "$chart_crd" >&2; then
      echo "sync-chart-crd: $chart_crd differs from $source_crd; run hack/sync-chart-crd.sh" >&2
      exit 1
    fi
    ;;
  "")
    mkdir -p "$(dirname "$chart_crd")"
    cp "$source_crd" "$chart_crd"
    echo "sync-chart-crd: copied $source_crd to $chart_crd" >&2
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
