#!/usr/bin/env bash
# A master and N nodes on this host, wired as separate machines would be, for the README, the
# tests and the benchmarks.
#   hack/cluster.sh up [N]        # N nodes (default 3); prints what `env` prints
#   hack/cluster.sh env           # KUBECONFIG=… REGISTRY=… NODE_IPS=… (eval "$(hack/cluster.sh env)")
#   hack/cluster.sh down          # stops everything and removes every object `up` made
#   hack/cluster.sh stop-node I   # SIGKILLs node I's agent (its containers keep running)
#   hack/cluster.sh start-node I  # starts node I's agent again (it re-adopts its pods)
#
# Layout: bridge rkube-cl0 on the host (10.250.0.1/24) is the cluster's LAN. rkube-master and a
# registry run in netns rkube-master (10.250.0.2; API on :6443, registry on :5000). Node I runs
# `rkubelet join` in netns rkube-node<I> (10.250.0.<10+I>), with its own bridge, pod CIDR
# (assigned by the master), state dir, run dir and cgroup parent. The host routes each node's
# pod CIDR to that node, so pod IPs answer from here; the nodes route each other's pod CIDRs
# themselves (from the Node objects) and program Services in their own iptables.
# The registry holds the demo images (hack/build-images.sh) and every node's mirror config sends
# docker.io and gcr.io there.
# Settings: RKUBE_BIN_DIR (rkubelet and rkube-master; default: a release build),
# RKUBE_CLUSTER_DIR (state; default _build/cluster), RKUBE_MASTER_FLAGS (extra master flags),
# RKUBE_NODE_FLAGS (extra rkubelet join flags).
source "$(dirname "$0")/lib.sh"

DIR=${RKUBE_CLUSTER_DIR:-$BUILD_DIR/cluster}
NET=10.250.0
MASTER_IP=$NET.2
BRIDGE=rkube-cl0
RUN_BASE=/run/rkube-cluster
KUBECONFIG_PATH=$DIR/master/admin.kubeconfig

node_ip() { echo "$NET.$((10 + $1))"; }
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
nodes() { cat "$DIR/nodes" 2>/dev/null || echo 0; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

bins() {
  if [ -n "${RKUBE_BIN_DIR:-}" ]; then
    BIN=$RKUBE_BIN_DIR
  else
    log "building rkube (release)"
    (cd "$REPO_DIR" && cargo build --release --quiet)
    BIN=$TARGET_DIR/release
  fi
  [ -x "$BIN/rkubelet" ] && [ -x "$BIN/rkube-master" ] || die "no rkubelet/rkube-master in $BIN"
}

# A netns with eth0 on the cluster bridge at $2.
add_host() {
  local ns=$1 ip=$2 veth=$3
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BRIDGE" up
  in_ns "$ns" ip link set lo up
  in_ns "$ns" ip addr add "$ip/24" dev eth0
  in_ns "$ns" ip link set eth0 up
  in_ns "$ns" ip route add default via "$NET.1"
  in_ns "$ns" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
}

node_flags() {
  local i=$1
  echo --root "$DIR/node$i/root" --run-dir "$RUN_BASE/node$i" --cgroup-parent "rkube-node$i" \
    --registries-config "$DIR/node$i/registries.yaml"
}

start_node() {
  local i=$1 token=${2:-}
  local args=(join "https://$MASTER_IP:6443" --node-name "node$i" --node-ip "$(node_ip "$i")")
  [ -n "$token" ] && args+=(--token "$token")
  # nsenter execs the program, so $! is the agent's PID (a shell function in the background would
  # leave the PID of a subshell instead).
  # shellcheck disable=SC2046,SC2086
  nsenter --net="/run/netns/rkube-node$i" "$BIN/rkubelet" "${args[@]}" $(node_flags "$i") ${RKUBE_NODE_FLAGS:-} \
    >>"$DIR/node$i/agent.log" 2>&1 &
  echo $! >"$DIR/node$i/agent.pid"
}

kubectl_() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }

env_lines() {
  local ips=() i
  for i in $(seq 1 "$(nodes)"); do ips+=("$(node_ip "$i")"); done
  echo "KUBECONFIG=$KUBECONFIG_PATH"
  echo "REGISTRY=$MASTER_IP:5000"
  echo "NODE_IPS=\"${ips[*]}\""
  echo "RKUBE_CLUSTER_DIR=$DIR"
}

# Routes every node's pod CIDR from the host, so pod IPs answer from here. (The nodes route each
# other's pod CIDRs themselves, from the Node objects.)
routes() {
  local i cidr
  for i in $(seq 1 "$(nodes)"); do
    cidr=$(kubectl_ get node "node$i" -o jsonpath='{.spec.podCIDR}')
    [ -n "$cidr" ] || die "node$i has no pod CIDR"
    ip route replace "$cidr" via "$(node_ip "$i")" dev "$BRIDGE"
  done
}

