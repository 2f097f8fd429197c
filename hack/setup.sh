#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build rkube and run its tests and demos.
# Idempotent. Run as root (`sudo hack/setup.sh`, or plain `hack/setup.sh` where there is no sudo).
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (sudo hack/setup.sh): it installs packages"

# Debian packages, by what needs them:
#   build: a C toolchain (rustc links through cc; ring and zstd compile C), protoc and the
#          well-known .proto files (libprotobuf-dev) for etcd-client;
#   tests and demos: the registry server and image tools, etcd for the etcd store backend,
#          iptables, nftables and iproute2 for pod networks and Services, procps for the leak
#          check, python3-venv for the tests that drive the Python `kubernetes` client,
#          libcap2-bin (setcap/getcap) for the build test that copies a file capability;
#   benchmarks: the peer runtimes they compare with.
#   (hack/ci-container.sh keys its cached target dir by the BUILD_PACKAGES line alone: keep it one
#   line, and the build's packages in it.)
BUILD_PACKAGES=(gcc libc6-dev protobuf-compiler libprotobuf-dev)
PACKAGES=(docker-registry skopeo umoci busybox-static etcd-server iptables nftables iproute2 procps
          openssl curl jq python3-venv libcap2-bin
          runc crun podman hyperfine)
install_packages "${BUILD_PACKAGES[@]}" "${PACKAGES[@]}"
# The packaged registry service would hold port 5000; tests and demos run their own instances.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

# cgroup v1 hosts (hybrid layout) often leave the hugetlb controller unbound; the runtime's
# hugepageLimits need its hierarchy at /sys/fs/cgroup/hugetlb (as runc and contest expect).
if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && [ -d /sys/fs/cgroup/memory ] \
   && awk '$1 == "hugetlb" && $2 == 0 && $4 == 1 {found=1} END {exit !found}' /proc/cgroups \
   && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb || log "could not mount the hugetlb cgroup controller"
fi

# The Python `kubernetes` client for tests/master_python.rs, in a venv (from the package registry:
# here, because the tests may run where there is no network, as CI's test container does).
"$HACK_DIR/python-client.sh"

need cargo rustup cc protoc
rustup component add rustfmt clippy >/dev/null 2>&1 || true
log "setup complete"
