"""`llmroute-proxy serve` in cluster mode, as a process: readiness, persistence, the last report on drain."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from llmroute_operator.certs import write_self_signed
from llmroute_operator.contracts import PodRef
from llmroute_operator.hub import Hub
from llmroute_proxy.sync.persist import TableStore
from tests.proxy.test_demo import free_ports
from tests.syncfakes import FakeReviewer, FakeSink, FakeSource, desired, running_hub, write_token

POD = PodRef("team-a", "chat-0")


async def start(tmp_path: Path, url: str, *extra: str, ca: Path | None = None) -> tuple[asyncio.subprocess.Process, int]:
    port, admin = free_ports(2)
    env = {**os.environ, "LLMROUTE_OPERATOR_URL": url, "LLMROUTE_STATE_DIR": str(tmp_path / "state"),
           "LLMROUTE_TOKEN_FILE": str(write_token(tmp_path / "token", POD)), "LLMROUTE_DRAIN_SECONDS": "1"}
    if ca is not None:
        env["LLMROUTE_OPERATOR_CA"] = str(ca)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmroute_proxy", "serve", "--port", str(port), "--admin-port", str(admin), *extra,
        env=env, stderr=asyncio.subprocess.PIPE)
    return proc, admin


async def admin_get(admin: int, path: str, timeout: float = 20.0) -> tuple[int, dict[str, object] | str]:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{admin}{path}") as response:
                    body = await response.json() if path == "/status" else await response.text()
                    return response.status, body
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, stderr.decode()


async def test_without_operator_or_persisted_table_the_sidecar_is_not_ready(tmp_path: Path) -> None:
    proc, admin = await start(tmp_path, "wss://127.0.0.1:9/v1/sync")
    status, _ = await admin_get(admin, "/readyz")
    assert status == 503
    _, document = await admin_get(admin, "/status")
    assert isinstance(document, dict) and document["table"] is None
    assert document["operator"]["state"] in {"connecting", "disconnected"}  # type: ignore[index]
    assert (await stop(proc))[0] == 0


async def test_a_persisted_table_is_served_while_the_operator_is_down(tmp_path: Path) -> None:
    table = desired()
    TableStore(tmp_path / "state").save(table.version, table.payload)
    proc, admin = await start(tmp_path, "wss://127.0.0.1:9/v1/sync")
    status, _ = await admin_get(admin, "/readyz")
    assert status == 200
    _, document = await admin_get(admin, "/status")
    assert document["table"]["source"] == "persisted"  # type: ignore[index]
    assert document["table"]["pushed_version"] == table.version  # type: ignore[index]
    assert (await stop(proc))[0] == 0


async def test_ready_after_the_first_push_and_the_last_usage_report_goes_out_on_drain(tmp_path: Path) -> None:
    certs = write_self_signed(tmp_path / "certs")
    source, sink = FakeSource(), FakeSink()
    table = desired()
    await source.set(POD, table)
    async with running_hub(Hub(source, sink, FakeReviewer()), certs) as url:
        proc, admin = await start(tmp_path, url, ca=certs.ca)
        await sink.wait_for("acked", timeout=20)
        status, _ = await admin_get(admin, "/readyz")
        assert status == 200
        _, document = await admin_get(admin, "/status")
        assert document["table"]["source"] == "operator"  # type: ignore[index]
        assert document["operator"]["state"] == "connected"  # type: ignore[index]
        code, stderr = await stop(proc)
        assert code == 0
        [(_, pod, report)] = await sink.wait_for("usage")
        assert pod == POD and report["final"] is True
        assert "sk-test" not in stderr


@pytest.mark.parametrize("env, extra, message", [
    ({"LLMROUTE_OPERATOR_URL": "http://op/v1/sync"}, [], "must be a wss:// URL"),
    ({"LLMROUTE_OPERATOR_URL": "wss://op/v1/sync"}, ["--config", "x.yaml"], "exclude each other"),
])
def test_bad_cluster_settings_exit_2_with_the_reason(env: dict[str, str], extra: list[str], message: str,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from llmroute_proxy.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", *extra]) == 2
    assert message in capsys.readouterr().err
