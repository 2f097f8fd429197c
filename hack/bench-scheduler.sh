#!/usr/bin/env bash
# Scheduler throughput: schedule PODS pods onto NODES fake nodes in process and print pods/second,
# next to kube-scheduler's scheduler_perf CI floor for the same workload (270 pods/s).
# Usage: hack/bench-scheduler.sh [NODES] [PODS]
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-5000}
PODS=${2:-10000}
# Optimise this crate too (dependencies are already built at opt-level 2 in the dev profile).
CARGO_PROFILE_DEV_OPT_LEVEL=2 \
  cargo run --quiet --example bench_scheduler -- --nodes "$NODES" --pods "$PODS"
