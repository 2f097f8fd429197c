#!/usr/bin/env bash
# Service rule programming at 1,000 and 10,000 Services (2 endpoints each), both proxy modes side by
# side, timed in a scratch network namespace:
# - iptables: full sync = one `iptables-restore --noflush` of the rendered kube-proxy layout;
#   partial sync = the restore input after one Service's endpoints changed (top-level chains plus
#   that Service's chains);
# - nftables: full sync = one `nft -f` transaction replacing our table; partial sync = the
#   transaction touching only the changed Service's chains and map elements.
# Each time includes rendering. Printed next to kube-proxy's published iptables figures at 10k
# Services on 2 vCPUs (77 s full, 1.28 s partial; ../shared/reference/networking.md) and the
# targets (10k: ≤ 5 s full, ≤ 0.2 s partial).
# Usage: hack/bench-services.sh [counts="1000 10000"] [modes="iptables nftables"]
source "$(dirname "$0")/lib.sh"
need ip iptables-restore nft cargo bc
[ "$(id -u)" = 0 ] || die "run as root: it loads rules into a scratch network namespace"

COUNTS=${1:-"1000 10000"}
MODES=${2:-"iptables nftables"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
# A release build, as rkubelet ships: the render time is the node agent's.
cargo build --release -q --example proxy_rules
GEN="$CARGO_TARGET_DIR/release/examples/proxy_rules"

NS=rkt-bsvc-$$
WORK=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

now() { date +%s.%N; }
ratio() { echo "$1 / $2" | bc -l; }

printf '%-9s %-9s %8s %9s %9s %10s %10s %11s %11s %9s %9s\n' mode services lines "render s" "load s" \
  "full s" "partial s" "full/k-p" "part/k-p" "full/tgt" "part/tgt"
for n in $COUNTS; do
  # kube-proxy's figures and the targets are for 10k Services; scaled linearly for other counts.
  ref_full=$(echo "77 * $n / 10000" | bc -l); ref_partial=$(echo "1.28 * $n / 10000" | bc -l)
  tgt_full=$(echo "5 * $n / 10000" | bc -l); tgt_partial=$(echo "0.2 * $n / 10000" | bc -l)
  for mode in $MODES; do
    ip netns del "$NS" 2>/dev/null || true
    ip netns add "$NS"
    case $mode in
      iptables) flag=""; load=(iptables-restore --noflush); lines_re='^-A' ;;
      nftables) flag=nft; load=(nft -f -); lines_re='^add (rule|element)' ;;
      *) die "unknown mode $mode (iptables or nftables)" ;;
    esac
    "$GEN" "$n" 2 $flag >"$WORK/full" 2>"$WORK/render"
    "$GEN" "$n" 2 partial $flag >"$WORK/partial" 2>"$WORK/prender"
    lines=$(grep -cE "$lines_re" "$WORK/full")
    render=$(awk '{print $2}' "$WORK/render"); prender=$(awk '{print $2}' "$WORK/prender")
    t0=$(now); ip netns exec "$NS" "${load[@]}" <"$WORK/full"; t1=$(now)
    if [ "$mode" = nftables ]; then
      # As the proxier sends it: a no-op on our table first, so a vanished table is noticed.
      { echo "add chain ip rkube-proxy services"; cat "$WORK/partial"; } >"$WORK/partial.nft"
      mv "$WORK/partial.nft" "$WORK/partial"
    fi
    t2=$(now); ip netns exec "$NS" "${load[@]}" <"$WORK/partial"; t3=$(now)
    restore=$(echo "$t1 - $t0" | bc -l)
    full=$(echo "$render + $restore" | bc -l); partial=$(echo "$t3 - $t2 + $prender" | bc -l)
    printf '%-9s %-9s %8s %9.3f %9.3f %10.3f %10.3f %10.3fx %10.3fx %8.2fx %8.2fx\n' "$mode" "$n" "$lines" \
      "$render" "$restore" "$full" "$partial" "$(ratio "$full" "$ref_full")" "$(ratio "$partial" "$ref_partial")" \
      "$(ratio "$full" "$tgt_full")" "$(ratio "$partial" "$tgt_partial")"
  done
done
echo "full = render + load; partial = its render + load. k-p = kube-proxy iptables (10k: 77 s full, 1.28 s partial);"
echo "tgt = targets (10k: full ≤ 5 s, partial ≤ 0.2 s); both scaled linearly below 10k. Ratios < 1 are better."
