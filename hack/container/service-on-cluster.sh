#!/usr/bin/env bash
# `make container-cluster-test`: the service image run by podman outside the cluster, the way
# images/README.md tells a Docker user to point it at a cluster (host network, the kubeconfig
# mounted): it must become ready against the running cluster (make cluster-up cluster-images
# cluster-deploy) and answer the documented contract, its executions run by the cluster's
# controller in sandbox pods. podman is configured for this run only (hack/container/
# podman-conf.sh); the container and its configuration are removed on exit, failure included.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/cluster/config.sh
. "$REPO/ci/cluster/config.sh"
log() { printf '[container-cluster-test] %s\n' "$*" >&2; }
fail() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (podman runs the container as root)"
command -v podman >/dev/null || fail "podman is missing: make container-test installs it"
[ -f "$ADMIN_KUBECONFIG" ] || fail "the cluster is not up (make cluster-up cluster-images cluster-deploy)"
image="$SERVICE_IMAGE_REPO"
podman image exists "$image" || buildah tag "$(qualify "$SERVICE_IMAGE_REPO:$IMAGE_TAG")" "$image" >/dev/null \
  || fail "no $image image (make cluster-images)"

work=$(mktemp -d /var/tmp/pyexec-podman.XXXXXX)
# shellcheck source=hack/container/podman-conf.sh
. "$HERE/podman-conf.sh"
podman_conf "$work"
name=pyexec-service-on-cluster-$$
cleanup() {
  local status=$?
  podman rm --force --time 5 "$name" >/dev/null 2>&1 || true
  podman_cgroups_remove
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The image's user (65532) reads the mounted kubeconfig.
install -m 0644 "$ADMIN_KUBECONFIG" "$work/kubeconfig"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
# The README's command (images/README.md, "The service image outside the cluster"), on a free port.
podman run --detach --name "$name" --network host \
  -v "$work/kubeconfig:/kubeconfig:ro" -e KUBECONFIG=/kubeconfig \
  "$image" pyexec serve --executor kubernetes --kube-namespace "$SANDBOX_NAMESPACE" --listen "127.0.0.1:$port" >/dev/null
started=$(date +%s)
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ]; do
  [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || { podman logs "$name" >&2; fail "the container exited"; }
  [ $(($(date +%s) - started)) -lt 60 ] || { podman logs "$name" >&2; fail "not ready within 60 s"; }
  sleep 0.5
done
log "ready against the cluster in $(($(date +%s) - started)) s"

post() { curl -s -H 'Content-Type: application/json' -d "$1" "$url/execute" -w '\n%{http_code}'; }
expect() { # expect <what> <answer> <needle>
  grep -qF -- "$3" <<<"$2" || { podman logs "$name" >&2; fail "$1: expected $3 in: $2"; }
}
answer=$(post '{"script": "def main():\n    return {\"message\": \"hello from the cluster\"}\n"}')
expect "hello" "$answer" '"result":{"message":"hello from the cluster"}'
expect "hello" "$answer" $'\n200'
answer=$(post '{"script": "import pandas as pd\ndef main():\n    return {\"sum\": int(pd.Series([1, 2, 3]).sum())}\n"}')
expect "pandas" "$answer" '"result":{"sum":6}'
answer=$(post '{"script": "x = 1\n"}')
expect "no main()" "$answer" '{"error":"Script must contain a '"'"'main()'"'"' function."}'
expect "no main()" "$answer" $'\n400'
# The service ran the Kubernetes executor: its start-up log says so. The log is read whole before
# it is searched (`grep -q` in a pipe would end early and fail the pipe with SIGPIPE).
logs=$(podman logs "$name" 2>&1)
grep -F 'kubernetes executor ready' <<<"$logs" >/dev/null \
  || { printf '%s\n' "$logs" >&2; fail "the service did not say it runs on Kubernetes"; }
podman stop --time 10 "$name" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "stopped with exit code $code"
log "passed: the service image answered hello, pandas and no-main through the cluster"
