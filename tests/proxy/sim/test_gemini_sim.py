"""The Gemini simulator, as the official `google-genai` SDK (and the raw wire) sees it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from llmroute_proxy.sim import SimServer, gemini_app, sim_state
from tests.proxy.sim import SimPool

KEY = "gemini-sim-test-key"
MODEL = "gemini-2.5-flash"
QUESTION = "What is the weather like in Paris today?"
ANSWER = f"[sim-gemini {MODEL}] You said: {QUESTION}"
PROMPT_TOKENS = 10  # 8 words × 1.3
ANSWER_TOKENS = 16  # 12 words × 1.3
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Current weather",
    parameters=types.Schema(type=types.Type.OBJECT, required=["city", "days", "metric"], properties={
        "city": types.Schema(type=types.Type.STRING), "days": types.Schema(type=types.Type.INTEGER),
        "metric": types.Schema(type=types.Type.BOOLEAN), "note": types.Schema(type=types.Type.STRING)}))
TIME = types.FunctionDeclaration(
    name="get_time", parameters_json_schema={"type": "object", "required": ["zone"],
                                             "properties": {"zone": {"type": "string"}}})
TOOLS = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER, TIME])])
WEATHER_ARGS = {"city": "sim", "days": 1, "metric": True}

Client = Callable[..., genai.Client]


@pytest.fixture
async def sim(sims: SimPool) -> SimServer:
    return await sims.start(gemini_app(KEY, chunks=4))


@pytest.fixture
def client(sims: SimPool) -> Client:
    """An SDK client for a simulator (no retries), closed after the test."""
    def connect(server: SimServer, key: str = KEY, api_version: str | None = None) -> genai.Client:
        api = genai.Client(api_key=key, http_options=types.HttpOptions(
            base_url=server.url, api_version=api_version, timeout=5000,
            retry_options=types.HttpRetryOptions(attempts=1)))

        async def close() -> None:
            await api.aio.aclose()
            api.close()
        sims.on_close(close)
        return api
    return connect


async def test_generate_content_answers_deterministically_with_counted_usage(
        sim: SimServer, client: Client) -> None:
    response = await asyncio.to_thread(client(sim).models.generate_content, model=MODEL, contents=QUESTION)

    assert response.text == ANSWER
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (
        PROMPT_TOKENS, ANSWER_TOKENS, PROMPT_TOKENS + ANSWER_TOKENS)
    assert usage.cached_content_token_count is None


@pytest.mark.parametrize(("api_version", "path"), [
    (None, f"/v1/models/{MODEL}:generateContent"),
    ("v1beta", f"/v1beta/models/{MODEL}:generateContent"),
])
async def test_both_api_versions_are_served_with_the_key_in_x_goog_api_key(
        sim: SimServer, client: Client, api_version: str | None, path: str) -> None:
    response = await client(sim, api_version=api_version).aio.models.generate_content(model=MODEL, contents=QUESTION)

    assert response.text == ANSWER
    recorded = sim_state(sim.app).stats.last
    assert recorded is not None and recorded.path == path and recorded.headers["x-goog-api-key"] == KEY


async def test_cached_tokens_are_reported_inside_the_prompt_count(sims: SimPool, client: Client) -> None:
    sim = await sims.start(gemini_app(KEY, cached_tokens=64))

    response = await client(sim).aio.models.generate_content(model=MODEL, contents=QUESTION)

    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.cached_content_token_count) == (PROMPT_TOKENS + 64, 64)


async def test_max_output_tokens_cuts_the_answer_with_finish_reason_max_tokens(
        sim: SimServer, client: Client) -> None:
    response = await client(sim).aio.models.generate_content(
        model=MODEL, contents=QUESTION, config=types.GenerateContentConfig(max_output_tokens=5))

    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.text and ANSWER.startswith(response.text)
    assert response.usage_metadata and 1 <= (response.usage_metadata.candidates_token_count or 0) <= 5


async def test_a_stream_has_the_configured_chunks_with_running_usage(sim: SimServer, client: Client) -> None:
    def collect() -> list[types.GenerateContentResponse]:
        return list(client(sim).models.generate_content_stream(model=MODEL, contents=QUESTION))

    chunks = await asyncio.to_thread(collect)

    assert len(chunks) == 4 and "".join(chunk.text or "" for chunk in chunks) == ANSWER
    counts = [chunk.usage_metadata.candidates_token_count or 0 for chunk in chunks if chunk.usage_metadata]
    assert len(counts) == 4 and counts == sorted(counts) and counts[-1] == ANSWER_TOKENS
    finishes = [chunk.candidates[0].finish_reason for chunk in chunks if chunk.candidates]
    assert finishes == [None, None, None, types.FinishReason.STOP]


async def test_the_async_stream_gives_the_same_text(sim: SimServer, client: Client) -> None:
    stream = await client(sim).aio.models.generate_content_stream(model=MODEL, contents=QUESTION)

    assert "".join([chunk.text or "" async for chunk in stream]) == ANSWER


async def test_the_stream_wire_is_crlf_separated_data_events(sim: SimServer) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]}
    async with aiohttp.ClientSession(headers={"x-goog-api-key": KEY}) as session, session.post(
            f"{sim.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", json=body) as response:
        text = await response.text()

    events = text.split("\r\n\r\n")
    assert response.status == 200 and events[-1] == "" and len(events) == 5
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert all(event.startswith("data: {") for event in events[:-1])
    assert [p["usageMetadata"]["promptTokenCount"] for p in payloads] == [PROMPT_TOKENS] * 4


async def test_offered_functions_are_called_with_arguments_from_required_properties(
        sim: SimServer, client: Client) -> None:
    response = await client(sim).aio.models.generate_content(model=MODEL, contents=QUESTION, config=TOOLS)

    calls = response.function_calls
    assert calls and len(calls) == 1 and (calls[0].name, calls[0].args) == ("get_weather", WEATHER_ARGS)
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP


@pytest.mark.parametrize(("calling", "expected"), [
    (types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_time"]),
     ("get_time", {"zone": "sim"})),
    (types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE), None),
])
async def test_the_function_calling_config_picks_the_function_or_none(
        sim: SimServer, client: Client, calling: types.FunctionCallingConfig,
        expected: tuple[str, Any] | None) -> None:
    config = TOOLS.model_copy(update={"tool_config": types.ToolConfig(function_calling_config=calling)})

    response = await client(sim).aio.models.generate_content(model=MODEL, contents=QUESTION, config=config)

    if expected is None:
        assert response.function_calls is None and response.text == ANSWER
    else:
        calls = response.function_calls
        assert calls and (calls[0].name, calls[0].args) == expected


async def test_a_streamed_function_call_arrives_whole_in_one_chunk(sim: SimServer, client: Client) -> None:
    stream = await client(sim).aio.models.generate_content_stream(model=MODEL, contents=QUESTION, config=TOOLS)
    chunks = [chunk async for chunk in stream]

    assert len(chunks) == 1
    calls = chunks[0].function_calls
    assert calls and (calls[0].name, calls[0].args) == ("get_weather", WEATHER_ARGS)


async def test_a_function_response_is_quoted_in_a_text_answer(sim: SimServer, client: Client) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part.from_text(text=QUESTION)]),
        types.Content(role="model", parts=[types.Part.from_function_call(name="get_weather", args=WEATHER_ARGS)]),
        types.Content(role="user", parts=[types.Part.from_function_response(
            name="get_weather", response={"output": "18C"})]),
    ]

    response = await client(sim).aio.models.generate_content(model=MODEL, contents=contents, config=TOOLS)

    assert response.function_calls is None
    assert response.text == f'[sim-gemini {MODEL}] Tool said: {{"output":"18C"}}'


async def test_embeddings_are_deterministic_per_text_with_the_requested_size(sim: SimServer, client: Client) -> None:
    api = client(sim).aio.models
    first = await api.embed_content(model="gemini-embedding-001", contents=["alpha", "beta"])
    again = await api.embed_content(model="gemini-embedding-001", contents="alpha",
                                    config=types.EmbedContentConfig(output_dimensionality=8))

    assert first.embeddings and again.embeddings
    alpha, beta = (embedding.values for embedding in first.embeddings)
    assert alpha and beta and len(alpha) == 16 and alpha != beta
    assert again.embeddings[0].values and len(again.embeddings[0].values) == 8
    assert sim_state(sim.app).stats.by_path["/v1/models/gemini-embedding-001:batchEmbedContents"] == 2


async def test_embed_content_answers_a_single_embedding(sim: SimServer) -> None:
    body = {"content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 4}
    async with aiohttp.ClientSession() as session, session.post(
            f"{sim.url}/v1beta/models/gemini-embedding-001:embedContent?key={KEY}", json=body) as response:
        payload = await response.json()

    assert response.status == 200 and len(payload["embedding"]["values"]) == 4


async def test_models_are_listed_and_retrieved(sim: SimServer, client: Client) -> None:
    api = client(sim).aio.models

    names = [model.name async for model in await api.list()]
    one = await api.get(model="gemini-2.5-pro")

    assert names == ["models/gemini-2.5-flash", "models/gemini-2.5-pro", "models/gemini-embedding-001"]
    assert one.name == "models/gemini-2.5-pro" and one.input_token_limit == 1048576


async def test_a_wrong_key_is_a_400_api_key_invalid(sim: SimServer, client: Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await client(sim, key="wrong-secret").aio.models.generate_content(model=MODEL, contents=QUESTION)

    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    assert caught.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert "wrong-secret" not in str(caught.value)


@pytest.mark.parametrize(("path", "body", "status"), [
    (f"/v1/models/{MODEL}:generateContent", {"contents": []}, 400),
    (f"/v1/models/{MODEL}:generateContent", {}, 400),
    ("/v1beta/models/gemini-embedding-001:batchEmbedContents", {"requests": []}, 400),
    (f"/v1/models/{MODEL}:unknownMethod", {}, 404),
])
async def test_invalid_requests_get_google_rpc_errors(sim: SimServer, path: str, body: Any, status: int) -> None:
    async with aiohttp.ClientSession(headers={"x-goog-api-key": KEY}) as session, session.post(
            sim.url + path, json=body) as response:
        error = (await response.json())["error"]

    assert response.status == status == error["code"]
    assert error["status"] == {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status] and error["message"]


async def count_raw(server: SimServer, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers={"x-goog-api-key": KEY}) as session, session.post(
            f"{server.url}/v1beta/models/{MODEL}:countTokens", json=body) as response:
        return response.status, await response.json()


async def test_count_tokens_counts_contents_or_a_whole_generate_content_request_as_generating_would(
        sim: SimServer, client: Client) -> None:
    counted = await client(sim, api_version="v1beta").aio.models.count_tokens(model=MODEL, contents=QUESTION)
    whole = {"model": f"models/{MODEL}", "contents": [{"role": "user", "parts": [{"text": QUESTION}]}],
             "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    status, answer = await count_raw(sim, {"generateContentRequest": whole})

    assert counted.total_tokens == PROMPT_TOKENS
    assert status == 200
    assert answer == {"totalTokens": 13, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 13}]}


@pytest.mark.parametrize("body", [
    {"contents": [{"parts": [{"text": QUESTION}]}],
     "generateContentRequest": {"model": f"models/{MODEL}", "contents": [{"parts": [{"text": QUESTION}]}]}},
    {"generateContentRequest": {"contents": [{"parts": [{"text": QUESTION}]}]}},
    {"contents": []},
    {"contents": [{"parts": [{"text": ""}]}]},
])
async def test_count_tokens_refuses_what_the_api_refuses(sim: SimServer, body: Any) -> None:
    status, answer = await count_raw(sim, body)

    assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"


# --- several candidates (`candidateCount`) ------------------------------------------------------

SECOND_ANSWER = f"(choice 2) {ANSWER}"
SECOND_ANSWER_TOKENS = 18  # 14 words × 1.3
TWO = types.GenerateContentConfig(candidate_count=2)


def _texts(candidates: list[types.Candidate] | None) -> dict[int, str]:
    """Each candidate's text by its index (None: candidate 0, whose index proto3 JSON may leave out)."""
    texts: dict[int, str] = {}
    for candidate in candidates or ():
        parts = candidate.content.parts if candidate.content else None
        texts[candidate.index or 0] = texts.get(candidate.index or 0, "") + "".join(p.text or "" for p in parts or ())
    return texts


