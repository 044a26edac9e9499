#!/usr/bin/env bash
# port-forward.sh start|stop: kubectl port-forward of the API service to 127.0.0.1:$E2E_PORT,
# tracked by a pid file in the run directory; start waits until /healthz answers.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/cluster/config.sh
. "$HERE/config.sh"
pidfile=$PIDS/port-forward.pid
case "${1:-}" in
  start)
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && exit 0
    service=$(release_object service api) || cdie "no API service of release $HELM_RELEASE (make cluster-deploy)"
    port=$(kc -n "$HELM_NAMESPACE" get service "$service" -o jsonpath='{.spec.ports[0].port}')
    setsid "$KUBECTL_BIN" --kubeconfig "$ADMIN_KUBECONFIG" -n "$HELM_NAMESPACE" port-forward \
      --address 127.0.0.1 "service/$service" "$E2E_PORT:$port" >"$LOGS/port-forward.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 150); do
      curl -fsS -o /dev/null "http://127.0.0.1:$E2E_PORT/healthz" 2>/dev/null && exit 0
      kill -0 "$(cat "$pidfile")" 2>/dev/null || break
      sleep 0.2
    done
    cat "$LOGS/port-forward.log" >&2
    cdie "the API did not answer on 127.0.0.1:$E2E_PORT/healthz" ;;
  stop)
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
