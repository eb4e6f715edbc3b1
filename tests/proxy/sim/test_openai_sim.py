"""The OpenAI simulator, as the official `openai` SDK (and the raw wire) sees it."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest

from llmroute_proxy.sim import SimServer, openai_app, sim_state
from tests.proxy.sim import SimPool

KEY = "sk-sim-openai-test-key"
MODEL = "gpt-4o-mini"
QUESTION = "What is the weather like in Paris today?"
ANSWER = f"[sim-openai {MODEL}] You said: {QUESTION}"
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]
PROMPT_TOKENS = 10  # 8 words × 1.3
ANSWER_TOKENS = 16  # 12 words × 1.3
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "required": ["city", "days", "metric"], "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
        "note": {"type": "string"}}}}}
TIME_TOOL: Any = {"type": "function", "function": {
    "name": "get_time",
    "parameters": {"type": "object", "required": ["zone"],
                   "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}}}}
WEATHER_ARGS = {"city": "sim", "days": 1, "metric": True}


@pytest.fixture
async def sim(sims: SimPool) -> SimServer:
    return await sims.start(openai_app(KEY, chunks=4))


Client = Callable[..., openai.AsyncOpenAI]


@pytest.fixture
def client(sims: SimPool) -> Client:
    """An async SDK client for a simulator, closed after the test."""
    def connect(server: SimServer, key: str = KEY) -> openai.AsyncOpenAI:
        api = openai.AsyncOpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0, timeout=5)
        sims.on_close(api.close)
        return api
    return connect


async def test_a_chat_completion_answers_deterministically_with_counted_usage(sim: SimServer, client: Client) -> None:
    first = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES)
    second = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES)

    assert first.id.startswith("chatcmpl-") and first.id != second.id
    assert first.object == "chat.completion" and first.model == MODEL
    choice = first.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", ANSWER, "stop")
    assert second.choices[0].message.content == ANSWER
    assert first.usage is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (
        PROMPT_TOKENS, ANSWER_TOKENS, PROMPT_TOKENS + ANSWER_TOKENS)


async def test_the_sync_client_gets_the_same_answer(sim: SimServer) -> None:
    sync = openai.OpenAI(api_key=KEY, base_url=sim.url + "/v1", max_retries=0, timeout=5)

    completion = await asyncio.to_thread(sync.chat.completions.create, model=MODEL, messages=MESSAGES)

    assert completion.choices[0].message.content == ANSWER


async def test_the_answer_quotes_at_most_60_characters_of_the_last_user_text(sim: SimServer, client: Client) -> None:
    long_text = "x" * 100
    messages: list[Any] = [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": [{"type": "text", "text": long_text}]}]

    completion = await client(sim).chat.completions.create(model=MODEL, messages=messages)

    assert completion.choices[0].message.content == f"[sim-openai {MODEL}] You said: {'x' * 60}"


async def test_a_stream_comes_in_the_configured_number_of_chunks_without_usage(sim: SimServer, client: Client) -> None:
    stream = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]

    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 4 and "".join(pieces) == ANSWER
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.id == chunks[0].id for c in chunks)
    recorded = sim_state(sim.app).stats.last
    assert recorded is not None and "stream_options" not in recorded.body


async def test_include_usage_adds_a_last_chunk_with_empty_choices_and_the_same_usage(sim: SimServer, client: Client) -> None:
    stream = await client(sim).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]

    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, ANSWER_TOKENS)
    assert all(c.usage is None for c in chunks[:-1])
    recorded = sim_state(sim.app).stats.last
    assert recorded is not None and recorded.body["stream_options"] == {"include_usage": True}


async def test_the_stream_wire_is_data_lines_ending_with_done(sim: SimServer) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as session, session.post(
            sim.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
        text = await response.text()

    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert all(event.startswith("data: {") for event in events[:-2])
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    assert len({p["id"] for p in payloads}) == 1
    assert all("usage" in p and p["usage"] is None for p in payloads[:-1])


async def test_cached_tokens_are_reported_inside_the_prompt_tokens(sims: SimPool, client: Client) -> None:
    sim = await sims.start(openai_app(KEY, cached_tokens=64))

    completion = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES)
    stream = await client(sim).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    streamed = [chunk async for chunk in stream][-1].usage

    for usage in (completion.usage, streamed):
        assert usage is not None and usage.prompt_tokens_details is not None
        assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (PROMPT_TOKENS + 64, 64)


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(sim: SimServer, client: Client) -> None:
    completion = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)

    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content and ANSWER.startswith(choice.message.content)
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 5


@pytest.mark.parametrize(("tool_choice", "name", "arguments", "finish"), [
    ("auto", "get_weather", WEATHER_ARGS, "tool_calls"),
    ("required", "get_weather", WEATHER_ARGS, "tool_calls"),
    # OpenAI ends a call the request named with `stop` (measured, vllm-project/vllm#25054)
    ({"type": "function", "function": {"name": "get_time"}}, "get_time", {"zone": "UTC"}, "stop"),
])
async def test_offered_tools_are_called_with_arguments_from_required_properties(
        sim: SimServer, tool_choice: Any, name: str, arguments: dict[str, Any], finish: str, client: Client) -> None:
    completion = await client(sim).chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice)

    choice = completion.choices[0]
    assert choice.finish_reason == finish and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1 and calls[0].id.startswith("call_")
    assert calls[0].type == "function"
    assert calls[0].function.name == name and json.loads(calls[0].function.arguments) == arguments


async def test_tool_choice_none_answers_with_text(sim: SimServer, client: Client) -> None:
    completion = await client(sim).chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="none")

    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].message.tool_calls is None


async def test_a_tool_result_is_quoted_in_a_text_answer(sim: SimServer, client: Client) -> None:
    messages: list[Any] = [*MESSAGES,
                           {"role": "assistant", "content": None, "tool_calls": [{
                               "id": "call_1", "type": "function",
                               "function": {"name": "get_weather", "arguments": "{}"}}]},
                           {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"}]

    completion = await client(sim).chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])

    assert completion.choices[0].message.content == f"[sim-openai {MODEL}] Tool said: 18C and sunny"
    assert completion.choices[0].finish_reason == "stop"


async def test_streamed_tool_arguments_come_in_fragments_the_stream_helper_accumulates(sim: SimServer, client: Client) -> None:
    fragments: list[str] = []
    async with client(sim).chat.completions.stream(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL]) as stream:
        async for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                fragments.append(event.arguments_delta)
        final = await stream.get_final_completion()

    assert len([f for f in fragments if f]) == 4
    calls = final.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == WEATHER_ARGS == json.loads("".join(fragments))
    assert final.choices[0].finish_reason == "tool_calls"


async def test_embeddings_are_deterministic_unit_vectors_in_float_and_base64(sim: SimServer, client: Client) -> None:
    api = client(sim).embeddings
    as_float = await api.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")
    as_base64 = await api.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="base64")
    sdk_default = await api.create(model="text-embedding-3-small", input=["alpha", "beta"])
    again = await api.create(model="text-embedding-3-small", input="alpha", dimensions=8)

    alpha, beta = (item.embedding for item in as_float.data)
    assert len(alpha) == 16 and math.isclose(math.fsum(v * v for v in alpha), 1.0, rel_tol=1e-9)
    assert alpha != beta
    decoded = [list(struct.unpack("<16f", base64.b64decode(str(d.embedding)))) for d in as_base64.data]
    assert decoded == [pytest.approx(alpha, rel=1e-6), pytest.approx(beta, rel=1e-6)]
    assert [d.embedding for d in sdk_default.data] == decoded
    assert len(again.data[0].embedding) == 8
    assert as_float.usage.prompt_tokens == 2
    recorded = sim_state(sim.app).stats.last_by_path["/v1/embeddings"]
    assert recorded.body["dimensions"] == 8


async def test_models_are_listed_and_retrieved(sim: SimServer, client: Client) -> None:
    api = client(sim).models

    listed = [model.id async for model in api.list()]
    one = await api.retrieve("gpt-4o")

    assert listed == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    assert (one.id, one.object) == ("gpt-4o", "model")
    with pytest.raises(openai.NotFoundError) as caught:
        await api.retrieve("gpt-unknown")
    assert caught.value.code == "model_not_found"


async def test_a_wrong_key_is_a_401_invalid_api_key_that_never_echoes_the_key(sim: SimServer, client: Client) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await client(sim, key="sk-wrong-secret").chat.completions.create(model=MODEL, messages=MESSAGES)

    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert "sk-wrong-secret" not in caught.value.response.text


async def test_a_missing_key_is_a_401_in_openai_shape(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as session, session.get(sim.url + "/v1/models") as response:
        body = await response.json()

    assert response.status == 401
    assert body["error"]["type"] == "invalid_request_error" and "API key" in body["error"]["message"]


async def test_a_simulator_without_a_key_accepts_any_key(sims: SimPool, client: Client) -> None:
    sim = await sims.start(openai_app())

    completion = await client(sim, key="anything").chat.completions.create(model=MODEL, messages=MESSAGES)

    assert completion.choices[0].message.content == ANSWER


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"messages": MESSAGES}, None, None),
    ({"model": MODEL}, "messages", "missing_required_parameter"),
    ({"model": MODEL, "messages": []}, "messages", "missing_required_parameter"),
    ({"model": MODEL, "messages": MESSAGES, "stream_options": {"include_usage": True}},
     "stream_options", "invalid_value"),
    ({"model": MODEL, "messages": MESSAGES, "tools": [WEATHER_TOOL],
      "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "invalid_value"),
    ("not an object", None, None),
])
async def test_invalid_requests_are_400s_in_openai_shape(
        sim: SimServer, body: Any, param: str | None, code: str | None) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session, session.post(
            sim.url + "/v1/chat/completions", json=body) as response:
        error = (await response.json())["error"]

    assert response.status == 400
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"]


async def test_stats_keep_what_the_caller_sent_and_redact_keys_over_http(sim: SimServer, client: Client) -> None:
    api = client(sim)
    await api.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers={"X-Trace": "t-1"})
    await api.chat.completions.create(model=MODEL, messages=MESSAGES)
    await api.models.list()

    stats = sim_state(sim.app).stats
    assert stats.by_path == {"/v1/chat/completions": 2, "/v1/models": 1} and stats.total == 3
    chat = stats.last_by_path["/v1/chat/completions"]
    assert chat.headers["Authorization"] == f"Bearer {KEY}" and chat.body["messages"] == MESSAGES
    assert KEY not in repr(chat)
    async with aiohttp.ClientSession() as session, session.get(sim.url + "/_sim/stats") as response:
        text = await response.text()
    shown = json.loads(text)
    assert shown["total"] == 3 and shown["last"]["path"] == "/v1/models"
    assert shown["last"]["headers"]["Authorization"].startswith("<redacted sha256:")
    assert KEY not in text


async def test_reasoning_effort_is_refused_by_a_model_that_does_not_reason_as_openai_refuses_it(
        sim: SimServer, client: Client) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client(sim).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, reasoning_effort="low")
    assert (refused.value.param, refused.value.code) == ("reasoning_effort", "unsupported_parameter")
    assert "is not supported with this model" in refused.value.message
    answered = await client(sim).chat.completions.create(model="gpt-5-mini", messages=MESSAGES, reasoning_effort="low")
    assert answered.choices[0].message.content


# --- several choices (`n`) and log probabilities ------------------------------------------------

SECOND_ANSWER = f"(choice 2) {ANSWER}"
SECOND_ANSWER_TOKENS = 18  # 14 words × 1.3


async def test_n_choices_each_answer_with_its_index_and_usage_counts_them_all(sim: SimServer, client: Client) -> None:
    completion = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, n=2)

    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, ANSWER, "stop"), (1, SECOND_ANSWER, "stop")]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS, ANSWER_TOKENS + SECOND_ANSWER_TOKENS)


async def test_streamed_choices_interleave_one_choice_a_chunk_and_each_finishes_last(
        sim: SimServer, client: Client) -> None:
    stream = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, n=2, stream=True,
                                                       stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]

    assert all(len(chunk.choices) == 1 for chunk in chunks[:-1]) and chunks[-1].choices == []
    indexes = [chunk.choices[0].index for chunk in chunks[:-1]]
    assert indexes == [0, 1] * (len(indexes) // 2)
    finishes = [(c.choices[0].index, c.choices[0].finish_reason) for c in chunks[:-1] if c.choices[0].finish_reason]
    assert finishes == [(0, "stop"), (1, "stop")] and chunks[-3].choices[0].finish_reason == "stop"
    for index, answer in enumerate((ANSWER, SECOND_ANSWER)):
        assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices[0].index == index) == answer
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == ANSWER_TOKENS + SECOND_ANSWER_TOKENS


async def test_the_stream_helper_accumulates_the_choices_by_index(sim: SimServer, client: Client) -> None:
    async with client(sim).chat.completions.stream(model=MODEL, messages=MESSAGES, n=3) as stream:
        final = await stream.get_final_completion()

    assert [c.message.content for c in final.choices] == [ANSWER, SECOND_ANSWER, f"(choice 3) {ANSWER}"]
    assert [c.finish_reason for c in final.choices] == ["stop"] * 3


async def test_n_tool_calls_give_every_choice_its_own_call_ids(sim: SimServer, client: Client) -> None:
    completion = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, n=2, tools=[WEATHER_TOOL])

    calls = [c.message.tool_calls for c in completion.choices]
    assert all(c is not None and json.loads(c[0].function.arguments) == WEATHER_ARGS for c in calls)
    assert calls[0] and calls[1] and calls[0][0].id != calls[1][0].id


async def test_logprobs_give_every_token_of_the_answer_with_its_top_alternatives(
        sim: SimServer, client: Client) -> None:
    completion = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True,
                                                           top_logprobs=3)
    again = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True, top_logprobs=3)

    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content and logprobs.refusal is None
    assert "".join(token.token for token in logprobs.content) == ANSWER
    for token in logprobs.content:
        assert -0.5 <= token.logprob <= 0 and bytes(token.bytes or []) == token.token.encode()
        assert len(token.top_logprobs) == 3 and token.top_logprobs[0].token == token.token
        assert [top.logprob for top in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs),
                                                                     reverse=True)
    assert again.choices[0].logprobs == logprobs


async def test_without_logprobs_a_choice_has_none_and_zero_top_logprobs_gives_empty_lists(
        sim: SimServer, client: Client) -> None:
    plain = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES)
    bare = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True)

    assert plain.choices[0].logprobs is None
    assert bare.choices[0].logprobs and bare.choices[0].logprobs.content
    assert all(token.top_logprobs == [] for token in bare.choices[0].logprobs.content)


async def test_streamed_logprobs_ride_on_the_chunks_of_their_own_tokens(sim: SimServer, client: Client) -> None:
    whole = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, n=2, logprobs=True,
                                                      top_logprobs=2)
    stream = await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, n=2, logprobs=True,
                                                       top_logprobs=2, stream=True)
    chunks = [chunk async for chunk in stream]

    for chunk in chunks:
        choice = chunk.choices[0]
        if choice.delta.content:
            assert choice.logprobs and "".join(t.token for t in choice.logprobs.content or ()) == choice.delta.content
        if choice.finish_reason:
            assert choice.logprobs is None
    async with client(sim).chat.completions.stream(model=MODEL, messages=MESSAGES, n=2, logprobs=True,
                                                   top_logprobs=2) as helper:
        final = await helper.get_final_completion()
    for streamed, answered in zip(final.choices, whole.choices, strict=True):
        assert streamed.logprobs and answered.logprobs
        assert streamed.logprobs.content == answered.logprobs.content


@pytest.mark.parametrize(("asked", "param", "code", "words"), [
    ({"top_logprobs": 2}, "top_logprobs", None, "only allowed when 'logprobs' is enabled"),
    ({"logprobs": False, "top_logprobs": 2}, "top_logprobs", None, "only allowed when 'logprobs' is enabled"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "integer_above_max_value", "Expected a value <= 20"),
    ({"n": 129}, "n", "integer_above_max_value", "Expected a value <= 128, but got 129 instead."),
    ({"n": 0}, "n", "integer_below_min_value", "Expected a value >= 1, but got 0 instead."),
])
async def test_choices_and_logprobs_out_of_range_are_refused_in_openai_words(
        sim: SimServer, client: Client, asked: dict[str, Any], param: str, code: str | None, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client(sim).chat.completions.create(model=MODEL, messages=MESSAGES, extra_body=asked)

    assert (refused.value.param, refused.value.code, refused.value.type) == (param, code, "invalid_request_error")
    assert words in refused.value.message
