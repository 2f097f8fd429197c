#!/usr/bin/env bash
# Cluster benchmarks (not timed tests), release build, figures printed next to their targets:
#   1. `kubectl apply` of a 3-replica Deployment on 3 real nodes (image cached) -> all Ready:
#      p50/p99 over $RUNS runs (Kubernetes SLO p99 <= 5 s; target p99 <= 1 s).
#   2. 100 pods on one node: apply -> all Running, in pods/s (target >= 20 pods/s).
#   3. The seed's blue/green switch: a PATCH of a Service's selector -> every node's rules send a
#      fresh connection to the new color (polled through the ClusterIP from each node): p50/p99 over
#      $RUNS switches (target p99 <= 300 ms).
#   4. Hollow nodes: $HOLLOW_NODES node agents over a fake runtime in one process (as kubemark's),
#      $HOLLOW_PODS pods each: schedule -> Running-reported p99 (SLO 5 s), watch fan-out, master
#      RSS (target <= 2 GiB) and CPU.
# Usage: sudo hack/bench-cluster.sh [all|apply|density|switch|hollow]
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"
WHAT=${1:-all}
RUNS=${RUNS:-20}
HOLLOW_NODES=${HOLLOW_NODES:-1000}
HOLLOW_PODS=${HOLLOW_PODS:-30}
need kubectl curl
if [ -z "${RKUBE_BIN_DIR:-}" ]; then
  log "building rkube (release)"
  cargo build --release --quiet --bins --example hollow_nodes
fi
# RKUBE_BIN_DIR: binaries built already (rkubelet, rkube-master, examples/hollow_nodes).
BIN=${RKUBE_BIN_DIR:-$TARGET_DIR/release}
export RKUBE_BIN_DIR=$BIN RKUBE_CLUSTER_DIR=$BUILD_DIR/bench-cluster

# deployment NAME REPLICAS [NODE]: a Deployment of the seed's nginx image.
deployment() {
  local selector=""
  [ -n "${3:-}" ] && selector="nodeSelector: {kubernetes.io/hostname: $3}"
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1}
spec:
  replicas: $2
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      $selector
      containers: [{name: nginx, image: "nginx:1.10"}]
YAML
}

# Seconds (with ns) from `apply` to readyReplicas == REPLICAS.
timed_apply() {
  local name=$1 replicas=$2 node=${3:-} file start end
  file=$(mktemp)
  deployment "$name" "$replicas" "$node" >"$file"
  start=$(date +%s.%N)
  kubectl apply -f "$file" >/dev/null
  kubectl wait --for=jsonpath='{.status.readyReplicas}'="$replicas" "deployment/$name" --timeout=300s >/dev/null
  end=$(date +%s.%N)
  rm -f "$file"
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f\n", b - a}'
}

gone() { [ -z "$(kubectl get pods -l "app=$1" -o name 2>/dev/null)" ]; }

# A ratio a/b with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# Percentile P (0-100) of the numbers on stdin.
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; printf "%.3f", a[i]}'; }

real_nodes() {
  trap 'hack/cluster.sh down >/dev/null 2>&1 || true' EXIT
  hack/cluster.sh down >/dev/null 2>&1 || true
  eval "$(hack/cluster.sh up 3)"
  export KUBECONFIG
  log "warming the image cache on every node"
  timed_apply warm 6 >/dev/null
  kubectl delete deployment warm --wait=false >/dev/null
  DEADLINE=120 wait_for gone warm
  if [ "$WHAT" = all ] || [ "$WHAT" = apply ]; then
    local times=() i t
    for i in $(seq 1 "$RUNS"); do
      t=$(timed_apply "bench-$i" 3)
      times+=("$t")
      kubectl delete deployment "bench-$i" --wait=false >/dev/null
      DEADLINE=120 wait_for gone "bench-$i"
    done
    local p50 p99
    p50=$(printf '%s\n' "${times[@]}" | pct 50)
    p99=$(printf '%s\n' "${times[@]}" | pct 99)
    echo "apply 3-replica Deployment -> all Ready ($RUNS runs, 3 nodes): p50 ${p50}s p99 ${p99}s" \
      "(target p99 <= 1 s: $(ratio "$p99" 1)x; SLO 5 s: $(ratio "$p99" 5)x)"
  fi
  if [ "$WHAT" = all ] || [ "$WHAT" = density ]; then
    local t rate
    t=$(timed_apply density 100 node1)
    rate=$(ratio 100 "$t")
    echo "100 pods on one node: apply -> all Running in ${t}s = $rate pods/s (target >= 20 pods/s: $(ratio "$rate" 20)x)"
    kubectl delete deployment density --wait=false >/dev/null
    DEADLINE=300 wait_for gone density
  fi
  if [ "$WHAT" = all ] || [ "$WHAT" = switch ]; then
    switch
  fi
  hack/cluster.sh down >/dev/null
  trap - EXIT
}

