"""A whole sidecar with simulated providers, running in a background thread.

The official SDKs' sync clients block, so the sidecar cannot share the test's event loop:
the stack runs its own loop in a thread, and tests talk to it over loopback like an app would.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from llmroute_proxy.config import load_table
from llmroute_proxy.server.runner import Listen, build_sidecar, start_listeners
from llmroute_proxy.server.state import Settings, Sidecar
from llmroute_proxy.server.telemetry import Telemetry
from llmroute_proxy.sim import (
    Delivery,
    FaultPlan,
    SimServer,
    anthropic_app,
    gemini_app,
    openai_app,
    sim_state,
)
from tests.proxy.documents import (
    QUICK_FALLBACK,
    Document,
    model,
    provider,
    resolved,
    route,
    target,
    yaml_text,
)

T = TypeVar("T")
SimFactory = Callable[[FaultPlan], web.Application]

NETWORK = Delivery(fragment=256, jitter=True)
"""How simulators' answers reach the sidecar in every stack test unless one says otherwise: cut at
arbitrary offsets, as real networks and TLS hand them over, never in the one piece loopback would."""

KEYS = {"oai": "sk-test-oai", "oai-b": "sk-test-oai-b", "claude": "sk-ant-test", "gem": "gem-test-key"}

OAI = provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=[
    model("gpt-4o-mini", context_window=8000, input_per_mtok=1.0, output_per_mtok=2.0, cached_input_per_mtok=0.5),
    model("text-embedding-3-small", input_per_mtok=0.02)])
OAI_B = provider("oai-b", "openai-compatible", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", region="there", models=[
    model("gpt-4o-mini", context_window=16000, input_per_mtok=1.0, output_per_mtok=2.0)])
CLAUDE = provider("claude", "anthropic", "{claude}", key_env="TEST_CLAUDE_KEY", models=[
    model("claude-sonnet-4-5", context_window=200000, input_per_mtok=3.0, output_per_mtok=15.0)])
GEM = provider("gem", "gemini", "{gem}", key_env="TEST_GEM_KEY", models=[
    model("gemini-2.5-flash", context_window=1000000, input_per_mtok=0.3, output_per_mtok=2.5)])
MAIN = route("main", {
    "openai": [target("oai", "gpt-4o-mini")],
    "anthropic": [target("claude", "claude-sonnet-4-5")],
    "gemini": [target("gem", "gemini-2.5-flash")],
    "ha": [target("oai", "gpt-4o-mini"), target("oai-b", "gpt-4o-mini", priority=1)],
    "embed": [target("oai", "text-embedding-3-small")],
}, default_tier="openai",
    rules=[{"name": "code", "when": {"containsCode": True}, "tier": "anthropic"},
           {"name": "gemini-word", "when": {"keywords": ["gemini"]}, "tier": "gemini"}],
    fallback=QUICK_FALLBACK,
    outlierDetection={"consecutiveFailures": 2, "baseEjection": "30s"})
DOCUMENTS: list[Document] = [OAI, OAI_B, CLAUDE, GEM, MAIN]
"""The stack's configuration: four providers (one per simulator) and the route `main`."""


class Stack:
    """Simulators `oai`, `oai-b`, `claude`, `gem` and a sidecar routing to them.

    `extra_sims` adds simulators by name, each made from its own `FaultPlan`; the config names
    its URL `{name}` (with `-` as `_`). `environ` adds environment variables for credentials.
    """

    def __init__(self, tmp: Path, settings: Settings | None = None, telemetry: Telemetry | None = None,
                 config: str | Sequence[Document] = DOCUMENTS, extra_sims: Mapping[str, SimFactory] | None = None,
                 environ: Mapping[str, str] | None = None, *, delivery: Delivery | None = NETWORK,
                 ssl_context: ssl.SSLContext | None = None, answer_bytes: int = 0, quirks: bool = False) -> None:
        """`delivery`, `ssl_context`: how every simulator's answers cross the network (see `SimServer`);
        `answer_bytes`: the built-in simulators pad their answers to that size; `quirks`: they answer in
        their real API's untidy shapes (see `SimConfig.quirks`)."""
        self._tmp = tmp
        self._delivery = delivery
        self._ssl = ssl_context
        self._answer_bytes = answer_bytes
        self._quirks = quirks
        self._settings = settings
        self._telemetry = telemetry
        self._config = config
        self._extra_sims = dict(extra_sims or {})
        self._environ = dict(environ or {})
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.faults: dict[str, FaultPlan] = {name: FaultPlan() for name in [*KEYS, *self._extra_sims]}
        self.sims: dict[str, SimServer] = {}
        self._runners: list[web.AppRunner] = []
        self.sidecar: Sidecar
        self.url = ""
        self.admin_url = ""

    def __enter__(self) -> Stack:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def sim_paths(self, sim: str) -> dict[str, int]:
        """How many requests simulator `sim` was sent, by path."""
        return self.call(lambda: dict(sim_state(self.sims[sim].app).stats.by_path))

    def last_sim_request(self, sim: str, path: str) -> Any:
        """The last request simulator `sim` was sent on `path`."""
        return self.call(lambda: sim_state(self.sims[sim].app).stats.last_by_path[path])

    @property
    def config_path(self) -> Path:
        return self._tmp / "llmroute.yaml"

    async def _start(self) -> None:
        size, quirks = self._answer_bytes, self._quirks
        apps = {
            "oai": openai_app(KEYS["oai"], name="sim-oai", faults=self.faults["oai"], answer_bytes=size,
                              quirks=quirks),
            "oai-b": openai_app(KEYS["oai-b"], name="sim-oai-b", faults=self.faults["oai-b"], answer_bytes=size,
                                quirks=quirks),
            "claude": anthropic_app(KEYS["claude"], faults=self.faults["claude"], answer_bytes=size, quirks=quirks),
            "gem": gemini_app(KEYS["gem"], faults=self.faults["gem"], answer_bytes=size, quirks=quirks),
            **{name: factory(self.faults[name]) for name, factory in self._extra_sims.items()},
        }
        for name, app in apps.items():
            self.sims[name] = await SimServer.start(app, host="127.0.0.1", port=0, delivery=self._delivery,
                                                    ssl_context=self._ssl)
        urls = {name.replace("-", "_"): sim.url for name, sim in self.sims.items()}
        config = self._config
        self.config_path.write_text(config.format(**urls) if isinstance(config, str)
                                    else yaml_text(resolved(config, urls)))
        environ = {"TEST_OAI_KEY": KEYS["oai"], "TEST_OAI_B_KEY": KEYS["oai-b"],
                   "TEST_CLAUDE_KEY": KEYS["claude"], "TEST_GEM_KEY": KEYS["gem"], **self._environ}
        self.sidecar = build_sidecar(self._settings, self._telemetry)
        self.sidecar.install(load_table(self.config_path, region="here", environ=environ))
        self._runners = await start_listeners(self.sidecar, Listen(port=0, admin_port=0))
        data_port = self._runners[0].addresses[0][1]
        admin_port = self._runners[1].addresses[0][1]
        self.url = f"http://127.0.0.1:{data_port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        await self.sidecar.upstream.close()
        for sim in self.sims.values():
            await sim.close()
