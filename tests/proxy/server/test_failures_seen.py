"""A routed request that fails is seen for what it was: its access line and `/status` say the error
code it was answered (in its status, or in its stream once that had begun), a bug is a 500 in the line
and the metrics (never a 499, which says the client left), the line's latency is the duration metric's,
and a request whose body is still being uploaded does not hold a drain."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn
from urllib.request import urlopen

import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy.server import app as sidecar_app
from llmroute_proxy.server.runner import drain
from llmroute_proxy.sim import Fault, FaultKind
from tests.proxy.server.conftest import sim_requests
from tests.proxy.server.spending import ended
from tests.proxy.stack import Stack

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The access lines written since the test began, parsed, once there is one: a client may have read
    the whole answer (an SDK raised on its in-band error) a moment before the sidecar writes the line."""
    caplog.set_level(logging.INFO, "llmroute.access")

    def lines() -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while not (written := [r for r in caplog.records if r.name == "llmroute.access"]) and (
                time.monotonic() < deadline):
            time.sleep(0.01)
        return [orjson.loads(record.getMessage()) for record in written]
    return lines


@pytest.fixture
def undrained(stack: Stack) -> Iterator[None]:
    yield

    def reset() -> None:
        stack.sidecar.draining = False
        stack.sidecar.drain_cut = None

    stack.call(reset)


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)


def decisions(stack: Stack) -> list[dict[str, Any]]:
    with urlopen(stack.admin_url + "/status") as response:
        return list(orjson.loads(response.read())["decisions"])  # the newest first


def metric_points(stack: Stack, name: str) -> dict[tuple[str, str, str, str], float]:
    """`name`'s points by (route, tier, status, error type)."""
    with urlopen(stack.admin_url + "/metrics") as response:
        text = response.read().decode()
    return {(sample.labels.get("llmroute_route", ""), sample.labels.get("llmroute_tier", ""),
             sample.labels.get("http_response_status_code", ""),
             sample.labels.get("error_type", "")): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples if sample.name == name}


# --- the error code -----------------------------------------------------------------------------


def test_a_request_every_target_failed_says_the_code_it_was_answered(
        stack: Stack, access: Callable[[], list[dict[str, Any]]]) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=500)))
    with pytest.raises(openai.APIStatusError) as answered:
        client(stack).chat.completions.create(model="openai", messages=HELLO)

    code = answered.value.body["code"]  # type: ignore[index]
    [line] = access()
    assert answered.value.status_code == line["status"] == 502
    assert code and line["error"] == code
    assert "refused" not in line and line["tried"][0]["outcome"] == "server_error"
    assert decisions(stack)[0]["error"] == code


def test_a_stream_broken_after_its_first_token_is_a_200_that_says_its_error(
        stack: Stack, access: Callable[[], list[dict[str, Any]]]) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=2)))
    with pytest.raises(openai.APIError) as answered:
        list(client(stack).chat.completions.create(model="openai", messages=HELLO, stream=True))
    ended(stack)  # its line is written as its handler ends, a moment after the client read the error

    [line] = access()
    assert line["status"] == 200
    assert line["error"] == (answered.value.code or answered.value.type) and line["error"]  # the in-band error's
    assert line["tried"][0]["outcome"] == "connection"  # cut: the connection went


def test_a_request_that_succeeds_says_no_error(stack: Stack, access: Callable[[], list[dict[str, Any]]]) -> None:
    client(stack).chat.completions.create(model="openai", messages=HELLO)

    [line] = access()
    assert line["status"] == 200 and "error" not in line and "error" not in decisions(stack)[0]


# --- a bug --------------------------------------------------------------------------------------


def broken(*args: object, **kwargs: object) -> NoReturn:
    raise RuntimeError("a bug")


@pytest.mark.parametrize("where", ["validate_chat", "dispatch_chat"], ids=["before-routing", "after-routing"])
def test_a_bug_is_a_500_in_the_line_and_the_metrics_not_a_client_that_left(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch,
        where: str) -> None:
    before = metric_points(stack, "llmroute_requests_total")
    monkeypatch.setattr(sidecar_app, where, broken)
    with pytest.raises(openai.InternalServerError):
        client(stack).chat.completions.create(model="openai", messages=HELLO)

    [line] = access()
    assert line["status"] == 500 and "refused" not in line
    after = metric_points(stack, "llmroute_requests_total")
    tier = "" if where == "validate_chat" else "openai"
    assert {key: value - before.get(key, 0.0) for key, value in after.items() if value != before.get(key)} == {
        ("main", tier, "500", "500"): 1.0}


# --- the latency --------------------------------------------------------------------------------


def test_the_line_latency_is_the_duration_the_metric_records(
        stack: Stack, access: Callable[[], list[dict[str, Any]]]) -> None:
    """Both from the handler's start: reading and routing the request included."""
    key = ("main", "", "200", "")
    before = metric_points(stack, "llmroute_request_duration_seconds_sum").get(key, 0.0)
    client(stack).chat.completions.create(model="openai", messages=HELLO)

    recorded = metric_points(stack, "llmroute_request_duration_seconds_sum")[key] - before
    [line] = access()
    assert line["latency_ms"] == pytest.approx(recorded * 1000, abs=0.006)  # the line rounds to 0.01 ms


# --- a slow upload and the drain ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages/count_tokens"])
async def test_a_body_still_being_uploaded_does_not_hold_the_drain(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], undrained: None, path: str) -> None:
    body = orjson.dumps({"model": "anthropic", "messages": HELLO})
    host, port = stack.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body[:10])
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler has begun reading the body, which stops halfway

        stack.run(asyncio.wait_for(drain(stack.sidecar, 10), 2))  # done at once, not at its 10 s deadline

        writer.write(body[10:])
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"].startswith(
        "This llmroute sidecar is shutting down")
    assert [line["refused"] for line in access()] == ["draining"]
    assert sim_requests(stack, "claude") == 0
