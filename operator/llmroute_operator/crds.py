"""The CustomResourceDefinitions of LLMProvider and LLMRoute, read from the repository's `crds/` files.

`crds/` is the one source of the CRDs: `kubectl apply -f crds/` installs them, the chart ships the same
files (symlinks into crds/), and the operator's tests apply what this returns. The package reaches them
the same way: `llmroute_operator/crd_files` is a symlink to crds/, declared package data, so a wheel
carries copies of the files and a source checkout reads crds/ itself. `LLMROUTE_CRDS_DIR` points
elsewhere if need be.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

GROUP = "llmroute.dev"
VERSION = "v1alpha1"
FILES = ("llmproviders.yaml", "llmroutes.yaml")


def crds_dir() -> Path:
    configured = os.environ.get("LLMROUTE_CRDS_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parent / "crd_files"


def load_crds(directory: Path | None = None) -> list[dict[str, Any]]:
    """Both CRDs as dicts, LLMProvider first (routes name providers)."""
    base = directory or crds_dir()
    out: list[dict[str, Any]] = []
    for name in FILES:
        path = base / name
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"CRD file {path} not found (the package's crd_files, or LLMROUTE_CRDS_DIR)") from None
        if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
            raise ValueError(f"{path} is not a CustomResourceDefinition")
        out.append(document)
    return out


def schema_of(crd: dict[str, Any], version: str = VERSION) -> dict[str, Any]:
    """The openAPIV3Schema of one served version."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")
