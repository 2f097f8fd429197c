#!/usr/bin/env bash
# Import benchmark: a ~200 MiB root filesystem tarball (thousands of small files plus a few large ones)
# made into a one-layer local image, side by side in one run:
#   rkubelet image import  (hash, verified safe unpack into the store, tar kept as the blob for push)
#   podman import          (own temp storage, overlay driver)
#   tar -x                 (plain extraction: the floor, no image made)
# Prints each mean time and the ratios.
#   hack/bench-import.sh        # RUNS=3, RKUBELET=<prebuilt binary> skips the release build
source "$(dirname "$0")/lib.sh"
need podman hyperfine tar jq bc

RUNS=${RUNS:-3}
WORK=$BUILD_DIR/bench-import
PODMAN="podman --root $WORK/podman-root --runroot $WORK/podman-run --storage-driver overlay"

cleanup() {
  $PODMAN rmi -af >/dev/null 2>&1 || true
  rm -rf "$WORK/rk" "$WORK/podman-root" "$WORK/podman-run" "$WORK/x"
}
trap cleanup EXIT

build_rootfs() {
  log "building a ~200 MiB rootfs tarball in $WORK"
  local src=$WORK/src d f
  rm -rf "$src"
  for d in $(seq 1 30); do
    mkdir -p "$src/usr/lib/d$d"
    for f in $(seq 1 200); do
      # Half random, half text: small files of 1-16 KiB as in real distributions.
      head -c $(( (f % 16 + 1) * 512 )) /dev/urandom >"$src/usr/lib/d$d/f$f"
      seq 1 $(( (f % 16 + 1) * 60 )) >>"$src/usr/lib/d$d/f$f"
    done
    ln -s "d$d/f1" "$src/usr/lib/link$d"
  done
  mkdir -p "$src/opt/big"
  for f in 1 2 3 4; do
    head -c $((20 * 1024 * 1024)) /dev/urandom >"$src/opt/big/blob$f"
    seq 1 3000000 >"$src/opt/big/text$f"
  done
  tar --sort=name --numeric-owner -C "$src" -cf "$WORK/rootfs.tar" .
  rm -rf "$src"
}

mkdir -p "$WORK"
[ -f "$WORK/rootfs.tar" ] || build_rootfs
log "rootfs.tar: $(du -sm "$WORK/rootfs.tar" | cut -f1) MiB"

if [ -z "${RKUBELET:-}" ]; then
  log "building rkubelet (release)"
  (cd "$REPO_DIR" && cargo build --release --quiet --bin rkubelet)
  RKUBELET=${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/rkubelet
fi

hyperfine --runs "$RUNS" --export-json "$WORK/result.json" \
  --prepare "rm -rf $WORK/rk $WORK/x; mkdir -p $WORK/x; $PODMAN rmi -af >/dev/null 2>&1 || true; rm -rf $WORK/podman-root $WORK/podman-run; sync" \
  -n rkubelet "$RKUBELET image --root $WORK/rk import $WORK/rootfs.tar bench/rootfs:1" \
  -n podman "$PODMAN import --quiet $WORK/rootfs.tar bench/rootfs:1" \
  -n tar "tar -C $WORK/x -xf $WORK/rootfs.tar"

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$WORK/result.json"; }
rk=$(mean rkubelet); pd=$(mean podman); tx=$(mean tar)
printf '\n%-10s %8s\n' tool "mean (s)"
printf '%-10s %8.2f\n' rkubelet "$rk" podman "$pd" tar "$tx"
printf '\nrkubelet / podman = %.2f\n' "$(echo "$rk / $pd" | bc -l)"
printf 'rkubelet / tar -x = %.2f   (tar makes no image: no hashing, no compression)\n' "$(echo "$rk / $tx" | bc -l)"
