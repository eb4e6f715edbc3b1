"""Nothing of a failed attempt outlives it (issue 11, defect 2).

A failed attempt that leaves a reference cycle behind (an exception kept by the frame its
traceback holds, a planner keeping the exception, aiohttp keeping a failure whose traceback
holds the reader) keeps the attempt's whole state — the upstream response, its connection,
buffers, the client's request — until the collector's next full pass, which a served sidecar
makes rarely: RSS grew ~6 KB per failed attempt against a hung or resetting primary.

Each test sends requests that each fail one attempt on the primary (then fail over, or end in
an error) with the cyclic collector off, and counts what is still alive: objects that only
refcounting frees are gone, objects kept by a cycle are counted. Deterministic; no RSS.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import aiohttp
import openai
import pytest

from llmroute_proxy.errors import BadRequest, UpstreamError
from llmroute_proxy.routing.failover import AttemptPlanner
from llmroute_proxy.server.dispatch import Exchange
from llmroute_proxy.server.http1 import Http1Connection
from llmroute_proxy.server.upstream import UpstreamResponse
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import TargetId
from tests.proxy.documents import provider, route, target
from tests.proxy.stack import Stack

REQUESTS = 4

CONFIG = [
    provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    provider("oai-b", "openai-compatible", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", region="there",
             models=["gpt-4o-mini"]),
    provider("claude", "anthropic", "{claude}", key_env="TEST_CLAUDE_KEY", models=["claude-sonnet-4-5"]),
    route("main", {"ha": [target("oai", "gpt-4o-mini"), target("oai-b", "gpt-4o-mini", priority=1)],
                   "alone": [target("oai", "gpt-4o-mini")],
                   "mixed": [target("claude", "claude-sonnet-4-5"), target("oai", "gpt-4o-mini", priority=1)],
                   "claude": [target("claude", "claude-sonnet-4-5")]}, default_tier="ha",
          fallback={"maxAttempts": 2, "perTryTimeout": "200ms", "firstByteTimeout": "200ms", "idleTimeout": "200ms",
                    "overallTimeout": "10s"},
          outlierDetection={"consecutiveFailures": 1000000, "baseEjection": "1s", "maxEjection": "1s"}),
]

PER_ATTEMPT = (Exchange, AttemptPlanner, UpstreamResponse, UpstreamError, aiohttp.ClientResponse, Http1Connection)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("lifetime"), config=CONFIG) as running:
        yield running


def _alive() -> dict[str, int]:
    names = {kind: kind.__name__ for kind in PER_ATTEMPT}
    counts = dict.fromkeys(names.values(), 0)
    for obj in gc.get_objects():
        name = names.get(type(obj))
        if name is not None:
            counts[name] += 1
    return counts


async def _handlers_done(stack: Stack) -> None:
    if stack.sidecar.handlers:
        await asyncio.wait(list(stack.sidecar.handlers))


def _attempts(stack: Stack) -> int:
    return stack.call(lambda: stack.sidecar.counters_for(TargetId("oai/gpt-4o-mini@here")).requests)


def _ask(client: openai.OpenAI, model: str, stream: bool) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    try:
        if stream:
            for _ in client.chat.completions.create(model=model, messages=messages, stream=True):
                pass
        else:
            client.chat.completions.create(model=model, messages=messages)
    except openai.APIError:
        pass  # the attempt's failure reached the client (a committed stream, a lone target): fine here


FAULTS = {
    "hang": Fault(FaultKind.HANG),
    "reset": Fault(FaultKind.RESET),
    "503": Fault(FaultKind.STATUS, status=503),
    "400": Fault(FaultKind.STATUS, status=400),
    "break-before-first-token": Fault(FaultKind.BREAK_BEFORE_FIRST_TOKEN),
    "break-after-tokens": Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=2),
    "idle-after-first-token": Fault(FaultKind.SLOW_STREAM, seconds=5.0),
}


CASES = [
    *((fault, "ha", stream) for fault in ("hang", "reset") for stream in (False, True)),
    ("503", "ha", False),
    ("400", "ha", False),  # the request's own fault: relayed to the client, no failover
    ("break-before-first-token", "ha", True),
    ("break-after-tokens", "ha", True),  # a committed stream: the client gets an in-band error
    ("idle-after-first-token", "ha", True),
    ("hang", "alone", False),  # no fallback: the client gets the attempts' failure
    ("reset", "alone", True),
]


@pytest.mark.parametrize(("fault", "model", "stream"), CASES,
                         ids=[f"{f}-{m}-{'stream' if s else 'unary'}" for f, m, s in CASES])
def test_no_per_attempt_object_survives_a_failed_attempt(stack: Stack, fault: str, stream: bool, model: str) -> None:
    stack.faults["oai"].always(FAULTS[fault])
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app", max_retries=0, timeout=10)
    try:
        _ask(client, model, stream)  # the pools, caches and lazy imports of this path are made
        gc.collect()
        gc.disable()
        try:
            before, attempts = _alive(), _attempts(stack)
            for _ in range(REQUESTS):
                _ask(client, model, stream)
            stack.run(_handlers_done(stack))  # the client may have its answer before the handler returns
            after, failed = _alive(), _attempts(stack) - attempts
        finally:
            gc.enable()
    finally:
        stack.faults["oai"].clear()
        client.close()
    assert failed >= REQUESTS  # every request made at least one attempt on the failing primary
    grown = {name: after[name] - before[name] for name in after if after[name] > before[name]}
    assert not grown, f"kept alive by reference cycles after {REQUESTS} failed attempts: {grown}"


@pytest.mark.parametrize("model", ["mixed", "claude"])
def test_nothing_of_a_request_outlives_a_target_passed_over(stack: Stack, model: str) -> None:
    """Claude cannot take `seed`: passed over for the tier's next target (`mixed`), or, alone, its refusal
    is the client's 400 (`claude`). The refusal is kept for that answer and raised: neither it nor the
    request may stay in a cycle."""
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app", max_retries=0, timeout=10)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]

    def ask() -> None:
        try:
            client.chat.completions.create(model=model, messages=messages, seed=1)
        except openai.BadRequestError:
            assert model == "claude"

    def alive() -> dict[str, int]:
        return {**_alive(), "BadRequest": sum(isinstance(obj, BadRequest) for obj in gc.get_objects())}

    try:
        ask()
        gc.collect()
        gc.disable()
        try:
            before = alive()
            for _ in range(REQUESTS):
                ask()
            stack.run(_handlers_done(stack))
            after = alive()
        finally:
            gc.enable()
    finally:
        client.close()
    grown = {name: after[name] - before[name] for name in after if after[name] > before[name]}
    assert not grown, f"kept alive by reference cycles after {REQUESTS} requests: {grown}"
