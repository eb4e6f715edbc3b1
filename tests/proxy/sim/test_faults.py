"""Scripted faults: the plan itself (pure), and every fault kind as each official SDK observes it."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
from aiohttp import web
from google import genai
from google.genai import errors, types

from llmroute_proxy.sim import (
    Fault,
    FaultKind,
    FaultPlan,
    SimServer,
    anthropic_app,
    gemini_app,
    openai_app,
    sim_state,
)
from tests.proxy.sim import SimPool

KEY = "sim-faults-test-key"
QUESTION = "one two three four five six"

# --- the plan (pure) ---------------------------------------------------------------------------

RATE_LIMIT = Fault(FaultKind.STATUS, status=429)
OVERLOAD = Fault(FaultKind.STATUS, status=503)
STREAM_PATH = "/v1/models/m:streamGenerateContent"


def test_one_shot_faults_apply_to_the_next_requests_in_order() -> None:
    plan = FaultPlan()
    plan.next(RATE_LIMIT, count=2)
    plan.next(OVERLOAD)

    assert [plan.take("/v1/chat/completions") for _ in range(4)] == [RATE_LIMIT, RATE_LIMIT, OVERLOAD, None]


def test_a_path_filter_leaves_other_requests_alone_without_using_the_fault() -> None:
    plan = FaultPlan()
    only_streams = Fault(FaultKind.RESET, path=":streamGenerateContent")
    plan.next(only_streams)

    assert plan.take("/v1/models/m:generateContent") is None and plan.pending == 1
    assert plan.take(STREAM_PATH) is only_streams and plan.pending == 0


def test_queued_faults_come_before_the_standing_one_and_clear_removes_both() -> None:
    plan = FaultPlan()
    plan.always(OVERLOAD)
    plan.next(RATE_LIMIT)

    taken = [plan.take("/v1/messages") for _ in range(3)]
    plan.next(RATE_LIMIT)
    plan.clear()

    assert taken == [RATE_LIMIT, OVERLOAD, OVERLOAD]
    assert plan.take("/v1/messages") is None and plan.pending == 0


def test_probability_mode_replays_identically_for_the_same_seed() -> None:
    def run(seed: int, p: float) -> list[bool]:
        plan = FaultPlan(rng=random.Random(seed))
        plan.probability(OVERLOAD, p)
        return [plan.take("/v1/messages") is not None for _ in range(200)]

    draws = random.Random(7)
    expected = [draws.random() < 0.3 for _ in range(200)]
    assert run(7, 0.3) == run(7, 0.3) == expected
    assert 30 <= sum(expected) <= 90
    assert not any(run(7, 0.0)) and all(run(7, 1.0))


@pytest.mark.parametrize(("data", "expected"), [
    ({"kind": "status", "status": 429, "retry_after": 2}, Fault(FaultKind.STATUS, status=429, retry_after=2)),
    ({"kind": "status", "status": 429, "code": "insufficient_quota"},
     Fault(FaultKind.STATUS, status=429, code="insufficient_quota")),
    ({"kind": "latency", "seconds": 0.5}, Fault(FaultKind.LATENCY, seconds=0.5)),
    ({"kind": "break_after_tokens", "tokens": 3, "path": "/v1/messages"},
     Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=3, path="/v1/messages")),
    ({"kind": "hang"}, Fault(FaultKind.HANG)),
    ({"kind": "status", "status": 401, "message": "bad {key}", "echo_key": True},
     Fault(FaultKind.STATUS, status=401, message="bad {key}", echo_key=True)),
])
def test_faults_are_read_from_control_api_json(data: dict[str, Any], expected: Fault) -> None:
    assert Fault.from_json(data) == expected


@pytest.mark.parametrize(("data", "problem"), [
    ({"kind": "explode"}, "fault.kind must be one of"),
    ({"kind": "status"}, "needs a status"),
    ({"kind": "status", "status": 1000}, "not an HTTP status"),
    ({"kind": "status", "status": "429"}, "fault.status has the wrong type"),
    ({"kind": "latency", "seconds": -1}, "seconds must be"),
    ({"kind": "latency", "delay": 1}, "unknown fault fields: delay"),
    ({"kind": "break_after_tokens", "tokens": True}, "fault.tokens has the wrong type"),
    ({"kind": "status", "status": 401, "echo_key": 1}, "fault.echo_key has the wrong type"),
    ([], "fault must be an object"),
])
def test_bad_fault_json_is_refused_with_the_reason(data: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Fault.from_json(data)


def test_an_echoing_fault_fills_in_the_key_in_every_form() -> None:
    key = "sk-test-0123456789abcdefXYZ"
    fault = Fault(FaultKind.STATUS, status=400, echo_key=True, code="{key}",
                  message="{key} {key_url} {key_b64} {key_start} {key_end} {key_masked}")
    echoed = fault.echoing(key)
    assert echoed.code == key
    assert echoed.message.split() == [key, key, base64.b64encode(f"user:{key}".encode()).decode(), key[:8], key[-8:],
                                      key[:8] + "*" * 20 + key[-4:]]
    assert Fault(FaultKind.STATUS, status=400, echo_key=True).echoing(key).message is None


@pytest.mark.parametrize(("data", "problem"), [
    ({"mode": "sometimes", "fault": {"kind": "hang"}}, "mode must be"),
    ({"mode": "next", "count": 0, "fault": {"kind": "hang"}}, "count must be"),
    ({"mode": "probability", "fault": {"kind": "hang"}}, "needs a number p"),
    ({"mode": "probability", "p": 2, "fault": {"kind": "hang"}}, "p must be between"),
    ({"mode": "always"}, "fault must be an object"),
])
def test_bad_plan_json_is_refused_with_the_reason(data: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        FaultPlan().apply_json(data)


# --- the three SDKs against each fault ---------------------------------------------------------

@dataclass(frozen=True)
class Api:
    """How one provider's SDK is driven in these tests."""

    app: Callable[..., web.Application]
    text: Callable[[SimPool, SimServer, float], Awaitable[str]]
    stream: Callable[[SimPool, SimServer, list[str], float], Awaitable[None]]


