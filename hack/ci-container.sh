#!/usr/bin/env bash
# Runs the whole test suite in a privileged container on a clean Debian 12 root filesystem,
# started by rkube's own runtime (`rkubelet runtime run`): what CI does (`.ci/run`).
#
#   hack/ci-container.sh            # the README's test command, then the demo smoke test, inside
#   hack/ci-container.sh -- CMD...  # any command inside such a container instead, e.g.
#                                   # `-- hack/test.sh pod_` or `-- bash` (no terminal: stdin only)
#
# Steps, on the host:
#   1. install what the host needs to build rkubelet and a root filesystem (mmdebstrap);
#   2. build rkubelet (debug) for the host, in the host's own target dir;
#   3. make the clean root filesystem (`mmdebstrap --variant=minbase bookworm`) once per package
#      list and apt sources, kept under $RKUBE_CI_CACHE, and copy it for this run;
#   4. container 1, in the host's network namespace (it needs the package registry):
#      `hack/setup.sh` installs the packages the suite needs into the copy;
#   5. container 2, in a network namespace of its own (loopback only): `hack/test.sh`, then
#      `hack/demo-smoke.sh` (README command 1 with podman's bridge present, then its `clean`);
#   6. remove the container, its network namespace and the copy, then `hack/check-host-clean.sh`.
#
# Bound in from the host: the Rust toolchain (rustup and cargo homes: toolchains and the crate
# registry cache), the checkout and the container's target dir (same paths inside; kept between
# runs while the build's packages are unchanged), and the real kubectl 1.32 as /usr/bin/kubectl
# (Debian 12 packages only 1.20).
# Everything else the suite needs comes from `hack/setup.sh` inside the container.
#
# Environment: RKUBE_CI_CACHE (default /var/cache/rkube-ci) holds the root filesystem and the target
# dirs; CARGO_TARGET_DIR overrides the container's; RKUBE_CI_KEEP=1 keeps this run's copy of the
# root filesystem for a look afterwards.
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"

[ "$(id -u)" = 0 ] || die "run as root: it starts a privileged container"
CACHE=${RKUBE_CI_CACHE:-/var/cache/rkube-ci}
SUITE=bookworm
# Packages in the clean root filesystem besides minbase: only what `hack/setup.sh` itself needs
# to run (its `rustup` call talks HTTPS); it installs everything else.
ROOTFS_INCLUDE=ca-certificates
HOST_PACKAGES=(mmdebstrap gcc libc6-dev protobuf-compiler libprotobuf-dev iproute2 jq)

