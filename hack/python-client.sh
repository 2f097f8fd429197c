#!/usr/bin/env bash
# Prepares the venv holding the Python `kubernetes` client that tests/master_python.rs drives.
# It needs the package registry, so it runs at setup time (hack/setup.sh calls it; in CI that is
# the setup container, which has the network, while the test container has loopback only).
# Idempotent: a venv that already holds the pinned version is left as it is.
#
# Environment: RKUBE_PYCLIENT_VENV (default /opt/rkube-pyclient) is where the venv goes; the
# tests read the same variable with the same default.
source "$(dirname "$0")/lib.sh"

# The client version the tests are written against (the issue names 37.x).
KUBERNETES_CLIENT_VERSION=37.0.2
VENV=${RKUBE_PYCLIENT_VENV:-/opt/rkube-pyclient}
# Debian's interpreter (python3-venv), not whatever a version manager puts first on PATH.
PYTHON=${RKUBE_PYTHON:-/usr/bin/python3}

[ -x "$PYTHON" ] || die "$PYTHON is missing; run hack/setup.sh (it installs python3-venv)"
if [ -x "$VENV/bin/python" ] \
   && "$VENV/bin/python" -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$KUBERNETES_CLIENT_VERSION')" 2>/dev/null; then
  log "the Python kubernetes client $KUBERNETES_CLIENT_VERSION is ready in $VENV"
  exit 0
fi
log "creating $VENV with the Python kubernetes client $KUBERNETES_CLIENT_VERSION"
rm -rf --one-file-system "$VENV"
"$PYTHON" -m venv "$VENV" || die "could not create the venv $VENV (is python3-venv installed?)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes==$KUBERNETES_CLIENT_VERSION" \
  || die "pip could not install kubernetes==$KUBERNETES_CLIENT_VERSION into $VENV"
"$VENV/bin/python" -c "import kubernetes; print(kubernetes.__version__)" >/dev/null \
  || die "the venv $VENV cannot import kubernetes"
log "the Python kubernetes client $KUBERNETES_CLIENT_VERSION is ready in $VENV"