def _openai(sims: SimPool, server: SimServer, timeout: float, max_retries: int = 0) -> openai.AsyncOpenAI:
    api = openai.AsyncOpenAI(api_key=KEY, base_url=server.url + "/v1", max_retries=max_retries, timeout=timeout)
    sims.on_close(api.close)
    return api


async def openai_text(sims: SimPool, server: SimServer, timeout: float) -> str:
    completion = await _openai(sims, server, timeout).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}])
    return completion.choices[0].message.content or ""


async def openai_stream(sims: SimPool, server: SimServer, pieces: list[str], timeout: float) -> None:
    stream = await _openai(sims, server, timeout).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}], stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)


def _anthropic(sims: SimPool, server: SimServer, timeout: float) -> anthropic.AsyncAnthropic:
    api = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.url, max_retries=0, timeout=timeout)
    sims.on_close(api.close)
    return api


async def anthropic_text(sims: SimPool, server: SimServer, timeout: float) -> str:
    message = await _anthropic(sims, server, timeout).messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": QUESTION}])
    block = message.content[0]
    return block.text if block.type == "text" else ""


async def anthropic_stream(sims: SimPool, server: SimServer, pieces: list[str], timeout: float) -> None:
    async with _anthropic(sims, server, timeout).messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]) as stream:
        async for text in stream.text_stream:
            pieces.append(text)


def _gemini(sims: SimPool, server: SimServer, timeout: float) -> genai.Client:
    api = genai.Client(api_key=KEY, http_options=types.HttpOptions(
        base_url=server.url, timeout=int(timeout * 1000), retry_options=types.HttpRetryOptions(attempts=1)))
    sims.on_close(api.aio.aclose)
    return api


async def gemini_text(sims: SimPool, server: SimServer, timeout: float) -> str:
    response = await _gemini(sims, server, timeout).aio.models.generate_content(
        model="gemini-2.5-flash", contents=QUESTION)
    return response.text or ""


