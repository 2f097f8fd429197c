#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the privileged integration tests
# (real namespaces, cgroups, netlink, iptables, a real registry, the real kubectl). Run as root.
#   sudo hack/test.sh            # everything
#   sudo hack/test.sh image_     # only tests whose names contain "image_" (passed to cargo test)
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"

"$HACK_DIR/setup.sh"

log "cargo fmt --check"
cargo fmt --all --check
# rkube-monitor is built by build.rs, not a Cargo target: cargo fmt does not see it.
rustfmt --edition 2024 --check src/bin/rkube-monitor/main.rs
log "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
log "cargo test"
cargo test --all-targets --no-fail-fast -- "$@"
"$HACK_DIR/check-host-clean.sh"
