#!/usr/bin/env bash
# A kind cluster with gVisor for pyexec's e2e suite, driven by hack/kind/cluster.mk (CLUSTER=kind):
#   hack/kind/cluster.sh up       create the kind cluster (kind-config.yaml), install runsc, RuntimeClass
#   hack/kind/cluster.sh images   docker build the sandbox and service images
#   hack/kind/cluster.sh load     load both images into the kind node
#   hack/kind/cluster.sh deploy   helm upgrade --install the chart into the current kubectl context
#   hack/kind/cluster.sh e2e      port-forward the API and run `cargo test --test e2e` against it
#                                 (only the cases whose names contain $E2E_TESTS when it is set)
# Settings come from the environment, with the defaults of hack/defaults.env (hack/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=hack/lib.sh
. hack/lib.sh

HELM=${HELM:-.tools/bin/helm}
KIND=${KIND:-.tools/bin/kind}
KUBECTL=${KUBECTL:-kubectl}
DOCKER=${DOCKER:-docker}
CARGO=${CARGO:-cargo}
KIND_CONFIG=${KIND_CONFIG:-kind-config.yaml}
SERVICE_IMAGE=${SERVICE_IMAGE:-$SERVICE_IMAGE_REPO:$IMAGE_TAG}
SANDBOX_IMAGE=${SANDBOX_IMAGE:-$SANDBOX_IMAGE_REPO:$IMAGE_TAG}
read -r -a DOCKER_BUILD_FLAGS <<<"${DOCKER_BUILD_FLAGS:-}"
# How long deploy waits for the release's pods, and e2e for the port-forward.
DEPLOY_TIMEOUT=${DEPLOY_TIMEOUT:-5m}
PORT_FORWARD_TIMEOUT_SECONDS=${PORT_FORWARD_TIMEOUT_SECONDS:-30}

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

need_docker() {
  command -v "$DOCKER" >/dev/null 2>&1 ||
    die "no '$DOCKER' command: building images and running kind need a Docker engine (none on this machine?)"
  "$DOCKER" info >/dev/null 2>&1 ||
    die "'$DOCKER info' failed: no Docker engine is reachable, so images cannot be built and kind cannot run here"
}

need_kubectl() {
  command -v "$KUBECTL" >/dev/null 2>&1 ||
    die "no '$KUBECTL' command: install kubectl (Docker Desktop ships one) or set KUBECTL=/path/to/kubectl"
}

kube() { "$KUBECTL" "$@"; }

cmd_up() {
  need_docker
  need_kubectl
  local context=kind-$KIND_CLUSTER
  if "$KIND" get clusters 2>/dev/null | grep -x "$KIND_CLUSTER" >/dev/null; then
    log "kind cluster $KIND_CLUSTER exists; checking its gVisor set-up"
  else
    "$KIND" create cluster --name "$KIND_CLUSTER" --config "$KIND_CONFIG" --wait 180s
  fi

  # runsc and its shim, built from the Go module proxy at gVisor's pinned version.
  local gvisor_bin
  gvisor_bin=$(bash hack/gvisor/build-runsc.sh)
  local node
  for node in $("$KIND" get nodes --name "$KIND_CLUSTER"); do
    "$DOCKER" exec "$node" grep -q 'runtimes.runsc' /etc/containerd/config.toml ||
      die "node $node has no runsc runtime in containerd's config: it predates kind-config.yaml; make cluster-down CLUSTER=kind first"
    log "installing runsc into $node"
    "$DOCKER" cp "$gvisor_bin/runsc" "$node:/usr/local/bin/runsc"
    "$DOCKER" cp "$gvisor_bin/containerd-shim-runsc-v1" "$node:/usr/local/bin/containerd-shim-runsc-v1"
    "$DOCKER" cp hack/kind/runsc.toml "$node:/etc/containerd/runsc.toml"
    "$DOCKER" exec "$node" chmod 0755 /usr/local/bin/runsc /usr/local/bin/containerd-shim-runsc-v1
    "$DOCKER" exec "$node" /usr/local/bin/runsc --version >&2
  done
  "$KUBECTL" --context "$context" apply -f hack/kind/runtimeclass.yaml

  # Proof that the handler works: a pod of the node's own pause image under gVisor.
  local probe=gvisor-check
  "$KUBECTL" --context "$context" delete pod "$probe" --ignore-not-found --wait=true >/dev/null
  "$KUBECTL" --context "$context" run "$probe" --restart=Never --image=registry.k8s.io/pause:3.10 \
    --image-pull-policy=IfNotPresent --overrides='{"apiVersion":"v1","spec":{"runtimeClassName":"gvisor"}}'
  if ! "$KUBECTL" --context "$context" wait --for=condition=Ready "pod/$probe" --timeout=120s; then
    "$KUBECTL" --context "$context" describe pod "$probe" >&2 || true
    die "a pod with runtimeClassName gvisor did not start: see the events above"
  fi
  "$KUBECTL" --context "$context" delete pod "$probe" --wait=false >/dev/null
  log "kind cluster $KIND_CLUSTER is up with gVisor (kubectl context $context)"
}