async def gemini_stream(sims: SimPool, server: SimServer, pieces: list[str], timeout: float) -> None:
    stream = await _gemini(sims, server, timeout).aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents=QUESTION)
    async for chunk in stream:
        pieces.append(chunk.text or "")


APIS = {
    "openai": Api(openai_app, openai_text, openai_stream),
    "anthropic": Api(anthropic_app, anthropic_text, anthropic_stream),
    "gemini": Api(gemini_app, gemini_text, gemini_stream),
}
ANSWERS = {
    "openai": f"[sim-openai gpt-4o-mini] You said: {QUESTION}",
    "anthropic": f"[sim-anthropic claude-haiku-4-5] You said: {QUESTION}",
    "gemini": f"[sim-gemini gemini-2.5-flash] You said: {QUESTION}",
}
# what each SDK raises when a connection is reset, refused or cut short
CONNECTION_ERRORS: dict[str, tuple[type[BaseException], ...]] = {
    "openai": (openai.APIConnectionError,),
    "anthropic": (anthropic.APIConnectionError,),
    "gemini": (aiohttp.ClientError,),
}
STREAM_CUT_ERRORS: dict[str, tuple[type[BaseException], ...]] = {
    "openai": (openai.APIConnectionError,),
    # before anthropic 2.17 the SDK did not wrap errors while iterating; since, it raises its connection error
    "anthropic": (httpx2.RemoteProtocolError, anthropic.APIConnectionError),
    "gemini": (aiohttp.ClientPayloadError,),
}
TIMEOUT_ERRORS: dict[str, tuple[type[BaseException], ...]] = {
    "openai": (openai.APITimeoutError,),
    "anthropic": (anthropic.APITimeoutError, httpx2.ReadTimeout),
    "gemini": (TimeoutError,),
}
IN_BAND_ERRORS: dict[str, type[BaseException]] = {
    "openai": openai.APIError,
    "anthropic": anthropic.APIStatusError,
    "gemini": errors.ServerError,
}


async def start(sims: SimPool, provider: str, fault: Fault | None = None, **options: Any) -> SimServer:
    server = await sims.start(APIS[provider].app(KEY, chunks=4, **options))
    if fault is not None:
        sim_state(server.app).faults.next(fault)
    return server


@pytest.mark.parametrize(("fault", "error", "code"), [
    (Fault(FaultKind.STATUS, status=429, retry_after=2), openai.RateLimitError, "rate_limit_exceeded"),
    (Fault(FaultKind.STATUS, status=429, code="insufficient_quota"), openai.RateLimitError, "insufficient_quota"),
    (Fault(FaultKind.STATUS, status=500), openai.InternalServerError, None),
    (Fault(FaultKind.STATUS, status=503), openai.InternalServerError, None),
    (Fault(FaultKind.STATUS, status=404), openai.NotFoundError, "model_not_found"),
])
async def test_openai_status_faults_are_the_sdk_error_classes(
        sims: SimPool, fault: Fault, error: type[openai.APIStatusError], code: str | None) -> None:
    server = await start(sims, "openai", fault)

    with pytest.raises(error) as caught:
        await openai_text(sims, server, 5)

    assert caught.value.status_code == fault.status and caught.value.code == code
    assert caught.value.response.headers.get("retry-after") == ("2" if fault.retry_after else None)
    if code == "insufficient_quota":
        assert caught.value.type == "insufficient_quota"


async def test_the_openai_sdk_retries_a_429_after_retry_after_ms_and_succeeds(sims: SimPool) -> None:
    server = await start(sims, "openai", Fault(FaultKind.STATUS, status=429, retry_after_ms=10))

    completion = await _openai(sims, server, 5, max_retries=1).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}])

    assert completion.choices[0].message.content == ANSWERS["openai"]
    assert sim_state(server.app).stats.by_path["/v1/chat/completions"] == 2


