# Shared shell helpers for hack/ scripts. Source it; do not run it.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")
# Where scripts keep generated artifacts (images, registry data); never inside src/.
BUILD_DIR=${RKUBE_BUILD_DIR:-$REPO_DIR/_build}
# Where cargo puts binaries (CI's container sets CARGO_TARGET_DIR).
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is missing; run hack/setup.sh"
  done
}

# Polls `$@` until it succeeds or $DEADLINE seconds pass.
wait_for() {
  local deadline=$((SECONDS + ${DEADLINE:-20}))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# Installs the Debian packages among "$@" that are not installed yet (quietly, without recommends).
install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
