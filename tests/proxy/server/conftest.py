"""A running stack (sidecar + simulated providers) shared by a module's tests, reset per test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from llmroute_proxy.routing.balance import LoadBook
from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.routing.limits import LimitBook, RetryBudget
from llmroute_proxy.sim import sim_state
from llmroute_proxy.sim.runtime import SIM_STATE
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
            if SIM_STATE in sim.app:  # a provider's simulator (not, say, a metadata server)
                sim_state(sim.app).stats.reset()

    stack.call(reset)


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)


def text_streamed_as_whole(stack: Stack, model: str, ask: Any) -> None:
    """The OpenAI client gets the same text and usage streamed as whole, with one finish and one usage chunk."""
    client = openai_client(stack)
    whole = client.chat.completions.create(model=model, messages=ask)
    chunks = list(client.chat.completions.create(model=model, messages=ask, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and "You said: tell me a story" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens > 0
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens > 0


def calls_streamed_as_whole(stack: Stack, model: str, tools: Any, expected: dict[str, Any]) -> None:
    """The OpenAI client gets the same calls (`expected`: arguments by function name) streamed, through the SDK's
    stream helper (which files fragments by `index` and parses the arguments), as whole; each ends `tool_calls`."""
    client = openai_client(stack)
    ask: Any = [{"role": "user", "content": "Weather and time?"}]
    whole = client.chat.completions.create(model=model, messages=ask, tools=tools)
    with client.chat.completions.stream(model=model, messages=ask, tools=tools) as stream:
        streamed = stream.get_final_completion()
    for completion in (whole, streamed):
        calls = completion.choices[0].message.tool_calls or []
        assert completion.choices[0].finish_reason == "tool_calls"
        assert {c.function.name: orjson.loads(c.function.arguments) for c in calls} == expected
        assert len({c.id for c in calls}) == len(expected)


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


__all__ = ["Path", "anthropic_client", "calls_streamed_as_whole", "last_request", "openai_client", "sim_requests", "stream_app",
           "text_streamed_as_whole"]