@pytest.mark.parametrize("quirks", [False, True])
async def test_candidate_count_answers_that_many_candidates_and_counts_them_all(
        sims: SimPool, client: Client, quirks: bool) -> None:
    sim = await sims.start(gemini_app(KEY, quirks=quirks))
    response = await asyncio.to_thread(client(sim).models.generate_content, model=MODEL, contents=QUESTION,
                                       config=TWO)

    assert response.candidates and len(response.candidates) == 2
    assert [c.index for c in response.candidates] == [None if quirks else 0, 1]
    assert _texts(response.candidates) == {0: ANSWER, 1: SECOND_ANSWER}
    assert all(c.finish_reason == types.FinishReason.STOP for c in response.candidates)
    usage = response.usage_metadata
    assert usage is not None and usage.candidates_token_count == ANSWER_TOKENS + SECOND_ANSWER_TOKENS
    assert usage.total_token_count == PROMPT_TOKENS + ANSWER_TOKENS + SECOND_ANSWER_TOKENS + (
        usage.thoughts_token_count or 0)


@pytest.mark.parametrize("quirks", [False, True])
async def test_streamed_candidates_come_together_in_each_chunk_with_their_index(
        sims: SimPool, client: Client, quirks: bool) -> None:
    sim = await sims.start(gemini_app(KEY, chunks=4, quirks=quirks))

    def collect() -> list[types.GenerateContentResponse]:
        return list(client(sim).models.generate_content_stream(model=MODEL, contents=QUESTION, config=TWO))

    chunks = await asyncio.to_thread(collect)

    texts: dict[int, str] = {}
    for chunk in chunks:
        for index, text in _texts(chunk.candidates).items():
            texts[index] = texts.get(index, "") + text
    assert texts == {0: ANSWER, 1: SECOND_ANSWER}
    finishes = [(c.index or 0, c.finish_reason) for chunk in chunks for c in chunk.candidates or () if c.finish_reason]
    assert finishes == [(0, types.FinishReason.STOP), (1, types.FinishReason.STOP)]
    last = chunks[-1].usage_metadata
    assert last is not None and last.candidates_token_count == ANSWER_TOKENS + SECOND_ANSWER_TOKENS


