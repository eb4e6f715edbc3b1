"""The official OpenAI and Anthropic SDKs call the sidecar, which calls Bedrock's models other than Claude
through the Converse API (the simulator checks Converse's path, key and body, and answers in its shapes:
whole, or as event-stream frames)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import anthropic
import openai
import pytest
from aiohttp import web

from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, bedrock_app, sim_state
from llmroute_proxy.table import TargetId
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.providers.test_bedrock_converse import PLACE, assert_valid_request
from tests.proxy.server.spending import ended
from tests.proxy.server.test_bedrock_route import (  # its fixtures take this module's `stack`
    APP_KEY,
    BEDROCK_KEY,
    WEATHER_TOOL,
    bedrock_sim,
    claude_client,
    client,
)
from tests.proxy.stack import CLAUDE, OAI, Stack

__all__ = ["claude_client", "client"]
NOVA = "us.amazon.nova-pro-v1:0"
LLAMA = "meta.llama3-3-70b-instruct-v1:0"
GPT_OSS = "openai.gpt-oss-120b-1:0"
CONVERSE = f"/model/{NOVA}/converse"
CONVERSE_STREAM = f"/model/{NOVA}/converse-stream"

CONFIG = [
    OAI, CLAUDE,
    provider("bedrock", "bedrock", "{bedrock}", key_env="TEST_BEDROCK_KEY", region="here", models=[
        model(NOVA, context_window=300000, input_per_mtok=0.8, output_per_mtok=3.2),
        model(LLAMA, context_window=128000, input_per_mtok=0.72, output_per_mtok=0.72),
        model(GPT_OSS, context_window=128000, input_per_mtok=0.15, output_per_mtok=0.6)]),
    provider("bedrock-long", "bedrock", "{bedrock_long}", key_env="TEST_BEDROCK_KEY", region="here",
             models=[model(NOVA, context_window=300000)]),
    route("main", {
        "nova": [target("bedrock", NOVA)],
        "llama": [target("bedrock", LLAMA)],
        "gpt-oss": [target("bedrock", GPT_OSS)],
        "nova-first": [target("bedrock", NOVA), target("oai", "gpt-4o-mini", priority=1)],
        "llama-then-gpt-oss": [target("bedrock", LLAMA), target("bedrock", GPT_OSS, priority=1)],
        "long-nova-first": [target("bedrock-long", NOVA), target("oai", "gpt-4o-mini", priority=1)],
    }, default_tier="nova",
        fallback=QUICK_FALLBACK,
        outlierDetection={"consecutiveFailures": 5, "baseEjection": "1s"}),
]


def long_answers_sim(faults: FaultPlan) -> web.Application:
    """Answers whose first piece is longer than one read, so a stream's first token reaches the sidecar
    before the rest of it: whatever the timing, the stream is under way when its exception frame comes."""
    return bedrock_app(BEDROCK_KEY, faults=faults, chunks=2, answer_bytes=400_000, name="sim-bedrock-long")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("bedrock-converse"), config=CONFIG, extra_sims={"bedrock": bedrock_sim, "bedrock_long": long_answers_sim},
               environ={"TEST_BEDROCK_KEY": BEDROCK_KEY}) as running:
        yield running


def finishes(chunks: list[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def test_a_chat_completion_reaches_converse_with_its_key_and_is_priced(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="nova", max_tokens=200, temperature=0.2,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    completion = raw.parse()

    assert "You said: hello there" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    expected_cost = (usage.prompt_tokens * 0.8 + usage.completion_tokens * 3.2) / 1e6
    assert float(raw.headers["x-llmroute-cost-usd"]) == pytest.approx(expected_cost, rel=1e-3)
    assert raw.headers["x-llmroute-provider"] == "bedrock"
    sent = stack.last_sim_request("bedrock", CONVERSE)
    assert sent.headers["Authorization"] == f"Bearer {BEDROCK_KEY}" and APP_KEY not in json.dumps(dict(sent.headers))
    assert sent.body == {"messages": [{"role": "user", "content": [{"text": "hello there"}]}],
                         "system": [{"text": "Be brief."}],
                         "inferenceConfig": {"maxTokens": 200, "temperature": 0.2}}
    assert stack.sim_paths("bedrock") == {CONVERSE: 1}


def test_an_openai_stream_is_translated_from_converse_stream_frames(stack: Stack, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="nova", messages=[{"role": "user", "content": "tell me a story"}], stream=True,
        stream_options={"include_usage": True}))

    assert "You said: tell me a story" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert finishes(chunks) == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert stack.sim_paths("bedrock") == {CONVERSE_STREAM: 1}


def test_a_tool_loop_goes_round_through_converse(stack: Stack, client: openai.OpenAI) -> None:
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="llama", messages=ask, tools=[WEATHER_TOOL])
    call = (first.choices[0].message.tool_calls or [])[0]
    answered = [*ask, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "18C and cloudy"}]
    second = client.chat.completions.create(model="llama", messages=answered, tools=[WEATHER_TOOL])

    assert first.choices[0].finish_reason == "tool_calls"
    assert call.id.startswith("tooluse_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sim"}
    assert "Tool said: 18C and cloudy" in (second.choices[0].message.content or "")
    sent = stack.last_sim_request("bedrock", f"/model/{LLAMA}/converse")
    assert [m["role"] for m in sent.body["messages"]] == ["user", "assistant", "user"]
    assert sent.body["messages"][2]["content"] == [{"toolResult": {"toolUseId": call.id,
                                                                   "content": [{"text": "18C and cloudy"}]}}]
    assert sent.body["toolConfig"]["toolChoice"] == {"auto": {}}
    assert_valid_request(sent.body, LLAMA)


def test_the_openai_stream_helper_assembles_a_streamed_tool_call(stack: Stack, client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="nova", messages=[{"role": "user", "content": "Weather?"}],
                                        tools=[WEATHER_TOOL], tool_choice="required") as stream:
        final = stream.get_final_completion()

    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls" and calls is not None
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "sim"}
    assert stack.last_sim_request("bedrock", CONVERSE_STREAM).body["toolConfig"]["toolChoice"] == {"any": {}}


def test_the_anthropic_sdk_reaches_a_converse_model_through_the_canonical_form(
        stack: Stack, claude_client: anthropic.Anthropic) -> None:
    message = claude_client.messages.create(model="nova", max_tokens=256, system="Be brief.",
                                            messages=[{"role": "user", "content": "hello there"}])
    with claude_client.messages.stream(model="nova", max_tokens=256,
                                       messages=[{"role": "user", "content": "tell me a story"}]) as stream:
        streamed = stream.get_final_message()

    assert message.type == "message" and message.stop_reason == "end_turn"
    assert "You said: hello there" in "".join(b.text for b in message.content if b.type == "text")
    assert "You said: tell me a story" in "".join(b.text for b in streamed.content if b.type == "text")
    assert streamed.usage.output_tokens > 0
    sent = stack.last_sim_request("bedrock", CONVERSE)
    assert sent.body["system"] == [{"text": "Be brief."}] and sent.body["inferenceConfig"] == {"maxTokens": 256}
    assert stack.sim_paths("bedrock") == {CONVERSE: 1, CONVERSE_STREAM: 1}


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_guardrail_that_intervened_is_a_content_filter_finish(stack: Stack, client: openai.OpenAI,
                                                                 streamed: bool) -> None:
    stack.call(lambda: stack.faults["bedrock"].next(Fault(FaultKind.REFUSAL)))

    if streamed:
        chunks = list(client.chat.completions.create(model="nova", messages=[{"role": "user", "content": "hi"}],
                                                     stream=True))
        text, finish = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), finishes(chunks)
    else:
        completion = client.chat.completions.create(model="nova", messages=[{"role": "user", "content": "hi"}])
        text, finish = completion.choices[0].message.content or "", [completion.choices[0].finish_reason]

    assert text == "Sorry, the model cannot answer this question." and finish == ["content_filter"]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_throttled_converse_target_fails_over_to_the_next(stack: Stack, client: openai.OpenAI, streamed: bool) -> None:
    stack.call(lambda: stack.faults["bedrock"].next(Fault(FaultKind.STATUS, status=429)))

    raw = client.chat.completions.with_raw_response.create(
        model="nova-first", messages=[{"role": "user", "content": "hello"}], stream=streamed)
    parsed = raw.parse()
    text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) if streamed \
        else parsed.choices[0].message.content  # type: ignore[union-attr]

    assert "You said: hello" in (text or "")
    assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-attempts"]) == ("oai", "2")


def test_an_exception_frame_before_the_first_token_fails_over_invisibly(stack: Stack, client: openai.OpenAI) -> None:
    stack.call(lambda: stack.faults["bedrock"].next(Fault(FaultKind.ANTHROPIC_ERROR_EVENT, status=503, tokens=0)))

    raw = client.chat.completions.with_raw_response.create(
        model="nova-first", messages=[{"role": "user", "content": "hello"}], stream=True)

    assert "You said: hello" in "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-attempts"]) == ("oai", "2")


def test_an_exception_frame_mid_stream_ends_it_with_an_in_band_error(stack: Stack, client: openai.OpenAI) -> None:
    stack.call(lambda: stack.faults["bedrock_long"].next(Fault(FaultKind.ANTHROPIC_ERROR_EVENT, status=424, tokens=1)))

    stream = client.chat.completions.create(model="long-nova-first", stream=True,
                                            messages=[{"role": "user", "content": "tell me a story"}])
    got: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)

    assert "".join(got), "the first token reached the client before the exception frame"
    assert "ModelStreamErrorException" in str(raised.value.message)
    assert stack.call(lambda: sim_state(stack.sims["oai"].app).stats.total) == 0, "a committed stream never fails over"


def test_a_field_converse_cannot_say_passes_the_target_over(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="nova-first", n=2, messages=[{"role": "user", "content": "hello"}])

    assert len(raw.parse().choices) == 2
    assert raw.headers["x-llmroute-provider"] == "oai" and raw.headers["x-llmroute-attempts"] == "1"
    assert stack.sim_paths("bedrock") == {}, "nothing is sent to a target passed over"


def test_a_tier_of_only_converse_targets_refuses_it_naming_the_field(stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="nova", seed=7, messages=[{"role": "user", "content": "hello"}])

    error: Any = raised.value.body
    assert error["param"] == "seed"
    assert stack.sim_paths("bedrock") == {}


def test_embeddings_are_still_refused_for_a_converse_model(stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="nova", input="hello")

    error: Any = raised.value.body
    assert (error["code"], error["param"]) == ("unsupported_operation", "model")
    assert stack.sim_paths("bedrock") == {}


def test_a_response_schema_goes_to_converse_as_structured_outputs(stack: Stack, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-oss", response_format=PLACE,  # type: ignore[arg-type]
                                                messages=[{"role": "user", "content": "Where?"}])

    assert json.loads(completion.choices[0].message.content or "") == {"city": "sim"}
    sent = stack.last_sim_request("bedrock", f"/model/{GPT_OSS}/converse")
    assert sent.body["outputConfig"]["textFormat"]["type"] == "json_schema"
    to_llama = Request(f"{stack.sims['bedrock'].url}/model/{LLAMA}/converse", data=json.dumps(sent.body).encode(),
                       headers={"Authorization": f"Bearer {BEDROCK_KEY}", "Content-Type": "application/json"})
    with pytest.raises(HTTPError) as refused:
        urlopen(to_llama)
    assert (refused.value.code, refused.value.headers["x-amzn-ErrorType"]) == (400, "ValidationException"), \
        "the same body sent to Llama would be a 400, which is not failed over: hence Llama is passed over"


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_model_without_structured_outputs_is_passed_over_for_a_response_schema(
        stack: Stack, client: openai.OpenAI, streamed: bool) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="llama-then-gpt-oss", response_format=PLACE, stream=streamed,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Where?"}])
    parsed = raw.parse()
    text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) if streamed \
        else parsed.choices[0].message.content  # type: ignore[union-attr]

    assert json.loads(text or "") == {"city": "sim"}
    assert raw.headers["x-llmroute-attempts"] == "1"
    assert list(ended(stack).passed_over) == [(TargetId(f"bedrock/{LLAMA}@here"), "response_format")]
    operation = "converse-stream" if streamed else "converse"
    assert stack.sim_paths("bedrock") == {f"/model/{GPT_OSS}/{operation}": 1}, "nothing is sent to Llama"


def test_a_tier_without_structured_outputs_refuses_a_response_schema_naming_it(
        stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="llama", response_format=PLACE,  # type: ignore[arg-type]
                                       messages=[{"role": "user", "content": "Where?"}])

    assert raised.value.param == "response_format" and "structured outputs" in raised.value.message
    assert stack.sim_paths("bedrock") == {}
