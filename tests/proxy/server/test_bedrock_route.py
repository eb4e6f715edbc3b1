"""The official OpenAI and Anthropic SDKs call the sidecar, which calls Claude on Amazon Bedrock
through InvokeModel (the simulator checks Bedrock's path, key and body, and answers in AWS's shapes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from llmroute_proxy.sim import FaultPlan, bedrock_app, sim_state
from tests.proxy.documents import model, provider, route, target
from tests.proxy.stack import CLAUDE, OAI, Stack

BEDROCK_KEY = "ABSKQmVkcm9ja0FQSUtleS1zaW0tdGVzdA=="
APP_KEY = "app-key-never-forwarded"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
LLAMA = "meta.llama3-70b-instruct-v1:0"
INVOKE = f"/model/{SONNET}/invoke"
INVOKE_STREAM = f"/model/{SONNET}/invoke-with-response-stream"
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

CONFIG = [
    OAI, CLAUDE,
    provider("bedrock", "bedrock", "{bedrock}", key_env="TEST_BEDROCK_KEY", region="here", models=[
        model(SONNET, context_window=200000, input_per_mtok=3.0, output_per_mtok=15.0),
        model(HAIKU, context_window=200000, input_per_mtok=1.0, output_per_mtok=5.0),
        model(LLAMA, context_window=8000, input_per_mtok=2.65, output_per_mtok=3.5)]),
    route("main", {
        "bedrock": [target("bedrock", SONNET)],
        "haiku": [target("bedrock", HAIKU)],
        "bedrock-first": [target("bedrock", SONNET), target("claude", "claude-sonnet-4-5", priority=1)],
        "llama-first": [target("bedrock", LLAMA), target("oai", "gpt-4o-mini", priority=1)],
        "llama": [target("bedrock", LLAMA)],
    }, default_tier="bedrock",
        fallback={"maxAttempts": 3, "perTryTimeout": "3s", "firstByteTimeout": "2s", "idleTimeout": "2s",
                  "overallTimeout": "10s"},
        outlierDetection={"consecutiveFailures": 2, "baseEjection": "30s"}),
]


def bedrock_sim(faults: FaultPlan) -> web.Application:
    return bedrock_app(BEDROCK_KEY, faults=faults, chunks=4)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("bedrock"), config=CONFIG, extra_sims={"bedrock": bedrock_sim},
               environ={"TEST_BEDROCK_KEY": BEDROCK_KEY}) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=APP_KEY, max_retries=0)


@pytest.fixture
def claude_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=APP_KEY, max_retries=0)


def bedrock_paths(stack: Stack) -> dict[str, int]:
    return stack.call(lambda: dict(sim_state(stack.sims["bedrock"].app).stats.by_path))


def last_bedrock_request(stack: Stack, path: str) -> Any:
    return stack.call(lambda: sim_state(stack.sims["bedrock"].app).stats.last_by_path[path])


def test_a_chat_completion_reaches_bedrock_with_its_key_path_and_version(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="bedrock", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    completion = raw.parse()

    assert "You said: hello there" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-llmroute-provider"] == "bedrock" and raw.headers["x-llmroute-attempts"] == "1"
    assert float(raw.headers["x-llmroute-cost-usd"]) > 0
    sent = last_bedrock_request(stack, INVOKE)
    assert sent.headers["Authorization"] == f"Bearer {BEDROCK_KEY}"
    assert APP_KEY not in json.dumps(dict(sent.headers))
    assert sent.body["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in sent.body and "stream" not in sent.body
    assert sent.body["system"] == "Be brief."
    assert bedrock_paths(stack) == {INVOKE: 1}
