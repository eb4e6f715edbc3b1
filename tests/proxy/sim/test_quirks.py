"""What each simulator puts on the wire with `quirks` (the real APIs' untidy shapes) and for the
refusal and blocked-prompt faults, read raw; and that the official SDKs still read all of it."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from google import genai
from google.genai import types

from llmroute_proxy.sim import (
    Fault,
    FaultKind,
    FaultPlan,
    anthropic_app,
    azure_openai_app,
    gemini_app,
    openai_app,
)
from llmroute_proxy.sim.gemini import MALFORMED_MESSAGE, SIGNATURE
from llmroute_proxy.sim.openai import REFUSAL_TEXT
from tests.proxy.genai_shapes import assert_genai_reads
from tests.proxy.sim import SimPool

Client = TestClient  # type: ignore[type-arg]
ASK = [{"role": "user", "content": "Weather and time?"}]
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
ANTHROPIC_TOOLS = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in OPENAI_TOOLS]
GEMINI_TOOLS = [{"functionDeclarations": [t["function"] for t in OPENAI_TOOLS]}]
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


async def start(aiohttp_client: Any, app: web.Application) -> Client:
    client: Client = await aiohttp_client(app)
    return client


def data_events(raw: bytes) -> list[Any]:
    return [orjson.loads(line[5:]) for line in raw.replace(b"\r\n", b"\n").split(b"\n")
            if line.startswith(b"data:") and line[5:].strip() != b"[DONE]"]


def named_events(raw: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in raw.split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
        if b"event" in lines:
            events.append((lines[b"event"].decode(), orjson.loads(lines[b"data"])))
    return events


# ---- OpenAI and Azure ------------------------------------------------------------------------


@pytest.mark.parametrize("quirks", [False, True])
async def test_openai_streams_obfuscation_and_parallel_calls_only_with_quirks(aiohttp_client: Any,
                                                                               quirks: bool) -> None:
    client = await start(aiohttp_client, openai_app(quirks=quirks))
    response = await client.post("/v1/chat/completions", json={
        "model": "gpt-4o-mini", "messages": ASK, "tools": OPENAI_TOOLS, "stream": True})
    chunks = data_events(await response.read())
    calls = [call for chunk in chunks for choice in chunk["choices"] for call in choice["delta"].get("tool_calls") or ()]
    assert all(("obfuscation" in chunk) is quirks for chunk in chunks)
    assert sorted({call["index"] for call in calls}) == ([0, 1] if quirks else [0])
    heads = [call for call in calls if "id" in call]
    assert len(heads) == len({call["index"] for call in calls})  # the id comes once per call: in its first delta
    assert all(call["function"]["name"] for call in heads)
    assert not any("name" in call["function"] for call in calls if "id" not in call)


async def test_compatible_servers_stream_in_their_own_shapes(aiohttp_client: Any) -> None:
    ask = {"model": "m", "messages": ASK, "tools": OPENAI_TOOLS, "stream": True}
    gemini = await start(aiohttp_client, openai_app(compatible="gemini", quirks=True))
    chunks = data_events(await (await gemini.post("/v1/chat/completions", json=ask)).read())
    calls = [call for chunk in chunks for choice in chunk["choices"] for call in choice["delta"].get("tool_calls") or ()]
    assert [call["function"]["name"] for call in calls] == ["get_weather", "get_time"]
    assert not any("index" in call for call in calls) and calls[0]["function"]["arguments"] == '{"city":"sim"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["stop"]
    router = await start(aiohttp_client, openai_app(compatible="openrouter"))
    raw = await (await router.post("/v1/chat/completions", json={**ask, "tools": None})).read()
    assert raw.startswith(b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: {")
    vllm = await start(aiohttp_client, openai_app(compatible="vllm"))
    chunks = data_events(await (await vllm.post("/v1/chat/completions", json={**ask, "tools": None})).read())
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"][0]["delta"]["content"]
    with pytest.raises(ValueError, match="compatible must be one of"):
        openai_app(compatible="ollama")


async def test_openai_refuses_in_the_refusal_field(aiohttp_client: Any) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.REFUSAL), count=2)
    client = await start(aiohttp_client, openai_app(faults=faults))
    whole = await (await client.post("/v1/chat/completions", json={"model": "m", "messages": ASK})).json()
    message = whole["choices"][0]["message"]
    assert message["content"] is None and message["refusal"] == REFUSAL_TEXT
    streamed = data_events(await (await client.post("/v1/chat/completions", json={
        "model": "m", "messages": ASK, "stream": True})).read())
    deltas = [chunk["choices"][0]["delta"] for chunk in streamed]
    assert "".join(d.get("refusal") or "" for d in deltas) == REFUSAL_TEXT
    assert not any(d.get("content") for d in deltas)


@pytest.mark.parametrize(("app", "path", "code"), [
    (openai_app, "/v1/chat/completions", "invalid_prompt"),
    (azure_openai_app, "/openai/v1/chat/completions", "content_filter"),
])
async def test_openai_and_azure_block_a_prompt_with_a_400(aiohttp_client: Any, app: Any, path: str,
                                                          code: str) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.PROMPT_BLOCKED))
    client = await start(aiohttp_client, app(faults=faults))
    response = await client.post(path, json={"model": "gpt-4o-mini", "messages": ASK})
    assert response.status == 400 and (await response.json())["error"]["code"] == code


async def test_azure_refuses_through_its_output_filter(aiohttp_client: Any) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.REFUSAL), count=2)
    client = await start(aiohttp_client, azure_openai_app(faults=faults))
    body = {"model": "gpt-4o-mini", "messages": ASK}
    whole = await (await client.post("/openai/v1/chat/completions", json=body)).json()
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] is None
    assert choice["content_filter_results"]["violence"]["filtered"] is True
    chunks = data_events(await (await client.post("/openai/v1/chat/completions", json={**body, "stream": True})).read())
    finish = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert [c["finish_reason"] for c in finish] == ["content_filter"]
    assert finish[0]["content_filter_results"]["violence"]["filtered"] is True


async def test_azure_with_quirks_sends_filter_annotations_after_the_finish(aiohttp_client: Any) -> None:
    client = await start(aiohttp_client, azure_openai_app(quirks=True))
    chunks = data_events(await (await client.post("/openai/v1/chat/completions", json={
        "model": "gpt-4o-mini", "messages": ASK, "stream": True})).read())
    assert chunks[0]["choices"] == [] and "prompt_filter_results" in chunks[0]
    finish = next(i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0].get("finish_reason"))
    assert any("content_filter_offsets" in c["choices"][0] for c in chunks[finish + 1:] if c["choices"])


# ---- Anthropic -------------------------------------------------------------------------------


async def test_anthropic_with_quirks_pings_early_and_speaks_before_its_parallel_tool_use(aiohttp_client: Any) -> None:
    client = await start(aiohttp_client, anthropic_app(quirks=True))
    raw = await (await client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={
        "model": "claude", "max_tokens": 200, "messages": ASK, "tools": ANTHROPIC_TOOLS, "stream": True})).read()
    events = named_events(raw)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert [block["type"] for block in starts] == ["text", "tool_use", "tool_use"]
    assert all(block["input"] == {} for block in starts[1:])
    for index in (1, 2):
        fragments = [data["delta"]["partial_json"] for name, data in events
                     if name == "content_block_delta" and data["index"] == index]
        assert fragments[0] == ""  # as Claude streams it: an empty first fragment
    assert "".join(fragments) == ""  # get_time takes no parameters: nothing but the empty fragment
    usage = next(data["usage"] for name, data in events if name == "message_delta")
    assert usage["cache_creation_input_tokens"] is None and usage["server_tool_use"] is None
    assert usage["input_tokens"] > 0


async def test_anthropic_refuses_with_no_content_block_at_all(aiohttp_client: Any) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.REFUSAL), count=2)
    client = await start(aiohttp_client, anthropic_app(faults=faults))
    body = {"model": "claude", "max_tokens": 200, "messages": ASK}
    whole = await (await client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json=body)).json()
    assert whole["content"] == [] and whole["stop_reason"] == "refusal"
    events = named_events(await (await client.post("/v1/messages", headers=ANTHROPIC_HEADERS,
                                                   json={**body, "stream": True})).read())
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]


async def test_anthropic_errors_carry_a_request_id_with_quirks(aiohttp_client: Any) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.STATUS, status=529))
    client = await start(aiohttp_client, anthropic_app(faults=faults, quirks=True))
    response = await client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={})
    body = await response.json()
    assert response.status == 529 and body["error"]["type"] == "overloaded_error"
    assert body["request_id"].startswith("req_")


# ---- Gemini ----------------------------------------------------------------------------------

GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


async def test_gemini_with_quirks_finishes_and_counts_on_chunks_of_their_own(aiohttp_client: Any) -> None:
    client = await start(aiohttp_client, gemini_app(quirks=True))
    chunks = data_events(await (await client.post(STREAM + "?alt=sse", json={
        "contents": [{"role": "user", "parts": [{"text": "tell me a story"}]}]})).read())
    assert "candidates" not in chunks[-1] and chunks[-1]["usageMetadata"]["candidatesTokenCount"] > 0
    finish = chunks[-2]["candidates"][0]
    assert finish["finishReason"] == "STOP" and finish["content"]["parts"] == [{"text": "", "thoughtSignature": SIGNATURE}]
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-2])
    assert all("candidatesTokenCount" not in c["usageMetadata"] for c in chunks[:-2])
    assert all("index" not in c for chunk in chunks for c in chunk.get("candidates") or ())


async def test_gemini_with_quirks_calls_every_function_with_a_thought_signature(aiohttp_client: Any) -> None:
    client = await start(aiohttp_client, gemini_app(quirks=True))
    body = await (await client.post(GENERATE, json={
        "contents": [{"role": "user", "parts": [{"text": "Weather and time?"}]}], "tools": GEMINI_TOOLS})).json()
    parts = body["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["name"] for p in parts] == ["get_weather", "get_time"]
    assert all(p["thoughtSignature"] for p in parts)


async def test_gemini_with_quirks_sends_a_call_without_arguments_without_args(aiohttp_client: Any) -> None:
    client = await start(aiohttp_client, gemini_app(quirks=True))
    body = await (await client.post(GENERATE, json={
        "contents": [{"role": "user", "parts": [{"text": "Weather and time?"}]}], "tools": GEMINI_TOOLS})).json()
    calls = [part["functionCall"] for part in body["candidates"][0]["content"]["parts"]]
    assert calls == [{"name": "get_weather", "args": {"city": "sim"}}, {"name": "get_time"}]


async def test_gemini_with_quirks_streams_the_finish_of_function_calls_apart(aiohttp_client: Any) -> None:
    client = await start(aiohttp_client, gemini_app(quirks=True))
    chunks = data_events(await (await client.post(STREAM + "?alt=sse", json={
        "contents": [{"role": "user", "parts": [{"text": "Weather and time?"}]}], "tools": GEMINI_TOOLS})).read())
    calls, finish = (chunk["candidates"][0] for chunk in chunks)
    assert [part["functionCall"]["name"] for part in calls["content"]["parts"]] == ["get_weather", "get_time"]
    assert "finishReason" not in calls and finish == {"content": {"role": "model"}, "finishReason": "STOP"}


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_with_quirks_signs_a_text_answer_on_its_last_part(aiohttp_client: Any, stream: bool) -> None:
    client = await start(aiohttp_client, gemini_app(quirks=True))
    ask = {"contents": [{"role": "user", "parts": [{"text": "tell me a story"}]}]}
    if stream:
        chunks = data_events(await (await client.post(STREAM + "?alt=sse", json=ask)).read())
        parts = [part for chunk in chunks for c in chunk.get("candidates") or () for part in c["content"]["parts"]]
    else:
        parts = (await (await client.post(GENERATE, json=ask)).json())["candidates"][0]["content"]["parts"]
    assert [bool(part.get("thoughtSignature")) for part in parts] == [False] * (len(parts) - 1) + [True]


@pytest.mark.parametrize("parts", [[{"text": ""}], [{}], [{"text": "hi"}, {"text": ""}]])
async def test_gemini_refuses_a_part_without_data_as_the_api_does(aiohttp_client: Any, parts: list[Any]) -> None:
    """Proto3 JSON drops default values: `{"text": ""}` is a part with no data, refused with a 400."""
    client = await start(aiohttp_client, gemini_app())
    response = await client.post(GENERATE, json={"contents": [{"role": "user", "parts": parts}]})
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert f"contents[0].parts[{len(parts) - 1}].data: required oneof field 'data'" in message
    signed = await client.post(GENERATE, json={"contents": [{"role": "user", "parts": [
        {"text": "hi"}, {"text": "", "thoughtSignature": "c2ln"}]}]})
    assert signed.status == 200


@pytest.mark.parametrize("budget", [0, 64, 40000])
async def test_gemini_refuses_a_thinking_budget_the_model_does_not_take(aiohttp_client: Any, budget: int) -> None:
    client = await start(aiohttp_client, gemini_app())
    ask = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
           "generationConfig": {"thinkingConfig": {"thinkingBudget": budget}}}
    response = await client.post("/v1beta/models/gemini-2.5-pro:generateContent", json=ask)
    assert response.status == 400
    assert (await response.json())["error"]["message"] == ("Budget 0 is invalid. This model only works in thinking mode."
                                                           if budget == 0 else
                                                           f"The thinking budget ({budget}) is invalid.")
    assert (await client.post(GENERATE, json=ask)).status == (200 if budget <= 24576 else 400)  # 2.5 Flash


@pytest.mark.parametrize(("model", "most"), [("gemini-2.5-flash", 65536), ("gemini-2.0-flash", 8192)])
async def test_gemini_refuses_more_output_tokens_than_the_model_gives_stating_its_range(
        aiohttp_client: Any, model: str, most: int) -> None:
    client = await start(aiohttp_client, gemini_app())
    ask: Any = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": most}}
    assert (await client.post(f"/v1beta/models/{model}:generateContent", json=ask)).status == 200
    ask["generationConfig"]["maxOutputTokens"] = most + 1
    response = await client.post(f"/v1beta/models/{model}:generateContent", json=ask)
    assert response.status == 400
    assert (await response.json())["error"] == {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": f"Unable to submit request because it has a maxOutputTokens value of {most + 1} but the supported "
                   f"range is from 1 (inclusive) to {most + 1} (exclusive). Update the value and try again."}


@pytest.mark.parametrize("quirks", [False, True])
async def test_gemini_thinking_can_use_up_max_output_tokens_only_with_quirks(aiohttp_client: Any, quirks: bool) -> None:
    client = await start(aiohttp_client, gemini_app(quirks=quirks))
    body = await (await client.post(GENERATE, json={"contents": [{"role": "user", "parts": [{"text": "tell me"}]}],
                                                    "generationConfig": {"maxOutputTokens": 5}})).json()
    candidate = body["candidates"][0]
    assert candidate["finishReason"] == "MAX_TOKENS"
    assert ("parts" not in candidate["content"]) is quirks
    assert body["usageMetadata"].get("thoughtsTokenCount") == (5 if quirks else None)


@pytest.mark.parametrize("quirks", [False, True])
async def test_gemini_streaming_errors_come_in_an_array_only_with_quirks(aiohttp_client: Any, quirks: bool) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.STATUS, status=503), count=2)
    client = await start(aiohttp_client, gemini_app(faults=faults, quirks=quirks))
    ask = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    streamed = await (await client.post(STREAM + "?alt=sse", json=ask)).json()
    whole = await (await client.post(GENERATE, json=ask)).json()
    assert isinstance(streamed, list) is quirks
    assert (streamed[0] if quirks else streamed) == whole and whole["error"]["status"] == "UNAVAILABLE"


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_refusal_and_blocked_prompt_shapes(aiohttp_client: Any, stream: bool) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.REFUSAL))
    faults.next(Fault(FaultKind.PROMPT_BLOCKED))
    client = await start(aiohttp_client, gemini_app(faults=faults))
    path = STREAM + "?alt=sse" if stream else GENERATE
    ask = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}

    async def answer() -> Any:
        response = await client.post(path, json=ask)
        assert response.status == 200
        return data_events(await response.read())[-1] if stream else await response.json()

    refused = (await answer())["candidates"][0]
    assert refused["finishReason"] == "SAFETY" and "content" not in refused and refused["safetyRatings"]
    blocked = await answer()
    assert "candidates" not in blocked and blocked["promptFeedback"]["blockReason"] == "SAFETY"
    faults.next(Fault(FaultKind.REFUSAL, tokens=2))  # stopped mid-answer: what was said comes with the finish
    stopped = (await answer())["candidates"][0]
    assert stopped["finishReason"] == "SAFETY" and stopped["content"]["parts"][0]["text"]


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_malformed_function_call_shape(aiohttp_client: Any, stream: bool) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.MALFORMED_CALL))
    client = await start(aiohttp_client, gemini_app(faults=faults))
    ask = {"contents": [{"role": "user", "parts": [{"text": "Weather?"}]}], "tools": GEMINI_TOOLS}
    response = await client.post(STREAM + "?alt=sse" if stream else GENERATE, json=ask)
    body = data_events(await response.read())[-1] if stream else await response.json()
    candidate = body["candidates"][0]
    assert response.status == 200 and "content" not in candidate
    assert candidate["finishReason"] == "MALFORMED_FUNCTION_CALL" and candidate["finishMessage"] == MALFORMED_MESSAGE


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_empty_answer_shape(aiohttp_client: Any, stream: bool) -> None:
    faults = FaultPlan()
    faults.next(Fault(FaultKind.EMPTY_ANSWER))
    client = await start(aiohttp_client, gemini_app(faults=faults, quirks=True))
    ask = {"contents": [{"role": "user", "parts": [{"text": "Hello?"}]}]}
    response = await client.post(STREAM + "?alt=sse" if stream else GENERATE, json=ask)
    body = data_events(await response.read())[-1] if stream else await response.json()
    assert_genai_reads(body)
    (candidate,) = body["candidates"]
    assert response.status == 200 and candidate["content"] == {"role": "model"} and candidate["finishReason"] == "STOP"
    assert "candidatesTokenCount" not in body["usageMetadata"] and body["usageMetadata"]["thoughtsTokenCount"] > 0


# ---- the official SDKs read the quirks --------------------------------------------------------


async def test_the_official_sdks_read_every_simulator_with_quirks() -> None:
    pool = SimPool()
    try:
        oai = await pool.start(openai_app("k", quirks=True))
        claude = await pool.start(anthropic_app("k", quirks=True))
        gem = await pool.start(gemini_app("k", quirks=True))
        openai_sdk = openai.AsyncOpenAI(base_url=oai.url + "/v1", api_key="k", max_retries=0)
        async with openai_sdk.chat.completions.stream(model="gpt-4o-mini", messages=ASK,  # type: ignore[arg-type]
                                                      tools=OPENAI_TOOLS) as stream:  # type: ignore[arg-type]
            completion = await stream.get_final_completion()
        assert [c.function.name for c in completion.choices[0].message.tool_calls or ()] == ["get_weather", "get_time"]
        anthropic_sdk = anthropic.AsyncAnthropic(base_url=claude.url, api_key="k", max_retries=0)
        async with anthropic_sdk.messages.stream(model="claude", max_tokens=200, messages=ASK,  # type: ignore[arg-type]
                                                 tools=ANTHROPIC_TOOLS) as astream:  # type: ignore[arg-type]
            message = await astream.get_final_message()
        assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
        assert [b.input for b in message.content if b.type == "tool_use"] == [{"city": "sim"}, {}]
        genai_sdk = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=gem.url))
        pieces = await asyncio.to_thread(lambda: list(genai_sdk.models.generate_content_stream(
            model="gemini-2.5-flash", contents="tell me a story")))
        assert "You said: tell me a story" in "".join(p.text or "" for p in pieces)
        assert pieces[-1].usage_metadata is not None and pieces[-1].usage_metadata.candidates_token_count
        await openai_sdk.close()
        await anthropic_sdk.close()
        genai_sdk.close()
    finally:
        await pool.close()
