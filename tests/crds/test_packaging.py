"""The operator's wheel carries the CRDs: `load_crds()` of an installed wheel finds crds/'s files, byte for byte,
with no LLMROUTE_CRDS_DIR and no source checkout, and the package reads crds/ itself (one source, no copy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from llmroute_operator.crds import FILES, crds_dir

REPO = Path(__file__).resolve().parents[2]


def test_the_package_reads_the_repositorys_crds_folder_itself() -> None:
    assert crds_dir().resolve() == (REPO / "crds").resolve()


def test_an_unpacked_wheel_finds_the_crds_without_configuration(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a clean copy: a build in the checkout would leave (and reuse) build/
    for part in ("proxy", "operator", "crds"):
        shutil.copytree(REPO / part, source / part, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("llmroute-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    for name in FILES:
        packaged = site / "llmroute_operator" / "crd_files" / name
        assert not packaged.is_symlink() and packaged.read_bytes() == (REPO / "crds" / name).read_bytes()
    probe = ("import llmroute_operator.crds as c, sys; "
             "print(c.__file__); print(','.join(d['metadata']['name'] for d in c.load_crds()))")
    env = {k: v for k, v in os.environ.items() if k not in ("LLMROUTE_CRDS_DIR", "PYTHONPATH")}
    ran = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    module, names = ran.stdout.split()
    assert Path(module).is_relative_to(site)  # the wheel's package, not the checkout's
    assert names == "llmproviders.llmroute.dev,llmroutes.llmroute.dev"
