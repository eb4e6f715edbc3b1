"""The project's images for the tier C node, built without Docker or a registry, cached by content.

`localhost/llmroute:<hash>` has three layers, each cached on its own so a code change rebuilds only the top one:
  1. base  — a Debian bookworm rootfs (`debootstrap --variant=minbase`, python3.11 from Debian; docs, man
             pages, locales and apt lists removed); keyed by this recipe;
  2. deps  — the runtime dependencies (the package's and the operator extra's) from PyPI as cp311 manylinux
             wheels at constraints.txt's versions, `pip install --target /opt/llmroute/deps`; keyed by the
             dependency list and those pins;
  3. app   — the project's wheel (`pip wheel .`) installed in /opt/llmroute/app, with `llmroute-proxy`,
             `llmroute-operator` and `llmroute-sim` launchers; keyed by the source files.
`localhost/llmroute-pause:static` is a static C `pause` (the node's sandbox image; see pause.c).

Each image is a `docker save`-style archive (manifest.json, config JSON, <diff_id>/layer.tar), which
`ctr -n k8s.io images import` accepts. Layer tars are written with sorted names and fixed mtimes, so the same
content gives the same diff_id and the same tag. Output: a JSON map {name: {"ref", "tar"}} on stdout (also
written to <cache>/images.json). Timings go to stderr.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONSTRAINTS = REPO / "constraints.txt"
CACHE = Path(os.environ.get("LLMROUTE_CACHE", Path.home() / ".cache" / "llmroute")) / "e2e-images"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3-minimal", "libpython3.11-stdlib")
BASE_STRIP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
              "var/lib/apt/lists", "var/cache/apt", "var/cache/debconf", "var/log")
PY_PLATFORMS = ("manylinux2014_x86_64", *(f"manylinux_2_{n}_x86_64" for n in range(17, 37)))
USER = "65532:65532"
APT_PACKAGES = ("debootstrap", "gcc", "libc6-dev")
FIXED_MTIME = 1_700_000_000


def log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()


def ensure_packages() -> None:
    missing = [p for p in APT_PACKAGES
               if "install ok installed" not in subprocess.run(
                   ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout]
    if missing:
        log(f"installing Debian packages: {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env=env, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------- layers

def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield Path(dirpath) / name


def write_layer(root: Path, out: Path, fixed_mtime: bool, skip: tuple[str, ...] = ()) -> str:
    """Tars the tree under `root` as a layer (paths relative to /, owner root unless the file says otherwise
    in a rootfs); returns its diff_id. Directories in `skip` are kept but emptied (dev, proc, sys)."""
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk(root):
            rel = path.relative_to(root).as_posix()
            if any(rel.startswith(s + "/") for s in skip):
                continue
            info = tar.gettarinfo(str(path), arcname=rel)
            if fixed_mtime:
                info.mtime = FIXED_MTIME
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    tmp.rename(out)
    return "sha256:" + h.hexdigest()


def cached_layer(kind: str, key: str, build: Callable[[Path], None], fixed_mtime: bool,
                 skip: tuple[str, ...] = ()) -> tuple[Path, str]:
    """The layer tar for (kind, key), built by `build(rootdir)` only when not cached."""
    d = CACHE / "layers"
    d.mkdir(parents=True, exist_ok=True)
    tar, meta = d / f"{kind}-{key[:16]}.tar", d / f"{kind}-{key[:16]}.json"
    if tar.exists() and meta.exists():
        log(f"{kind} layer cached ({tar.stat().st_size >> 20} MB)")
        return tar, json.loads(meta.read_text())["diff_id"]
    for old in d.glob(f"{kind}-*"):          # one version per kind is kept
        old.unlink()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"llmroute-{kind}-", dir=CACHE) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        build(root)
        diff_id = write_layer(root, tar, fixed_mtime, skip)
    meta.write_text(json.dumps({"diff_id": diff_id, "key": key}))
    log(f"{kind} layer built in {time.monotonic() - t0:.1f} s ({tar.stat().st_size >> 20} MB)")
    return tar, diff_id


def write_image(name: str, tag: str | None, layers: list[tuple[Path, str]], config: dict[str, object]) -> dict[str, str]:
    """A docker-archive tar of `layers`; the tag, when not given, is the config's content hash."""
    diff_ids = [diff for _, diff in layers]
    body = {"architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"e2e/images/build.py layer {i}"} for i in range(len(layers))]}
    config_bytes = json.dumps(body, sort_keys=True).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    ref = f"localhost/{name}:{tag or config_id[:16]}"
    out = CACHE / f"{name}.tar"
    stamp = CACHE / f"{name}.ref"
    if out.exists() and stamp.exists() and stamp.read_text() == ref:
        return {"ref": ref, "tar": str(out)}
    manifest = [{"Config": f"{config_id}.json", "RepoTags": [ref],
                 "Layers": [f"{d.split(':')[1]}/layer.tar" for d in diff_ids]}]
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        def add_bytes(arcname: str, data: bytes) -> None:
            info = tarfile.TarInfo(arcname)
            info.size, info.mtime = len(data), FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
        for layer_tar, diff in layers:
            tar.add(str(layer_tar), arcname=f"{diff.split(':')[1]}/layer.tar")
        add_bytes(f"{config_id}.json", config_bytes)
        add_bytes("manifest.json", json.dumps(manifest).encode())
    tmp.rename(out)
    stamp.write_text(ref)
    return {"ref": ref, "tar": str(out)}


# ---------------------------------------------------------------------------------------------- the layers

def build_base(root: Path) -> None:
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
                    str(root), MIRROR], check=True, stdout=subprocess.DEVNULL)
    for rel in BASE_STRIP:
        p = root / rel
        if p.exists():
            shutil.rmtree(p)
            p.mkdir()
    (root / "var/log/apt").mkdir(parents=True, exist_ok=True)
    # The user the images run as, as the Dockerfiles make it: software that asks who it runs as (kopf's
    # peering identity, through getpass) fails on a UID without a passwd entry.
    uid, gid = USER.split(":")
    with open(root / "etc/passwd", "a") as passwd:
        passwd.write(f"llmroute:x:{uid}:{gid}::/nonexistent:/usr/sbin/nologin\n")
    with open(root / "etc/group", "a") as group:
        group.write(f"llmroute:x:{gid}:\n")


def dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return sorted({*project["dependencies"], *project["optional-dependencies"]["operator"]})


def build_deps(root: Path) -> None:
    platforms = [a for p in PY_PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "install", "-qq", "--disable-pip-version-check", "--no-compile",
                    "--target", str(root / "opt/llmroute/deps"), "--only-binary=:all:", "--implementation", "cp",
                    "--python-version", "3.11", *platforms, "-c", str(CONSTRAINTS), *dependencies()], check=True)


def source_files() -> list[Path]:
    files = [REPO / "pyproject.toml", Path(__file__).resolve()]
    for package in (REPO / "proxy" / "llmroute_proxy", REPO / "operator" / "llmroute_operator"):
        files += [p for p in _walk(package) if p.is_file() and "__pycache__" not in p.parts
                  and not p.name.endswith(".pyc")]
    return sorted(files)


LAUNCHERS = {
    "llmroute-proxy": "from llmroute_proxy.cli import main\nsys.exit(main())",
    "llmroute-operator": "from llmroute_operator.main import main\nsys.exit(main())",
    "llmroute-sim": "from llmroute_proxy.sim.server import main\nsys.exit(main())",
}


def build_app(root: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="llmroute-wheel-") as wheel_dir:
        src = Path(wheel_dir) / "src"          # a clean copy: no egg-info or build/ from the work tree
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "build", "__pycache__", ".mypy_cache", ".ruff_cache", "node_modules",
            "e2e", "tests", "bench", "docs", "charts", "examples"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-qq", "--disable-pip-version-check", "--no-deps",
                        "-w", wheel_dir, str(src)], check=True)
        wheel = next(Path(wheel_dir).glob("llmroute-*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-qq", "--disable-pip-version-check", "--no-deps",
                        "--no-compile", "--target", str(root / "opt/llmroute/app"), str(wheel)], check=True)
    shutil.rmtree(root / "opt/llmroute/app/bin", ignore_errors=True)   # host-python shebangs
    for dist_info in (root / "opt/llmroute/app").glob("*.dist-info"):
        (dist_info / "direct_url.json").unlink(missing_ok=True)         # names a temporary path
    bin_dir = root / "usr/local/bin"
    bin_dir.mkdir(parents=True)
    for name, body in LAUNCHERS.items():
        (bin_dir / name).write_text(f"#!/usr/bin/python3\nimport sys\n{body}\n")
        (bin_dir / name).chmod(0o755)


def build_pause(root: Path) -> None:
    subprocess.run(["gcc", "-static", "-Os", "-o", str(root / "pause"), str(HERE / "pause.c")], check=True)
    subprocess.run(["strip", str(root / "pause")], check=True)


# ---------------------------------------------------------------------------------------------- main

def main() -> int:
    t0 = time.monotonic()
    ensure_packages()
    CACHE.mkdir(parents=True, exist_ok=True)
    base_key = digest(SUITE.encode(), MIRROR.encode(), ",".join(BASE_PACKAGES).encode(),
                      ",".join(BASE_STRIP).encode(), USER.encode())
    base = cached_layer("base", base_key, build_base, fixed_mtime=False, skip=("dev", "proc", "sys"))
    deps = cached_layer("deps", digest(*(d.encode() for d in (*dependencies(), *PY_PLATFORMS)),
                                       CONSTRAINTS.read_bytes()), build_deps, fixed_mtime=True)
    app_key = digest(*(p.relative_to(REPO).as_posix().encode() + b"\0" + p.read_bytes()
                       for p in source_files()))
    app = cached_layer("app", app_key, build_app, fixed_mtime=True)
    pause = cached_layer("pause", digest((HERE / "pause.c").read_bytes()), build_pause, fixed_mtime=True)
    images = {
        "llmroute": write_image("llmroute", None, [base, deps, app], {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONPATH=/opt/llmroute/app:/opt/llmroute/deps",
                    "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
            "Entrypoint": ["llmroute-proxy"], "Cmd": ["serve"], "User": USER, "WorkingDir": "/"}),
        "pause": write_image("llmroute-pause", "static", [pause], {"Entrypoint": ["/pause"], "User": USER}),
    }
    (CACHE / "images.json").write_text(json.dumps(images, indent=1))
    log(f"images ready in {time.monotonic() - t0:.1f} s: {', '.join(i['ref'] for i in images.values())}")
    print(json.dumps(images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