async def test_more_candidates_than_a_model_gives_are_refused_stating_the_range(sim: SimServer, client: Client) -> None:
    with pytest.raises(errors.ClientError) as refused:
        await asyncio.to_thread(client(sim).models.generate_content, model=MODEL, contents=QUESTION,
                                config=types.GenerateContentConfig(candidate_count=9))

    assert refused.value.code == 400 and refused.value.status == "INVALID_ARGUMENT"
    assert "candidateCount value of 9 but the supported range is from 1 (inclusive) to 9 (exclusive)" in str(
        refused.value.message)


@pytest.mark.parametrize(("asked", "capacity", "served"), [
    ("flex", True, "flex"), ("priority", True, "priority"), ("priority", False, "standard"), (None, True, "standard"),
], ids=["flex", "priority", "priority after its capacity ran out", "none"])
async def test_the_tier_that_served_a_request_is_in_its_header_and_its_usage(
        sims: SimPool, client: Client, asked: str | None, capacity: bool, served: str) -> None:
    sim = await sims.start(gemini_app(KEY, chunks=4, priority_capacity=capacity))
    config = types.GenerateContentConfig(service_tier=asked) if asked else None

    response = await asyncio.to_thread(client(sim).models.generate_content, model=MODEL, contents=QUESTION,
                                       config=config)

    assert sim_state(sim.app).stats.last.body.get("serviceTier") == asked  # as google-genai sends it
    assert response.sdk_http_response is not None and response.sdk_http_response.headers is not None
    assert response.sdk_http_response.headers["x-gemini-service-tier"] == served
    async with aiohttp.ClientSession(headers={"x-goog-api-key": KEY}) as session, session.post(
            f"{sim.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
            json={"contents": [{"parts": [{"text": QUESTION}]}], **({"serviceTier": asked} if asked else {})}) as streamed:
        events = [json.loads(line[6:]) for line in (await streamed.text()).splitlines() if line.startswith("data: ")]
    assert {event["usageMetadata"]["serviceTier"] for event in events} == {served}


async def test_an_unspecified_tier_is_the_standard_one(sim: SimServer) -> None:
    async with aiohttp.ClientSession(headers={"x-goog-api-key": KEY}) as session, session.post(
            f"{sim.url}/v1beta/models/{MODEL}:generateContent",
            json={"contents": [{"parts": [{"text": QUESTION}]}], "serviceTier": "unspecified"}) as response:
        body = await response.json()

    assert response.status == 200
    assert body["usageMetadata"]["serviceTier"] == "standard" == response.headers["x-gemini-service-tier"]


@pytest.mark.parametrize("tier", ["scale", "default", 1])
async def test_an_unknown_tier_is_refused_as_a_bad_enum_value(sim: SimServer, tier: Any) -> None:
    async with aiohttp.ClientSession(headers={"x-goog-api-key": KEY}) as session, session.post(
            f"{sim.url}/v1beta/models/{MODEL}:generateContent",
            json={"contents": [{"parts": [{"text": QUESTION}]}], "serviceTier": tier}) as response:
        error = (await response.json())["error"]

    assert response.status == 400 and error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == ("Invalid value at 'service_tier' "
                                f"(type.googleapis.com/google.ai.generativelanguage.v1beta.ServiceTier), {json.dumps(tier)}")
