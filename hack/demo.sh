#!/usr/bin/env bash
# The main job on a fresh machine: build rkube, start a local registry, build the demo images from
# rootfs/ and push them under the seed's names, then pull one with rkubelet and list it.
#   sudo hack/demo.sh         # run it
#   sudo hack/demo.sh clean   # remove the pod, stop the agent and the registry, delete the bridge
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"

ROOT=${RKUBE_DEMO_ROOT:-$BUILD_DIR/demo-root}
RUN_DIR=/run/rkube
if [ "${1:-}" = clean ]; then
  RKUBELET=$TARGET_DIR/release/rkubelet
  # Pods, agent, bridge rkube0, RKUBE- chains, IPAM state, empty rkube cgroups: one command.
  [ -x "$RKUBELET" ] && "$RKUBELET" reset --force --time 0 --root "$ROOT" --run-dir "$RUN_DIR"
  "$HACK_DIR/registry.sh" stop
  rm -rf "$ROOT"
  log "demo removed"
  exit 0
fi

"$HACK_DIR/setup.sh"
log "building rkube (release)"
cargo build --release --quiet
RKUBELET=$TARGET_DIR/release/rkubelet

"$HACK_DIR/registry.sh" start
"$HACK_DIR/build-images.sh" --push "127.0.0.1:${RKUBE_REGISTRY_PORT:-5000}"

# Serve docker.io and gcr.io names from the local registry, as a node's mirror config would.
CONFIG=$BUILD_DIR/registries.yaml
cat >"$CONFIG" <<YAML
mirrors:
  docker.io: ["http://127.0.0.1:${RKUBE_REGISTRY_PORT:-5000}"]
  gcr.io: ["http://127.0.0.1:${RKUBE_REGISTRY_PORT:-5000}"]
YAML
log "pulling nginx:1.10 through the docker.io mirror"
"$RKUBELET" image --root "$ROOT" --registries-config "$CONFIG" pull nginx:1.10
"$RKUBELET" image --root "$ROOT" --registries-config "$CONFIG" ls

# The seed's demo pod: a page with env from a ConfigMap and a Secret, and an nginx sidecar.
NODE_FLAGS=(--root "$ROOT" --registries-config "$CONFIG")
"$RKUBELET" rm webserver "${NODE_FLAGS[@]}" --time 0 >/dev/null 2>&1 || true
log "running the demo pod (hack/demo/pod.yaml)"
"$RKUBELET" run "$HACK_DIR/demo/pod.yaml" "${NODE_FLAGS[@]}"
"$RKUBELET" ps "${NODE_FLAGS[@]}"
IP=$("$RKUBELET" inspect webserver "${NODE_FLAGS[@]}" | jq -r .ip)
DEADLINE=10 wait_for curl -sf "http://$IP/" || die "the demo pod does not answer on $IP"
log "page:  $(curl -s "http://$IP/" | head -c 200)"
log "info:  $(curl -s "http://$IP/cgi-bin/info" | head -c 200)"
cat >&2 <<EOT
==> the demo pod is running. Reach it with:
      curl http://$IP/                  # the pod IP (webserver-container, port 80)
      curl http://$IP/cgi-bin/info      # shows PROJECT_ID / SECRET_ID from the ConfigMap and Secret
      curl http://$IP:8081/             # the nginx sidecar in the same pod
      curl http://<this host's IP>:8080/  # hostPort (from another machine or namespace)
    logs:   $RKUBELET logs webserver -c webserver-container --root $ROOT
    remove everything (pod, agent, bridge, registry): sudo hack/demo.sh clean
EOT
