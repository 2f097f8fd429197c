#!/usr/bin/env bash
# Fails if objects with rkube's prefixes are left on the host (mounts, links, netns, cgroups,
# RKUBE- iptables chains, processes): the test suite's leak check.
source "$(dirname "$0")/lib.sh"

left=$( {
  grep -E 'rkube' /proc/mounts | awk '{print "mount " $2}'
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(rkv|rkt|rkube)' | sed 's/^/link /'
  ls /run/rkube/netns 2>/dev/null | sed 's/^/netns /'
  find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d -path '*rkube*' 2>/dev/null | sed 's/^/cgroup /'
  iptables-save 2>/dev/null | grep -E '^(:RKUBE|-A RKUBE)' | sed 's/^/iptables /'
  pgrep -a -f 'target/.*/(rkubelet|rkube-master|rkube-monitor)' 2>/dev/null | sed 's/^/process /'
} || true )
if [ -n "$left" ]; then
  echo "host objects left behind by the tests:" >&2
  echo "$left" >&2
  exit 1
fi
log "host is clean"
