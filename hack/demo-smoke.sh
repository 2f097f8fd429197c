#!/usr/bin/env bash
# README command 1 as a test, on a host that also has podman's bridge (cni-podman0, 10.88.0.1/16):
#   1. `rkubelet run --pod-cidr 10.88.0.0/16` is refused with one line naming cni-podman0, and
#      leaves nothing behind;
#   2. `hack/demo.sh` serves the demo pod (page, cgi info, the nginx sidecar);
#   3. `hack/demo.sh clean` leaves the host clean (`hack/check-host-clean.sh`).
# CI runs it inside its container (hack/ci-container.sh), in a network namespace of its own, where
# it adds the bridge itself. Elsewhere it uses a cni-podman0 that podman made, or skips step 1.
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"
[ "$(id -u)" = 0 ] || die "run as root"

added_bridge=""
demo_started=""
finish() {
  local rc=$?
  # A failure half-way must not leave the demo's agent, pods and registry behind.
  if [ -n "$demo_started" ] && [ "$rc" != 0 ]; then "$HACK_DIR/demo.sh" clean >/dev/null 2>&1 || true; fi
  [ -z "$added_bridge" ] || ip link delete cni-podman0 2>/dev/null || true
  exit "$rc"
}
trap finish EXIT
if ! ip link show cni-podman0 >/dev/null 2>&1 && [ "${RKUBE_CI_CONTAINER:-}" = 1 ]; then
  ip link add cni-podman0 type bridge
  ip addr add 10.88.0.1/16 dev cni-podman0
  ip link set cni-podman0 up
  added_bridge=1
fi

# 1. A colliding pod CIDR is refused, and nothing is created.
if grep -q ' 10\.88\.' <<<"$(ip -o addr show dev cni-podman0 2>/dev/null)"; then
  log "smoke: --pod-cidr 10.88.0.0/16 next to podman's bridge is refused"
  cargo build --release --quiet
  scratch=$(mktemp -d)
  set +e
  out=$("$TARGET_DIR/release/rkubelet" run hack/demo/pod.yaml --pod-cidr 10.88.0.0/16 \
          --root "$scratch/root" --run-dir "$scratch/run" 2>&1)
  rc=$?
  set -e
  left=$(find "$scratch" -mindepth 1 | head -5)
  rm -rf "$scratch"
  [ "$rc" != 0 ] || die "rkubelet run accepted a pod CIDR that cni-podman0 uses"
  [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || die "expected one line, got: $out"
  case $out in *"overlaps 10.88.0.0/16 on cni-podman0"*) ;; *) die "the refusal does not name cni-podman0: $out" ;; esac
  [ -z "$left" ] || die "the refused run created: $left"
  "$HACK_DIR/check-host-clean.sh"
  log "refused: $out"
else
  log "smoke: no podman bridge here; skipping the CIDR refusal check"
fi

# 2. README command 1.
log "smoke: hack/demo.sh"
demo_started=1
"$HACK_DIR/demo.sh"
IP=$("$TARGET_DIR/release/rkubelet" inspect webserver --root "${RKUBE_DEMO_ROOT:-$BUILD_DIR/demo-root}" | jq -r .ip)
curl -sf "http://$IP/" | grep -q . || die "no page from the demo pod at $IP"
curl -sf "http://$IP/cgi-bin/info" | grep -q PROJECT_ID || die "no PROJECT_ID from the demo pod's cgi-bin/info"
curl -sf "http://$IP:8081/" | grep -q . || die "no page from the nginx sidecar at $IP:8081"

# 3. Its clean.
log "smoke: hack/demo.sh clean"
"$HACK_DIR/demo.sh" clean
demo_started=""
"$HACK_DIR/check-host-clean.sh"
log "smoke: README command 1 passed"