up() {
  local n=${1:-3} i token
  need ip nsenter docker-registry skopeo curl kubectl
  [ -f "$DIR/nodes" ] && die "a cluster is up ($DIR); run hack/cluster.sh down first"
  bins
  mkdir -p "$DIR/master"
  echo "$n" >"$DIR/nodes"
  echo "$BIN" >"$DIR/bin"
  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  add_host rkube-master "$MASTER_IP" rkube-cvm
  for i in $(seq 1 "$n"); do add_host "rkube-node$i" "$(node_ip "$i")" "rkube-cv$i"; done

  log "starting rkube-master on $MASTER_IP:6443"
  # shellcheck disable=SC2086
  nsenter --net=/run/netns/rkube-master "$BIN/rkube-master" --data-dir "$DIR/master" --listen "$MASTER_IP:6443" \
    --tls-san "$MASTER_IP" ${RKUBE_MASTER_FLAGS:-} >"$DIR/master.log" 2>&1 &
  echo $! >"$DIR/master.pid"
  DEADLINE=30 wait_for kubectl_ get --raw /readyz || { cat "$DIR/master.log" >&2; die "rkube-master did not start"; }

  log "starting the registry on $MASTER_IP:5000 with the demo images"
  RKUBE_REGISTRY_ADDR=0.0.0.0 RKUBE_REGISTRY_DIR=$DIR/registry in_ns rkube-master "$HACK_DIR/registry.sh" start
  in_ns rkube-master "$HACK_DIR/build-images.sh" --push 127.0.0.1:5000

  token=$(cat "$DIR/master/pki/join.token")
  for i in $(seq 1 "$n"); do
    mkdir -p "$DIR/node$i"
    cat >"$DIR/node$i/registries.yaml" <<YAML
mirrors:
  docker.io: ["http://$MASTER_IP:5000"]
  gcr.io: ["http://$MASTER_IP:5000"]
YAML
    start_node "$i" "$token"
  done
  log "waiting for $n node(s) to be Ready"
  DEADLINE=90 wait_for kubectl_ wait --for=condition=Ready node --all --timeout=1s \
    || { tail -n 20 "$DIR"/node*/agent.log >&2; die "nodes did not become Ready"; }
  [ "$(kubectl_ get nodes -o name | wc -l)" -ge "$n" ] || die "not every node registered"
  DEADLINE=60 wait_for kubectl_ wait --for=condition=Ready node --all --timeout=1s
  routes
  kubectl_ get nodes -o wide >&2
  env_lines
}

down() {
  [ -f "$DIR/nodes" ] || { log "no cluster in $DIR"; return 0; }
  local n i
  n=$(nodes)
  BIN=$(cat "$DIR/bin" 2>/dev/null || echo "$TARGET_DIR/release")
  for i in $(seq 1 "$n"); do
    if alive "$DIR/node$i/agent.pid"; then kill "$(cat "$DIR/node$i/agent.pid")"; fi
  done
  for i in $(seq 1 "$n"); do
    local pid
    pid=$(cat "$DIR/node$i/agent.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && ! DEADLINE=20 wait_for sh -c "! kill -0 $pid"; then kill -9 "$pid" || true; fi
    if [ -e "/run/netns/rkube-node$i" ] && [ -x "$BIN/rkubelet" ]; then
      # Pods, bridge, NAT chains, IPAM state and cgroup parent of the node, as on a real host.
      # shellcheck disable=SC2046
      in_ns "rkube-node$i" "$BIN/rkubelet" reset --force --time 0 $(node_flags "$i") || true
    fi
  done
  if alive "$DIR/master.pid"; then
    kill "$(cat "$DIR/master.pid")"
    DEADLINE=10 wait_for sh -c "! kill -0 $(cat "$DIR/master.pid")" || kill -9 "$(cat "$DIR/master.pid")"
  fi
  [ -e /run/netns/rkube-master ] && RKUBE_REGISTRY_DIR=$DIR/registry in_ns rkube-master "$HACK_DIR/registry.sh" stop
  for ns in rkube-master $(seq -f 'rkube-node%g' 1 "$n"); do
    [ -e "/run/netns/$ns" ] && ip netns del "$ns"
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  rm -rf "$DIR" "$RUN_BASE"
  log "cluster removed"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  env) [ -f "$DIR/nodes" ] || die "no cluster in $DIR; run hack/cluster.sh up"; env_lines ;;
  stop-node)
    alive "$DIR/node$2/agent.pid" || die "node$2's agent is not running"
    kill -9 "$(cat "$DIR/node$2/agent.pid")"
    log "node$2's agent killed" ;;
  start-node) BIN=$(cat "$DIR/bin"); start_node "$2"; log "node$2's agent started" ;;
  *) echo "usage: $0 up [N] | env | down | stop-node I | start-node I" >&2; exit 2 ;;
esac
