"""Keys that upstreams echo reach nothing the sidecar relays, stores or logs (issue 11, defect 4).

Every simulator holds the key the sidecar sends it. For one request it answers with an error that
echoes that key (`Fault.echo_key`): as it is, URL-encoded, in base64, cut to its start or end,
masked as providers print keys, in the error's code, in a URL's `?key=`, in HTTP errors of every
status class and in stream error events before and after the first token. The official SDKs make
the requests through every front door (chat completions, messages, responses); then the key is looked for in what the client got, in
`/status` (JSON and page), in every log record (DEBUG), in every exported span and in the usage
report the operator would get.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote
from urllib.request import urlopen

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmroute_proxy
from llmroute_proxy.server.app import SCRUBBED_LOGGERS
from llmroute_proxy.server.telemetry import Telemetry, TelemetrySettings
from llmroute_proxy.sim import Fault, FaultKind, anthropic_app, azure_openai_app, gemini_app, openai_app
from llmroute_proxy.sync.client import sidecar_counters
from llmroute_proxy.sync.protocol import encode
from llmroute_proxy.sync.usage import UsageMark
from tests.proxy.documents import QUICK_FALLBACK, provider, route, target
from tests.proxy.stack import Stack

KEYS = {
    "k-oai": "sk-proj-Q3vT9xLm2Rk8Wz4Yb7Nc1Ph6Jd5Fg0SeUa",
    "k-claude": "sk-ant-api03-Zq8Xw2Ev6Rt4Yu1Io9Pa3Sd7Fg5Hj0Kl-abcDEF",  # read from a key file
    "k-compat": "f3a9c1e7b5d2048e6a1c3f5b7d9e0a2c4e6b8d1f",  # opaque, 40 characters
    "k-gem": "AIzaSyD4kX9mQ2vL7nR1tW8pZ3cB6hJ0fG5sE12",
    "k-az": "8d7c6b5a49382716af00be11c2d3e4f5",
}
PROVIDERS = {"k-oai": "openai", "k-claude": "anthropic", "k-compat": "openai-compatible", "k-gem": "gemini",
             "k-az": "azure-openai"}

CONFIG = [
    provider("k-oai", "openai", "{k_oai}/v1", key_env="K_OAI"),
    provider("k-claude", "anthropic", "{k_claude}", credentials={"file": "claude.key"}),
    provider("k-compat", "openai-compatible", "{k_compat}/v1", key_env="K_COMPAT"),
    provider("k-gem", "gemini", "{k_gem}", key_env="K_GEM"),
    provider("k-az", "azure-openai", "{k_az}", key_env="K_AZ", azure={"apiVersion": "2024-10-21"}),
    route("keys", {
        "k-oai": [target("k-oai", "gpt-4o-mini")],
        "k-claude": [target("k-claude", "claude-sonnet-4-5")],
        "k-compat": [target("k-compat", "gpt-4o-mini")],
        "k-gem": [target("k-gem", "gemini-2.5-flash")],
        "k-az": [target("k-az", "gpt-4o-prod")],
    }, default_tier="k-oai",
        fallback={**QUICK_FALLBACK, "maxAttempts": 1},
        outlierDetection={"consecutiveFailures": 1000}),
]

# message and code templates: `Fault.echo_key` fills in the key the request presented
SHAPES = {
    "401": Fault(FaultKind.STATUS, status=401, echo_key=True,
                 message="Incorrect API key provided: {key}. You can find your API key at https://example.test/keys."),
    "400 encoded": Fault(FaultKind.STATUS, status=400, echo_key=True,
                         message="Invalid credential {key_url} (sent as basic {key_b64})"),
    "400 code": Fault(FaultKind.STATUS, status=400, echo_key=True, code="{key}",
                      message="Bad request for the key starting {key_start}"),
    "429 masked": Fault(FaultKind.STATUS, status=429, echo_key=True,
                        message="Rate limit reached for key {key_masked} (ends {key_end})"),
    "500 url": Fault(FaultKind.STATUS, status=500, echo_key=True,
                     message="Internal error calling https://api.example.test/v1/models?alt=sse&key={key}"),
    "stream error first": Fault(FaultKind.ANTHROPIC_ERROR_EVENT, tokens=0, echo_key=True,
                                message="stream refused for {key}"),
    "stream error later": Fault(FaultKind.ANTHROPIC_ERROR_EVENT, tokens=2, echo_key=True,
                                message="stream broken for x-api-key {key}"),
    "200 body": Fault(FaultKind.ERROR_AS_200, status=400, echo_key=True, message="Key {key} may not use this model"),
    "stream 200 body": Fault(FaultKind.ERROR_AS_200, status=401, echo_key=True,
                             message="Incorrect API key provided: {key_masked} ({key_url})"),
}
SPANS = InMemorySpanExporter()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("keys")
    (tmp / "claude.key").write_text(KEYS["k-claude"] + "\n")
    sims = {
        "k-oai": lambda faults: openai_app(KEYS["k-oai"], name="sim-k-oai", faults=faults),
        "k-claude": lambda faults: anthropic_app(KEYS["k-claude"], faults=faults),
        "k-compat": lambda faults: openai_app(KEYS["k-compat"], name="sim-k-compat", faults=faults),
        "k-gem": lambda faults: gemini_app(KEYS["k-gem"], faults=faults),
        "k-az": lambda faults: azure_openai_app(KEYS["k-az"], faults=faults),
    }
    environ = {"K_OAI": KEYS["k-oai"], "K_COMPAT": KEYS["k-compat"], "K_GEM": KEYS["k-gem"], "K_AZ": KEYS["k-az"]}
    telemetry = Telemetry(TelemetrySettings(), span_exporter=SPANS)
    with Stack(tmp, telemetry=telemetry, config=CONFIG, extra_sims=sims, environ=environ) as running:
        yield running


CASES = [(provider, shape, door) for provider in KEYS for shape in SHAPES for door in ("openai", "anthropic")]
CASES += [(provider, shape, "responses") for provider in KEYS for shape in ("401", "400 code", "stream error later")]


@pytest.mark.parametrize(("provider", "shape", "door"), CASES)
def test_an_echoed_key_reaches_no_client_status_log_span_or_report(
        stack: Stack, caplog: pytest.LogCaptureFixture, provider: str, shape: str, door: str) -> None:
    caplog.set_level(logging.DEBUG)
    SPANS.clear()
    stack.faults[provider].next(SHAPES[shape])
    stream = shape.startswith("stream")
    shown = _ask(stack, door, provider, stream)
    assert stack.faults[provider].pending == 0, "the simulator did not answer with the echo"
    assert shown.strip()
    _assert_no_key(f"client ({door} {PROVIDERS[provider]} {shape})", shown)
    _assert_no_key("/status", _get(stack.admin_url + "/status"))
    _assert_no_key("status page", _get(stack.admin_url + "/"))
    _assert_no_key("logs", caplog.text + "\n".join(str(r.__dict__) for r in caplog.records))
    _assert_no_key("spans", "\n".join(span.to_json() for span in SPANS.get_finished_spans()))
    report = stack.call(lambda: encode(UsageMark().report(sidecar_counters(stack.sidecar), 1.0, final=True)))
    _assert_no_key("usage report", report)


def _ask(stack: Stack, door: str, tier: str, stream: bool) -> str:
    """Everything the client got: chunks, events, the error's message and body."""
    shown: list[str] = []
    messages: Any = [{"role": "user", "content": "tell me a story"}]
    try:
        if door == "responses":
            client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
            if stream:
                for item in client.responses.create(model=tier, input="tell me a story", stream=True):
                    shown.append(item.model_dump_json())
            else:
                shown.append(client.responses.create(model=tier, input="tell me a story").model_dump_json())
        elif door == "openai":
            client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
            if stream:
                for chunk in client.chat.completions.create(model=tier, messages=messages, stream=True):
                    shown.append(chunk.model_dump_json())
            else:
                shown.append(client.chat.completions.create(model=tier, messages=messages).model_dump_json())
        else:
            claude = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
            if stream:
                for event in claude.messages.create(model=tier, max_tokens=64, messages=messages, stream=True):
                    shown.append(event.model_dump_json())
            else:
                shown.append(claude.messages.create(model=tier, max_tokens=64, messages=messages).model_dump_json())
    except (openai.APIError, anthropic.APIError) as error:
        shown += [str(error), repr(error.body)]
        response = getattr(error, "response", None)
        if response is not None and not stream:
            shown.append(response.text)
    return "\n".join(shown)


