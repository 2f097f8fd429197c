#!/usr/bin/env bash
# Builds the demo/test images from rootfs/ without Docker (busybox-static + umoci) into an OCI
# layout, and with --push copies them to a registry under the seed's names.
#   hack/build-images.sh [--push [HOST:PORT]]   (default registry 127.0.0.1:5000)
# Images: library/nginx:{1.10,1.11,latest}, rapa-phm/imageview:{blue,green}.
source "$(dirname "$0")/lib.sh"
need umoci busybox

LAYOUT=$BUILD_DIR/images/oci
WORK=$BUILD_DIR/images/work
PUSH_TO=""
if [ "${1:-}" = "--push" ]; then PUSH_TO=${2:-127.0.0.1:${RKUBE_REGISTRY_PORT:-5000}}; need skopeo; fi

rm -rf "$LAYOUT" "$WORK"
mkdir -p "$WORK" "$(dirname "$LAYOUT")"
umoci init --layout "$LAYOUT"

# The shared base layer: busybox with its applet links, /etc from rootfs/base.
base=$WORK/base
mkdir -p "$base/bin" "$base/tmp" "$base/root" "$base/proc" "$base/sys" "$base/dev" "$base/etc"
cp -a "$REPO_DIR/rootfs/base/." "$base/"
cp "$(command -v busybox)" "$base/bin/busybox"
for applet in $("$base/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$base/bin/$applet"
done
chmod 1777 "$base/tmp"

umoci new --image "$LAYOUT:base"
umoci insert --image "$LAYOUT:base" "$base" /
umoci config --image "$LAYOUT:base" --os linux --architecture amd64 --config.cmd /bin/sh \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# app_image TAG SRC_DIR SUBST... : base + one layer from rootfs/SRC_DIR with @KEY@ substituted.
app_image() {
  local tag=$1 src=$2; shift 2
  local dir=$WORK/$tag
  mkdir -p "$dir"
  cp -a "$REPO_DIR/rootfs/$src/." "$dir/"
  local kv
  for kv in "$@"; do
    grep -rl "@${kv%%=*}@" "$dir" | xargs -r sed -i "s|@${kv%%=*}@|${kv#*=}|g"
  done
  umoci insert --image "$LAYOUT:base" --tag "$tag" "$dir" /
}

for version in 1.10 1.11 latest; do
  app_image "nginx-$version" nginx VERSION="$version"
  umoci config --image "$LAYOUT:nginx-$version" --tag "nginx-$version" \
    --config.entrypoint /usr/local/bin/httpd-foreground --config.cmd -p --config.cmd 80 \
    --config.cmd -h --config.cmd /usr/share/nginx/html --config.exposedports 80/tcp \
    --config.label "org.opencontainers.image.version=$version" --config.stopsignal SIGTERM
done
for color in blue green; do
  app_image "imageview-$color" imageview COLOR="$color"
  umoci config --image "$LAYOUT:imageview-$color" --tag "imageview-$color" \
    --config.entrypoint /usr/local/bin/httpd-foreground --config.cmd -p --config.cmd 80 \
    --config.cmd -h --config.cmd /www --config.exposedports 80/tcp
done
umoci gc --layout "$LAYOUT"
log "built OCI layout $LAYOUT: $(umoci ls --layout "$LAYOUT" | tr '\n' ' ')"

if [ -n "$PUSH_TO" ]; then
  push() { skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:$1" "docker://$PUSH_TO/$2"; }
  for version in 1.10 1.11 latest; do push "nginx-$version" "library/nginx:$version"; done
  for color in blue green; do push "imageview-$color" "rapa-phm/imageview:$color"; done
  log "pushed library/nginx:{1.10,1.11,latest} and rapa-phm/imageview:{blue,green} to $PUSH_TO"
fi
