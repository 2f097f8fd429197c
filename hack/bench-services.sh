#!/usr/bin/env bash
# Service rule programming at 1,000 and 10,000 Services (2 endpoints each): rkube's full sync (one
# `iptables-restore --noflush` of the rendered kube-proxy layout) and its partial sync after one
# Service's endpoints changed, timed in a scratch network namespace, side by side with kube-proxy's
# published iptables figures at 10k Services on 2 vCPUs (77 s full, 1.28 s partial;
# ../shared/reference/networking.md) and the targets (10k: ≤ 5 s full, ≤ 0.2 s partial).
# Usage: hack/bench-services.sh [counts="1000 10000"]
source "$(dirname "$0")/lib.sh"
need ip iptables-restore cargo bc
[ "$(id -u)" = 0 ] || die "run as root: it loads rules into a scratch network namespace"

COUNTS=${1:-"1000 10000"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
# The debug build the tests use (dependencies optimized): rendering is slower than a release
# build's, so the ratios are upper bounds.
cargo build -q --example proxy_rules
GEN="$CARGO_TARGET_DIR/debug/examples/proxy_rules"

NS=rkt-bsvc-$$
WORK=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

now() { date +%s.%N; }

printf '%-10s %8s %10s %10s %12s %16s %19s\n' services rules "render s" "restore s" "partial s" "full/kube-proxy" "partial/kube-proxy"
for n in $COUNTS; do
  ip netns del "$NS" 2>/dev/null || true
  ip netns add "$NS"
  "$GEN" "$n" 2 >"$WORK/full" 2>"$WORK/render"
  "$GEN" "$n" 2 partial >"$WORK/partial" 2>"$WORK/prender"
  rules=$(grep -c '^-A' "$WORK/full")
  render=$(awk '{print $2}' "$WORK/render"); prender=$(awk '{print $2}' "$WORK/prender")
  t0=$(now); ip netns exec "$NS" iptables-restore --noflush <"$WORK/full"; t1=$(now)
  ip netns exec "$NS" iptables-restore --noflush <"$WORK/partial"; t2=$(now)
  full=$(echo "$t1 - $t0" | bc -l); partial=$(echo "$t2 - $t1 + $prender" | bc -l)
  # kube-proxy's figures are for 10k Services; scale them linearly for other counts.
  ref_full=$(echo "77 * $n / 10000" | bc -l); ref_partial=$(echo "1.28 * $n / 10000" | bc -l)
  printf '%-10s %8s %10.3f %10.3f %12.3f %15.3fx %18.3fx\n' "$n" "$rules" "$render" "$full" "$partial" \
    "$(echo "($render + $full) / $ref_full" | bc -l)" "$(echo "$partial / $ref_partial" | bc -l)"
done
echo "full = render + restore; partial = its render + restore. Targets at 10000: full ≤ 5 s, partial ≤ 0.2 s"