command=()
if [ "${1:-}" = -- ]; then shift; command=("$@"); [ ${#command[@]} -gt 0 ] || die "-- needs a command"; fi

# 1. Host prerequisites.
install_packages "${HOST_PACKAGES[@]}"
need cargo mmdebstrap ip jq

# 2. rkubelet for the host, in a target dir of the host's own: build scripts (protoc, the C parts)
#    ran against the host's packages there, so the container must not reuse their outputs.
HOST_TARGET=$CACHE/host-target
log "building rkubelet (target dir $HOST_TARGET)"
cargo fetch --quiet
CARGO_TARGET_DIR=$HOST_TARGET cargo build --quiet --bin rkubelet
# The container's target dir is reused from run to run while the packages the build needs
# (hack/setup.sh's BUILD_PACKAGES line) stay the same; a changed build list starts from a cold
# build, so a package the build needs but setup no longer installs fails here instead of hiding
# behind cached build-script outputs. Packages only the tests use do not touch the build.
build_packages=$(grep '^BUILD_PACKAGES=' "$HACK_DIR/setup.sh") || die "hack/setup.sh has no BUILD_PACKAGES line"
setup_key=$(printf '%s\n' "$build_packages" | sha256sum | cut -c1-16)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target-$setup_key}
mkdir -p "$CARGO_TARGET_DIR"
touch "$CARGO_TARGET_DIR"
# Target dirs of other package lists go once unused for a week (a branch may still need one).
find "$CACHE" -maxdepth 1 -name 'target-*' ! -path "$CARGO_TARGET_DIR" -mtime +7 -exec rm -rf --one-file-system {} +

RUN_ID=$$
WORK=$CACHE/run-$RUN_ID
NETNS=rkube-ci-$RUN_ID
CGROUP=rkube-ci-$RUN_ID
STATE=$WORK/state
RKUBELET=$WORK/bin/rkubelet
# Runs killed before their cleanup leave run dirs behind; a day later they go. A pid reused now
# must not find an old tree.
find "$CACHE" -maxdepth 1 -name 'run-*' -mtime +1 -exec rm -rf --one-file-system {} +
rm -rf --one-file-system "$WORK"
mkdir -p "$WORK/bin" "$WORK/tmp" "$STATE"
chmod 1777 "$WORK/tmp"
# A copy, so a later host build may replace the binary while this one runs (rkube-monitor is
# built for x86_64 only).
cp "$HOST_TARGET/debug/rkubelet" "$WORK/bin/"
if [ -f "$HOST_TARGET/debug/rkube-monitor" ]; then cp "$HOST_TARGET/debug/rkube-monitor" "$WORK/bin/"; fi

# hack/setup.sh binds the hugetlb hierarchy inside the container, whose /sys/fs/cgroup is the
# host's: the directory it makes there stays on the host once the container's mount is gone.
HUGETLB_DIR=/sys/fs/cgroup/hugetlb
hugetlb_was_there=$([ -e "$HUGETLB_DIR" ] && echo 1 || true)

# Removes the containers, the network namespace and this run's files (idempotent).
remove_run() {
  local id
  for id in "$CGROUP-setup" "$CGROUP-test"; do
    "$RKUBELET" runtime --root "$STATE" delete --force "$id" >/dev/null 2>&1 || true
  done
  ip netns delete "$NETNS" 2>/dev/null || true
  if [ -z "$hugetlb_was_there" ] && [ -d "$HUGETLB_DIR" ] && ! mountpoint -q "$HUGETLB_DIR"; then
    rmdir "$HUGETLB_DIR" 2>/dev/null || true
  fi
  if [ "${RKUBE_CI_KEEP:-}" = 1 ]; then
    log "kept $WORK"
  else
    rm -rf --one-file-system "$WORK"
  fi
}
trap remove_run EXIT
trap 'exit 130' INT TERM

# 3. The clean root filesystem from the package registry (mmdebstrap's default mirror, with the
#    stable release's updates and security suites), cached by what makes it.
key=$(printf '%s\n' "$SUITE minbase $ROOTFS_INCLUDE" "$(mmdebstrap --version)" | sha256sum | cut -c1-16)
CLEAN=$CACHE/rootfs-$key
if [ ! -d "$CLEAN" ]; then
  log "building a clean Debian $SUITE root filesystem (mmdebstrap --variant=minbase)"
  rm -rf --one-file-system "$CLEAN.tmp"
  mmdebstrap --quiet --variant=minbase --include="$ROOTFS_INCLUDE" "$SUITE" "$CLEAN.tmp" </dev/null \
    || die "mmdebstrap failed"
  mv "$CLEAN.tmp" "$CLEAN"
  # Only the newest root filesystem is kept.
  find "$CACHE" -maxdepth 1 -name 'rootfs-*' ! -name "rootfs-$key" -exec rm -rf --one-file-system {} +
fi
log "copying $CLEAN for this run"
cp -a "$CLEAN" "$WORK/rootfs"
# The host's CA bundle beside the container's own, for pip (PIP_CERT in the container): HTTPS to
# the package registries may pass a TLS-inspecting proxy whose CA only the host trusts.
cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/rkube-host-ca.crt" 2>/dev/null \
  || cp "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt" "$WORK/rootfs/etc/ssl/certs/rkube-host-ca.crt"

# The container's config: privileged (every capability the host has, no seccomp, all devices,
# writable /sys and cgroups, the host's /dev), the toolchain and checkout bound at their own paths.
RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
KUBECTL=$(readlink -f /usr/bin/kubectl 2>/dev/null || true)
[ -x "$KUBECTL" ] || die "the real kubectl is missing at /usr/bin/kubectl (the suite drives it)"
# Every capability in our bounding set, by name (the kernel's bit order).
CAP_BITS=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
  NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
  SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
  AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
  PERFMON BPF CHECKPOINT_RESTORE)
mask=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
cap_names=$(for i in "${!CAP_BITS[@]}"; do
  if (( mask >> i & 1 )); then printf 'CAP_%s\n' "${CAP_BITS[$i]}"; fi
done | jq -R . | jq -sc .)