@pytest.mark.parametrize(("fault", "error", "error_type"), [
    (Fault(FaultKind.STATUS, status=529), anthropic.OverloadedError, "overloaded_error"),
    (Fault(FaultKind.STATUS, status=429, retry_after=3), anthropic.RateLimitError, "rate_limit_error"),
    (Fault(FaultKind.STATUS, status=500), anthropic.InternalServerError, "api_error"),
    (Fault(FaultKind.ANTHROPIC_ERROR_EVENT), anthropic.OverloadedError, "overloaded_error"),
])
async def test_anthropic_status_faults_are_the_sdk_error_classes(
        sims: SimPool, fault: Fault, error: type[anthropic.APIStatusError], error_type: str) -> None:
    server = await start(sims, "anthropic", fault)

    with pytest.raises(error) as caught:
        await anthropic_text(sims, server, 5)

    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert caught.value.response.headers.get("retry-after") == ("3" if fault.retry_after else None)


@pytest.mark.parametrize(("fault", "error", "rpc_status"), [
    (Fault(FaultKind.STATUS, status=429, retry_after=3), errors.ClientError, "RESOURCE_EXHAUSTED"),
    (Fault(FaultKind.STATUS, status=503), errors.ServerError, "UNAVAILABLE"),
    (Fault(FaultKind.STATUS, status=404), errors.ClientError, "NOT_FOUND"),
])
async def test_gemini_status_faults_are_the_sdk_error_classes(
        sims: SimPool, fault: Fault, error: type[errors.APIError], rpc_status: str) -> None:
    server = await start(sims, "gemini", fault)

    with pytest.raises(error) as caught:
        await gemini_text(sims, server, 5)

    assert (caught.value.code, caught.value.status) == (fault.status, rpc_status)


async def test_a_gemini_429_carries_quota_failure_and_retry_info(sims: SimPool) -> None:
    fault = Fault(FaultKind.STATUS, status=429, retry_after=3, quota_id="GenerateRequestsPerDayPerProjectPerModel")
    server = await start(sims, "gemini", fault)

    with pytest.raises(errors.ClientError) as caught:
        await gemini_text(sims, server, 5)

    details = {d["@type"].rpartition(".")[2]: d for d in caught.value.details["error"]["details"]}
    assert details["RetryInfo"]["retryDelay"] == "3s"
    assert details["QuotaFailure"]["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert "retry-after" not in caught.value.response.headers


@pytest.mark.parametrize("provider", APIS)
async def test_latency_longer_than_the_client_timeout_times_out_then_service_resumes(
        sims: SimPool, provider: str) -> None:
    server = await start(sims, provider, Fault(FaultKind.LATENCY, seconds=2))

    with pytest.raises(TIMEOUT_ERRORS[provider]):
        await APIS[provider].text(sims, server, 0.15)

    assert await APIS[provider].text(sims, server, 5) == ANSWERS[provider]


async def test_latency_shorter_than_the_timeout_still_answers(sims: SimPool) -> None:
    server = await start(sims, "openai", Fault(FaultKind.LATENCY, seconds=0.05))

    assert await openai_text(sims, server, 5) == ANSWERS["openai"]


@pytest.mark.parametrize("provider", APIS)
async def test_a_hanging_request_ends_in_the_client_timeout(sims: SimPool, provider: str) -> None:
    server = await start(sims, provider, Fault(FaultKind.HANG))

    with pytest.raises(TIMEOUT_ERRORS[provider]):
        await APIS[provider].text(sims, server, 0.15)

    assert await APIS[provider].text(sims, server, 5) == ANSWERS[provider]


async def test_closing_a_simulator_releases_hanging_requests_without_leaking_tasks() -> None:
    server = await SimServer.start(openai_app())
    sim_state(server.app).faults.always(Fault(FaultKind.HANG))
    before = asyncio.all_tasks()

    async def call() -> None:
        async with aiohttp.ClientSession() as session:
            await session.post(server.url + "/v1/chat/completions", json={})

    caller = asyncio.create_task(call())
    while sim_state(server.app).stats.total == 0:
        await asyncio.sleep(0.005)
    await asyncio.wait_for(server.close(), timeout=2)

    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(caller, timeout=2)
    assert {task for task in asyncio.all_tasks() if not task.done()} <= before


@pytest.mark.parametrize("provider", APIS)
async def test_a_reset_connection_is_a_connection_error(sims: SimPool, provider: str) -> None:
    server = await start(sims, provider, Fault(FaultKind.RESET))

    with pytest.raises(CONNECTION_ERRORS[provider]):
        await APIS[provider].text(sims, server, 5)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_port_that_stopped_listening_refuses_and_serves_again_after_resume(
        sims: SimPool, provider: str) -> None:
    server = await start(sims, provider)
    port = server.port
    api = APIS[provider]
    assert await api.text(sims, server, 5) == ANSWERS[provider]

    await server.stop_listening()
    with pytest.raises(CONNECTION_ERRORS[provider]):
        await api.text(sims, server, 5)
    await server.resume()

    assert server.port == port and await api.text(sims, server, 5) == ANSWERS[provider]


async def test_stopping_listening_also_drops_idle_keep_alive_connections(sims: SimPool) -> None:
    server = await start(sims, "openai")
    api = _openai(sims, server, 5)

    async def ask() -> str:
        completion = await api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}])
        return completion.choices[0].message.content or ""

    assert await ask() == ANSWERS["openai"]
    await server.stop_listening()
    with pytest.raises(openai.APIConnectionError):
        await ask()
    await server.resume()

    assert await ask() == ANSWERS["openai"]


