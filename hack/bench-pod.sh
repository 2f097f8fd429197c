#!/usr/bin/env bash
# Pod start benchmark (run as root):
#  1. time from `rkubelet run` to the container process running (cached image, own netns, veth and
#     IP), side by side with crun running the bare container from the same rootfs; prints the ratio
#     (target <= 2.5x). crun refuses cgroup v1/v2 hybrid hosts ("cgroups in hybrid mode not
#     supported"); there the script uses runc as the peer and says so;
#  2. 50 pods on one node: the agent's RSS and the per-pod overhead (agent growth and monitors).
# Everything lives in a temp dir and a node network namespace of its own; removed at the end.
#   hack/bench-pod.sh            (RKUBELET=path to use a given binary; RUNS=10; PODS=50)
source "$(dirname "$0")/lib.sh"
need hyperfine jq busybox unshare
[ "$(id -u)" = 0 ] || die "run as root"

RKUBELET=${RKUBELET:-}
if [ -z "$RKUBELET" ]; then
  (cd "$REPO_DIR" && cargo build --release --quiet --bin rkubelet)
  RKUBELET=${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/rkubelet
fi
RUNS=${RUNS:-10}
PODS=${PODS:-50}
WORK=$(mktemp -d /tmp/rkube-bench.XXXXXX)
PEER=crun
N=$(( (RANDOM % 50) + 200 ))
FLAGS=(--root "$WORK/root" --run-dir "$WORK/run" --pod-cidr "10.77.$N.0/24" --bridge "rkt$N"
  --node-netns "$WORK/nodens" --cgroup-parent "rkube/bench-$$" --nameserver 10.96.0.10)

cleanup() {
  set +e
  [ -f "$WORK/run/agent.pid" ] && kill "$(cat "$WORK/run/agent.pid")" 2>/dev/null
  for p in $(ls "$WORK/root/pods" 2>/dev/null); do "$RKUBELET" rm "$p" "${FLAGS[@]}" --time 0 >/dev/null 2>&1; done
  $PEER delete -f "bench-peer-$$" >/dev/null 2>&1
  umount "$WORK/nodens" 2>/dev/null
  for c in cpu cpuacct memory pids devices; do rmdir "/sys/fs/cgroup/$c/rkube/bench-$$" "/sys/fs/cgroup/$c/rkube" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A busybox rootfs, imported as an image (the "cached image").
ROOTFS=$WORK/bundle/rootfs
mkdir -p "$ROOTFS"/{bin,etc,tmp,proc,sys,dev,root}
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for a in $("$ROOTFS/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$ROOTFS/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOTFS/etc/passwd"
"$RKUBELET" image import --root "$WORK/root" "$ROOTFS" busybox:bench >/dev/null
touch "$WORK/nodens" && unshare --net="$WORK/nodens" true

pod_yaml() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: c, image: busybox:bench, imagePullPolicy: Never, command: [sleep, "3600"]}
YAML
}
pod_yaml bench >"$WORK/bench.yaml"
# A node normally runs pods already: one anchor pod keeps the node's bridge and NAT rules installed,
# so the measurement is a pod start, not node setup (ANCHOR=1; default 0 includes node rules each time).
if [ "${ANCHOR:-0}" = 1 ]; then
  pod_yaml anchor >"$WORK/anchor.yaml"
  "$RKUBELET" run "$WORK/anchor.yaml" --no-agent "${FLAGS[@]}" >/dev/null
fi

# The peer: the same rootfs, a fresh netns, detached.
(cd "$WORK/bundle" && runc spec && jq '.process.terminal=false | .process.args=["sleep","3600"]' config.json >c.json && mv c.json config.json)
if crun run -d --bundle "$WORK/bundle" "bench-peer-$$" >/dev/null 2>&1; then
  crun delete -f "bench-peer-$$" >/dev/null
else
  log "crun cannot run containers on this host (cgroup hybrid layout); comparing with runc"
  PEER=runc
fi

log "1. start latency: rkubelet run (netns+veth+IP+overlay) vs $PEER run -d (bare), $RUNS runs each"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/start.json" \
  --prepare "$RKUBELET rm bench ${FLAGS[*]} --time 0 >/dev/null 2>&1 || true" \
  -n rkubelet "$RKUBELET run $WORK/bench.yaml --no-agent ${FLAGS[*]}" \
  --prepare "$PEER delete -f bench-peer-$$ >/dev/null 2>&1 || true" \
  -n "$PEER" "$PEER run -d --bundle $WORK/bundle bench-peer-$$ >/dev/null"
"$RKUBELET" rm bench "${FLAGS[@]}" --time 0 >/dev/null
$PEER delete -f "bench-peer-$$" >/dev/null 2>&1 || true
jq -r --arg peer "$PEER" '.results as $r | ($r[0].mean / $r[1].mean) as $ratio
  | "rkubelet run: \($r[0].mean*1000|floor) ms   \($peer) run: \($r[1].mean*1000|floor) ms   ratio: \($ratio*100|floor/100)x (target <= 2.5x)"' \
  "$WORK/start.json"

log "2. $PODS pods on one node"
"$RKUBELET" serve "${FLAGS[@]}" >/dev/null 2>&1 &
DEADLINE=10 wait_for test -s "$WORK/run/agent.pid"
AGENT=$(cat "$WORK/run/agent.pid")
sleep 1
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
BEFORE=$(rss "$AGENT")
START=$SECONDS
for i in $(seq 1 "$PODS"); do
  pod_yaml "p$i" >"$WORK/p.yaml"
  "$RKUBELET" run "$WORK/p.yaml" --no-agent "${FLAGS[@]}" >/dev/null
done
ELAPSED=$((SECONDS - START))
sleep 2
AFTER=$(rss "$AGENT")
MON=0; MON_PSS=0
for s in "$WORK"/run/runtime/*/state.json; do
  pid=$(jq -r .monitor_pid "$s")
  MON=$((MON + $(rss "$pid" 2>/dev/null || echo 0))); MON_PSS=$((MON_PSS + $(pss "$pid" 2>/dev/null || echo 0)))
done
echo "started $PODS pods in ${ELAPSED}s"
echo "agent RSS: ${BEFORE} kB idle, ${AFTER} kB with $PODS pods (target <= 30 MB)"
echo "per pod: agent +$(( (AFTER - BEFORE) / PODS )) kB; runtime monitor process RSS $(( MON / PODS )) kB, PSS $(( MON_PSS / PODS )) kB (target <= 1 MB)"
