"""Bad requests get a clear error naming what and where, and nobody else is disturbed."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import zlib

import aiohttp
import anthropic
import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient

from llmroute_proxy.server.app import create_app
from llmroute_proxy.server.runner import build_sidecar
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.sync.protocol import compile_payload
from tests.proxy.stack import Stack

HELLO = [{"role": "user", "content": "hello"}]


async def post(stack: Stack, path: str, data: bytes, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.post(
            stack.url + path, data=data, headers={"content-type": "application/json", **(headers or {})}) as r:
        return r.status, orjson.loads(await r.read())


@pytest.mark.parametrize(("body", "param", "words"), [
    (b'{"model": "openai", "messages": [', None, "not valid JSON"),
    (b"", None, "empty"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b'{"model": "openai"}', "messages", "'messages' is required"),
    (b'{"model": "openai", "messages": []}', "messages", "non-empty"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "'model' is required"),
    (b'{"model": "openai", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role", "must be one of"),
    (b'{"model": "openai", "messages": [{"role": "user", "content": 5}]}', "messages[0].content", "string or an array"),
    (b'{"model": "openai", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature",
     "must be a number"),
    (b'{"model": "openai", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens",
     "at least 1"),
    (b'{"model": "openai", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream",
     "must be a boolean"),
    (b'{"model": "openai", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None, "not valid UTF-8"),
], ids=["truncated-json", "empty", "array", "no-messages", "empty-messages", "no-model", "bad-role",
        "bad-content", "temperature-type", "max-tokens-zero", "stream-type", "invalid-utf8"])
async def test_malformed_chat_requests_get_a_400_naming_the_field(
        stack: Stack, body: bytes, param: str | None, words: str) -> None:
    status, answer = await post(stack, "/v1/chat/completions", body)
    assert status == 400
    error = answer["error"]
    assert isinstance(error, dict)
    assert words in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


async def test_a_body_over_the_limit_gets_413(stack: Stack) -> None:
    limit = stack.sidecar.settings.max_body_bytes
    status, answer = await post(stack, "/v1/chat/completions", b" " * (limit + 1))
    assert status == 413
    assert str(limit) in answer["error"]["message"]  # type: ignore[index]


def test_an_unknown_model_gets_404_listing_what_exists(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-17", messages=HELLO)  # type: ignore[arg-type]
    message = caught.value.message
    assert "gpt-17" in message
    for name in ("openai", "anthropic", "auto", "gpt-4o-mini"):
        assert name in message


@pytest.mark.parametrize(("tier", "extra", "param"), [
    ("anthropic", {"temperature": 1.5}, "temperature"),
    ("anthropic", {"n": 2}, "n"),
    ("gemini", {"logit_bias": {"50256": -100}}, "logit_bias"),
])
def test_a_parameter_the_chosen_provider_cannot_honour_is_refused_by_name(
        stack: Stack, tier: str, extra: dict[str, object], param: str) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=tier, messages=HELLO, **extra)  # type: ignore[call-overload]
    assert param in caught.value.message
    assert caught.value.body["param"] == param  # type: ignore[index]


def test_messages_endpoint_errors_come_in_anthropics_shape(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=10, messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]



async def test_a_messages_request_without_max_tokens_is_refused_in_anthropics_shape(stack: Stack) -> None:
    status, answer = await post(stack, "/v1/messages", orjson.dumps({"model": "openai", "messages": HELLO}))
    assert status == 400
    assert answer["type"] == "error"
    assert answer["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in answer["error"]["message"]  # type: ignore[index]


async def test_a_client_that_disconnects_mid_stream_cancels_upstream_and_leaks_nothing(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.SLOW_STREAM, seconds=0.5)))
    session = aiohttp.ClientSession()
    response = await session.post(stack.url + "/v1/chat/completions",
                                  json={"model": "openai", "messages": HELLO, "stream": True})
    first = await response.content.readany()
    assert first.startswith(b"data: ")
    assert stack.sidecar.in_flight == 1
    response.close()
    await session.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (stack.sidecar.in_flight or stack.sidecar.load.outstanding(
            next(iter(stack.sidecar.table.routes[0].tiers["openai"].targets)).id)):  # type: ignore[union-attr]
        await asyncio.sleep(0.02)
    assert stack.sidecar.in_flight == 0
    target = stack.sidecar.table.routes[0].tiers["openai"].targets[0]  # type: ignore[union-attr]
    assert stack.sidecar.load.outstanding(target.id) == 0
    assert stack.call(lambda: stack.sidecar.limits.in_flight(target.provider)) == 0
    stack.call(lambda: stack.faults["oai"].clear())
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    assert client.chat.completions.create(model="openai", messages=HELLO).choices  # others are still served


async def test_without_a_table_the_sidecar_answers_503_and_is_not_ready(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    sidecar = build_sidecar()
    client: TestClient = await aiohttp_client(create_app(sidecar))
    response = await client.post("/v1/chat/completions", json={"model": "x", "messages": HELLO})
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "no_routing_table"
    await sidecar.upstream.close()


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", {"model": "x", "messages": HELLO}),
                                        ("/v1/messages", {"model": "x", "max_tokens": 5, "messages": HELLO}),
                                        ("/v1/responses", {"model": "x", "input": "hi"})])
async def test_a_table_without_routes_answers_503_saying_no_llmroute_selects_the_pod(  # type: ignore[no-untyped-def]
        aiohttp_client, path: str, body: dict[str, object]) -> None:
    sidecar = build_sidecar()
    sidecar.install(compile_payload({"region": "us", "documents": [], "credentials": {}}), "operator")
    client: TestClient = await aiohttp_client(create_app(sidecar))
    response = await client.post(path, json=body, headers={"x-llmroute-route": "chat"})
    answer = await response.json()
    assert response.status == 503 and "No LLMRoute selects this pod" in answer["error"]["message"]
    assert answer["error"].get("code", "no_route") == "no_route"  # Anthropic's error shape has no code
    await sidecar.upstream.close()


async def test_an_unknown_route_header_is_a_clear_400(stack: Stack) -> None:
    status, answer = await post(stack, "/v1/chat/completions", orjson.dumps({"model": "openai", "messages": HELLO}),
                                {"x-llmroute-route": "nope"})
    assert status == 400
    assert "known routes: main" in answer["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize(("body", "status"), [
    (b'{"model": "openai", "messages": [', 400),
    (b'{"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}', 404),
])
async def test_errors_before_any_attempt_still_name_the_route_and_zero_attempts(
        stack: Stack, body: bytes, status: int) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            stack.url + "/v1/chat/completions", data=body, headers={"content-type": "application/json"}) as r:
        assert r.status == status
        assert r.headers["x-llmroute-route"] == "main"
        assert r.headers["x-llmroute-attempts"] == "0"


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "openai", "messages": HELLO}),
    ("/v1/messages", {"model": "anthropic", "max_tokens": 10, "messages": HELLO}),
    ("/v1/responses", {"model": "openai", "input": "hello"}),
    ("/v1/embeddings", {"model": "embed", "input": "hello"}),
])
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_what_its_content_encoding_says_is_a_400_naming_the_header(
        stack: Stack, path: str, body: dict[str, object], encoding: str, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp decodes gzip and deflate bodies itself; one it cannot decode is the client's mistake, not a 500,
    and nothing to log."""
    status, answer = await post(stack, path, orjson.dumps(body), {"Content-Encoding": encoding})
    assert status == 400
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    if path == "/v1/messages":
        assert answer["type"] == "error"
        error = answer["error"]
        assert isinstance(error, dict) and error["type"] == "invalid_request_error"
    else:
        error = answer["error"]
        assert isinstance(error, dict) and error["param"] == "content-encoding"
    assert f"Content-Encoding: {encoding}" in error["message"]
    # the same body sent as it says it is goes through
    packed = gzip.compress(orjson.dumps(body)) if encoding == "gzip" else zlib.compress(orjson.dumps(body))
    status, answer = await post(stack, path, packed, {"Content-Encoding": encoding})
    assert status == 200, answer


