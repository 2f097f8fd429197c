#!/usr/bin/env bash
# Container start-up benchmark: the same busybox bundle (`/bin/true`, new pid/net/ipc/uts/mount
# namespaces) run create→start→exit→delete (`<rt> run`) by crun, runc and `rkubelet runtime`
# side by side with hyperfine; prints the ratios and the monitor's RSS per container. Run as root:
#   sudo hack/bench-runtime.sh            # builds rkubelet --release if needed
#   RUNS=50 sudo hack/bench-runtime.sh
source "$(dirname "$0")/lib.sh"
need hyperfine crun runc jq busybox

RUNS=${RUNS:-100}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
RKUBELET=${RKUBELET:-$TARGET_DIR/release/rkubelet}
if [ ! -x "$RKUBELET" ]; then
  log "building rkubelet (release)"
  (cd "$REPO_DIR" && cargo build --release --quiet --bin rkubelet)
fi

# crun wants every v1 controller it knows to be mounted; hugetlb is missing on some hosts.
MOUNTED_HUGETLB=
if [ -d /sys/fs/cgroup/memory ] && ! grep -q ' /sys/fs/cgroup/hugetlb ' /proc/mounts; then
  log "mounting the hugetlb v1 hierarchy for crun (unmounted again at the end)"
  [ -d /sys/fs/cgroup/hugetlb ] || MOUNTED_HUGETLB=dir
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
  MOUNTED_HUGETLB=${MOUNTED_HUGETLB:-mount}
fi

WORK=$(mktemp -d /tmp/bench-runtime.XXXXXX)
PARENT=rkube-bench-$$
cleanup() {
  for rt in crun runc; do "$rt" --root "$WORK/state-$rt" delete -f "bench-$rt" >/dev/null 2>&1 || true; done
  "$RKUBELET" runtime --root "$WORK/state-rkube" delete -f bench-rkube >/dev/null 2>&1 || true
  "$RKUBELET" runtime --root "$WORK/state-rkube" delete -f bench-rss >/dev/null 2>&1 || true
  "$RKUBELET" runtime --root "$WORK/state-rkube" delete -f bench-rss-log >/dev/null 2>&1 || true
  for d in /sys/fs/cgroup/*/"$PARENT"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  rm -rf "$WORK"
  if [ -n "$MOUNTED_HUGETLB" ]; then
    umount /sys/fs/cgroup/hugetlb
    [ "$MOUNTED_HUGETLB" = dir ] && rmdir /sys/fs/cgroup/hugetlb
  fi
}
trap cleanup EXIT

log "bundle in $WORK"
BUNDLE=$WORK/bundle
mkdir -p "$BUNDLE/rootfs/bin" "$BUNDLE/rootfs/proc" "$BUNDLE/rootfs/sys" "$BUNDLE/rootfs/dev" "$BUNDLE/rootfs/etc"
cp "$(command -v busybox)" "$BUNDLE/rootfs/bin/busybox"
for applet in sh true sleep; do ln -s busybox "$BUNDLE/rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$BUNDLE/rootfs/etc/passwd"
echo 'root:x:0:' > "$BUNDLE/rootfs/etc/group"
(cd "$BUNDLE" && runc spec)
jq '.process.terminal = false | .process.args = ["/bin/true"]' "$BUNDLE/config.json" > "$BUNDLE/config.tmp"
mv "$BUNDLE/config.tmp" "$BUNDLE/config.json"

RK="$RKUBELET runtime --root $WORK/state-rkube --cgroup-parent $PARENT"
log "sanity run of each runtime"
crun --root "$WORK/state-crun" run --bundle "$BUNDLE" bench-crun
runc --root "$WORK/state-runc" run --bundle "$BUNDLE" bench-runc
$RK run --bundle "$BUNDLE" bench-rkube

hyperfine --warmup 5 --runs "$RUNS" -N --export-json "$WORK/result.json" \
  -n crun "crun --root $WORK/state-crun run --bundle $BUNDLE bench-crun" \
  -n runc "runc --root $WORK/state-runc run --bundle $BUNDLE bench-runc" \
  -n rkubelet "$RK run --bundle $BUNDLE bench-rkube"

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$WORK/result.json"; }
CRUN=$(mean crun); RUNC=$(mean runc); RKUBE=$(mean rkubelet)
echo
printf 'mean per container (create→start→exit→delete):\n'
printf '  crun      %7.2f ms\n' "$(echo "$CRUN * 1000" | bc -l)"
printf '  runc      %7.2f ms\n' "$(echo "$RUNC * 1000" | bc -l)"
printf '  rkubelet  %7.2f ms\n' "$(echo "$RKUBE * 1000" | bc -l)"
printf 'ratio rkubelet/crun = %.2fx   rkubelet/runc = %.2fx   (target <= 1.0x crun)\n' \
  "$(echo "$RKUBE / $CRUN" | bc -l)" "$(echo "$RKUBE / $RUNC" | bc -l)"

# Monitor memory: a long-running container with and without a CRI log (the kubelet's case, after
# a 40 kB line so the log buffers are in use); read the exec'd rkube-monitor's RSS and PSS.
cp "$BUNDLE/config.json" "$WORK/true.json"
monitor_memory() { # <id> <args json> [cri-log]
  local log=${3:-} mon exe
  jq --argjson a "$2" '.process.args = $a' "$WORK/true.json" > "$BUNDLE/config.json"
  $RK create --bundle "$BUNDLE" ${log:+--cri-log "$log"} "$1" </dev/null >/dev/null 2>&1
  $RK start "$1" >/dev/null
  mon=$(jq .monitor_pid "$WORK/state-rkube/$1/state.json")
  for _ in $(seq 100); do
    exe=$(readlink "/proc/$mon/exe" || true)
    [ "${exe##*/}" = rkube-monitor ] && { [ -z "$log" ] || [ -s "$log" ]; } && break
    sleep 0.05
  done
  printf '%s %s %s\n' "${exe##*/}" "$(awk '/^VmRSS/ {print $2}' "/proc/$mon/status")" \
    "$(awk '/^Pss:/ {print $2}' "/proc/$mon/smaps_rollup")"
  $RK delete -f "$1" >/dev/null
}
read -r EXE RSS PSS < <(monitor_memory bench-rss '["sleep", "30"]')
read -r EXE_LOG RSS_LOG PSS_LOG < <(monitor_memory bench-rss-log \
  '["sh", "-c", "head -c 40000 /dev/zero | tr \"\\\\0\" x; echo; exec sleep 30"]' "$WORK/rss.log")
cp "$WORK/true.json" "$BUNDLE/config.json"
MONITOR_BIN=$(dirname "$RKUBELET")/rkube-monitor
printf 'monitor binary: %s (%s bytes, %s)\n' "$MONITOR_BIN" "$(stat -c %s "$MONITOR_BIN")" \
  "$(file -b "$MONITOR_BIN" | cut -d, -f1-2,4)"
printf 'monitor per container (%s): RSS %s kB, PSS %s kB; with a CRI log (%s): RSS %s kB, PSS %s kB\n' \
  "$EXE" "$RSS" "$PSS" "$EXE_LOG" "$RSS_LOG" "$PSS_LOG"
printf 'ratio monitor RSS / conmon (~2048 kB) = %.2fx   (target <= 1 MB)\n' "$(echo "$RSS_LOG / 2048" | bc -l)"
