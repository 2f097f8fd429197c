#!/usr/bin/env bash
# The main job on a fresh machine: build rkube, start a local registry, build the demo images from
# rootfs/ and push them under the seed's names, then pull one with rkubelet and list it.
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"

"$HACK_DIR/setup.sh"
log "building rkube (release)"
cargo build --release --quiet
RKUBELET=$REPO_DIR/target/release/rkubelet

"$HACK_DIR/registry.sh" start
"$HACK_DIR/build-images.sh" --push "127.0.0.1:${RKUBE_REGISTRY_PORT:-5000}"

# Serve docker.io and gcr.io names from the local registry, as a node's mirror config would.
ROOT=${RKUBE_DEMO_ROOT:-$BUILD_DIR/demo-root}
CONFIG=$BUILD_DIR/registries.yaml
cat >"$CONFIG" <<YAML
mirrors:
  docker.io: ["http://127.0.0.1:${RKUBE_REGISTRY_PORT:-5000}"]
  gcr.io: ["http://127.0.0.1:${RKUBE_REGISTRY_PORT:-5000}"]
YAML
log "pulling nginx:1.10 through the docker.io mirror"
"$RKUBELET" image --root "$ROOT" --registries-config "$CONFIG" pull nginx:1.10
"$RKUBELET" image --root "$ROOT" --registries-config "$CONFIG" ls
log "done; stop the registry with: hack/registry.sh stop"
