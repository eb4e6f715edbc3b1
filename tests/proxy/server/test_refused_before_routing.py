"""A generation request the sidecar refuses before routing it is seen as every request is: one
access line, one point of the request metrics and a SERVER span, each with the refusal's status.

An SRE sees a client fleet sending bad requests, or a sidecar answering 503 without a table, where
they look for requests. What the client sent (its prompt, its model, its route header) is not in
them: a line's model is empty, its route the one the table knows the request by, or empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any
from unittest.mock import ANY
from urllib.request import urlopen

import anthropic
import openai
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy.server.telemetry import Telemetry, TelemetrySettings
from tests.proxy.server.conftest import sim_requests
from tests.proxy.server.tracing import spans_from_now
from tests.proxy.stack import Stack

PRIVATE = "my passport number is P1234567 and my key is sk-live-in-the-prompt"
UNKNOWN_ROUTE = "route-typed-by-a-client-" + "x" * 200
UNKNOWN_MODEL = "gpt-17-typed-by-a-client"
SPANS = InMemorySpanExporter()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    telemetry = Telemetry(TelemetrySettings(), span_exporter=SPANS)
    with Stack(tmp_path_factory.mktemp("refused"), telemetry=telemetry) as running:
        yield running


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The access lines written since the test began."""
    caplog.set_level(logging.INFO, "llmroute.access")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "llmroute.access"]


@pytest.fixture
def spans(stack: Stack) -> Callable[[], list[ReadableSpan]]:
    """The spans finished since the test began."""
    return spans_from_now(stack, SPANS)


def openai_client(stack: Stack, route: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0,
                         default_headers={"x-llmroute-route": route} if route is not None else None)


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)


def chat(stack: Stack, route: str | None = None, **fields: Any) -> None:
    body = {"model": "openai", "messages": [{"role": "user", "content": PRIVATE}], **fields}
    openai_client(stack, route).chat.completions.create(**body)


def raw_chat(stack: Stack, content: bytes) -> None:
    openai_client(stack).post("/chat/completions", cast_to=object, content=content,
                              options={"headers": {"Content-Type": "application/json"}})


REQUEST_METRICS = ("llmroute_requests_total", "llmroute_request_duration_seconds_count")


def request_points(stack: Stack) -> dict[tuple[str, str, str, str, str], float]:
    """The request metrics' points: (metric, route, tier, status, error type) -> value."""
    return {key: value for key, value in all_points(stack).items() if key[0] in REQUEST_METRICS}


def all_points(stack: Stack) -> dict[tuple[str, str, str, str, str], float]:
    with urlopen(stack.admin_url + "/metrics") as response:
        text = response.read().decode()
    return {(sample.name, sample.labels.get("llmroute_route", ""), sample.labels.get("llmroute_tier", ""),
             sample.labels.get("http_response_status_code", ""), sample.labels.get("error_type", "")): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def added(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items() if value != before.get(key, 0.0)}


def one_request_point(route: str, status: int) -> dict[Any, float]:
    """What a request refused before routing adds to the request metrics: no tier, its status as its
    error type."""
    return {("llmroute_requests_total", route, "", str(status), str(status)): 1.0,
            ("llmroute_request_duration_seconds_count", route, "", str(status), str(status)): 1.0}


def refused_line(route: str, status: int, refused: str | None, trace_id: str) -> dict[str, Any]:
    line = {"route": route, "model": "", "tier": "", "rule": "", "experiment": None, "target": None,
            "provider": None, "upstream_model": None, "stream": False, "attempts": 0, "tried": [],
            "status": status, "latency_ms": ANY, "input_tokens": None, "output_tokens": None,
            "cached_input_tokens": None, "cost_usd": None, "trace_id": trace_id}
    if refused is not None:
        line["refused"] = refused
    return line


def send_without_a_table(stack: Stack) -> None:
    table = stack.sidecar.table
    stack.call(lambda: setattr(stack.sidecar, "table", None))
    try:
        chat(stack)
    finally:
        stack.call(lambda: setattr(stack.sidecar, "table", table))


def send_while_draining(stack: Stack) -> None:
    stack.call(lambda: setattr(stack.sidecar, "draining", True))
    try:
        chat(stack)
    finally:
        stack.call(lambda: setattr(stack.sidecar, "draining", False))


REFUSALS = [
    pytest.param(lambda stack: raw_chat(stack, b'{"model": "openai", "messages": [{"content": "' + PRIVATE.encode()),
                 "main", 400, "invalid_request", id="bad-json"),
    pytest.param(lambda stack: chat(stack, messages=[{"role": "wizard", "content": PRIVATE}]),
                 "main", 400, "invalid_request", id="validation"),
    pytest.param(lambda stack: raw_chat(stack, b" " * (stack.sidecar.settings.max_body_bytes + 1)),
                 "main", 413, "request_too_large", id="too-large"),
    pytest.param(lambda stack: chat(stack, model=UNKNOWN_MODEL), "main", 404, "model_not_found", id="unknown-model"),
    pytest.param(lambda stack: chat(stack, UNKNOWN_ROUTE), "", 400, "route_not_found", id="unknown-route"),
    pytest.param(send_while_draining, "main", 503, "draining", id="draining"),
    pytest.param(send_without_a_table, "", 503, "no_routing_table", id="no-table"),
]


@pytest.mark.parametrize(("send", "route", "status", "refused"), REFUSALS)
def test_a_refused_request_writes_one_line_one_metric_point_and_one_span(
        stack: Stack, access: Callable[[], list[str]], spans: Callable[[], list[ReadableSpan]],
        send: Callable[[Stack], None], route: str, status: int, refused: str) -> None:
    before = request_points(stack)
    with pytest.raises(openai.APIStatusError) as answered:
        send(stack)

    assert answered.value.status_code == status
    [span] = spans()
    [line] = access()
    assert orjson.loads(line) == refused_line(route, status, refused, format(span.context.trace_id, "032x"))
    assert added(before, request_points(stack)) == one_request_point(route, status)
    assert span.kind is SpanKind.SERVER and span.name == "POST /v1/chat/completions"
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST", "http.route": "/v1/chat/completions", "gen_ai.operation.name": "chat",
        "http.response.status_code": status, "llmroute.attempts": 0, "error.type": str(status)}
    assert span.status.status_code is (StatusCode.ERROR if status >= 500 else StatusCode.UNSET)
    assert sum(sim_requests(stack, name) for name in stack.sims) == 0


