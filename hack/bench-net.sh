#!/usr/bin/env bash
# Service rule-programming cost: rkube's rendered kube-proxy layout loaded with one
# `iptables-restore --noflush` vs. the naive peer (one `iptables -A` per rule), side by side,
# plus the reference's measured kube-proxy-layout numbers. Runs in a scratch netns only.
# Usage: hack/bench-net.sh [services=1000] [naive_services=100]
source "$(dirname "$0")/lib.sh"
need ip iptables iptables-restore cargo

SERVICES=${1:-1000}
NAIVE=${2:-100}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
cargo build -q --example proxy_rules
GEN="$CARGO_TARGET_DIR/debug/examples/proxy_rules"

NS=rkt-bench-$$
WORK=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ip netns add "$NS"

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }

"$GEN" "$SERVICES" 2 >"$WORK/rules" 2>"$WORK/render"
RULES=$(grep -c '^-A' "$WORK/rules")
RENDER=$(awk '{print $2}' "$WORK/render")

t0=$(now); ip netns exec "$NS" iptables-restore --noflush <"$WORK/rules"; t1=$(now)
ip netns exec "$NS" iptables-restore --noflush <"$WORK/rules"; t2=$(now)
FIRST=$(elapsed "$t0" "$t1"); REWRITE=$(elapsed "$t1" "$t2")
"$GEN" "$SERVICES" 2 partial >"$WORK/partial" 2>/dev/null
t5=$(now); ip netns exec "$NS" iptables-restore --noflush <"$WORK/partial"; t6=$(now)
PARTIAL=$(elapsed "$t5" "$t6")

# Naive peer: the same kind of rules, one iptables process per rule, for $NAIVE services.
"$GEN" "$NAIVE" 2 >"$WORK/naive" 2>/dev/null
ip netns exec "$NS" bash -c '
  table=""
  while IFS= read -r line; do
    case "$line" in
      "*"*) table=${line#\*} ;;
      :*) chain=${line#:}; chain=${chain%% *}; iptables -w -t "$table" -N "N${chain:1:26}" 2>/dev/null || true ;;
    esac
  done <"$1"' _ "$WORK/naive"
NAIVE_RULES=$(grep -c '^-A' "$WORK/naive")
t3=$(now)
ip netns exec "$NS" bash -c '
  table=""
  while IFS= read -r line; do
    case "$line" in
      "*"*) table=${line#\*} ;;
      -A*) eval "set -- $line"; shift; chain=$1; shift
           args=(); for a in "$@"; do case "$a" in RKUBE-*) args+=("N${a:1:26}") ;; *) args+=("$a") ;; esac; done
           iptables -w -t "$table" -A "N${chain:1:26}" "${args[@]}" ;;
    esac
  done <"$1"' _ "$WORK/naive"
t4=$(now)
NAIVE_TIME=$(elapsed "$t3" "$t4")
PER_RULE_RESTORE=$(echo "$FIRST / $RULES" | bc -l)
PER_RULE_NAIVE=$(echo "$NAIVE_TIME / $NAIVE_RULES" | bc -l)

printf '%-52s %10s\n' "measure" "seconds"
printf '%-52s %10.4f\n' "render $SERVICES services (rkube, debug build)" "$RENDER"
printf '%-52s %10.4f\n' "iptables-restore first load ($RULES rules)" "$FIRST"
printf '%-52s %10.4f\n' "iptables-restore rewrite ($RULES rules)" "$REWRITE"
printf '%-52s %10.4f\n' "partial sync after 1 service changed" "$PARTIAL"
printf '%-52s %10.4f\n' "naive iptables -A per rule ($NAIVE_RULES rules)" "$NAIVE_TIME"
printf '%-52s %10.6f\n' "per rule: restore" "$PER_RULE_RESTORE"
printf '%-52s %10.6f\n' "per rule: naive" "$PER_RULE_NAIVE"
printf 'ratio naive/restore per rule: %.1fx\n' "$(echo "$PER_RULE_NAIVE / $PER_RULE_RESTORE" | bc -l)"
if [ "$SERVICES" = 1000 ]; then
  printf 'ratio vs reference kube-proxy layout (1000 svc: 0.40 s first, 0.41 s rewrite): %.2fx / %.2fx\n' \
    "$(echo "$FIRST / 0.40" | bc -l)" "$(echo "$REWRITE / 0.41" | bc -l)"
fi

# Pod network setup: rkube's PodNetwork (netlink, one call per pod) vs. the same steps done with
# `ip` commands (what a shell CNI plugin would run), both in scratch namespaces.
PODS=${PODS:-20}
cargo build -q --example pod_net_bench
read -r _ RK_SETUP _ RK_TEARDOWN <<<"$("$CARGO_TARGET_DIR/debug/examples/pod_net_bench" "$PODS" | tr '\n' ' ')"
PEER_NS=rkt-bpeer-$$
ip netns add "$PEER_NS"
trap 'cleanup; ip netns del "$PEER_NS" 2>/dev/null || true; for i in $(seq 1 "$PODS"); do ip netns del "rkt-bp-$$-$i" 2>/dev/null || true; done' EXIT
ip -n "$PEER_NS" link add rktbpeer type bridge
ip -n "$PEER_NS" addr add 10.77.251.1/24 dev rktbpeer
ip -n "$PEER_NS" link set rktbpeer up
t0=$(now)
for i in $(seq 1 "$PODS"); do
  ns=rkt-bp-$$-$i
  ip netns add "$ns"
  ip -n "$PEER_NS" link add "rkvp$i" type veth peer name eth0 netns "$ns"
  ip -n "$PEER_NS" link set "rkvp$i" master rktbpeer up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.251.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via 10.77.251.1
done
t1=$(now)
for i in $(seq 1 "$PODS"); do
  ip -n "$PEER_NS" link del "rkvp$i"
  ip netns del "rkt-bp-$$-$i"
done
t2=$(now)
PEER_SETUP=$(echo "($t1 - $t0) * 1000 / $PODS" | bc -l)
PEER_TEARDOWN=$(echo "($t2 - $t1) * 1000 / $PODS" | bc -l)
printf '\n%-52s %10s %10s\n' "pod network, ms per pod ($PODS pods)" "setup" "teardown"
printf '%-52s %10.2f %10.2f\n' "rkube PodNetwork (netlink, IPAM, NAT rules)" "$RK_SETUP" "$RK_TEARDOWN"
printf '%-52s %10.2f %10.2f\n' "ip commands (links, address, route only)" "$PEER_SETUP" "$PEER_TEARDOWN"
printf 'ratio rkube/ip: setup %.2fx, teardown %.2fx\n' \
  "$(echo "$RK_SETUP / $PEER_SETUP" | bc -l)" "$(echo "$RK_TEARDOWN / $PEER_TEARDOWN" | bc -l)"