def _get(url: str) -> str:
    with urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text


def _assert_no_key(where: str, text: str) -> None:
    lowered = text.lower()
    shown = {lowered[i:i + 8] for i in range(len(lowered) - 7)}
    for name, key in KEYS.items():
        for form in (key, quote(key, safe="")):
            pieces = {form[i:i + 8].lower() for i in range(len(form) - 7)}
            assert not pieces & shown, f"{where} shows 8 characters of {name}'s key in a row"
        assert not _decodes_to(text, key), f"{where} shows {name}'s key in base64"


BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{26,}")  # 26: the shortest encoding of a 20-byte key


def _decodes_to(text: str, key: str) -> bool:
    """Whether a base64 run in `text`, at any alignment, decodes to bytes holding `key`."""
    for run in BASE64_RUN.findall(text):
        for shift in range(4):
            aligned = run[shift:]
            aligned = aligned[: len(aligned) // 4 * 4]
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    if key.encode() in decode(aligned):
                        return True
                except (binascii.Error, ValueError):
                    continue
    return False


def test_every_logger_of_the_sidecar_is_scrubbed() -> None:
    """A new logger name must join SCRUBBED_LOGGERS, or its records would miss the safety net."""
    package = Path(llmroute_proxy.__file__).parent
    names = {name for path in package.rglob("*.py") if "sim" not in path.parts
             for name in re.findall(r'getLogger\("([^"]+)"\)', path.read_text())}
    assert names and names <= set(SCRUBBED_LOGGERS)
