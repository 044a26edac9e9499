#!/usr/bin/env bash
# Installs charts/pyexec into the local cluster with the local images (make cluster-deploy).
# CLUSTER_RUNTIME_CLASS picks the sandbox pods' RuntimeClass: gvisor (default) or "" for runc
# (then with sandbox.withoutGvisor=true, which the controller requires to run without gVisor).
# The cluster admin (pyexec-admin, pki.sh) may create the e2e suite's NetworkPolicy probe pod in
# the sandbox namespace (sandbox.admission.networkProbeUser; tests/cluster/e2e.rs).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/cluster/config.sh
. "$HERE/config.sh"
HELM=${HELM:-$REPO/.tools/bin/helm}
DEPLOY_TIMEOUT=${DEPLOY_TIMEOUT:-5m}
E2E_PROBE_USER=${E2E_PROBE_USER:-pyexec-admin}
case "$HELM_CHART" in /*) chart=$HELM_CHART ;; *) chart=$REPO/$HELM_CHART ;; esac
[ -x "$HELM" ] || cdie "no helm at $HELM (make helm)"
[ -f "$ADMIN_KUBECONFIG" ] || cdie "the cluster is not up (make cluster-up)"
export KUBECONFIG=$ADMIN_KUBECONFIG
# Nothing can be pulled here: both images must have been imported (make cluster-images).
for ref in "$(qualify "$SERVICE_IMAGE_REPO:$IMAGE_TAG")" "$(qualify "$SANDBOX_IMAGE_REPO:$IMAGE_TAG")"; do
  ctr_k8s images ls -q | grep -xF "$ref" >/dev/null || cdie "image $ref is not in the cluster's containerd: make cluster-images first"
done

# Same tag, new build: the image id in a pod annotation rolls the Deployments out again.
image_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$(qualify "$SERVICE_IMAGE_REPO:$IMAGE_TAG")" 2>/dev/null | cut -c1-16 || true)
start=$(date +%s)
chart_flags "$E2E_PROBE_USER"
"$HELM" upgrade --install "$HELM_RELEASE" "$chart" "${CHART_FLAGS[@]}" \
  --set-string image.pullPolicy=Never --set-string sandbox.image.pullPolicy=Never \
  --set-string "api.podAnnotations.pyexec\.dev/image-id=${image_id:-none}" \
  --set-string "controller.podAnnotations.pyexec\.dev/image-id=${image_id:-none}" \
  --timeout "$DEPLOY_TIMEOUT"
# Not `helm --wait`: a controller whose /readyz does not turn ready would keep the release from
# becoming ready although executions run. The API must be Ready; the controller must have started,
# and a controller that is not Ready 60 s later is reported, not fatal.
api=$(release_object deployment api) || cdie "the release has no API Deployment"
controller=$(release_object deployment controller) || cdie "the release has no controller Deployment"
kc -n "$HELM_NAMESPACE" rollout status "deployment/$api" --timeout="$DEPLOY_TIMEOUT"
deadline=$(( $(date +%s) + 300 ))
until [ "$(kc -n "$HELM_NAMESPACE" get deployment "$controller" -o jsonpath='{.status.updatedReplicas}')" = 1 ] &&
  kc -n "$HELM_NAMESPACE" get pods -l app.kubernetes.io/component=controller \
    -o jsonpath='{range .items[*]}{.metadata.deletionTimestamp}{"/"}{.status.containerStatuses[0].started}{"\n"}{end}' | grep -x '/true' >/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || cdie "the controller pod did not start"
  sleep 1
done
kc -n "$HELM_NAMESPACE" wait --for=condition=Ready pod -l app.kubernetes.io/component=controller --timeout=60s >/dev/null 2>&1 ||
  clog "warning: the controller runs but its readiness probe (/readyz) fails; continuing"
clog "deployed release $HELM_RELEASE (sandbox runtime class '${CLUSTER_RUNTIME_CLASS}') in $(( $(date +%s) - start ))s"
kc -n "$HELM_NAMESPACE" get pods -o wide
