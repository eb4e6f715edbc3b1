"""The Bedrock simulator, as Anthropic's own Bedrock client (`AnthropicBedrock` with an API key) and
the raw wire see it: Bedrock's path, key and body checks, AWS error shapes, and event-stream answers."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest

from llmroute_proxy.dialects.eventstream import EventStreamDecoder
from llmroute_proxy.sim import Fault, FaultKind, SimServer, bedrock_app, sim_state
from tests.proxy.sim import SimPool

KEY = "ABSKsim-bedrock-key"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
BODY: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                        "messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def sim(sims: SimPool) -> SimServer:
    return await sims.start(bedrock_app(KEY, chunks=4))


async def post(sim: SimServer, path: str, body: Any, headers: dict[str, str] = AUTH) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session, session.post(sim.url + path, json=body, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def test_anthropics_own_bedrock_client_is_answered(sim: SimServer) -> None:
    client = anthropic.AsyncAnthropicBedrock(api_key=KEY, base_url=sim.url, aws_region="us-east-1", max_retries=0)
    # AWS's docs require `anthropic_version: bedrock-2023-05-31`; the installed SDK (2.17) defaults the body's
    # to its own header version (2026-10-21), which the simulator refuses as Bedrock documents, so it is given
    message = await client.messages.create(model=SONNET, max_tokens=64,
                                           messages=[{"role": "user", "content": "hello there"}],
                                           extra_body={"anthropic_version": "bedrock-2023-05-31"})
    await client.close()

    assert "You said: hello there" in "".join(b.text for b in message.content if b.type == "text")
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    sent = sim_state(sim.app).stats.last
    assert sent.path == f"/model/{SONNET}/invoke" and sent.body["anthropic_version"] == "bedrock-2023-05-31"


async def test_a_stream_is_event_stream_frames_carrying_anthropics_events(sim: SimServer) -> None:
    status, headers, raw = await post(sim, f"/model/{SONNET}/invoke-with-response-stream", BODY)
    decoder = EventStreamDecoder()
    frames = decoder.feed(raw)
    decoder.close()

    assert status == 200 and headers["Content-Type"] == "application/vnd.amazon.eventstream"
    assert {f.headers[":event-type"] for f in frames} == {"chunk"}
    events = [orjson.loads(base64.b64decode(orjson.loads(f.payload)["bytes"])) for f in frames]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert "You said: hello there" in text


async def test_a_stream_fault_is_an_exception_frame(sim: SimServer) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.ANTHROPIC_ERROR_EVENT, status=429, tokens=1))
    _, _, raw = await post(sim, f"/model/{SONNET}/invoke-with-response-stream", BODY)
    frames = EventStreamDecoder().feed(raw)

    last = frames[-1]
    assert last.headers[":message-type"] == "exception"
    assert last.headers[":exception-type"] == "throttlingException"
    assert orjson.loads(last.payload)["message"]
    assert [f.headers.get(":event-type") for f in frames[:-1]] == ["chunk"] * (len(frames) - 1)


@pytest.mark.parametrize(("status", "error_type"), [(429, "ThrottlingException"), (503, "ServiceUnavailableException"),
                                                    (403, "AccessDeniedException"), (404, "ResourceNotFoundException")])
async def test_an_error_fault_is_aws_json_with_its_type_in_a_header(sim: SimServer, status: int, error_type: str) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.STATUS, status=status))
    got, headers, raw = await post(sim, f"/model/{SONNET}/invoke", BODY)

    assert got == status and headers["x-amzn-ErrorType"].split(":")[0] == error_type
    assert set(orjson.loads(raw)) == {"message"}


@pytest.mark.parametrize(("body", "headers", "status", "error_type"), [
    (BODY, {}, 403, "UnrecognizedClientException"),
    (BODY, {"Authorization": "Bearer another-key"}, 403, "UnrecognizedClientException"),
    ({**BODY, "model": SONNET}, AUTH, 400, "ValidationException"),
    ({**BODY, "stream": True}, AUTH, 400, "ValidationException"),
    ({**BODY, "anthropic_version": "2023-06-01"}, AUTH, 400, "ValidationException"),
    ({**BODY, "anthropic_beta": "context-1m"}, AUTH, 400, "ValidationException"),
    ({**BODY, "messages": []}, AUTH, 400, "ValidationException"),  # Claude's own check, in Bedrock's shape
])
async def test_what_bedrock_refuses_is_refused_in_its_shape(sim: SimServer, body: Any, headers: dict[str, str],
                                                             status: int, error_type: str) -> None:
    got, answered, raw = await post(sim, f"/model/{SONNET}/invoke", body, headers)

    assert (got, answered["x-amzn-ErrorType"]) == (status, error_type)
    assert set(orjson.loads(raw)) == {"message"}


async def test_a_model_that_is_not_claude_is_refused(sim: SimServer) -> None:
    got, answered, _ = await post(sim, "/model/meta.llama3-70b-instruct-v1:0/invoke", BODY)
    assert (got, answered["x-amzn-ErrorType"]) == (400, "ValidationException")


@pytest.mark.parametrize(("path", "asked", "served"), [
    (f"/model/{SONNET}/invoke", "flex", "flex"), (f"/model/{SONNET}/invoke-with-response-stream", "priority", "priority"),
    (f"/model/{SONNET}/invoke", None, None),
])
async def test_invoke_model_reports_the_tier_it_was_asked_for_in_its_header(
        sim: SimServer, path: str, asked: str | None, served: str | None) -> None:
    status, headers, _ = await post(sim, path, BODY, {**AUTH, **({"X-Amzn-Bedrock-Service-Tier": asked} if asked else {})})
    assert status == 200 and headers.get("X-Amzn-Bedrock-Service-Tier") == served


async def test_a_priority_request_is_served_at_default_once_its_capacity_ran_out(sims: SimPool) -> None:
    sim = await sims.start(bedrock_app(KEY, priority_capacity=False))
    status, headers, _ = await post(sim, f"/model/{SONNET}/invoke", BODY,
                                    {**AUTH, "X-Amzn-Bedrock-Service-Tier": "priority"})
    assert status == 200 and headers["X-Amzn-Bedrock-Service-Tier"] == "default"


async def test_an_unknown_tier_is_a_validation_exception(sim: SimServer) -> None:
    status, headers, body = await post(sim, f"/model/{SONNET}/invoke", BODY,
                                       {**AUTH, "X-Amzn-Bedrock-Service-Tier": "turbo"})
    assert status == 400 and headers["x-amzn-ErrorType"].startswith("ValidationException")
    assert "serviceTier" in orjson.loads(body)["message"]
