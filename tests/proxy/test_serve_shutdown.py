"""`llmroute-proxy serve` as a process on SIGTERM: streams still open at the drain deadline end with an
explicit error event in their own dialect, and the process exits within the drain time and a margin."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest

from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, SimServer, anthropic_app, openai_app
from tests.ports import free_ports
from tests.proxy.documents import provider, resolved, route, target, yaml_text

DRAIN_S = 1.0
EXIT_MARGIN_S = 1.5
HELLO = [{"role": "user", "content": "hello"}]

CONFIG = [
    provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    provider("claude", "anthropic", "{claude}", key_env="TEST_CLAUDE_KEY", models=["claude-sonnet-4-5"]),
    route("main", {"openai": [target("oai", "gpt-4o-mini")], "anthropic": [target("claude", "claude-sonnet-4-5")]},
          default_tier="openai",
          fallback={"perTryTimeout": "5m", "firstByteTimeout": "10s", "idleTimeout": "10s", "overallTimeout": "5m"}),
]


async def wait_ready(admin: int, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession() as session:
        while True:
            assert proc.returncode is None, "the sidecar exited before it was ready"
            try:
                async with session.get(f"http://127.0.0.1:{admin}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def openai_stream(url: str, first: asyncio.Event) -> BaseException | None:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    try:
        stream = await client.chat.completions.create(model="openai", messages=HELLO, stream=True)  # type: ignore[arg-type]
        async for _ in stream:
            first.set()
    except Exception as error:
        return error
    finally:
        await client.close()
    return None


async def anthropic_stream(url: str, first: asyncio.Event) -> BaseException | None:
    client = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
    try:
        stream = await client.messages.create(model="anthropic", max_tokens=5000, messages=HELLO,  # type: ignore[arg-type]
                                              stream=True)
        async for _ in stream:
            first.set()
    except Exception as error:
        return error
    finally:
        await client.close()
    return None


async def test_streams_open_at_the_drain_deadline_end_with_an_error_event_and_the_process_exits(
        tmp_path: Path) -> None:
    slow = FaultPlan()
    slow.always(Fault(FaultKind.SLOW_STREAM, seconds=0.1))  # 2,000 chunks 0.1 s apart: minutes
    sims = [await SimServer.start(openai_app("k-oai", faults=slow, chunks=2000, answer_bytes=20000)),
            await SimServer.start(anthropic_app("k-claude", faults=slow, chunks=2000, answer_bytes=20000))]
    config = tmp_path / "llmroute.yaml"
    config.write_text(yaml_text(resolved(CONFIG, {"oai": sims[0].url, "claude": sims[1].url})))
    port, admin = free_ports(2)
    env = {**os.environ, "TEST_OAI_KEY": "k-oai", "TEST_CLAUDE_KEY": "k-claude"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmroute_proxy", "serve", "--config", str(config), "--port", str(port),
        "--admin-port", str(admin), "--drain-seconds", str(DRAIN_S), env=env, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_ready(admin, proc)
        url = f"http://127.0.0.1:{port}"
        firsts = [asyncio.Event(), asyncio.Event()]
        streams = [asyncio.create_task(openai_stream(url, firsts[0])),
                   asyncio.create_task(anthropic_stream(url, firsts[1]))]
        async with asyncio.timeout(20):
            await asyncio.gather(*(first.wait() for first in firsts))
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = await asyncio.wait_for(proc.communicate(), DRAIN_S + 20)
        took = time.monotonic() - sent
        ends = await asyncio.wait_for(asyncio.gather(*streams), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for sim in sims:
            await sim.close()
    assert proc.returncode == 0, stderr.decode()
    assert took < DRAIN_S + EXIT_MARGIN_S, f"exited {took:.2f}s after SIGTERM with a {DRAIN_S}s drain"
    oai_end, claude_end = ends
    # an explicit in-band error, not a cut connection (APIConnectionError) and not a clean end (None)
    assert isinstance(oai_end, openai.APIError) and not isinstance(oai_end, openai.APIConnectionError), oai_end
    assert "shutting down" in oai_end.message
    assert isinstance(claude_end, anthropic.APIError) and not isinstance(claude_end, anthropic.APIConnectionError), \
        repr(claude_end)
    assert "shutting down" in claude_end.message


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
