#!/usr/bin/env bash
# Measurements of the local cluster (make cluster-measure), printed as Markdown lines:
#   - resident memory (VmRSS) of etcd, the control plane, containerd and the kubelet;
#   - pod start latency (create -> Ready) of a pause-image pod under runc and under gVisor, N each;
#   - with the chart deployed: p50 end-to-end latency of the seed's hello and pandas scripts
#     through the API (POST /execute via the port-forward), N each.
# MEASURE_RUNS (default 5) sets N. MEASURE_WHAT=memory,pods,api selects parts.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/config.sh
. "$HERE/config.sh"
RUNS=${MEASURE_RUNS:-5}
WHAT=${MEASURE_WHAT:-memory,pods,api}
[ -f "$ADMIN_KUBECONFIG" ] || cdie "the cluster is not up (make cluster-up)"

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

if [[ $WHAT == *memory* ]]; then
  echo "### Memory (VmRSS, MiB)"
  total=0
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet; do
    pid=$(cat "$PIDS/$c.pid" 2>/dev/null) || continue
    kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + kb))
    echo "- $c: $((kb / 1024))"
  done
  echo "- total: $((total / 1024))"
fi

if [[ $WHAT == *pods* ]]; then
  kc create namespace pyexec-measure --dry-run=client -o yaml | kc apply -f - >/dev/null
  for rc in runc gvisor; do
    times=()
    for i in $(seq 1 "$RUNS"); do
      name=measure-$rc-$i
      rcfield=""
      [ "$rc" = gvisor ] && rcfield="runtimeClassName: gvisor"
      t0=$(now_ms)
      kc -n pyexec-measure apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name}
spec:
  $rcfield
  automountServiceAccountToken: false
  restartPolicy: Never
  containers:
  - name: pause
    image: registry.k8s.io/pause:3.10
    imagePullPolicy: Never
EOF
      if kc -n pyexec-measure wait --for=condition=Ready "pod/$name" --timeout=120s >/dev/null; then
        times+=($(( $(now_ms) - t0 )))
      else
        echo "- $rc pod $name did not become Ready:" >&2
        kc -n pyexec-measure describe pod "$name" | tail -n 15 >&2
      fi
      kc -n pyexec-measure delete pod "$name" --wait=false >/dev/null
    done
    echo "- pod start (create -> Ready), $rc: p50 $(printf '%s\n' "${times[@]}" | median) ms over ${#times[@]} runs (all: ${times[*]})"
  done
  kc delete namespace pyexec-measure --wait=false >/dev/null
fi

if [[ $WHAT == *api* ]]; then
  bash "$HERE/port-forward.sh" start
  # The chart requires a bearer token by default (api.token.create); none when its Secret is absent.
  token_secret=$(api_token_secret)
  token=$(kc -n "$HELM_NAMESPACE" get secret "${token_secret:-none}" \
    -o jsonpath='{.data.token}' 2>/dev/null | base64 -d || true)
  auth=(); [ -z "$token" ] || auth=(-H "Authorization: Bearer $token")
  hello='def main():\n    return {"message": "hello"}\n'
  pandas='import pandas as pd\n\ndef main():\n    df = pd.DataFrame({"a": [1, 2, 3]})\n    return {"sum": int(df["a"].sum())}\n'
  for kind in hello pandas; do
    script=${!kind}
    times=()
    for i in $(seq 1 "$RUNS"); do
      t0=$(now_ms)
      out=$(curl -sS -m 120 "${auth[@]}" -H 'Content-Type: application/json' --data "{\"script\": \"$script\"}" \
        -w ' HTTP%{http_code}' "http://127.0.0.1:$E2E_PORT/execute")
      t=$(( $(now_ms) - t0 ))
      case "$out" in *HTTP200) times+=("$t") ;; *) echo "- $kind run $i failed: $out" >&2 ;; esac
    done
    echo "- API POST /execute, $kind: p50 $(printf '%s\n' "${times[@]}" | median) ms over ${#times[@]} runs (all: ${times[*]})"
  done
  bash "$HERE/port-forward.sh" stop
fi
