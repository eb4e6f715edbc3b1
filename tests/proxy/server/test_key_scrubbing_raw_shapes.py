"""Keys echoed in upstream error shapes the simulators do not make (issue 11, defect 4).

`test_key_scrubbing` plants each key kind in every error the simulators answer with: their native
error bodies and in-stream error events. Real upstreams, and the proxies and gateways in front of
them, also answer with a plain-text or HTML error page, with an error object inside a 200, and with
the key in fields other than the message (`param`, `type`, Gemini's `details`); and an embeddings
request fails like a chat one. One echoing upstream answers each of those, in the dialect of the
provider type that asked, with the key it was sent; the key must reach no client, `/status`, log,
span or usage report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.server.telemetry import Telemetry, TelemetrySettings
from llmroute_proxy.sim import FaultPlan
from llmroute_proxy.sync.client import sidecar_counters
from llmroute_proxy.sync.protocol import encode
from llmroute_proxy.sync.usage import UsageMark
from tests.proxy.documents import QUICK_FALLBACK, provider, route, target
from tests.proxy.server.test_key_scrubbing import _assert_no_key, _get
from tests.proxy.stack import Stack

KEYS = {
    "r-oai": "sk-proj-Hn4Wq8Ze1Tx6Vb3Mk9Lc2Rj7Pf5Gd0YaSu",
    "r-claude": "sk-ant-api03-Mv7Nb2Xc9Zl4Kj1Hg8Fd3Sa6Qw0Er-ghiJKL",  # read from a key file
    "r-compat": "0b1c2d3e4f5a69788796a5b4c3d2e1f0a9b8c7d6",  # opaque, 40 characters
    "r-gem": "AIzaSyK8dM3nQ7wR2tY6uI1oP5aS9dF4gH0jK3L",
    "r-az": "7e6d5c4b3a29180f1e2d3c4b5a69788f",
}
CONFIG = [
    provider("r-oai", "openai", "{echo}/v1", key_env="R_OAI"),
    provider("r-claude", "anthropic", "{echo}", credentials={"file": "claude.key"}),
    provider("r-compat", "openai-compatible", "{echo}/v1", key_env="R_COMPAT"),
    provider("r-gem", "gemini", "{echo}", key_env="R_GEM"),
    provider("r-az", "azure-openai", "{echo}", key_env="R_AZ", azure={"apiVersion": "2024-10-21"}),
    route("keys", {
        "r-oai": [target("r-oai", "gpt-4o-mini")],
        "r-claude": [target("r-claude", "claude-sonnet-4-5")],
        "r-compat": [target("r-compat", "gpt-4o-mini")],
        "r-gem": [target("r-gem", "gemini-2.5-flash")],
        "r-az": [target("r-az", "gpt-4o-prod")],
        "e-oai": [target("r-oai", "text-embedding-3-small")],
        "e-compat": [target("r-compat", "text-embedding-3-small")],
        "e-gem": [target("r-gem", "gemini-embedding-001")],
        "e-az": [target("r-az", "text-embedding-3-small")],
    }, default_tier="r-oai",
        fallback={**QUICK_FALLBACK, "maxAttempts": 1},
        outlierDetection={"consecutiveFailures": 1000}),
]
SHAPES = ("text 401", "html 502", "200 in-band", "400 every field")
NEXT: dict[str, str] = {"shape": SHAPES[0]}
"""The shape the echoing upstream answers with next; set by each test."""
SPANS = InMemorySpanExporter()


def _presented(request: web.Request) -> tuple[str, str]:
    """The key the sidecar sent, and the dialect of the provider type that sent it."""
    bearer = request.headers.get("Authorization", "")
    for header, dialect in (("x-api-key", "anthropic"), ("x-goog-api-key", "gemini"), ("api-key", "openai")):
        if header in request.headers:
            return request.headers[header], dialect
    if "key" in request.query:
        return request.query["key"], "gemini"
    return bearer.removeprefix("Bearer "), "openai"


def _error(key: str, dialect: str, every_field: bool) -> dict[str, Any]:
    text = key if every_field else "invalid"
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": text if every_field else "authentication_error",
                                           "message": f"invalid x-api-key {key}"}}
    if dialect == "gemini":
        return {"error": {"code": 400, "message": f"API key not valid: {key}", "status": text,
                          "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                       "metadata": {"key": key, "service": "generativelanguage.googleapis.com"}}]}}
    return {"error": {"message": f"Incorrect API key provided: {key}", "type": text, "param": text,
                      "code": text if every_field else "invalid_api_key"}}


async def _echo(request: web.Request) -> web.Response:
    key, dialect = _presented(request)
    shape = NEXT["shape"]
    if shape == "text 401":
        return web.Response(status=401, text=f"401 Unauthorized: the key {key} is not valid\n")
    if shape == "html 502":
        return web.Response(status=502, content_type="text/html",
                            text=f"<html><body><h1>502 Bad Gateway</h1><!-- upstream=/v1?key={key} --></body></html>")
    status = 200 if shape == "200 in-band" else 400
    return web.Response(status=status, body=orjson.dumps(_error(key, dialect, shape == "400 every field")),
                        content_type="application/json")


def echo_app(_: FaultPlan) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


@pytest.fixture(scope="module")
def echoing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Not `stack`: the conftest's reset knows only simulators."""
    tmp = tmp_path_factory.mktemp("raw-keys")
    (tmp / "claude.key").write_text(KEYS["r-claude"] + "\n")
    environ = {"R_OAI": KEYS["r-oai"], "R_COMPAT": KEYS["r-compat"], "R_GEM": KEYS["r-gem"], "R_AZ": KEYS["r-az"]}
    telemetry = Telemetry(TelemetrySettings(), span_exporter=SPANS)
    with Stack(tmp, telemetry=telemetry, config=CONFIG, extra_sims={"echo": echo_app}, environ=environ) as running:
        yield running


