"""The Dockerfiles cannot be built here (no base image can be pulled): these check what can be read."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("dockerfile, command", [("operator/Dockerfile", "llmroute-operator"),
                                                 ("proxy/Dockerfile", "llmroute-proxy")])
def test_each_image_is_multi_stage_pinned_non_root_and_runs_a_console_script(dockerfile: str, command: str) -> None:
    text = (ROOT / dockerfile).read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base is not None and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base[1])
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    final = text.split("\nFROM ${PYTHON_IMAGE}\n", 1)[1]
    assert "pip install" not in final and "apt-get" not in final and "COPY --from=build /opt/llmroute" in final
    assert re.search(r"^USER 65532:65532$", final, re.M)
    cmd = re.search(r'^CMD \["([^"]+)"', final, re.M)
    assert cmd is not None and cmd[1] == command and command in SCRIPTS


def test_the_build_context_is_only_what_the_images_copy() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"  # everything out, then back in only what COPY reads
    for path in ("!pyproject.toml", "!README.md", "!proxy/llmroute_proxy/", "!operator/llmroute_operator/", "!crds/"):
        assert path in ignore
