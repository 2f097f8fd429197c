#!/usr/bin/env bash
# Pull benchmark: a ~300 MiB (gzip), 5-layer image served by a local docker-registry on 127.0.0.1, pulled
# side by side by `rkubelet image pull` (download + verify + unpack), `podman pull` (download + unpack, own
# temp storage) and `skopeo copy` to a dir (download only). Prints each tool's time and the ratios.
#   hack/bench-pull.sh            # RUNS=3 LAYER_MIB=60 BENCH_PORT=5399 override the defaults
source "$(dirname "$0")/lib.sh"
need docker-registry skopeo podman hyperfine jq curl tar gzip sha256sum cargo bc

RUNS=${RUNS:-3}
LAYER_MIB=${LAYER_MIB:-60}          # compressed size target per layer (random part)
export RKUBE_REGISTRY_PORT=${BENCH_PORT:-5399}
export RKUBE_REGISTRY_DIR=$BUILD_DIR/bench-registry
WORK=$BUILD_DIR/bench-pull
IMAGE=127.0.0.1:$RKUBE_REGISTRY_PORT/bench/big:1


cleanup() {
  "$HACK_DIR/registry.sh" stop >/dev/null 2>&1 || true
  rm -rf "$WORK/rk" "$WORK/podman-root" "$WORK/podman-run" "$WORK/skopeo"
}
trap cleanup EXIT

# blob FILE MEDIATYPE -> prints a descriptor and stores FILE under the layout's blobs/.
blob() {
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$WORK/layout/blobs/sha256/$hex"
  jq -cn --arg m "$2" --arg d "sha256:$hex" --argjson s "$size" '{mediaType:$m,digest:$d,size:$s}'
}

build_image() {
  log "building a 5-layer gzip image (~$((LAYER_MIB * 5)) MiB compressed) in $WORK/layout"
  rm -rf "$WORK/layout" "$WORK/src"
  mkdir -p "$WORK/layout/blobs/sha256"
  local layers=() diffs=() i
  for i in 1 2 3 4 5; do
    local src=$WORK/src/$i
    mkdir -p "$src/data/blobs" "$src/data/text/d$i"
    # Incompressible part: one big random file plus many small random files.
    head -c $((LAYER_MIB * 1024 * 1024 * 3 / 4)) /dev/urandom >"$src/data/blobs/random-$i.bin"
    for f in $(seq 1 1500); do head -c $(( (f % 16 + 1) * 1024 )) /dev/urandom >"$src/data/blobs/s$f"; done
    # Compressible part: text that gzip shrinks a lot.
    for f in $(seq 1 100); do seq $((f * 1000)) $((f * 1000 + 40000)) >"$src/data/text/d$i/t$f.txt"; done
    tar --sort=name --owner=0 --group=0 --numeric-owner -C "$src" -cf "$WORK/layer.tar" .
    diffs+=("sha256:$(sha256sum "$WORK/layer.tar" | cut -d' ' -f1)")
    gzip -1 -c "$WORK/layer.tar" >"$WORK/layer.tar.gz"
    rm -f "$WORK/layer.tar"
    layers+=("$(blob "$WORK/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)")
  done
  rm -rf "$WORK/src"
  jq -cn --args '{architecture:"amd64",os:"linux",config:{Cmd:["/bin/sh"]},rootfs:{type:"layers",diff_ids:$ARGS.positional}}' \
    "${diffs[@]}" >"$WORK/config.json"
  local config
  config=$(blob "$WORK/config.json" application/vnd.oci.image.config.v1+json)
  printf '%s\n' "${layers[@]}" | jq -cs --argjson c "$config" \
    '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",config:$c,layers:.}' >"$WORK/manifest.json"
  local manifest
  manifest=$(blob "$WORK/manifest.json" application/vnd.oci.image.manifest.v1+json)
  echo '{"imageLayoutVersion":"1.0.0"}' >"$WORK/layout/oci-layout"
  jq -cn --argjson m "$manifest" '{schemaVersion:2,manifests:[$m + {annotations:{"org.opencontainers.image.ref.name":"big"}}]}' \
    >"$WORK/layout/index.json"
}

mkdir -p "$WORK"
[ -f "$WORK/layout/index.json" ] || build_image
"$HACK_DIR/registry.sh" start
skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/layout:big" "docker://$IMAGE"
size=$(du -sm "$WORK/layout/blobs" | cut -f1)
log "image $IMAGE: $size MiB of blobs"

log "building rkubelet (release)"
(cd "$REPO_DIR" && cargo build --release --quiet --bin rkubelet)
RKUBELET=${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/rkubelet

PODMAN="podman --root $WORK/podman-root --runroot $WORK/podman-run --storage-driver overlay"
hyperfine --runs "$RUNS" --export-json "$WORK/result.json" \
  --prepare "rm -rf $WORK/rk $WORK/skopeo; $PODMAN rmi -af >/dev/null 2>&1 || true; rm -rf $WORK/podman-root $WORK/podman-run; sync" \
  -n rkubelet "$RKUBELET image --root $WORK/rk pull --quiet $IMAGE" \
  -n podman "$PODMAN pull --quiet --tls-verify=false $IMAGE" \
  -n skopeo "skopeo copy --quiet --src-tls-verify=false docker://$IMAGE dir:$WORK/skopeo"
$PODMAN rmi -af >/dev/null 2>&1 || true

field() { jq -r --arg n "$1" --arg f "$2" '.results[] | select(.command == $n) | .[$f]' "$WORK/result.json"; }
cpu() { echo "$(field "$1" user) + $(field "$1" system)" | bc -l; }
rk=$(field rkubelet mean); pd=$(field podman mean); sk=$(field skopeo mean)
printf '\n%-10s %9s %9s\n' tool "wall (s)" "cpu (s)"
for t in rkubelet podman skopeo; do printf '%-10s %9.2f %9.2f\n' "$t" "$(field $t mean)" "$(cpu $t)"; done
printf '\nrkubelet / podman = %.2f wall, %.2f cpu   (target <= 0.35 wall)\n' \
  "$(echo "$rk / $pd" | bc -l)" "$(echo "$(cpu rkubelet) / $(cpu podman)" | bc -l)"
printf 'rkubelet / skopeo = %.2f wall   (skopeo only downloads)\n' "$(echo "$rk / $sk" | bc -l)"
printf 'load average during the run: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
