"""Failover as a client sees it: invisible before the first token, explicit after it."""

from __future__ import annotations

import aiohttp
import openai
import orjson
import pytest

from llmroute_proxy.sim import Fault, FaultKind
from tests.proxy.server.conftest import sim_requests
from tests.proxy.stack import Stack

HELLO = [{"role": "user", "content": "hello"}]


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)


@pytest.mark.parametrize("fault", [
    Fault(FaultKind.STATUS, status=503),
    Fault(FaultKind.STATUS, status=500),
    Fault(FaultKind.STATUS, status=429, retry_after=5),
    Fault(FaultKind.STATUS, status=401),
    Fault(FaultKind.RESET),
    Fault(FaultKind.HANG),
], ids=lambda f: f"{f.kind.value}-{f.status or ''}")
def test_a_recoverable_failure_moves_to_the_next_target_unseen(stack: Stack, fault: Fault) -> None:
    stack.call(lambda: stack.faults["oai"].always(fault))
    raw = client(stack).with_options(timeout=20).chat.completions.with_raw_response.create(
        model="ha", messages=HELLO)
    assert raw.status_code == 200
    assert raw.headers["x-llmroute-provider"] == "oai-b"
    assert raw.headers["x-llmroute-attempts"] == "2"
    assert "sim-oai-b" in (raw.parse().choices[0].message.content or "")


def test_refused_connections_fail_over(stack: Stack) -> None:
    stack.run(stack.sims["oai"].stop_listening())
    try:
        raw = client(stack).chat.completions.with_raw_response.create(model="ha", messages=HELLO)
        assert raw.headers["x-llmroute-provider"] == "oai-b"
    finally:
        stack.run(stack.sims["oai"].resume())


def test_a_client_error_is_returned_unchanged_and_never_failed_over(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(
        Fault(FaultKind.STATUS, status=400, code="invalid_value", message="temperature is wrong here")))
    with pytest.raises(openai.BadRequestError) as caught:
        client(stack).chat.completions.create(model="ha", messages=HELLO)
    assert caught.value.status_code == 400
    assert "temperature is wrong here" in caught.value.message
    assert caught.value.response.headers["x-llmroute-attempts"] == "1"
    assert sim_requests(stack, "oai-b") == 0


def test_when_every_target_fails_the_client_gets_502_listing_each_attempt(stack: Stack) -> None:
    for name in ("oai", "oai-b"):
        stack.call(lambda name=name: stack.faults[name].always(Fault(FaultKind.STATUS, status=500)))
    with pytest.raises(openai.InternalServerError) as caught:
        client(stack).chat.completions.create(model="ha", messages=HELLO)
    error = caught.value
    assert error.status_code == 502
    assert "oai/gpt-4o-mini@here" in error.message and "oai-b/gpt-4o-mini@there" in error.message
    assert error.response.headers["x-should-retry"] == "false"


def test_when_every_target_is_rate_limited_the_client_gets_429_with_retry_after(stack: Stack) -> None:
    for name in ("oai", "oai-b"):
        stack.call(lambda name=name: stack.faults[name].always(
            Fault(FaultKind.STATUS, status=429, retry_after=30)))
    with pytest.raises(openai.RateLimitError) as caught:
        client(stack).chat.completions.create(model="ha", messages=HELLO)
    assert 25 <= int(caught.value.response.headers["retry-after"]) <= 30
    assert caught.value.response.headers["x-llmroute-attempts"] == "2"


@pytest.mark.parametrize("fault", [
    Fault(FaultKind.BREAK_BEFORE_FIRST_TOKEN),
    Fault(FaultKind.STATUS, status=503),
    Fault(FaultKind.SLOW_STREAM, seconds=5),  # the first token never comes within firstByteTimeout
], ids=lambda f: f.kind.value)
def test_a_stream_that_fails_before_its_first_token_fails_over_invisibly(stack: Stack, fault: Fault) -> None:
    stack.call(lambda: stack.faults["oai"].always(fault))
    response = client(stack).with_options(timeout=20).chat.completions.with_raw_response.create(
        model="ha", messages=HELLO, stream=True)
    assert response.headers["x-llmroute-provider"] == "oai-b"
    assert response.headers["x-llmroute-attempts"] == "2"
    text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert "sim-oai-b" in text


def test_a_stream_served_first_time_counts_one_attempt(stack: Stack) -> None:
    response = client(stack).chat.completions.with_raw_response.create(model="ha", messages=HELLO, stream=True)
    assert response.headers["x-llmroute-attempts"] == "1"
    assert response.headers["x-llmroute-provider"] == "oai"
    assert any(c.choices for c in response.parse())


async def test_a_draining_sidecar_refuses_new_requests_and_is_not_ready(stack: Stack) -> None:
    stack.call(lambda: setattr(stack.sidecar, "draining", True))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(stack.admin_url + "/readyz") as ready:
                assert ready.status == 503
            async with session.post(stack.url + "/v1/chat/completions",
                                    json={"model": "ha", "messages": HELLO}) as refused:
                assert refused.status == 503
                assert (await refused.json())["error"]["code"] == "draining"
    finally:
        stack.call(lambda: setattr(stack.sidecar, "draining", False))


async def test_a_stream_that_breaks_after_its_first_token_ends_with_an_error_event_not_done(
        stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=2)))
    async with aiohttp.ClientSession() as session, session.post(
            stack.url + "/v1/chat/completions", json={"model": "ha", "messages": HELLO, "stream": True}) as response:
        body = await response.read()
    assert response.status == 200
    events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert b"[DONE]" not in events
    assert "error" in orjson.loads(events[-1])
    assert len([e for e in events[:-1] if b'"content"' in e]) >= 1
    with pytest.raises(openai.APIError):  # the SDK raises on the in-band error
        list(client(stack).chat.completions.create(model="ha", messages=HELLO, stream=True))


def test_anthropics_error_event_after_200_fails_over_before_the_first_token(stack: Stack) -> None:
    stack.call(lambda: stack.faults["claude"].always(Fault(FaultKind.ANTHROPIC_ERROR_EVENT)))
    with pytest.raises(openai.APIStatusError) as caught:  # only one target in the tier
        list(client(stack).chat.completions.create(model="anthropic", messages=HELLO, stream=True))
    assert caught.value.status_code == 502
    assert "overloaded" in caught.value.message


def test_an_ejected_target_is_skipped_without_being_called(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    for _ in range(2):  # consecutiveFailures: 2
        client(stack).chat.completions.create(model="ha", messages=HELLO)
    calls = sim_requests(stack, "oai")
    raw = client(stack).chat.completions.with_raw_response.create(model="ha", messages=HELLO)
    assert raw.headers["x-llmroute-attempts"] == "1"
    assert raw.headers["x-llmroute-provider"] == "oai-b"
    assert sim_requests(stack, "oai") == calls
