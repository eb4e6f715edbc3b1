"""The official OpenAI and Anthropic SDKs call the sidecar, which calls Claude on Amazon Bedrock
through InvokeModel (the simulator checks Bedrock's path, key and body, and answers in AWS's shapes).
Bedrock's other models, through Converse, are `test_bedrock_converse_route.py`'s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, bedrock_app
from llmroute_proxy.table import TargetId
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.stack import CLAUDE, OAI, Stack

BEDROCK_KEY = "ABSKQmVkcm9ja0FQSUtleS1zaW0tdGVzdA=="
APP_KEY = "app-key-never-forwarded"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET_TARGET = TargetId(f"bedrock/{SONNET}@here")
INVOKE = f"/model/{SONNET}/invoke"
INVOKE_STREAM = f"/model/{SONNET}/invoke-with-response-stream"
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

CONFIG = [
    OAI, CLAUDE,
    provider("bedrock", "bedrock", "{bedrock}", key_env="TEST_BEDROCK_KEY", region="here", models=[
        model(SONNET, context_window=200000, input_per_mtok=3.0, output_per_mtok=15.0),
        model(HAIKU, context_window=200000, input_per_mtok=1.0, output_per_mtok=5.0)]),
    route("main", {
        "bedrock": [target("bedrock", SONNET)],
        "haiku": [target("bedrock", HAIKU)],
        "bedrock-first": [target("bedrock", SONNET), target("claude", "claude-sonnet-4-5", priority=1)],
    }, default_tier="bedrock",
        fallback=QUICK_FALLBACK,
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




def test_a_chat_completion_reaches_bedrock_with_its_key_path_and_version(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="bedrock", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    completion = raw.parse()

    assert "You said: hello there" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-llmroute-provider"] == "bedrock" and raw.headers["x-llmroute-attempts"] == "1"
    assert float(raw.headers["x-llmroute-cost-usd"]) > 0
    sent = stack.last_sim_request("bedrock", INVOKE)
    assert sent.headers["Authorization"] == f"Bearer {BEDROCK_KEY}"
    assert APP_KEY not in json.dumps(dict(sent.headers))
    assert sent.body["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in sent.body and "stream" not in sent.body
    assert sent.body["system"] == "Be brief."
    assert stack.sim_paths("bedrock") == {INVOKE: 1}


def test_an_openai_stream_is_translated_from_bedrocks_event_stream(stack: Stack, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="bedrock", messages=[{"role": "user", "content": "tell me a story"}], stream=True,
        stream_options={"include_usage": True}))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said: tell me a story" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    sent = stack.last_sim_request("bedrock", INVOKE_STREAM)
    assert "stream" not in sent.body and sent.body["anthropic_version"] == "bedrock-2023-05-31"
    assert stack.sim_paths("bedrock") == {INVOKE_STREAM: 1}


def test_an_inference_profile_id_is_the_path_and_the_answer_is_claudes(stack: Stack, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="haiku", messages=[{"role": "user", "content": "hi"}])

    assert "You said: hi" in (completion.choices[0].message.content or "")
    assert stack.sim_paths("bedrock") == {f"/model/{HAIKU}/invoke": 1}


def test_a_tool_call_comes_back_as_an_openai_tool_call_whole_and_streamed(stack: Stack, client: openai.OpenAI) -> None:
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    completion = client.chat.completions.create(model="bedrock", messages=ask, tools=[WEATHER_TOOL])
    chunks = list(client.chat.completions.create(model="bedrock", messages=ask, tools=[WEATHER_TOOL], stream=True))

    call = (completion.choices[0].message.tool_calls or [])[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and set(json.loads(call.function.arguments)) == {"city"}
    streamed = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert streamed[0].function is not None and streamed[0].function.name == "get_weather"
    assert set(json.loads("".join(tc.function.arguments or "" for tc in streamed if tc.function))) == {"city"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    sent = stack.last_sim_request("bedrock", INVOKE_STREAM)
    assert sent.body["tools"][0]["name"] == "get_weather" and "input_schema" in sent.body["tools"][0]


def test_the_anthropic_sdk_is_answered_natively_with_its_betas_in_the_body(
        stack: Stack, claude_client: anthropic.Anthropic) -> None:
    message = claude_client.messages.create(
        model="bedrock", max_tokens=256, messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"anthropic-beta": "context-1m-2025-08-07, interleaved-thinking-2025-05-14"})

    assert message.type == "message" and message.stop_reason == "end_turn"
    assert "You said: hello there" in "".join(b.text for b in message.content if b.type == "text")
    sent = stack.last_sim_request("bedrock", INVOKE)
    assert sent.body["anthropic_beta"] == ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]
    assert sent.body["max_tokens"] == 256 and "model" not in sent.body
    assert "anthropic-beta" not in sent.headers


def test_the_anthropic_sdk_streams_the_events_bedrock_carried(stack: Stack, claude_client: anthropic.Anthropic) -> None:
    with claude_client.messages.stream(model="bedrock", max_tokens=256,
                                       messages=[{"role": "user", "content": "tell me a story"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()

    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "You said: tell me a story" in "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert stack.sim_paths("bedrock") == {INVOKE_STREAM: 1}


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_bedrock_throttling_exception_fails_over_to_the_next_target(
        stack: Stack, client: openai.OpenAI, streamed: bool) -> None:
    stack.call(lambda: stack.faults["bedrock"].next(Fault(FaultKind.STATUS, status=429, retry_after=7)))

    raw = client.chat.completions.with_raw_response.create(
        model="bedrock-first", messages=[{"role": "user", "content": "hello"}], stream=streamed)
    parsed = raw.parse()
    text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) if streamed \
        else parsed.choices[0].message.content  # type: ignore[union-attr]

    assert "You said: hello" in (text or "")
    assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-attempts"]) == ("claude", "2")
    health = stack.call(lambda: stack.sidecar.health.snapshot(SONNET_TARGET, stack.sidecar.clock()))
    assert health.state == "cooling", "ThrottlingException is a rate limit: the target cools for its retry-after"


def test_an_exception_frame_before_the_first_token_fails_over_invisibly(stack: Stack, client: openai.OpenAI) -> None:
    stack.call(lambda: stack.faults["bedrock"].next(Fault(FaultKind.ANTHROPIC_ERROR_EVENT, status=503, tokens=0)))

    raw = client.chat.completions.with_raw_response.create(
        model="bedrock-first", messages=[{"role": "user", "content": "hello"}], stream=True)

    assert "You said: hello" in "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-attempts"]) == ("claude", "2")


def test_an_exception_frame_after_the_first_token_ends_the_stream_with_an_in_band_error(
        stack: Stack, client: openai.OpenAI) -> None:
    stack.call(lambda: stack.faults["bedrock"].next(Fault(FaultKind.ANTHROPIC_ERROR_EVENT, status=424, tokens=1)))

    stream = client.chat.completions.create(model="bedrock-first", messages=[{"role": "user", "content": "tell me a story"}],
                                            stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)

    assert "".join(got), "the first token reached the client before the exception frame"
    assert "ModelStreamErrorException" in str(raised.value.message)
    assert stack.sim_paths("bedrock") == {INVOKE_STREAM: 1}, "a committed stream never fails over"


def test_the_anthropic_sdk_gets_an_exception_frame_after_the_first_token_as_an_error_event(
        stack: Stack, claude_client: anthropic.Anthropic) -> None:
    stack.call(lambda: stack.faults["bedrock"].next(Fault(FaultKind.ANTHROPIC_ERROR_EVENT, status=429, tokens=1)))

    with pytest.raises(anthropic.APIStatusError) as raised, claude_client.messages.stream(
            model="bedrock", max_tokens=256, messages=[{"role": "user", "content": "tell me a story"}]) as stream:
        for _ in stream:
            pass

    assert "ThrottlingException" in str(raised.value)


def test_embeddings_are_refused_for_a_bedrock_target(stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="bedrock", input="hello")

    error: Any = raised.value.body
    assert (error["code"], error["param"]) == ("unsupported_operation", "model")
    assert stack.sim_paths("bedrock") == {}