# bundle NAME NETNS_PATH ARGS_JSON: writes $WORK/NAME/config.json (NETNS_PATH empty: the host's).
bundle() {
  local dir=$WORK/$1 netns=$2 args=$3
  mkdir -p "$dir"
  jq -n --arg root "$WORK/rootfs" --arg repo "$REPO_DIR" --arg target "$CARGO_TARGET_DIR" \
    --arg rustup "$RUSTUP_HOME" --arg cargo "$CARGO_HOME" --arg kubectl "$KUBECTL" \
    --arg tmp "$WORK/tmp" --arg netns "$netns" --arg cgroup "/$CGROUP" --argjson caps "$cap_names" \
    --argjson args "$args" --arg hostname "$1" '
  def bind($src; $dst; $opts): {destination: $dst, type: "bind", source: $src, options: (["rbind"] + $opts)};
  {
    ociVersion: "1.0.2",
    hostname: $hostname,
    root: {path: $root, readonly: false},
    process: {
      args: $args, cwd: $repo, user: {uid: 0, gid: 0},
      env: (["PATH=\($cargo)/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root", "RUSTUP_HOME=\($rustup)", "CARGO_HOME=\($cargo)",
            "CARGO_TARGET_DIR=\($target)", "CI=true", "RKUBE_CI_CONTAINER=1", "TERM=dumb", "LANG=C.UTF-8",
            "RKUBE_CHECK_SKIP=\($cgroup) \($repo) \($target) \($cargo) \($rustup) \($tmp)",
            "PIP_CERT=/etc/ssl/certs/rkube-host-ca.crt"]
            + (if $netns == "" then [] else ["CARGO_NET_OFFLINE=true"] end)),
      capabilities: {bounding: $caps, effective: $caps, permitted: $caps},
      noNewPrivileges: false
    },
    mounts: [
      {destination: "/proc", type: "proc", source: "proc"},
      bind("/dev"; "/dev"; ["rw"]),
      {destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "nodev", "mode=1777"]},
      {destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "rw"]},
      bind("/sys/fs/cgroup"; "/sys/fs/cgroup"; ["rw"]),
      {destination: "/run", type: "tmpfs", source: "run", options: ["nosuid", "nodev", "mode=755"]},
      bind($tmp; "/tmp"; ["rw"]),
      bind("/etc/resolv.conf"; "/etc/resolv.conf"; ["ro"]),
      bind($repo; $repo; ["rw"]),
      bind($target; $target; ["rw"]),
      bind($rustup; $rustup; ["ro"]),
      bind($cargo; $cargo; ["rw"]),
      bind($kubectl; "/usr/bin/kubectl"; ["ro"])
    ],
    linux: {
      namespaces: ([{type: "pid"}, {type: "mount"}, {type: "ipc"}, {type: "uts"}]
                   + (if $netns == "" then [] else [{type: "network", path: $netns}] end)),
      cgroupsPath: $cgroup,
      resources: {devices: [{allow: true, access: "rwm"}]}
    }
  }' >"$dir/config.json"
}

# run_container NAME: runs the bundle in the foreground; returns the container's exit code. Only a
# command given after `--` gets our stdin (CI has none).
run_container() {
  if [ "$1" = test ] && [ ${#command[@]} -gt 0 ]; then
    "$RKUBELET" runtime --root "$STATE" run --bundle "$WORK/$1" "$CGROUP-$1"
  else
    "$RKUBELET" runtime --root "$STATE" run --bundle "$WORK/$1" "$CGROUP-$1" </dev/null
  fi
}

# 4. Packages, from the package registry: the host's network namespace.
bundle setup "" '["bash", "hack/setup.sh"]'
log "container $CGROUP-setup: hack/setup.sh on the clean root filesystem"
run_container setup || die "hack/setup.sh failed in the clean root filesystem"

# 5. The suite, in a network namespace of its own: only loopback.
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
if [ ${#command[@]} -gt 0 ]; then
  args=$(printf '%s\n' "${command[@]}" | jq -R . | jq -sc .)
else
  args='["bash", "-c", "hack/test.sh && hack/demo-smoke.sh"]'
fi
bundle test "/run/netns/$NETNS" "$args"
log "container $CGROUP-test: ${command[*]:-hack/test.sh, then hack/demo-smoke.sh}"
status=0
run_container test || status=$?
if [ "$status" != 0 ]; then
  trap - EXIT
  remove_run
  # Say what a failed suite left on the host, without hiding the failure.
  "$HACK_DIR/check-host-clean.sh" || true
  die "the suite failed inside the container (exit $status)"
fi

# 6. Nothing of the run may be left on the host.
trap - EXIT
remove_run
"$HACK_DIR/check-host-clean.sh"
log "CI container run passed"
