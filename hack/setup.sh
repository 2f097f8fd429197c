#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build rkube and run its tests and demos. Idempotent.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (sudo hack/setup.sh): it installs packages"

# Debian packages: the registry server and image tools used by tests and demos, etcd for the etcd store
# backend, iptables for Services/NAT, protoc for etcd-client, and the peer runtimes benchmarks compare with.
PACKAGES=(docker-registry skopeo umoci busybox-static etcd-server iptables iproute2 protobuf-compiler
          runc crun podman hyperfine openssl curl jq)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packaged registry service would hold port 5000; tests and demos run their own instances.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

need cargo rustup
rustup component add rustfmt clippy >/dev/null 2>&1 || true
log "setup complete"
