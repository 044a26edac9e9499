#!/usr/bin/env bash
# Measurements of the local cluster (make cluster-measure), printed as Markdown lines:
#   - resident memory (VmRSS) of etcd, the control plane, containerd and the kubelet;
#   - pod start latency (create -> Ready) of a pause-image pod under runc and under gVisor, N each;
#   - with the chart deployed (api): p50 of POST /execute straight to the API pod, sequential, for
#     the documented hello and pandas examples on the warm path and hello on the cold path (pool 0);
#   - (burst) 30 executions at once with a pool of 4, and 48 POSTs 24 at a time;
#   - (executions) the controller's memory with 1,000 finished PythonExecutions cached;
#   - (load) 30 sequential hello and pandas, a steady 1 request/s for 60 s with the host's CPU
#     per execution by component beside that of a bare gVisor pod (pause image) created and
#     deleted, and 4 requests/s for 30 s (ci/cluster/load.py);
#   - (runsc, not in the default set) every runsc command the gVisor shim runs while N*2 hello
#     executions are answered 5 s apart and their pods replaced, each timed exactly
#     (ci/cluster/runsc_timing.py): the shim's runtime config points at the timing wrapper for
#     the part's length, then back.
# MEASURE_RUNS (default 5) sets N. MEASURE_WHAT=memory,pods,api,burst,executions,load,runsc selects parts;
# LOAD_WHAT=sequential,steady,overload selects the load part's parts.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/cluster/config.sh
. "$HERE/config.sh"
RUNS=${MEASURE_RUNS:-5}
WHAT=${MEASURE_WHAT:-memory,pods,api,burst,executions,load}
[ -f "$ADMIN_KUBECONFIG" ] || cdie "the cluster is not up (make cluster-up)"

# What the parts undo on exit, in order: each adds its command with at_exit.
AT_EXIT=()
at_exit() { AT_EXIT+=("$1"); }
trap 'for undo in "${AT_EXIT[@]}"; do eval "$undo"; done' EXIT

# The namespace of the measurement's own pods (the pods part, the load part's baseline): made once
# when first needed, deleted on exit.
MEASURE_NS=pyexec-measure
measure_namespace() {
  kc get namespace "$MEASURE_NS" >/dev/null 2>&1 && return
  kc create namespace "$MEASURE_NS" >/dev/null
  at_exit 'kc delete namespace "$MEASURE_NS" --wait=false >/dev/null 2>&1 || true'
}

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
  measure_namespace
  for rc in runc gvisor; do
    times=()
    for i in $(seq 1 "$RUNS"); do
      name=measure-$rc-$i
      rcfield=""
      [ "$rc" = gvisor ] && rcfield="runtimeClassName: gvisor"
      t0=$(now_ms)
      kc -n "$MEASURE_NS" apply -f - >/dev/null <<EOF
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
      if kc -n "$MEASURE_NS" wait --for=condition=Ready "pod/$name" --timeout=120s >/dev/null; then
        times+=($(( $(now_ms) - t0 )))
      else
        echo "- $rc pod $name did not become Ready:" >&2
        kc -n "$MEASURE_NS" describe pod "$name" | tail -n 15 >&2
      fi
      kc -n "$MEASURE_NS" delete pod "$name" --wait=false >/dev/null
    done
    echo "- pod start (create -> Ready), $rc: p50 $(printf '%s\n' "${times[@]}" | median) ms over ${#times[@]} runs (all: ${times[*]})"
  done
fi

# ---- the API in kubernetes mode, straight to the API pod (no port-forward on the path)

SANDBOX_SELECTOR=app.kubernetes.io/name=pyexec,app.kubernetes.io/component=sandbox
HELLO='def main():\n    return {"message": "hello"}\n'
PANDAS='import pandas as pd\n\ndef main():\n    df = pd.DataFrame({"a": [1, 2, 3]})\n    return {"sum": int(df["a"].sum())}\n'
UNIQUE='import uuid\n\ndef main():\n    return {"token": uuid.uuid4().hex}\n'

