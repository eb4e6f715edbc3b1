#!/usr/bin/env bash
# Tier C: the real-cluster end-to-end run (`make e2e`). Brings up a single-node Kubernetes from Debian packages
# on this machine (e2e/cluster), builds the project's images without Docker or a registry (e2e/images), runs the
# scenario (e2e/scenario), tears everything down and checks nothing was left behind.
# Where this host cannot run a node, prints one line saying what is missing and exits 0;
# E2E_REQUIRED=1 (set by .ci/run) turns that into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
    echo "e2e: skipped: $*" >&2
    [ "${E2E_REQUIRED:-0}" = "1" ] && exit 1
    exit 0
}

# What a node needs from the host: root (mount namespaces, cgroups, iptables), cgroup v1 controllers for the
# kubelet's cgroupfs driver, and unshare.
[ "$(id -u)" -eq 0 ] || missing "not root (a node needs mount namespaces, cgroups and iptables)"
[ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/cpu ] && [ -d /sys/fs/cgroup/pids ] \
    || missing "no cgroup v1 memory/cpu/pids hierarchies under /sys/fs/cgroup"
command -v unshare >/dev/null || missing "no unshare (util-linux)"
command -v apt-get >/dev/null || missing "no apt-get (the node's parts come from Debian packages)"

echo "e2e: host can run a node; cluster scripts not wired yet" >&2