async def test_a_refused_request_with_an_undecodable_body_logs_nothing(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """Refused before its body is read (a browser's Origin): aiohttp would read on after the answer."""
    status, _ = await post(stack, "/v1/chat/completions", b"{}{}", {"Content-Encoding": "gzip",
                                                                         "Origin": "https://evil.example"})
    assert status == 403
    await asyncio.sleep(0.1)  # aiohttp reads the rest after the answer is written
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def nested(depth: int) -> object:
    value: object = {"type": "object"}
    for _ in range(depth):
        value = {"properties": value}
    return value


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "openai", "messages": HELLO, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": nested(300)}}]}),
    ("/v1/messages", {"model": "anthropic", "max_tokens": 10, "messages": HELLO, "tools": [
        {"name": "f", "input_schema": nested(300)}]}),
    ("/v1/responses", {"model": "openai", "input": "hello", "tools": [
        {"type": "function", "name": "f", "parameters": nested(300)}]}),
])
async def test_json_nested_deeper_than_can_be_sent_on_is_a_400(
        stack: Stack, path: str, body: dict[str, object]) -> None:
    """orjson reads 1,024 levels but writes 255: such a body passed the front door and failed upstream-bound."""
    status, answer = await post(stack, path, json.dumps(body).encode())
    assert status == 400, answer
    error = answer["error"]
    assert isinstance(error, dict) and "255 levels" in error["message"]