api_setup() {
  controller=$(release_object deployment controller)
  api_ip=$(kc -n "$HELM_NAMESPACE" get pods -l "app.kubernetes.io/instance=$HELM_RELEASE,app.kubernetes.io/component=api" \
    --field-selector=status.phase=Running -o jsonpath='{.items[0].status.podIP}')
  [ -n "$api_ip" ] || cdie "no running API pod"
  export API_URL="http://$api_ip:8080"
  local secret
  secret=$(api_token_secret)
  token=$(kc -n "$HELM_NAMESPACE" get secret "${secret:-none}" -o jsonpath='{.data.token}' 2>/dev/null | base64 -d || true)
  export AUTH_HEADER="X-Pyexec-Measure: 1"; [ -z "$token" ] || AUTH_HEADER="Authorization: Bearer $token"
  pool_default=$(kc -n "$HELM_NAMESPACE" get deployment "$controller" \
    -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PYEXEC_POD_POOL_SIZE")].value}')
  plain_default=$(kc -n "$HELM_NAMESPACE" get deployment "$controller" \
    -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PYEXEC_POD_POOL_PLAIN_SIZE")].value}')
}

# post SCRIPT: one POST /execute; prints "HTTP-code milliseconds [retry=N] body".
post() {
  local t0 code hdr body retry
  hdr=$(mktemp); body=$(mktemp)
  t0=$(now_ms)
  code=$(curl -sS -m 150 -H "$AUTH_HEADER" -H 'Content-Type: application/json' --data "{\"script\": \"$1\"}" \
    -D "$hdr" -o "$body" -w '%{http_code}' "$API_URL/execute" 2>/dev/null) || true
  retry=$(awk 'tolower($1)=="retry-after:" {print "retry=" $2}' "$hdr" | tr -d '\r')
  echo "${code:-000} $(( $(now_ms) - t0 )) $retry $(tr -d '\n' <"$body")"
  rm -f "$hdr" "$body"
}
export -f post now_ms

# set_pool N [PLAIN]: the controller's preloaded pool size N and plain pool size PLAIN (default N),
# rolled out; waits until N preloaded pods are ready.
set_pool() {
  kc -n "$HELM_NAMESPACE" set env "deployment/$controller" "PYEXEC_POD_POOL_SIZE=$1" \
    "PYEXEC_POD_POOL_PLAIN_SIZE=${2:-$1}" >/dev/null
  kc -n "$HELM_NAMESPACE" rollout status "deployment/$controller" --timeout=180s >/dev/null
  wait_ready "$1"
}

wait_ready() {
  local deadline=$(( $(date +%s) + 240 )) n
  while :; do
    n=$(kc -n "$SANDBOX_NAMESPACE" get pods -l "$SANDBOX_SELECTOR,pyexec.dev/state=ready,pyexec.dev/pool-kind=preloaded" \
      --no-headers 2>/dev/null | grep -c Running || true)
    [ "$n" -ge "$1" ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || { echo "- only $n of $1 warm pods ready after 240 s" >&2; return 1; }
    sleep 1
  done
}

# p50 KIND SCRIPT: sequential POSTs, each after the pool has a ready pod again when WARM=1.
p50() {
  local times=() i code ms rest
  for i in $(seq 1 "$RUNS"); do
    [ "${WARM:-0}" = 1 ] && wait_ready "${pool_default:-2}"
    read -r code ms rest < <(post "$2")
    if [ "$code" = 200 ]; then times+=("$ms"); else echo "- $1 run $i failed: $code $rest" >&2; fi
  done
  echo "- POST /execute, $1: p50 $(printf '%s\n' "${times[@]}" | median) ms over ${#times[@]} runs (all: ${times[*]})"
}

if [[ $WHAT == *api* ]]; then
  api_setup
  echo "### POST /execute in kubernetes mode, sequential, to the API pod ($API_URL), gVisor"
  WARM=1 p50 "warm hello" "$HELLO"
  WARM=1 p50 "warm pandas" "$PANDAS"
  set_pool 0
  p50 "cold hello (both pools 0)" "$HELLO"
  set_pool "${pool_default:-2}" "${plain_default:-2}"
fi

if [[ $WHAT == *burst* ]]; then
  api_setup
  echo "### Bursts"
  set_pool 4
  out=$(seq 1 30 | xargs -P 30 -I{} bash -c "post '$UNIQUE'")
  ok=$(grep -c '^200 ' <<<"$out" || true)
  tokens=$(grep -o '"token":"[0-9a-f]*"' <<<"$out" | sort | uniq | wc -l)
  wait_ready 4 && refilled=yes || refilled=no
  echo "- 30 at once, pools of 4: $ok of 30 answered 200, $tokens distinct tokens (each ran once), pool refilled to 4: $refilled; p50 $(grep '^200 ' <<<"$out" | awk '{print $2}' | median) ms"
  set_pool "${pool_default:-2}" "${plain_default:-2}"
  out=$(seq 1 48 | xargs -P 24 -I{} bash -c "post '$HELLO'")
  codes=$(awk '{print $1}' <<<"$(grep -E '^[0-9]{3} ' <<<"$out")" | sort | uniq -c | awk '{printf "%s x%s ", $2, $1}')
  n429=$(grep -c '^429 ' <<<"$out" || true)
  retry=$(grep -c 'retry=' <<<"$out" || true)
  echo "- 48 POSTs, 24 at a time, pool of ${pool_default:-2}: $codes(429s with Retry-After: $retry of $n429)"
fi

if [[ $WHAT == *executions* ]]; then
  api_setup
  echo "### Controller memory with 1,000 PythonExecutions"
  rss() { local pid; pid=$(pgrep -f '^pyexec controller' | head -n1); awk '/^VmRSS/ {print int($2/1024)}' "/proc/$pid/status"; }
  before=$(rss)
  kc -n "$HELM_NAMESPACE" scale "deployment/$controller" --replicas=0 >/dev/null
  kc -n "$HELM_NAMESPACE" wait --for=delete pod -l "app.kubernetes.io/component=controller" --timeout=60s >/dev/null 2>&1 || true
  list=$(mktemp)
  { echo '{"apiVersion": "v1", "kind": "List", "items": ['
    for i in $(seq 1 1000); do
      [ "$i" = 1 ] || echo ','
      echo "{\"apiVersion\": \"pyexec.dev/v1alpha1\", \"kind\": \"PythonExecution\", \"metadata\": {\"name\": \"measure-$i\", \"labels\": {\"pyexec.dev/measure\": \"1\"}}, \"spec\": {\"script\": \"def main():\\n    return {}\\n\", \"ttlSecondsAfterFinished\": 3600}}"
    done
    echo ']}'; } >"$list"
  kc -n "$SANDBOX_NAMESPACE" create -f "$list" >/dev/null
  # Finished, as executions are most of their life: their status written as the controller would.
  seq 1 1000 | xargs -P 8 -I{} "$KUBECTL_BIN" --kubeconfig "$ADMIN_KUBECONFIG" -n "$SANDBOX_NAMESPACE" patch \
    pythonexecution measure-{} --subresource=status --type=merge \
    -p '{"status": {"phase": "Succeeded", "outcome": "success", "returncode": 0, "stdout": "", "stderr": "", "result": {"n": 1}, "completionTime": "2026-01-01T00:00:00Z"}}' >/dev/null
  kc -n "$HELM_NAMESPACE" scale "deployment/$controller" --replicas=1 >/dev/null
  kc -n "$HELM_NAMESPACE" rollout status "deployment/$controller" --timeout=180s >/dev/null
  sleep 20
  after=$(rss)
  echo "- controller VmRSS: $before MiB before (no executions), $after MiB with 1,000 finished executions cached"
  kc -n "$SANDBOX_NAMESPACE" delete pythonexecutions -l pyexec.dev/measure=1 --wait=false >/dev/null
  rm -f "$list"
fi

if [[ $WHAT == *load* ]]; then
  api_setup
  echo "### Load on POST /execute in kubernetes mode, to the API pod ($API_URL), gVisor, pool ${pool_default:-2}"
  # The steady part's CPU baseline: bare gVisor pods in a namespace of their own.
  measure_namespace
  python3 "$HERE/load.py" --url "$API_URL" --header "$AUTH_HEADER" --what "${LOAD_WHAT:-sequential,steady,overload}" \
    --kubectl "$KUBECTL_BIN --kubeconfig $ADMIN_KUBECONFIG" --namespace "$MEASURE_NS"
fi

if [[ $WHAT == *runsc* ]]; then
  api_setup
  config=$CLUSTER_RUN_DIR/containerd/runsc.toml
  [ -f "$config" ] || cdie "no $config: the runsc part needs the packaged cluster (make cluster-up)"
  timing=$(mktemp -d)
  cp "$HERE/runsc_timing.py" "$timing/runsc"
  sed -n 's/^binary_name = "\(.*\)"$/\1/p' "$config" >"$timing/real"
  [ -s "$timing/real" ] || cdie "no binary_name in $config"
  cp "$config" "$timing/runsc.toml"
  at_exit 'cp "$timing/runsc.toml" "$config"; rm -rf "$timing"'
  # Every shim started from now on (one per pod) runs runsc through the wrapper.
  sed -i "s|^binary_name = .*|binary_name = \"$timing/runsc\"|" "$config"
  executions=$((RUNS * 2))
  echo "### runsc commands per execution (hello, $executions executions 5 s apart, each pod replaced by the pool)"
  for _ in $(seq 1 "$executions"); do
    post "$HELLO" | grep -q '^200 ' || echo "- an execution was not answered 200"
    sleep 5
  done
  sleep 10
  cp "$timing/runsc.toml" "$config"
  python3 "$HERE/runsc_timing.py" --summarize "$timing/calls.log" "$executions"
fi
