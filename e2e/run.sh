#!/usr/bin/env bash
# Tier C: the real-cluster end-to-end run (`make e2e`). Brings up a single-node Kubernetes from Debian packages
# on this machine (e2e/cluster/node.py), builds the project's images without Docker or a registry
# (e2e/images/build.sh), runs the scenario (e2e/scenario/), tears everything down and checks nothing was left.
# Where this host cannot run a node, prints one line saying what is missing and exits 0;
# E2E_REQUIRED=1 (set by .ci/run) turns that into a failure. Timings of each phase are printed at the end.
# E2E_CLUSTER=kind runs the same chart scenario on a kind cluster instead (e2e/cluster/kind.py: Docker, kind).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

case "${E2E_CLUSTER:-local}" in
    local) ;;
    kind) exec "$PY" e2e/cluster/kind.py ;;
    *) echo "e2e: E2E_CLUSTER is local (the default) or kind, not '${E2E_CLUSTER}'" >&2; exit 2 ;;
esac

missing() {
    echo "e2e: skipped: $*" >&2
    [ "${E2E_REQUIRED:-0}" = "1" ] && exit 1
    exit 0
}

# What a node needs from the host: root (mount and network namespaces, cgroups, iptables), cgroup v1
# controllers for the kubelet's cgroupfs driver, unshare/nsenter, and apt-get for the Debian packages.
[ "$(id -u)" -eq 0 ] || missing "not root (a node needs mount and network namespaces, cgroups and iptables)"
[ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/cpu ] && [ -d /sys/fs/cgroup/pids ] \
    || missing "no cgroup v1 memory/cpu/pids hierarchies under /sys/fs/cgroup"
command -v unshare >/dev/null && command -v nsenter >/dev/null || missing "no unshare/nsenter (util-linux)"
command -v apt-get >/dev/null || missing "no apt-get (the node's parts come from Debian packages)"
unshare --net --mount true 2>/dev/null || missing "cannot create network and mount namespaces here"

timings=()
phase() {  # phase NAME COMMAND...: runs it, records its duration
    local name="$1" start=$SECONDS rc=0; shift
    "$@" || rc=$?
    timings+=("$name $((SECONDS - start))s")
    return $rc
}

node() { "$PY" e2e/cluster/node.py "$@"; }

cleanup() {
    local rc=$?
    trap - EXIT
    if [ $rc -ne 0 ] && [ -f "${E2E_STATE:-/tmp/llmroute-e2e}/pids.json" ]; then
        echo "e2e: failed; last lines of the node's logs:" >&2
        for f in "${E2E_STATE:-/tmp/llmroute-e2e}"/logs/*.log; do
            echo "--- $f" >&2; tail -n 15 "$f" >&2
        done
    fi
    phase down node down || rc=1
    phase check node check || rc=1
    # CI shows only the end of the output: the scenario's failure goes last, after the node's logs.
    [ $rc -ne 0 ] && grep -h "FAILED" "$scenario_log" >&2 || true
    [ "$scenario_log" = /dev/null ] || rm -f "$scenario_log"
    echo "e2e: timings: ${timings[*]}" >&2
    [ $rc -eq 0 ] && echo "e2e: passed" >&2 || echo "e2e: FAILED" >&2
    exit $rc
}

phase binaries e2e/cluster/build-binaries.sh >/dev/null
phase images "$PY" e2e/images/build.py >/dev/null
images="${LLMROUTE_CACHE:-$HOME/.cache/llmroute}/e2e-images/images.json"
image_tar() { "$PY" -c "import json,sys; print(json.load(open('$images'))[sys.argv[1]][sys.argv[2]])" "$@"; }

scenario_log=/dev/null
trap cleanup EXIT
phase up node up
phase import node import "$(image_tar pause tar)" "$(image_tar llmroute tar)"
scenario_log="$(mktemp)"
phase smoke "$PY" e2e/scenario/smoke.py "$(image_tar llmroute ref)" 2> >(tee -a "$scenario_log" >&2)
# The chart scenario runs inside the node's namespaces: Helm's library and port-forwards use its loopback.
phase chart node exec "$PY" e2e/scenario/chart.py --image "$(image_tar llmroute ref)" 2> >(tee -a "$scenario_log" >&2)