TIERS = {"r-oai": "openai", "r-compat": "openai", "r-az": "openai", "r-gem": "openai", "r-claude": "anthropic"}
CASES = [(tier, shape, door) for tier, door in TIERS.items() for shape in SHAPES]
# A 200 that holds an error takes other paths through a stream's parser and the embeddings parser; an
# HTTP error takes the same path whatever the request was.
CASES += [(tier, "200 in-band", "stream") for tier in TIERS]
CASES += [(tier, "200 in-band", "embeddings") for tier in TIERS if tier != "r-claude"]


@pytest.mark.parametrize(("tier", "shape", "door"), CASES)
def test_a_key_echoed_in_any_shape_reaches_no_client_status_log_span_or_report(
        echoing: Stack, caplog: pytest.LogCaptureFixture, tier: str, shape: str, door: str) -> None:
    stack = echoing
    stack.call(lambda: setattr(stack.sidecar, "health", HealthBook()))  # a 401 ejects the target
    caplog.set_level(logging.DEBUG)
    SPANS.clear()
    NEXT["shape"] = shape
    shown = _ask(stack, tier, door)
    assert shown.strip()
    _assert_no_key(f"client ({door} {tier} {shape})", shown)
    _assert_no_key("/status", _get(stack.admin_url + "/status"))
    _assert_no_key("logs", caplog.text + "\n".join(str(r.__dict__) for r in caplog.records))
    _assert_no_key("spans", "\n".join(span.to_json() for span in SPANS.get_finished_spans()))
    report = stack.call(lambda: encode(UsageMark().report(sidecar_counters(stack.sidecar), 1.0, final=True)))
    _assert_no_key("usage report", report)


def _ask(stack: Stack, tier: str, door: str) -> str:
    """Everything the client got: chunks, the error's message and body."""
    shown: list[str] = []
    messages: Any = [{"role": "user", "content": "hello"}]
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    try:
        if door == "embeddings":
            shown.append(client.embeddings.create(model="e-" + tier.removeprefix("r-"), input="hello").model_dump_json())
        elif door == "anthropic":
            claude = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
            shown.append(claude.messages.create(model=tier, max_tokens=64, messages=messages).model_dump_json())
        elif door == "stream" and tier == "r-claude":
            claude = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
            for event in claude.messages.create(model=tier, max_tokens=64, messages=messages, stream=True):
                shown.append(event.model_dump_json())
        elif door == "stream":
            for chunk in client.chat.completions.create(model=tier, messages=messages, stream=True):
                shown.append(chunk.model_dump_json())
        else:
            shown.append(client.chat.completions.create(model=tier, messages=messages).model_dump_json())
    except (openai.APIError, anthropic.APIError) as error:
        shown += [str(error), repr(error.body)]
        response = getattr(error, "response", None)
        if response is not None and door != "stream":
            shown.append(response.text)
    return "\n".join(shown)
