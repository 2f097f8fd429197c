#!/usr/bin/env bash
# Starts or stops a local Distribution registry (Debian's docker-registry), bound to 127.0.0.1 unless
# RKUBE_REGISTRY_ADDR says otherwise (hack/cluster.sh binds it inside a netns of its own).
#   hack/registry.sh start   # plain HTTP on 127.0.0.1:$RKUBE_REGISTRY_PORT (default 5000)
#   hack/registry.sh stop    # stops the instance this script started (by its PID file)
#   hack/registry.sh status
source "$(dirname "$0")/lib.sh"

PORT=${RKUBE_REGISTRY_PORT:-5000}
ADDR=${RKUBE_REGISTRY_ADDR:-127.0.0.1}
DIR=${RKUBE_REGISTRY_DIR:-$BUILD_DIR/registry-$PORT}
PIDFILE=$DIR/registry.pid

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  need docker-registry curl
  if running; then log "registry already running on $ADDR:$PORT (pid $(cat "$PIDFILE"))"; return; fi
  mkdir -p "$DIR/data"
  cat >"$DIR/config.yml" <<YAML
version: 0.1
log: {level: warn, formatter: text}
storage:
  filesystem: {rootdirectory: $DIR/data}
  delete: {enabled: true}
http:
  addr: $ADDR:$PORT
YAML
  nohup docker-registry serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 &
  echo $! >"$PIDFILE"
  wait_for curl -sf "http://127.0.0.1:$PORT/v2/" || { cat "$DIR/registry.log" >&2; die "registry did not start"; }
  log "registry listening on $ADDR:$PORT (data in $DIR)"
}

stop() {
  if running; then
    kill "$(cat "$PIDFILE")"
    log "registry on 127.0.0.1:$PORT stopped"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE"), 127.0.0.1:$PORT)"; else echo stopped; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