@pytest.mark.parametrize("send", [pytest.param(param.values[0], id=param.id) for param in REFUSALS])
def test_what_the_client_sent_is_in_no_line_and_no_metric(
        stack: Stack, access: Callable[[], list[str]], send: Callable[[Stack], None]) -> None:
    with pytest.raises(openai.APIStatusError):
        send(stack)

    [line] = access()
    labels = "".join("".join(key) for key in all_points(stack))
    for sent in (PRIVATE, "P1234567", "sk-live", UNKNOWN_MODEL, UNKNOWN_ROUTE, "app-key"):
        assert sent not in line and sent not in labels


ENDPOINTS = [
    pytest.param(lambda stack: openai_client(stack).embeddings.create(model=UNKNOWN_MODEL, input=PRIVATE),
                 "POST /v1/embeddings", "embeddings", id="embeddings"),
    pytest.param(lambda stack: openai_client(stack).responses.create(model=UNKNOWN_MODEL, input=PRIVATE),
                 "POST /v1/responses", "chat", id="responses"),
    pytest.param(lambda stack: anthropic_client(stack).messages.create(
        model=UNKNOWN_MODEL, max_tokens=10, messages=[{"role": "user", "content": PRIVATE}]),
                 "POST /v1/messages", "chat", id="messages"),
]


@pytest.mark.parametrize(("send", "name", "operation"), ENDPOINTS)
def test_every_generation_endpoint_sees_its_refusals(
        stack: Stack, access: Callable[[], list[str]], spans: Callable[[], list[ReadableSpan]],
        send: Callable[[Stack], object], name: str, operation: str) -> None:
    before = request_points(stack)
    with pytest.raises((openai.NotFoundError, anthropic.NotFoundError)):
        send(stack)

    [span] = spans()
    [line] = access()
    assert orjson.loads(line) == refused_line("main", 404, "model_not_found", format(span.context.trace_id, "032x"))
    assert added(before, request_points(stack)) == one_request_point("main", 404)
    attributes = span.attributes or {}
    assert (span.name, attributes["gen_ai.operation.name"], attributes["error.type"]) == (name, operation, "404")


def test_a_routed_request_still_writes_one_line_and_one_metric_point(
        stack: Stack, access: Callable[[], list[str]], spans: Callable[[], list[ReadableSpan]]) -> None:
    before = request_points(stack)
    chat(stack)

    [line] = access()
    entry = orjson.loads(line)
    assert (entry["status"], entry["tier"], entry["attempts"]) == (200, "openai", 1)
    assert "refused" not in entry
    assert added(before, request_points(stack)) == {("llmroute_requests_total", "main", "openai", "200", ""): 1.0,
                                                    ("llmroute_request_duration_seconds_count", "main", "", "200",
                                                     ""): 1.0}
    assert sorted(span.kind.name for span in spans()) == ["CLIENT", "SERVER"]


async def test_a_client_gone_before_its_request_is_routed_is_seen_as_499_and_leaves_nothing_in_flight(
        stack: Stack, access: Callable[[], list[str]]) -> None:
    before = request_points(stack)
    _, writer = await asyncio.open_connection("127.0.0.1", int(stack.url.rsplit(":", 1)[1]))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"model\": \"openai\"")
    await writer.drain()
    await asyncio.sleep(0.1)  # the handler is reading the body
    writer.close()
    async with asyncio.timeout(10):
        while not access():
            await asyncio.sleep(0.01)

    entry = orjson.loads(access()[0])
    assert (entry["route"], entry["status"], entry["attempts"]) == ("main", 499, 0)
    assert "refused" not in entry  # nothing was refused: the client went away
    assert added(before, request_points(stack)) == one_request_point("main", 499)
    assert stack.call(lambda: stack.sidecar.telemetry.in_flight) == 0