# The selector switch: seconds from the PATCH (sent with curl and the admin's token, so
# kubectl's own start-up is not counted) until a poller on every node gets the new color through
# the ClusterIP.
switch() {
  local dir ip color=green target i n t0 times=() server
  dir=$(mktemp -d)
  kubectl config view --raw -o jsonpath='{.users[0].user.token}' >"$dir/token"
  kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$dir/ca"
  server=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
  (cd "$REPO_DIR/tests/fixtures/seed" && kubectl apply -f configmap.yaml -f secret.yaml \
    -f deployment-green.yaml -f deployment-blue.yaml >/dev/null)
  kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: switch}
spec:
  ports: [{port: 80, targetPort: 80}]
  selector: {type: webserver, color: green}
YAML
  for color in green blue; do
    kubectl wait --for=jsonpath='{.status.readyReplicas}'=3 "deployment/webserver-$color" --timeout=300s >/dev/null
  done
  ip=$(kubectl get svc switch -o jsonpath='{.spec.clusterIP}')
  for i in $(seq 1 "$RUNS"); do
    target=$([ "$color" = green ] && echo blue || echo green)
    for n in 1 2 3; do
      timeout 60 nsenter --net="/run/netns/rkube-node$n" sh -c "until curl -s -m 1 http://$ip/cgi-bin/info | grep -q color=$target; \
        do sleep 0.005; done; date +%s.%N" >"$dir/node$n" &
    done
    sleep 0.5
    t0=$(date +%s.%N)
    curl -sf --cacert "$dir/ca" -H "Authorization: Bearer $(cat "$dir/token")" -X PATCH \
      -H 'Content-Type: application/strategic-merge-patch+json' \
      -d "{\"spec\":{\"selector\":{\"type\":\"webserver\",\"color\":\"$target\"}}}" \
      "$server/api/v1/namespaces/default/services/switch" >/dev/null || die "PATCH of the Service failed"
    wait
    times+=("$(cat "$dir"/node* | awk -v t0="$t0" 'BEGIN {m = 0} {if ($1 - t0 > m) m = $1 - t0} END {printf "%.3f", m}')")
    color=$target
    sleep 1
  done
  local p50 p99
  p50=$(printf '%s\n' "${times[@]}" | pct 50)
  p99=$(printf '%s\n' "${times[@]}" | pct 99)
  echo "selector switch -> every node's rules at the new endpoints ($RUNS switches, 3 nodes): p50 ${p50}s" \
    "p99 ${p99}s (target p99 <= 0.3 s: $(ratio "$p99" 0.3)x)"
  kubectl delete svc switch >/dev/null
  kubectl delete deployment webserver-green webserver-blue --wait=false >/dev/null
  rm -rf "$dir"
}

hollow() {
  # Globals: the EXIT trap runs after this function returned.
  HOLLOW_DIR=$BUILD_DIR/bench-hollow
  local dir=$HOLLOW_DIR port=16444
  rm -rf "$dir"
  mkdir -p "$dir"
  "$BIN/rkube-master" --data-dir "$dir/master" --listen "127.0.0.1:$port" \
    --cluster-cidr 172.16.0.0/12 --node-cidr-mask-size 26 >"$dir/master.log" 2>&1 &
  MASTER_PID=$!
  local pid=$MASTER_PID
  trap 'kill "$MASTER_PID" 2>/dev/null || true; rm -rf "$HOLLOW_DIR"' EXIT
  DEADLINE=30 wait_for test -s "$dir/master/pki/join.token" || die "rkube-master did not start"
  DEADLINE=30 wait_for kubectl --kubeconfig "$dir/master/admin.kubeconfig" get --raw /readyz
  log "starting $HOLLOW_NODES hollow nodes, $HOLLOW_PODS pods each"
  "$BIN/examples/hollow_nodes" --server "https://127.0.0.1:$port" \
    --token "$(cat "$dir/master/pki/join.token")" --admin-kubeconfig "$dir/master/admin.kubeconfig" \
    --master-pid "$pid" --state "$dir/nodes" --nodes "$HOLLOW_NODES" --pods-per-node "$HOLLOW_PODS"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  trap - EXIT
}

case "$WHAT" in
  all) real_nodes; hollow ;;
  apply|density|switch) real_nodes ;;
  hollow) hollow ;;
  *) die "usage: $0 [all|apply|density|switch|hollow]" ;;
esac
