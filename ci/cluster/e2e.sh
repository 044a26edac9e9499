#!/usr/bin/env bash
# Runs the e2e suite (tests/cluster/e2e.rs) against the chart deployed in the local cluster
# (make cluster-e2e): port-forwards the API to 127.0.0.1:$E2E_PORT, runs
# `cargo test --test e2e -- --ignored --test-threads=1` (only the cases whose names contain
# $E2E_TESTS when it is set, and then not the Python client's cases), and on failure prints the
# executions, sandbox pods, events, pod logs and the controller's and API's logs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/cluster/config.sh
. "$HERE/config.sh"
CARGO=${CARGO:-cargo}
# The Python client's contract cases run against the cluster too (pytest -k).
CLIENT_CLUSTER_CASES=${CLIENT_CLUSTER_CASES:-"dict_is_the_result or prints_inside_main or without_main_is_no_main or syntax"}
[ -f "$ADMIN_KUBECONFIG" ] || cdie "the cluster is not up (make cluster-up)"
export KUBECONFIG=$ADMIN_KUBECONFIG
api=$(release_object deployment api) || cdie "no API Deployment of release $HELM_RELEASE (make cluster-deploy)"
controller=$(release_object deployment controller) || cdie "no controller Deployment of release $HELM_RELEASE"
token_secret=$(api_token_secret)

dump() {
  clog "e2e failed; cluster state follows"
  kc -n "$SANDBOX_NAMESPACE" get pythonexecutions,pods -o wide >&2 || true
  kc -n "$SANDBOX_NAMESPACE" get events --sort-by=.lastTimestamp >&2 || true
  local pod
  for pod in $(kc -n "$SANDBOX_NAMESPACE" get pods -o name 2>/dev/null); do
    echo "--- $pod" >&2; kc -n "$SANDBOX_NAMESPACE" logs "$pod" --tail=50 >&2 || true
  done
  echo "--- controller" >&2; kc -n "$HELM_NAMESPACE" logs "deployment/$controller" --tail=200 >&2 || true
  echo "--- api" >&2; kc -n "$HELM_NAMESPACE" logs "deployment/$api" --tail=100 >&2 || true
  echo "--- kubelet (last 40 lines)" >&2; tail -n 40 "$LOGS/kubelet.log" >&2 || true
}

bash "$HERE/port-forward.sh" start
trap 'bash "$HERE/port-forward.sh" stop' EXIT
clog "running the e2e suite against http://127.0.0.1:$E2E_PORT (runtime class '${CLUSTER_RUNTIME_CLASS}')"
start=$(date +%s)
set +e
env "PYEXEC_E2E_URL=http://127.0.0.1:$E2E_PORT" \
  "PYEXEC_E2E_NAMESPACE=$SANDBOX_NAMESPACE" \
  "PYEXEC_E2E_CONTROLLER_NAMESPACE=$HELM_NAMESPACE" \
  "PYEXEC_E2E_CONTROLLER_DEPLOYMENT=$controller" \
  "PYEXEC_E2E_RUNTIME_CLASS=$CLUSTER_RUNTIME_CLASS" \
  ${token_secret:+"PYEXEC_E2E_API_TOKEN_SECRET=$token_secret"} \
  "$CARGO" test --locked --test e2e -- --ignored --test-threads=1 ${E2E_TESTS:+"$E2E_TESTS"}
rc=$?
set -e
clog "e2e suite finished in $(( $(date +%s) - start ))s (exit $rc)"
[ "$rc" = 0 ] || { dump; exit "$rc"; }

# The Python client's contract cases that hold in either placement, against the cluster's API
# (the client test environment comes from make client-test, which make test runs first).
if [ -n "${E2E_TESTS:-}" ]; then
  clog "E2E_TESTS=$E2E_TESTS picked the cases: the Python client's cluster cases are skipped"
elif [ -x "$REPO/.venv-client/bin/pytest" ]; then
  token=""
  [ -z "$token_secret" ] || token=$(kc -n "$HELM_NAMESPACE" get secret "$token_secret" -o jsonpath='{.data.token}' | base64 -d)
  clog "running the Python client's placement-independent contract cases against the cluster's API"
  (cd "$REPO/clients/python" && env "PYEXEC_CLIENT_TEST_URL=http://127.0.0.1:$E2E_PORT" "PYEXEC_TOKEN=$token" \
    "$REPO/.venv-client/bin/pytest" -q tests/test_contract.py -k "$CLIENT_CLUSTER_CASES") || { dump; exit 1; }
else
  clog "no .venv-client (make client-test makes it): the Python client's cluster cases are skipped"
fi