async def test_stopping_listening_cuts_a_stream_in_flight(sims: SimPool) -> None:
    server = await start(sims, "openai", Fault(FaultKind.SLOW_STREAM, seconds=0.05))
    stream = await _openai(sims, server, 5).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}], stream=True)
    pieces: list[str] = []

    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                await server.stop_listening()

    assert len(pieces) == 1


async def test_taken_out_of_rotation_a_stream_in_flight_ends_whole_and_nothing_new_gets_in(
        sims: SimPool) -> None:
    server = await start(sims, "openai", Fault(FaultKind.SLOW_STREAM, seconds=0.05))
    api = _openai(sims, server, 5)
    stream = await api.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}], stream=True)
    pieces: list[str] = []

    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if not pieces:
                await server.stop_listening(finish_in_flight=True)
            pieces.append(chunk.choices[0].delta.content)

    assert "".join(pieces) == ANSWERS["openai"]
    with pytest.raises(openai.APIConnectionError) as refused:
        await api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}])
    assert not isinstance(refused.value, openai.APITimeoutError)


async def test_taken_out_of_rotation_idle_keep_alive_connections_are_closed(sims: SimPool) -> None:
    server = await start(sims, "openai")
    api = _openai(sims, server, 5)

    async def ask() -> str:
        completion = await api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}])
        return completion.choices[0].message.content or ""

    assert await ask() == ANSWERS["openai"]
    await server.stop_listening(finish_in_flight=True)
    with pytest.raises(openai.APIConnectionError) as refused:
        await ask()
    assert not isinstance(refused.value, openai.APITimeoutError)
    await server.resume()

    assert await ask() == ANSWERS["openai"]


async def test_the_gemini_sdk_sees_a_refused_port_as_a_connection_error(sims: SimPool) -> None:
    server = await start(sims, "gemini")
    await server.stop_listening()

    with pytest.raises(aiohttp.ClientConnectorError):
        await gemini_text(sims, server, 5)


