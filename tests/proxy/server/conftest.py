"""A running stack (sidecar + simulated providers) shared by a module's tests, reset per test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from llmroute_proxy.routing.balance import LoadBook
from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.routing.limits import LimitBook, RetryBudget
from llmroute_proxy.sim import sim_state
from tests.proxy.server.spending import SettledLimits, install_limits
from tests.proxy.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture
def limits(stack: Stack) -> SettledLimits:
    """The sidecar's limit book, keeping every tokens-per-minute settlement for the test to read."""
    return install_limits(stack)


@pytest.fixture(autouse=True)
def fresh_state(request: pytest.FixtureRequest) -> None:
    """Every test starts with healthy targets, no faults and empty simulator stats."""
    if "stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("stack")

    def reset() -> None:
        sidecar = stack.sidecar
        sidecar.health = HealthBook()
        sidecar.load = LoadBook()
        sidecar.limits = LimitBook()
        sidecar.retry_budget = RetryBudget()
        if sidecar.table is not None:
            sidecar.limits.configure(sidecar.table.provider_limits)
        for plan in stack.faults.values():
            plan.clear()
        for sim in stack.sims.values():
            sim_state(sim.app).stats.reset()

    stack.call(reset)


def sim_requests(stack: Stack, name: str) -> int:
    return stack.call(lambda: sim_state(stack.sims[name].app).stats.total)


def last_request(stack: Stack, name: str):  # type: ignore[no-untyped-def]
    return stack.call(lambda: sim_state(stack.sims[name].app).stats.last)


def stream_app(path: str, first: bytes, rest: bytes, gap_s: float) -> web.Application:
    """An upstream that answers POST `path` by streaming `first` then `rest`: in one write with a
    Content-Length (`gap_s` 0), or chunked, `rest` and the end `gap_s` later."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        if gap_s == 0:
            return web.Response(body=first + rest, content_type="text/event-stream")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(first)
        await asyncio.sleep(gap_s)
        await response.write_eof(rest)
        return response

    app = web.Application()
    app.router.add_post(path, answer)
    return app


__all__ = ["Path", "last_request", "sim_requests", "stream_app"]