cmd_images() {
  need_docker
  export DOCKER_BUILDKIT=1
  "$DOCKER" build "${DOCKER_BUILD_FLAGS[@]}" -f images/sandbox/Dockerfile -t "$SANDBOX_IMAGE" .
  "$DOCKER" build "${DOCKER_BUILD_FLAGS[@]}" -f images/service/Dockerfile -t "$SERVICE_IMAGE" .
  log "built $SANDBOX_IMAGE and $SERVICE_IMAGE"
}

cmd_load() {
  need_docker
  "$KIND" load docker-image --name "$KIND_CLUSTER" "$SANDBOX_IMAGE" "$SERVICE_IMAGE"
}

cmd_deploy() {
  need_kubectl
  local restart=()
  # Same tag, new build: the image id in a pod annotation rolls the Deployments out again.
  local image_id
  if image_id=$("$DOCKER" image inspect --format '{{.Id}}' "$SERVICE_IMAGE" 2>/dev/null); then
    restart=(--set-string "api.podAnnotations.pyexec\.dev/image-id=${image_id#sha256:}"
      --set-string "controller.podAnnotations.pyexec\.dev/image-id=${image_id#sha256:}")
  fi
  # kind's kubeconfig user (kubeadm's admin certificate) runs the e2e suite's NetworkPolicy probe.
  chart_flags "${E2E_PROBE_USER:-kubernetes-admin}"
  "$HELM" upgrade --install "$HELM_RELEASE" "$HELM_CHART" "${CHART_FLAGS[@]}" \
    "${restart[@]}" --wait --timeout "$DEPLOY_TIMEOUT"
}

# What a failed e2e run leaves to read: executions, sandbox pods and their logs, the components' logs.
dump_cluster_state() {
  local api=$1 controller=$2
  log "e2e failed; cluster state follows"
  "$KUBECTL" -n "$SANDBOX_NAMESPACE" get pythonexecutions,pods -o wide >&2 || true
  "$KUBECTL" -n "$SANDBOX_NAMESPACE" get events --sort-by=.lastTimestamp >&2 || true
  local pod
  for pod in $("$KUBECTL" -n "$SANDBOX_NAMESPACE" get pods -o name 2>/dev/null); do
    log "--- $pod"
    "$KUBECTL" -n "$SANDBOX_NAMESPACE" logs "$pod" --tail=50 >&2 || true
  done
  log "--- controller"
  "$KUBECTL" -n "$HELM_NAMESPACE" logs "deployment/$controller" --tail=200 >&2 || true
  log "--- api"
  "$KUBECTL" -n "$HELM_NAMESPACE" logs "deployment/$api" --tail=100 >&2 || true
}

cmd_e2e() {
  need_kubectl
  command -v curl >/dev/null || die "curl is needed to wait for the port-forward"
  local api controller service token_secret url port pf_log
  service=$(release_object service api) || die "no API service of release $HELM_RELEASE: make cluster-deploy CLUSTER=kind first"
  api=$(release_object deployment api) || die "no API Deployment of release $HELM_RELEASE"
  controller=$(release_object deployment controller) || die "no controller Deployment of release $HELM_RELEASE"
  token_secret=$(api_token_secret)
  url=http://127.0.0.1:$E2E_PORT
  port=$("$KUBECTL" -n "$HELM_NAMESPACE" get service "$service" -o jsonpath='{.spec.ports[0].port}')
  pf_log=$(mktemp)
  "$KUBECTL" -n "$HELM_NAMESPACE" port-forward "service/$service" "$E2E_PORT:$port" >"$pf_log" 2>&1 &
  local pf_pid=$!
  # shellcheck disable=SC2064 # expand now: the pid and file are known.
  trap "kill $pf_pid 2>/dev/null || true; rm -f '$pf_log'" EXIT

  local deadline=$((SECONDS + PORT_FORWARD_TIMEOUT_SECONDS))
  until curl -fsS -o /dev/null "$url/healthz" 2>/dev/null; do
    if ! kill -0 "$pf_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      cat "$pf_log" >&2
      die "the API did not answer on $url/healthz within ${PORT_FORWARD_TIMEOUT_SECONDS}s"
    fi
    sleep 0.5
  done
  log "API reachable on $url; running the e2e suite"

  if ! env "PYEXEC_E2E_URL=$url" \
    "PYEXEC_E2E_NAMESPACE=$SANDBOX_NAMESPACE" \
    "PYEXEC_E2E_CONTROLLER_NAMESPACE=$HELM_NAMESPACE" \
    "PYEXEC_E2E_CONTROLLER_DEPLOYMENT=$controller" \
    "PYEXEC_E2E_RUNTIME_CLASS=$CLUSTER_RUNTIME_CLASS" \
    ${token_secret:+"PYEXEC_E2E_API_TOKEN_SECRET=$token_secret"} \
    "$CARGO" test --locked --test e2e -- --ignored --test-threads=1 ${E2E_TESTS:+"$E2E_TESTS"}; then
    dump_cluster_state "$api" "$controller"
    exit 1
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  images) cmd_images ;;
  load) cmd_load ;;
  deploy) cmd_deploy ;;
  e2e) cmd_e2e ;;
  *) echo "usage: $0 up|images|load|deploy|e2e" >&2; exit 2 ;;
esac