@pytest.mark.parametrize("provider", APIS)
@pytest.mark.parametrize(("fault", "received"), [
    (Fault(FaultKind.BREAK_BEFORE_FIRST_TOKEN), 0),
    (Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=2), 2),
])
async def test_a_cut_stream_raises_after_exactly_the_tokens_sent(
        sims: SimPool, provider: str, fault: Fault, received: int) -> None:
    server = await start(sims, provider, fault)
    pieces: list[str] = []

    with pytest.raises(STREAM_CUT_ERRORS[provider]):
        await APIS[provider].stream(sims, server, pieces, 5)

    assert len(pieces) == received and ANSWERS[provider].startswith("".join(pieces))


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_cut_non_streamed_answer_is_a_connection_error(sims: SimPool, provider: str) -> None:
    server = await start(sims, provider, Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=1))

    with pytest.raises(CONNECTION_ERRORS[provider]):
        await APIS[provider].text(sims, server, 5)


@pytest.mark.parametrize("provider", APIS)
async def test_an_error_event_after_200_raises_while_iterating(sims: SimPool, provider: str) -> None:
    server = await start(sims, provider, Fault(FaultKind.ANTHROPIC_ERROR_EVENT, tokens=1))
    pieces: list[str] = []

    with pytest.raises(IN_BAND_ERRORS[provider]) as caught:
        await APIS[provider].stream(sims, server, pieces, 5)

    assert len(pieces) == 1
    assert "overloaded" in str(caught.value).lower()


async def test_the_anthropic_error_event_is_the_documented_overloaded_event(sims: SimPool) -> None:
    server = await start(sims, "anthropic", Fault(FaultKind.ANTHROPIC_ERROR_EVENT))
    body = {"model": "claude-haiku-4-5", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": QUESTION}]}

    async with aiohttp.ClientSession(headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}) as session, \
            session.post(server.url + "/v1/messages", json=body) as response:
        text = await response.text()

    assert response.status == 200
    assert text.endswith('event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                         '"message":"Overloaded"}}\n\n')
    assert "message_stop" not in text and "content_block_delta" not in text


@pytest.mark.parametrize("provider", APIS)
async def test_a_slow_stream_trips_an_idle_timeout(sims: SimPool, provider: str) -> None:
    server = await start(sims, provider, Fault(FaultKind.SLOW_STREAM, seconds=1))

    with pytest.raises(TIMEOUT_ERRORS[provider]):
        await APIS[provider].stream(sims, server, [], 0.15)


@pytest.mark.parametrize("provider", APIS)
async def test_a_stalled_stream_sends_its_tokens_then_nothing_until_the_client_gives_up(
        sims: SimPool, provider: str) -> None:
    server = await start(sims, provider, Fault(FaultKind.STALL_AFTER_TOKENS, tokens=2))
    pieces: list[str] = []

    with pytest.raises(TIMEOUT_ERRORS[provider]):
        await APIS[provider].stream(sims, server, pieces, 0.15)

    assert len(pieces) == 2 and ANSWERS[provider].startswith("".join(pieces))


async def test_a_slow_stream_within_the_timeout_delivers_the_whole_answer(sims: SimPool) -> None:
    server = await start(sims, "openai", Fault(FaultKind.SLOW_STREAM, seconds=0.01))
    pieces: list[str] = []

    await openai_stream(sims, server, pieces, 5)

    assert "".join(pieces) == ANSWERS["openai"]


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
async def test_an_unmetered_answer_carries_no_usage_even_when_asked(sims: SimPool, stream: bool) -> None:
    """As some OpenAI-compatible servers answer: the text, and no usage chunk or object."""
    server = await start(sims, "openai")
    api = _openai(sims, server, 5)
    for fault in (None, Fault(FaultKind.NO_USAGE)):
        if fault is not None:
            sim_state(server.app).faults.next(fault)
        messages: list[Any] = [{"role": "user", "content": QUESTION}]
        if stream:
            chunks = [chunk async for chunk in await api.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True})]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usage = [c.usage for c in chunks if c.usage is not None]
        else:
            completion = await api.chat.completions.create(model="gpt-4o-mini", messages=messages)
            text, usage = completion.choices[0].message.content or "", [completion.usage] if completion.usage else []
        assert text == ANSWERS["openai"]
        assert bool(usage) is (fault is None)


# --- the control API ---------------------------------------------------------------------------

