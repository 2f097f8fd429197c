#!/usr/bin/env bash
# Fails if objects with rkube's prefixes are left on the host (mounts, links, netns, cgroups,
# RKUBE- iptables chains, rkube nftables tables, processes): the test suite's leak check.
# Inside the CI container (hack/ci-container.sh), RKUBE_CHECK_SKIP lists what the container itself
# holds and is not a leak: its bind mounts (checkout, target dir) and its own cgroup (`/rkube-ci-N`,
# seen through the bound host hierarchy), each matched as a whole mount point or cgroup path suffix.
source "$(dirname "$0")/lib.sh"

# Drops lines whose second field is in RKUBE_CHECK_SKIP (mount points) or ends in one (cgroups).
skip() {
  awk -v skip="${RKUBE_CHECK_SKIP:-}" 'BEGIN { n = split(skip, s, " ") }
    { for (i = 1; i <= n; i++) if ($2 == s[i] || ($1 == "cgroup" && substr($2, length($2) - length(s[i]) + 1) == s[i])) next; print }'
}

left=$( {
  grep -E 'rkube' /proc/mounts | awk '{print "mount " $2}' | skip
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(rkv|rkt|rkube)' | sed 's/^/link /'
  ls /run/rkube/netns 2>/dev/null | sed 's/^/netns /'
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^rkube' | sed 's/^/netns /'
  find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d -path '*rkube*' 2>/dev/null \
    | sed 's/^/cgroup /' | skip
  iptables-save 2>/dev/null | grep -E '^(:RKUBE|-A RKUBE)' | sed 's/^/iptables /'
  # The nftables proxy mode's table (`ip rkube-proxy`), or any other table of ours.
  nft list tables 2>/dev/null | awk '$3 ~ /^rkube/ {print "nft table " $2 " " $3}'
  pgrep -a -f 'target[^/]*/.*/(rkubelet|rkube-master|rkube-monitor)' 2>/dev/null | sed 's/^/process /'
} || true )
if [ -n "$left" ]; then
  echo "host objects left behind by the tests:" >&2
  echo "$left" >&2
  exit 1
fi
log "host is clean"
