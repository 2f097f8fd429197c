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
