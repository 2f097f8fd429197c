#!/usr/bin/env bash
# Mutating API latency at a sustained write rate — ConfigMap creates, updates (PUT) and
# server-side applies — on rkube-master with the embedded store vs. with etcd, side by side.
# Usage: hack/bench-api.sh [writes/s] [seconds]
# Builds the dev profile with this crate optimised too (dependencies are already opt-level 2);
# PROFILE=release uses a release build, PROFILE=debug the plain debug build; RKUBE_BIN_DIR=dir
# uses binaries built already (dir/rkube-master, dir/examples/bench-api).
source "$(dirname "$0")/lib.sh"
need etcd curl jq
RATE=${1:-1000}
SECS=${2:-10}
PROFILE=${PROFILE:-opt}
cd "$REPO_DIR"
if [ -n "${RKUBE_BIN_DIR:-}" ]; then
  # Built already: rkube-master and examples/bench-api in this directory.
  TARGET=$RKUBE_BIN_DIR
else
  log "building rkube-master and the load generator ($PROFILE)"
  case "$PROFILE" in
    release) cargo build -q --release --bin rkube-master --example bench-api; dir=release ;;
    debug) cargo build -q --bin rkube-master --example bench-api; dir=debug ;;
    *) CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo build -q --bin rkube-master --example bench-api; dir=debug ;;
  esac
  TARGET=${CARGO_TARGET_DIR:-$REPO_DIR/target}/$dir
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

run_master() { # name, extra args... (runs in this shell so cleanup sees the PID); result in $WORK/<name>.json
  local name=$1; shift
  local p; p=$(port)
  "$TARGET/rkube-master" --data-dir "$WORK/$name" --listen "127.0.0.1:$p" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  DEADLINE=30 wait_for curl -sfk "https://127.0.0.1:$p/healthz" || die "rkube-master ($name) did not start"
  local token; token=$(cat "$WORK/$name/pki/admin.token")
  # Warm up connections and the store, then measure each kind of write.
  "$TARGET/examples/bench-api" "https://127.0.0.1:$p" "$WORK/$name/pki/ca.crt" "$token" 200 1 >/dev/null
  for op in create update apply; do
    "$TARGET/examples/bench-api" "https://127.0.0.1:$p" "$WORK/$name/pki/ca.crt" "$token" "$RATE" "$SECS" "$op" \
      >"$WORK/$name-$op.json"
  done
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
}

log "embedded store: $RATE writes/s for ${SECS}s per kind of write"
run_master embedded
ep=$(port); pp=$(port)
etcd --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$ep" --advertise-client-urls "http://127.0.0.1:$ep" \
  --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
  --initial-cluster "default=http://127.0.0.1:$pp" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
DEADLINE=30 wait_for curl -sf "http://127.0.0.1:$ep/health" || die "etcd did not start"
log "etcd store: $RATE writes/s for ${SECS}s per kind of write"
run_master etcd --etcd-servers "http://127.0.0.1:$ep"

printf '%-10s %-7s %10s %8s %10s %10s %10s\n' store write achieved errors p50_ms p99_ms max_ms
for n in embedded etcd; do
  for op in create update apply; do
    j=$(cat "$WORK/$n-$op.json")
    printf '%-10s %-7s %10s %8s %10s %10s %10s\n' "$n" "$op" "$(jq -r .achieved_rps <<<"$j")" "$(jq -r .errors <<<"$j")" \
      "$(jq -r .p50_ms <<<"$j")" "$(jq -r .p99_ms <<<"$j")" "$(jq -r .max_ms <<<"$j")"
  done
done
python3 - "$WORK" "$RATE" <<'PY'
import json,sys
work,rate=sys.argv[1],int(sys.argv[2])
r={(n,op):json.load(open(f"{work}/{n}-{op}.json")) for n in ("embedded","etcd") for op in ("create","update","apply")}
for op in ("create","update","apply"):
    e,t=r[("embedded",op)],r[("etcd",op)]
    print(f"{op}: ratio etcd/embedded p50 {t['p50_ms']/e['p50_ms']:.2f}x  p99 {t['p99_ms']/e['p99_ms']:.2f}x")
for op in ("create","update","apply"):
    e=r[("embedded",op)]
    met = rate >= 1000 and e['p99_ms'] <= 10 and e['errors'] == 0 and e['achieved_rps'] >= 0.95*rate
    print(f"target {op} (embedded p99 <= 10 ms at >= 1000 writes/s): {'MET' if met else 'NOT MET'}")
PY