async def test_faults_scripted_over_http_reach_the_sdk_and_delete_clears_them(sims: SimPool) -> None:
    server = await start(sims, "openai")
    async with aiohttp.ClientSession() as session:
        async with session.post(server.url + "/_sim/faults", json={
                "mode": "next", "count": 2, "fault": {"kind": "status", "status": 503}}) as response:
            assert response.status == 200
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                await openai_text(sims, server, 5)
        assert await openai_text(sims, server, 5) == ANSWERS["openai"]

        async with session.post(server.url + "/_sim/faults", json={
                "mode": "always", "fault": {"kind": "status", "status": 429}}) as response:
            assert (await response.json())["faults"]["standing"] == "status"
        with pytest.raises(openai.RateLimitError):
            await openai_text(sims, server, 5)
        async with session.delete(server.url + "/_sim/faults") as response:
            assert response.status == 200
        assert await openai_text(sims, server, 5) == ANSWERS["openai"]

        async with session.get(server.url + "/_sim/stats") as response:
            stats = await response.json()
    assert stats["by_path"] == {"/v1/chat/completions": 5}
    assert stats["faults"] == {"pending": [], "standing": None, "p": 1.0}


@pytest.mark.parametrize("body", [
    {"mode": "next", "fault": {"kind": "explode"}},
    {"mode": "always", "fault": {"kind": "status"}},
    "not json",
])
async def test_bad_control_requests_are_400s_with_the_reason(sims: SimPool, body: Any) -> None:
    server = await start(sims, "gemini")

    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/_sim/faults", data=body if isinstance(body, str) else None,
            json=None if isinstance(body, str) else body) as response:
        payload = await response.json()

    assert response.status == 400 and payload["error"]
    assert sim_state(server.app).faults.take("/v1/models") is None


async def test_probability_mode_over_http_follows_the_injected_seed(sims: SimPool) -> None:
    server = await sims.start(anthropic_app(faults=FaultPlan(rng=random.Random(3))))
    draws = random.Random(3)
    expected = [500 if draws.random() < 0.5 else 200 for _ in range(12)]
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": "any", "anthropic-version": "2023-06-01"}

    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(server.url + "/_sim/faults", json={
                "mode": "probability", "p": 0.5, "fault": {"kind": "status", "status": 500}}):
            pass
        statuses = []
        for _ in range(12):
            async with session.post(server.url + "/v1/messages", json=body) as response:
                statuses.append(response.status)

    assert statuses == expected and 500 in statuses and 200 in statuses


@pytest.mark.parametrize(("provider", "path"), [
    ("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages"),
    ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent"),
    ("gemini", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
])
@pytest.mark.parametrize("quirks", [False, True], ids=["tidy", "quirks"])
async def test_an_error_as_200_is_the_status_faults_body_with_status_200(
        sims: SimPool, provider: str, path: str, quirks: bool) -> None:
    server = await start(sims, provider, quirks=quirks)
    plan = sim_state(server.app).faults
    answers = []
    async with aiohttp.ClientSession() as session:
        for kind in (FaultKind.STATUS, FaultKind.ERROR_AS_200):
            plan.next(Fault(kind, status=401, message="bad key"))
            async with session.post(server.url + path, json={"stream": True}) as response:
                answers.append((response.status, response.content_type, await response.read()))
    (status, content_type, body), (status_200, content_type_200, body_200) = answers
    assert (status, status_200) == (401, 200)
    assert content_type == content_type_200 == "application/json"
    assert body_200 == body and b"bad key" in body


async def test_the_gemini_sdk_reads_an_error_streamed_as_200_as_that_error(sims: SimPool) -> None:
    """Google's SDK reads a stream body that is an error object as the error it carries (its check
    is `startswith('{"error":')`, so the list-wrapped form passes it by)."""
    server = await start(sims, "gemini", Fault(FaultKind.ERROR_AS_200, status=401))
    with pytest.raises(errors.ClientError) as caught:
        await gemini_stream(sims, server, [], 5)
    assert caught.value.code == 401
