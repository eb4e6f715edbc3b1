"""Scripted faults on the simulated Responses API, with the chat endpoint's knobs, as the official
`openai` SDK (and the raw wire) sees them."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from llmroute_proxy.sim import Fault, FaultKind, SimServer, openai_app, sim_state
from llmroute_proxy.sim.openai import REFUSAL_TEXT
from tests.proxy.sim import SimPool

KEY = "sk-sim-responses-faults-key"
MODEL = "gpt-4o-mini"
QUESTION = "one two three four five six"
ANSWER = f"[sim-openai {MODEL}] You said: {QUESTION}"
PATH = "/v1/responses"


async def start(sims: SimPool, fault: Fault | None = None, *, quirks: bool = False) -> SimServer:
    server = await sims.start(openai_app(KEY, chunks=4, quirks=quirks))
    if fault is not None:
        sim_state(server.app).faults.next(fault)
    return server


def sdk(sims: SimPool, server: SimServer, timeout: float = 5, max_retries: int = 0) -> openai.AsyncOpenAI:
    api = openai.AsyncOpenAI(api_key=KEY, base_url=server.url + "/v1", max_retries=max_retries, timeout=timeout)
    sims.on_close(api.close)
    return api


async def text(sims: SimPool, server: SimServer, timeout: float = 5) -> str:
    response = await sdk(sims, server, timeout).responses.create(model=MODEL, input=QUESTION)
    return response.output_text


async def stream(sims: SimPool, server: SimServer, deltas: list[str], timeout: float = 5) -> list[str]:
    """The event types of a streamed answer, its text deltas appended to `deltas` as they come."""
    names = []
    async with sdk(sims, server, timeout).responses.stream(model=MODEL, input=QUESTION) as events:
        async for event in events:
            names.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    return names


async def post(server: SimServer, body: Any) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.post(
            server.url + PATH, json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
        return response.status, response.content_type, await response.read()


def sse(raw: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if block:
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((lines["event"], json.loads(lines["data"])))
    return events


# --- before the answer -------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "error", "code"), [
    (Fault(FaultKind.STATUS, status=429, retry_after=2), openai.RateLimitError, "rate_limit_exceeded"),
    (Fault(FaultKind.STATUS, status=429, code="insufficient_quota"), openai.RateLimitError, "insufficient_quota"),
    (Fault(FaultKind.STATUS, status=500), openai.InternalServerError, None),
    (Fault(FaultKind.STATUS, status=503), openai.InternalServerError, None),
    (Fault(FaultKind.STATUS, status=404), openai.NotFoundError, "model_not_found"),
    (Fault(FaultKind.PROMPT_BLOCKED), openai.BadRequestError, "invalid_prompt"),
])
async def test_status_faults_are_the_sdk_error_classes(
        sims: SimPool, fault: Fault, error: type[openai.APIStatusError], code: str | None) -> None:
    server = await start(sims, fault)

    with pytest.raises(error) as caught:
        await text(sims, server)

    assert caught.value.code == code
    assert caught.value.response.headers.get("retry-after") == ("2" if fault.retry_after else None)


async def test_the_sdk_retries_a_429_after_retry_after_ms_and_stats_tell_the_paths_apart(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.STATUS, status=429, retry_after_ms=10))
    api = sdk(sims, server, max_retries=1)

    response = await api.responses.create(model=MODEL, input=QUESTION)
    await api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])

    assert response.output_text == ANSWER
    assert dict(sim_state(server.app).stats.by_path) == {PATH: 2, "/v1/chat/completions": 1}


async def test_a_path_filter_strikes_only_the_responses_endpoint(sims: SimPool) -> None:
    server = await start(sims)
    sim_state(server.app).faults.always(Fault(FaultKind.STATUS, status=503, path=PATH))
    api = sdk(sims, server)

    completion = await api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.InternalServerError):
        await api.responses.create(model=MODEL, input=QUESTION)

    assert completion.choices[0].message.content == ANSWER


@pytest.mark.parametrize(("fault", "error", "timeout"), [
    (Fault(FaultKind.LATENCY, seconds=3), openai.APITimeoutError, 1.0),
    (Fault(FaultKind.HANG), openai.APITimeoutError, 1.0),
    (Fault(FaultKind.RESET), openai.APIConnectionError, 5.0),
])
async def test_latency_hangs_and_resets_are_the_sdk_timeout_and_connection_errors(
        sims: SimPool, fault: Fault, error: type[openai.APIConnectionError], timeout: float) -> None:
    """The client's timeout leaves the request time to reach the simulator on a loaded machine, so the fault
    strikes the first request, not the second: a reset needs no short timeout at all."""
    server = await start(sims, fault)

    with pytest.raises(error):
        await text(sims, server, timeout=timeout)

    assert await text(sims, server) == ANSWER


async def test_an_error_as_200_is_the_status_faults_body_with_status_200(sims: SimPool) -> None:
    server = await start(sims)
    plan = sim_state(server.app).faults
    answers = []
    for kind in (FaultKind.STATUS, FaultKind.ERROR_AS_200):
        plan.next(Fault(kind, status=429))
        answers.append(await post(server, {"model": MODEL, "input": QUESTION, "stream": True}))

    (status, content_type, body), (status_200, content_type_200, body_200) = answers
    assert (status, status_200) == (429, 200)
    assert content_type == content_type_200 == "application/json" and body_200 == body


async def test_the_sdk_reads_an_error_as_200_as_a_response_with_only_its_error(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.ERROR_AS_200, status=429))

    response = await sdk(sims, server).responses.create(model=MODEL, input=QUESTION)

    assert response.error is not None and response.error.code == "rate_limit_exceeded"
    assert response.output is None and response.status is None


async def test_ignore_stream_answers_a_stream_request_with_the_whole_response(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.IGNORE_STREAM))

    status, content_type, body = await post(server, {"model": MODEL, "input": QUESTION, "stream": True,
                                                     "stream_options": {"include_obfuscation": False}})

    response = orjson.loads(body)
    assert (status, content_type) == (200, "application/json")
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == ANSWER


async def test_the_sdk_stream_helper_finds_no_events_in_an_ignored_stream(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.IGNORE_STREAM))
    deltas: list[str] = []

    with pytest.raises(RuntimeError, match=r"response\.completed"):
        async with sdk(sims, server).responses.stream(model=MODEL, input=QUESTION) as events:
            [event async for event in events]
            await events.get_final_response()

    assert deltas == []


# --- inside the stream -------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "received"), [
    (Fault(FaultKind.BREAK_BEFORE_FIRST_TOKEN), 0),
    (Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=2), 2),
])
async def test_a_cut_stream_raises_after_exactly_the_deltas_sent(sims: SimPool, fault: Fault, received: int) -> None:
    server = await start(sims, fault)
    deltas: list[str] = []

    with pytest.raises(openai.APIConnectionError):
        await stream(sims, server, deltas)

    assert len(deltas) == received and ANSWER.startswith("".join(deltas))


async def test_a_cut_non_streamed_answer_is_a_connection_error(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=1))

    with pytest.raises(openai.APIConnectionError):
        await text(sims, server)


async def test_the_in_band_error_is_an_error_event_after_the_first_delta_and_nothing_after(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.ANTHROPIC_ERROR_EVENT, tokens=1))

    status, _, raw = await post(server, {"model": MODEL, "input": QUESTION, "stream": True})
    events = sse(raw)

    assert status == 200
    assert [name for name, _ in events][-2:] == ["response.output_text.delta", "error"]
    assert events[-1][1] == {"type": "error", "sequence_number": len(events) - 1, "code": "server_error",
                             "message": "The engine is currently overloaded, please try again later.", "param": None}


async def test_the_sdk_yields_the_in_band_error_and_never_a_final_response(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.ANTHROPIC_ERROR_EVENT, tokens=1, code="rate_limit_exceeded",
                                     message="Slow down."))
    deltas: list[str] = []
    errors = []

    with pytest.raises(RuntimeError, match=r"response\.completed"):
        async with sdk(sims, server).responses.stream(model=MODEL, input=QUESTION) as events:
            async for event in events:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
                elif event.type == "error":
                    errors.append((event.code, event.message))
            await events.get_final_response()

    assert len(deltas) == 1 and errors == [("rate_limit_exceeded", "Slow down.")]


async def test_with_quirks_the_in_band_error_is_a_failed_response(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.ANTHROPIC_ERROR_EVENT, tokens=1, status=500), quirks=True)
    failed = []

    async with sdk(sims, server).responses.stream(model=MODEL, input=QUESTION) as events:
        async for event in events:
            if event.type == "response.failed":
                failed.append(event.response)

    assert len(failed) == 1 and failed[0].status == "failed"
    assert failed[0].error is not None and failed[0].error.code == "server_error"


async def test_a_slow_stream_trips_an_idle_timeout_and_within_it_delivers_everything(sims: SimPool) -> None:
    slow = await start(sims, Fault(FaultKind.SLOW_STREAM, seconds=1))
    with pytest.raises(openai.APITimeoutError):
        await stream(sims, slow, [], timeout=0.15)

    server = await start(sims, Fault(FaultKind.SLOW_STREAM, seconds=0.01))
    deltas: list[str] = []
    names = await stream(sims, server, deltas)

    assert "".join(deltas) == ANSWER and names[-1] == "response.completed"


# --- refusals ----------------------------------------------------------------------------------

async def test_a_refusal_is_a_refusal_content_part(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.REFUSAL))

    response = await sdk(sims, server).responses.create(model=MODEL, input=QUESTION)

    message = response.output[0]
    assert message.type == "message" and message.content[0].type == "refusal"
    assert message.content[0].refusal == REFUSAL_TEXT and response.output_text == ""


async def test_a_streamed_refusal_comes_in_refusal_deltas(sims: SimPool) -> None:
    server = await start(sims, Fault(FaultKind.REFUSAL))

    _, _, raw = await post(server, {"model": MODEL, "input": QUESTION, "stream": True})
    events = sse(raw)

    deltas = [data["delta"] for name, data in events if name == "response.refusal.delta"]
    done = [data for name, data in events if name == "response.refusal.done"]
    assert "".join(deltas) == REFUSAL_TEXT and done[0]["refusal"] == REFUSAL_TEXT
    assert "response.output_text.delta" not in [name for name, _ in events]
    assert events[-1][1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": REFUSAL_TEXT}]
