#!/usr/bin/env bash
# Builds etcd-compatible Kubernetes v1.20 binaries from Debian bookworm's `kubernetes` source package
# (see /work/shared/testing.md) and caches only the binaries under ~/.cache/llmroute/kubernetes-<version>/.
# Idempotent: a later run on the same machine prints the cache path and exits. Prints the bin dir last.
set -euo pipefail

CACHE_ROOT="${LLMROUTE_CACHE:-$HOME/.cache/llmroute}"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
BUILD_PACKAGES=(golang-go rsync make dpkg-dev golang-github-modern-go-reflect2-dev)
RUN_PACKAGES=(etcd-server)
BUILD=b2  # bump when the build changes (b2: the zero-value patch), so caches of older builds are not used
REFLECT2_DEB=/usr/share/gocode/src/github.com/modern-go/reflect2

log() { echo "build-binaries: $*" >&2; }

ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# apt state kept private so the system's apt configuration is never touched.
fetch_source() {
    local work="$1" apt="$1/apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    echo "deb-src http://deb.debian.org/debian bookworm main" >"$apt/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
                -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1")
    apt-get "${opts[@]}" update -qq >&2
    (cd "$work" && apt-get "${opts[@]}" source --download-only kubernetes >&2)
}

source_version() { sed -n 's/^Version: //p' "$1"/kubernetes_*.dsc | head -1; }

# Vendored reflect2 v1.0.1 segfaults under Go >= 1.18 on the first custom-resource create.
# Go >= 1.19 boxes every zero value ("", 0, false) at one shared address, so go-openapi's "is this the
# zero value" test (a DeepEqual of two reflect.Values) turns true for them and the API server refuses ""
# or 0 in a custom resource as "must be of type string: null". Built with Go 1.15, as released, that test
# only ever matched nil: restore exactly that.
patch_zero_values() {
    local file
    for file in $(grep -rl 'reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))' "$1/vendor"); do
        sed -i 's/data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))/data == nil/' "$file"
        log "patched zero-value check in ${file#$1/}"
    done
}

swap_reflect2() {
    local vendored="$1/vendor/github.com/modern-go/reflect2"
    rm -f "$vendored"/*.go "$vendored"/*.s
    cp "$REFLECT2_DEB"/*.go "$vendored"/
    find "$REFLECT2_DEB" -maxdepth 1 -name '*.s' -exec cp {} "$vendored"/ \;
}

build() {
    local work="$1" dest="$2" what=()
    (cd "$work" && dpkg-source -x kubernetes_*.dsc src >&2)
    swap_reflect2 "$work/src"
    patch_zero_values "$work/src"
    for b in "${BINARIES[@]}"; do what+=("cmd/$b"); done
    (cd "$work/src" && CGO_ENABLED=0 GOPROXY=off GOCACHE="$work/gocache" \
        make WHAT="${what[*]}" >&2)
    local out; out="$(find "$work/src/_output" -type d -path '*/bin' | head -1)"
    mkdir -p "$dest.partial"
    for b in "${BINARIES[@]}"; do cp "$out/$b" "$dest.partial/"; done
    mv "$dest.partial" "$dest"
}

main() {
    ensure_packages "${RUN_PACKAGES[@]}"
    # One build at a time per machine: a second caller (another test run) waits, then finds the cache.
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.build.lock"
    flock 9
    local cached; cached="$(ls -d "$CACHE_ROOT"/kubernetes-*-"$BUILD"/bin 2>/dev/null | head -1 || true)"
    if [ -n "$cached" ] && [ -x "$cached/kube-apiserver" ] && [ -x "$cached/kubectl" ]; then
        echo "$cached"; return 0
    fi
    ensure_packages "${BUILD_PACKAGES[@]}"
    local work; work="$(mktemp -d "${TMPDIR:-/tmp}/llmroute-k8s-build.XXXXXX")"
    trap "rm -rf '$work'" EXIT  # expanded now: $work is local and gone when the trap runs
    fetch_source "$work"
    local version; version="$(source_version "$work")"
    local dest="$CACHE_ROOT/kubernetes-$version-$BUILD/bin"
    mkdir -p "$(dirname "$dest")"
    log "building Kubernetes $version binaries once (7-8 min on 2 cores; cached in $dest afterwards)"
    local start=$SECONDS
    build "$work" "$dest"
    log "built in $((SECONDS - start)) s"
    echo "$dest"
}

main "$@"
