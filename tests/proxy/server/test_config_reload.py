"""A standalone sidecar follows its config file, and never trades a working table for a bad one."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from llmroute_proxy.config import load_table
from llmroute_proxy.server.runner import build_sidecar, watch_config

GOOD = """
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: p}
spec:
  type: openai-compatible
  endpoints: [{region: r, url: "http://127.0.0.1:9/v1"}]
  models: [{name: m}]
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: main}
spec:
  tiers: {fast: {targets: [{provider: p, model: m, weight: WEIGHT}]}}
  defaultTier: fast
"""


def write(path: Path, text: str, stamp: float) -> None:
    path.write_text(text)
    os.utime(path, (stamp, stamp))  # a distinct mtime even within the filesystem's granularity


async def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_changed_file_is_applied_and_a_bad_one_is_refused_keeping_the_old_table(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "llmroute.yaml"
    write(config, GOOD.replace("WEIGHT", "1"), 1_000)
    sidecar = build_sidecar()
    sidecar.install(load_table(config))
    first = sidecar.table
    assert first is not None
    watcher = asyncio.create_task(watch_config(sidecar, config, region="", interval_s=0.01))
    try:
        write(config, GOOD.replace("WEIGHT", "2"), 2_000)
        await wait_for(lambda: sidecar.table is not first)
        second = sidecar.table
        assert second is not None and second.version != first.version
        assert second.routes[0].tiers["fast"].targets[0].weight == 2

        with caplog.at_level(logging.ERROR, logger="llmroute.proxy"):
            write(config, GOOD.replace("WEIGHT", "-5").replace("defaultTier: fast", "defaultTier: slow"), 3_000)
            await wait_for(lambda: "refused" in caplog.text)
        assert sidecar.table is second
        assert "spec.defaultTier" in caplog.text and "weight" in caplog.text

        config.unlink()
        await asyncio.sleep(0.05)
        assert sidecar.table is second
    finally:
        watcher.cancel()
        await sidecar.upstream.close()
