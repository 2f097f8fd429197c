#!/usr/bin/env bash
# Build benchmark: `rkubelet build` side by side with `buildah bud` (Debian's buildah, chroot
# isolation: crun/runc OCI isolation fails on cgroups v1 hybrid hosts) on the same Dockerfiles,
# in one run, cold (no cache) and cached (second build of an unchanged context). Prints the mean
# times and the ratios rkubelet/buildah (targets: cold <= 0.5, cached <= 0.2).
#   1. small: FROM scratch + busybox-static, a blue/green page, RUN, ENV/EXPOSE/CMD
#   2. large: 5 steps, a 100 MiB COPY and RUN steps writing 50 MiB
#   hack/bench-build.sh        # RUNS=3, RKUBELET=<prebuilt binary> skips the release build
source "$(dirname "$0")/lib.sh"
# The peer is installed here rather than by hack/setup.sh: only this benchmark uses it.
command -v buildah >/dev/null || install_packages buildah
need buildah hyperfine jq bc busybox

RUNS=${RUNS:-3}
WORK=$BUILD_DIR/bench-build
BUILDAH="buildah --root $WORK/buildah-root --runroot $WORK/buildah-run --storage-driver overlay"

cleanup() {
  $BUILDAH rmi -af >/dev/null 2>&1 || true
  umount -R "$WORK/buildah-root/overlay" 2>/dev/null || true
  rm -rf "$WORK/rk" "$WORK/rk-run" "$WORK/buildah-root" "$WORK/buildah-run"
}
trap cleanup EXIT

make_contexts() {
  rm -rf "$WORK/small" "$WORK/large"
  mkdir -p "$WORK/small/www" "$WORK/large/data"
  cp "$(command -v busybox)" "$WORK/small/busybox"
  echo '<h1>imageview blue</h1>' >"$WORK/small/www/index.html"
  cat >"$WORK/small/Dockerfile" <<'DF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV COLOR=blue
COPY www /www
RUN sed -i "s/blue/$COLOR/" /www/index.html && mkdir -p /var/log && rm -f /bin/telnet
EXPOSE 80
CMD ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]
DF
  cp "$(command -v busybox)" "$WORK/large/busybox"
  for i in $(seq 1 10); do head -c $((10 * 1024 * 1024)) /dev/urandom >"$WORK/large/data/blob$i"; done
  cat >"$WORK/large/Dockerfile" <<'DF'
FROM scratch
COPY busybox /bin/busybox
COPY data /data
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox dd if=/dev/urandom of=/out1 bs=1M count=25 2>/dev/null"]
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox dd if=/dev/zero of=/out2 bs=1M count=25 2>/dev/null"]
DF
}

mkdir -p "$WORK"
make_contexts
if [ -z "${RKUBELET:-}" ]; then
  log "building rkubelet (release)"
  (cd "$REPO_DIR" && cargo build --release --quiet --bin rkubelet)
  RKUBELET=${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/rkubelet
fi
RK="$RKUBELET build --root $WORK/rk --run-root $WORK/rk-run --registries-config $WORK/no-registries.yaml -q"
BH="$BUILDAH bud --quiet --isolation chroot --layers"

for ctx in small large; do
  log "$ctx: cold (no cache)"
  hyperfine --runs "$RUNS" --export-json "$WORK/$ctx-cold.json" \
    --prepare "rm -rf $WORK/rk; $BUILDAH rmi -af >/dev/null 2>&1 || true; sync" \
    -n rkubelet "$RK -t bench/$ctx:1 $WORK/$ctx" \
    -n buildah "$BH -t bench/$ctx:1 $WORK/$ctx"
  log "$ctx: cached (unchanged context)"
  $RK -t bench/$ctx:1 "$WORK/$ctx" >/dev/null
  $BH -t bench/$ctx:1 "$WORK/$ctx" >/dev/null
  hyperfine --runs "$RUNS" --export-json "$WORK/$ctx-cached.json" \
    -n rkubelet "$RK -t bench/$ctx:1 $WORK/$ctx" \
    -n buildah "$BH -t bench/$ctx:1 $WORK/$ctx"
done

mean() { jq -r --arg n "$2" '.results[] | select(.command == $n) | .mean' "$1"; }
printf '\n%-8s %-7s %10s %10s %8s\n' context cache rkubelet buildah ratio
for ctx in small large; do
  for mode in cold cached; do
    f=$WORK/$ctx-$mode.json
    rk=$(mean "$f" rkubelet); bh=$(mean "$f" buildah)
    printf '%-8s %-7s %9.3fs %9.3fs %8.2f\n' "$ctx" "$mode" "$rk" "$bh" "$(echo "$rk / $bh" | bc -l)"
  done
done
