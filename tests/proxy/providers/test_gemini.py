"""The Gemini provider: golden request translation, response and stream translation, errors.

Every Gemini body built here, and every Gemini response fixture fed in, is also checked against
the official `google-genai` pydantic types (which forbid unknown fields), so the fixtures are
shapes Gemini really uses and the requests are shapes it really accepts.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.genai import types

from llmroute_proxy.dialects.base import (
    BilledFailure,
    ChatRequest,
    StreamChunk,
    StreamTranslator,
    Usage,
    carries_output,
    in_choice_order,
    is_usage_chunk,
)
from llmroute_proxy.dialects.gemini.answer_in import GeminiStream, synthesised_tool_id
from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError
from llmroute_proxy.providers.base import Provider
from llmroute_proxy.providers.gemini import GeminiProvider
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.table import Pricing, ProviderType, Secret, Target, TargetId
from tests.proxy.genai_shapes import assert_genai_reads

GOLDEN = Path(__file__).parent / "golden" / "gemini"
API_KEY = "AIza-test-key-never-shown"
PROVIDER = GeminiProvider()


def make_target(**options: str) -> Target:
    return Target(id=TargetId("gemini/gemini-2.5-flash@eu"), provider="gemini", provider_type=ProviderType.GEMINI,
                  model="gemini-2.5-flash", url="https://generativelanguage.googleapis.com/", region="eu",
                  credential=Secret(API_KEY), options=options)


TARGET = make_target()


def gemini_body(body: dict[str, Any]) -> dict[str, Any]:
    upstream = PROVIDER.chat_request(ChatRequest(body), TARGET)
    assert upstream.body is not None
    out: dict[str, Any] = orjson.loads(upstream.body)
    assert_sdk_accepts_request(out)
    return out


def assert_sdk_accepts_request(body: dict[str, Any]) -> None:
    assert set(body) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
    for content in body["contents"]:
        types.Content.model_validate(content)
    if "systemInstruction" in body:
        types.Content.model_validate(body["systemInstruction"])
    for tool in body.get("tools", ()):
        types.Tool.model_validate(tool)
    if "toolConfig" in body:
        types.ToolConfig.model_validate(body["toolConfig"])
    if "generationConfig" in body:
        types.GenerationConfig.model_validate(body["generationConfig"])


def user(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def sim_response(**fields: Any) -> dict[str, Any]:
    """A realistic generateContent answer; validated by the SDK so the fixture cannot drift."""
    body: dict[str, Any] = {
        "candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "Hello"}]},
                        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2, "totalTokenCount": 12},
        "modelVersion": "gemini-2.5-flash-001", "responseId": "r-abc123",
    }
    body.update(fields)
    types.GenerateContentResponse.model_validate(body)
    return body


def candidate(parts: list[dict[str, Any]], finish: str | None = "STOP", index: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "content": {"role": "model", "parts": parts}}
    if finish:
        out["finishReason"] = finish
    return out


def translate(body: dict[str, Any]) -> dict[str, Any]:
    return PROVIDER.chat_response(orjson.dumps(body), ChatRequest(user()), TARGET).data


# ---------------------------------------------------------------- request building


def test_the_provider_and_its_stream_satisfy_the_shared_interfaces() -> None:
    provider: Provider = PROVIDER
    translator: StreamTranslator = provider.chat_stream(ChatRequest(user(stream=True)), TARGET)
    assert provider.type == "gemini"
    assert translator.finish_reason is None and translator.usage is None


def test_generate_url_uses_v1beta_by_default_and_the_key_travels_only_in_a_header() -> None:
    upstream = PROVIDER.chat_request(ChatRequest(user()), TARGET)
    assert upstream.method == "POST"
    assert upstream.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    assert upstream.headers["x-goog-api-key"] == API_KEY
    assert API_KEY not in upstream.url and "key=" not in upstream.url


def test_stream_url_asks_for_sse_and_api_version_comes_from_target_options() -> None:
    upstream = PROVIDER.chat_request(ChatRequest(user(stream=True)), make_target(api_version="v1"))
    assert upstream.url == ("https://generativelanguage.googleapis.com/v1/models/gemini-2.5-flash"
                            ":streamGenerateContent?alt=sse")


def test_multi_turn_tool_loop_translates_to_the_golden_gemini_body() -> None:
    request = orjson.loads((GOLDEN / "tool_loop.request.json").read_bytes())
    expected = orjson.loads((GOLDEN / "tool_loop.gemini.json").read_bytes())
    assert gemini_body(request) == expected


def test_the_client_body_is_not_mutated() -> None:
    request = orjson.loads((GOLDEN / "tool_loop.request.json").read_bytes())
    before = orjson.dumps(request)
    gemini_body(request)
    assert orjson.dumps(request) == before


def test_images_audio_and_pdf_in_data_urls_become_inline_data() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]
    body = gemini_body({"messages": [{"role": "user", "content": content}]})
    assert body["contents"] == [{"role": "user", "parts": [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]}]


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
     "messages[0].content[1].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, "messages[0].content[1].image_url.url"),
    ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[1].file"),
    ({"type": "video", "video": {}}, "messages[0].content[1]"),
])
def test_content_parts_gemini_cannot_take_are_refused_naming_the_field(part: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        gemini_body({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]})
    assert caught.value.param == param
    assert param in caught.value.message


def test_an_image_url_is_refused_because_llmroute_does_not_fetch_urls() -> None:
    with pytest.raises(BadRequest, match="does not fetch image URLs"):
        gemini_body({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})


def test_invalid_tool_call_arguments_are_refused_with_their_path() -> None:
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]
    with pytest.raises(BadRequest) as caught:
        gemini_body({"messages": messages})
    assert caught.value.param == "messages[1].tool_calls[1].function.arguments"


def test_a_tool_result_for_an_unknown_call_is_refused_because_gemini_needs_the_name() -> None:
    messages = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]
    with pytest.raises(BadRequest) as caught:
        gemini_body({"messages": messages})
    assert caught.value.param == "messages[1].tool_call_id"


def test_a_conversation_of_only_system_messages_is_refused() -> None:
    with pytest.raises(BadRequest):
        gemini_body({"messages": [{"role": "system", "content": "be nice"}]})


def test_a_gemini_tool_call_id_is_echoed_in_both_call_and_response() -> None:
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [
                    {"id": "gem-1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "gem-1", "content": "[1, 2]"}]
    contents = gemini_body({"messages": messages})["contents"]
    assert contents[1]["parts"][0]["functionCall"]["id"] == "gem-1"
    assert contents[2]["parts"] == [{"functionResponse": {"name": "f", "response": {"output": "[1, 2]"},
                                                          "id": "gem-1"}}]


@pytest.mark.parametrize(("choice", "config", "declared"), [
    ("auto", {"mode": "AUTO"}, ["a", "b"]),
    (None, {"mode": "AUTO"}, ["a", "b"]),
    ("none", {"mode": "NONE"}, ["a", "b"]),
    ("required", {"mode": "ANY"}, ["a", "b"]),
    ({"type": "function", "function": {"name": "b"}}, {"mode": "ANY", "allowedFunctionNames": ["b"]}, ["a", "b"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "a"}}]}}, {"mode": "ANY", "allowedFunctionNames": ["a"]},
     ["a", "b"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "a"}}]}}, {"mode": "AUTO"}, ["a"]),
])
def test_tool_choice_maps_to_a_function_calling_mode(choice: Any, config: dict[str, Any], declared: list[str]) -> None:
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("a", "b")]
    body = gemini_body(user(tools=tools, tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": config}
    assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == declared


def test_non_function_tools_are_refused() -> None:
    with pytest.raises(BadRequest) as caught:
        gemini_body(user(tools=[{"type": "custom", "custom": {"name": "x"}}]))
    assert caught.value.param == "tools[0].type"


def test_sampling_parameters_map_to_generation_config() -> None:
    body = gemini_body(user(max_tokens=100, temperature=1.2, top_p=0.9, top_k=40, stop=["END", "STOP"], n=2,
                            seed=7, presence_penalty=0.5, frequency_penalty=-0.5, reasoning_effort="low",
                            response_format={"type": "json_object"}, user="u1", parallel_tool_calls=False))
    assert body["generationConfig"] == {
        "temperature": 1.2, "topP": 0.9, "topK": 40, "candidateCount": 2, "seed": 7, "presencePenalty": 0.5,
        "frequencyPenalty": -0.5, "maxOutputTokens": 100, "stopSequences": ["END", "STOP"],
        "responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 1024},
    }


@pytest.mark.parametrize(("effort", "budget"), [("none", 0), ("minimal", 128), ("low", 1024), ("medium", 8192),
                                               ("high", 24576)])
def test_reasoning_effort_sets_a_thinking_budget(effort: str, budget: int) -> None:
    config = gemini_body(user(reasoning_effort=effort))["generationConfig"]
    assert config == {"thinkingConfig": {"thinkingBudget": budget}}


@pytest.mark.parametrize(("model", "budgets"), [
    ("gemini-2.5-pro", {"none": 128, "minimal": 128, "low": 1024, "max": 24576}),
    ("models/gemini-2.5-pro-preview-06-05", {"none": 128, "minimal": 128}),
    ("gemini-2.5-flash-lite", {"none": 0, "minimal": 512, "low": 1024, "max": 24576}),
    ("gemini-2.5-flash", {"none": 0, "minimal": 128}),
])
def test_each_effort_is_a_budget_the_model_takes(model: str, budgets: dict[str, int]) -> None:
    """2.5 Pro cannot stop thinking nor think under 128 tokens; Flash-Lite may stop, else thinks ≥ 512."""
    target = dataclasses.replace(TARGET, model=model)
    for effort, budget in budgets.items():
        upstream = PROVIDER.chat_request(ChatRequest(user(reasoning_effort=effort)), target)
        assert upstream.body is not None
        assert orjson.loads(upstream.body)["generationConfig"]["thinkingConfig"] == {"thinkingBudget": budget}


def test_zero_valued_parameters_are_sent_not_dropped() -> None:
    config = gemini_body(user(temperature=0, seed=0, presence_penalty=0))["generationConfig"]
    assert config == {"temperature": 0, "seed": 0, "presencePenalty": 0}


def test_a_single_stop_string_becomes_a_one_element_list() -> None:
    assert gemini_body(user(stop="END"))["generationConfig"] == {"stopSequences": ["END"]}


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    config = gemini_body(user(max_tokens=10, max_completion_tokens=20))["generationConfig"]
    assert config["maxOutputTokens"] == 20


def test_a_json_schema_response_format_becomes_response_json_schema() -> None:
    schema = {"type": "object", "properties": {"n": {"oneOf": [{"type": "integer"}, {"type": "null"}]}},
              "required": ["n"], "additionalProperties": False}
    config = gemini_body(user(response_format={"type": "json_schema",
                                               "json_schema": {"name": "n", "schema": schema, "strict": True}}))
    assert config["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}


@pytest.mark.parametrize(("extra", "param"), [
    ({"stop": ["1", "2", "3", "4", "5", "6"]}, "stop"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ({"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
])
def test_fields_that_would_change_meaning_are_refused_naming_the_field(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        gemini_body(user(**extra))
    assert caught.value.param == param
    assert caught.value.status == 400


def test_false_logprobs_and_empty_logit_bias_are_harmless() -> None:
    assert "generationConfig" not in gemini_body(user(logprobs=False, logit_bias={}))


# ---------------------------------------------------------------- response translation


def test_a_text_answer_becomes_a_chat_completion_without_thoughts() -> None:
    body = sim_response(candidates=[candidate([{"text": "thinking hard", "thought": True},
                                               {"text": "Hel"}, {"text": "lo"}])])
    data = translate(body)
    assert data["id"] == "chatcmpl-r-abc123"
    assert data["object"] == "chat.completion"
    assert data["model"] == "gemini-2.5-flash-001"
    assert data["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None},
                                "logprobs": None, "finish_reason": "stop"}]


def test_usage_counts_thoughts_as_completion_and_cache_as_part_of_prompt() -> None:
    usage = {"promptTokenCount": 120, "candidatesTokenCount": 30, "thoughtsTokenCount": 25,
             "cachedContentTokenCount": 64, "toolUsePromptTokenCount": 5, "totalTokenCount": 180}
    result = PROVIDER.chat_response(orjson.dumps(sim_response(usageMetadata=usage)), ChatRequest(user()), TARGET)
    assert result.data["usage"] == {
        "prompt_tokens": 125, "completion_tokens": 55, "total_tokens": 180,
        "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    assert result.usage.total_tokens == usage["totalTokenCount"]


TIER_PRICES = Pricing(0.3, 2.5, service_tiers={"flex": Pricing(0.15, 1.25), "priority": Pricing(0.54, 4.5),
                                                "standard": Pricing(0.3, 2.5)})


@pytest.mark.parametrize(("asked", "sent"), [
    ("flex", "flex"), ("priority", "priority"), ("scale", "priority"), ("default", "standard"), ("auto", None), (None, None),
])
def test_a_service_tier_is_sent_as_geminis_nearest_at_the_top_of_the_request(asked: str | None, sent: str | None) -> None:
    priced = dataclasses.replace(TARGET, pricing=TIER_PRICES)
    upstream = PROVIDER.chat_request(ChatRequest(user(**({"service_tier": asked} if asked else {}))), priced)
    assert upstream.body is not None
    assert orjson.loads(upstream.body).get("serviceTier") == sent  # where google-genai puts `config.service_tier`


@pytest.mark.parametrize("asked", ["flex", "priority", "default"])
def test_a_tier_the_model_does_not_price_is_not_asked_for(asked: str) -> None:
    """Not every project has Flex or Priority (Priority is for Gemini's paid tiers 2 and 3), and asking one
    that has not is a 400: the model's prices listing the tier is its owner's word that it has it."""
    upstream = PROVIDER.chat_request(ChatRequest(user(service_tier=asked)), TARGET)
    assert upstream.body is not None and "serviceTier" not in orjson.loads(upstream.body)


@pytest.mark.parametrize(("reported", "tier"), [
    ("priority", "priority"), ("standard", "standard"), ("flex", "flex"), ("SERVICE_TIER_FLEX", "flex"),
    ("unspecified", None), (None, None), (3, None),
])
def test_the_tier_an_answer_reports_in_its_usage_is_read(reported: Any, tier: str | None) -> None:
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 2, "totalTokenCount": 12, "serviceTier": reported}
    body = {"candidates": [candidate([{"text": "Hello"}])], "usageMetadata": usage, "responseId": "r-1"}

    assert PROVIDER.chat_response(orjson.dumps(body), ChatRequest(user()), TARGET).usage.service_tier == tier
    stream, _ = run_stream(sse(body))
    assert stream.usage is not None and stream.usage.service_tier == tier


def test_function_calls_become_tool_calls_with_given_or_synthesised_ids() -> None:
    parts: list[dict[str, Any]] = [{"text": "Let me check."},
             {"functionCall": {"id": "gem-9", "name": "get_weather", "args": {"city": "Paris", "n": [1, 2]}},
              "thoughtSignature": "c2ln"},
             {"functionCall": {"name": "get_time", "args": {}}}]
    message = translate(sim_response(candidates=[candidate(parts)]))["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    calls = message["message"]["tool_calls"]
    assert calls[0] == {"id": "gem-9", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris","n":[1,2]}'},
                        "extra_content": {"google": {"thought_signature": "c2ln"}}}
    assert calls[1]["id"] == synthesised_tool_id("r-abc123", 0, 1)
    assert calls[1]["id"].startswith("call_") and calls[1]["function"] == {"name": "get_time", "arguments": "{}"}
    assert message["message"]["content"] == "Let me check."


def test_synthesised_ids_differ_between_responses_and_positions() -> None:
    ids = {synthesised_tool_id(r, c, p) for r in ("r1", "r2") for c in (0, 1) for p in (0, 1)}
    assert len(ids) == 8


def test_a_translated_tool_call_round_trips_into_the_next_request() -> None:
    parts = [{"functionCall": {"id": "gem-9", "name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"}]
    assistant = translate(sim_response(candidates=[candidate(parts)]))["choices"][0]["message"]
    call_id = assistant["tool_calls"][0]["id"]
    body = gemini_body({"messages": [{"role": "user", "content": "x"}, assistant,
                                     {"role": "tool", "tool_call_id": call_id, "content": "ok"}]})
    assert body["contents"][1]["parts"] == parts
    assert body["contents"][2]["parts"][0]["functionResponse"]["id"] == "gem-9"


def test_every_candidate_becomes_a_choice_with_its_index() -> None:
    body = sim_response(candidates=[candidate([{"text": "a"}], index=0),
                                    candidate([{"text": "b"}], "MAX_TOKENS", index=1)])
    choices = translate(body)["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "a", "stop"), (1, "b", "length")]


FINISH_REASONS = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "LANGUAGE": "stop", "OTHER": "stop", "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter", "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter", "IMAGE_OTHER": "stop", "NO_IMAGE": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop", "MODEL_ARMOR": "content_filter", "ESCALATION": "stop",
    "PUP_LIMITED_DISABLED": "stop", "CONTINUATION": "stop", "SOMETHING_NEW": "stop",
}
MALFORMED = ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
             "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE"]


def test_the_finish_reason_table_covers_every_reason_the_sdk_knows() -> None:
    assert set(types.FinishReason.__members__) <= set(FINISH_REASONS) | set(MALFORMED)


@pytest.mark.parametrize(("reason", "expected"), sorted(FINISH_REASONS.items()))
def test_finish_reasons_map_to_openai(reason: str, expected: str) -> None:
    body = {"candidates": [candidate([{"text": "x"}], reason)], "responseId": "r"}
    assert translate(body)["choices"][0]["finish_reason"] == expected


@pytest.mark.parametrize("reason", MALFORMED)
def test_malformed_function_call_family_is_an_upstream_failure(reason: str) -> None:
    body = sim_response(candidates=[{"index": 0, "finishReason": reason, "finishMessage": "bad call"}])
    with pytest.raises(UpstreamError) as caught:
        translate(body)
    assert caught.value.kind is FailureKind.SERVER_ERROR
    assert reason in caught.value.message and "bad call" in caught.value.message


EMPTY_STOPS = {
    "no parts": {"index": 0, "content": {"role": "model"}, "finishReason": "STOP"},
    "an empty text": candidate([{"text": ""}]),
    "thoughts only": candidate([{"text": "Let me think.", "thought": True}]),
    "no content": {"index": 0, "finishReason": "STOP"},
}


@pytest.mark.parametrize("shape", sorted(EMPTY_STOPS))
def test_a_stop_with_nothing_in_it_is_an_upstream_failure_not_an_answer(shape: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        translate(sim_response(candidates=[EMPTY_STOPS[shape]]))
    assert caught.value.kind is FailureKind.SERVER_ERROR and "STOP and an empty answer" in caught.value.message


THOUGHT_FOR_NOTHING = {"promptTokenCount": 40, "thoughtsTokenCount": 300, "totalTokenCount": 340}


@pytest.mark.parametrize("ending", [EMPTY_STOPS["no parts"], {"index": 0, "finishReason": "MALFORMED_FUNCTION_CALL"}],
                         ids=["empty", "malformed"])
def test_an_empty_answer_says_what_it_was_billed(ending: dict[str, Any]) -> None:
    """Google bills the prompt and the thoughts of an answer that said nothing: the failure carries them."""
    billed = Usage(input_tokens=40, output_tokens=300, reasoning_tokens=300)
    with pytest.raises(BilledFailure) as whole:
        translate({"candidates": [ending], "usageMetadata": THOUGHT_FOR_NOTHING, "responseId": "b1"})
    with pytest.raises(BilledFailure) as streamed:
        run_stream(sse({"candidates": [candidate([{"text": "Hmm.", "thought": True}], None)], "responseId": "b2"},
                       {"candidates": [ending], "usageMetadata": THOUGHT_FOR_NOTHING, "responseId": "b2"}))
    assert whole.value.billed == streamed.value.billed == billed


def test_an_empty_answer_without_usage_says_nothing_was_billed() -> None:
    with pytest.raises(BilledFailure) as caught:
        translate({"candidates": [EMPTY_STOPS["no parts"]], "responseId": "b3"})
    assert caught.value.billed is None


def test_an_answer_without_candidates_or_a_block_reason_is_an_upstream_failure() -> None:
    body = sim_response()
    del body["candidates"]
    with pytest.raises(UpstreamError) as caught:
        translate(body)
    assert caught.value.kind is FailureKind.SERVER_ERROR


def test_an_empty_text_beside_a_call_is_a_call() -> None:
    body = sim_response(candidates=[candidate([{"text": ""}, {"functionCall": {"name": "f", "args": {}}}])])
    assert translate(body)["choices"][0]["finish_reason"] == "tool_calls"


def test_a_safety_stop_without_content_is_an_empty_filtered_answer() -> None:
    choice = translate(sim_response(candidates=[{"index": 0, "finishReason": "SAFETY"}]))["choices"][0]
    assert choice["message"]["content"] == "" and choice["finish_reason"] == "content_filter"


def test_a_blocked_prompt_is_a_400_content_filter_error_naming_the_reason() -> None:
    body = sim_response(candidates=None, promptFeedback={"blockReason": "PROHIBITED_CONTENT"})
    del body["candidates"]
    with pytest.raises(UpstreamError) as caught:
        translate(body)
    error = caught.value
    assert (error.kind, error.status, error.code) == (FailureKind.CONTENT_FILTER, 400, "content_filter")
    assert "PROHIBITED_CONTENT" in error.message
    assert not error.kind.fails_over


def test_a_body_that_is_not_json_fails_over_as_a_server_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        PROVIDER.chat_response(b"<html>oops</html>", ChatRequest(user()), TARGET)
    assert caught.value.kind is FailureKind.SERVER_ERROR


# ---------------------------------------------------------------- streaming


def sse(*events: dict[str, Any]) -> bytes:
    for event in events:
        assert_genai_reads(event)
    return b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)


TEXT_STREAM = sse(
    {"candidates": [candidate([{"text": "pondering", "thought": True}], None)], "responseId": "s1",
     "modelVersion": "gemini-2.5-flash-001",
     "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}},
    {"candidates": [candidate([{"text": "Hel"}], None)], "responseId": "s1",
     "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1, "totalTokenCount": 10}},
    {"candidates": [candidate([{"text": "lo"}], "STOP")], "responseId": "s1",
     "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2, "thoughtsTokenCount": 4,
                       "totalTokenCount": 15}},
)


def run_stream(body: bytes, split: int | None = None) -> tuple[GeminiStream, list[dict[str, Any]]]:
    stream = PROVIDER.chat_stream(ChatRequest(user(stream=True)), TARGET)
    chunks: list[StreamChunk] = []
    step = split or len(body) or 1
    for start in range(0, len(body), step):
        chunks.extend(stream.feed(body[start:start + step]))
    chunks.extend(stream.close())
    return stream, [c.data for c in chunks]


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks if c["choices"]]


def test_a_text_stream_becomes_role_content_finish_and_one_usage_chunk() -> None:
    stream, chunks = run_stream(TEXT_STREAM)
    assert deltas(chunks) == [({"role": "assistant", "content": ""}, None), ({"content": "Hel"}, None),
                              ({"content": "lo"}, None), ({}, "stop")]
    assert [is_usage_chunk(c) for c in chunks] == [False] * 4 + [True]
    assert chunks[-1]["usage"]["completion_tokens"] == 6 and chunks[-1]["usage"]["total_tokens"] == 15
    assert {c["id"] for c in chunks} == {"chatcmpl-s1"}
    assert {c["model"] for c in chunks} == {"gemini-2.5-flash-001"}
    assert stream.finish_reason == "stop"


def test_the_role_chunk_shows_no_output_so_failover_stays_possible() -> None:
    _, chunks = run_stream(TEXT_STREAM)
    assert not carries_output(chunks[0]) and carries_output(chunks[1])


@pytest.mark.parametrize("split", [1, 2, 7])
def test_a_stream_fed_in_small_pieces_gives_the_same_chunks(split: int) -> None:
    assert run_stream(TEXT_STREAM, split)[1] == run_stream(TEXT_STREAM)[1]


def test_lf_separated_events_are_read_too() -> None:
    assert run_stream(TEXT_STREAM.replace(b"\r\n", b"\n"))[1] == run_stream(TEXT_STREAM)[1]


def test_usage_is_the_last_snapshot_not_a_sum() -> None:
    stream, _ = run_stream(TEXT_STREAM)
    assert stream.usage is not None
    assert (stream.usage.input_tokens, stream.usage.output_tokens, stream.usage.reasoning_tokens) == (9, 6, 4)


def test_each_streamed_function_call_is_one_complete_tool_call_delta() -> None:
    body = sse(
        {"candidates": [candidate([{"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "c2ln"}],
                                  None)], "responseId": "s2"},
        {"candidates": [candidate([{"functionCall": {"id": "g2", "name": "b", "args": {}}}], "STOP")],
         "responseId": "s2", "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}},
    )
    stream, chunks = run_stream(body)
    tool_deltas = [d["tool_calls"][0] for d, _ in deltas(chunks) if "tool_calls" in d]
    assert tool_deltas == [
        {"id": synthesised_tool_id("s2", 0, 0), "type": "function", "function": {"name": "a", "arguments": '{"x":1}'},
         "extra_content": {"google": {"thought_signature": "c2ln"}}, "index": 0},
        {"id": "g2", "type": "function", "function": {"name": "b", "arguments": "{}"}, "index": 1},
    ]
    assert deltas(chunks)[-1] == ({}, "tool_calls")
    assert stream.finish_reason == "tool_calls"


def test_every_candidates_finish_is_recorded_in_candidate_order_whichever_finished_first() -> None:
    """`candidateCount` 2 (the client's `n`): candidate 1 is cut at the output limit before candidate 0 stops."""
    body = sse(
        {"candidates": [candidate([{"text": "Hel"}], None, 0), candidate([{"text": "Hi"}], "MAX_TOKENS", 1)],
         "responseId": "s4"},
        {"candidates": [candidate([{"text": "lo"}], "STOP", 0)], "responseId": "s4",
         "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}},
    )
    stream, _ = run_stream(body)
    assert stream.finish_reasons == {1: "length", 0: "stop"}
    assert in_choice_order(stream.finish_reasons) == ("stop", "length")


def test_a_stream_that_ends_without_a_finish_reason_is_broken() -> None:
    body = sse({"candidates": [candidate([{"text": "Hel"}], None)], "responseId": "s3"})
    stream = GeminiStream("m")
    assert stream.feed(body)
    with pytest.raises(UpstreamError) as caught:
        stream.close()
    assert caught.value.kind is FailureKind.STREAM_BROKEN


def test_an_empty_stream_is_broken() -> None:
    with pytest.raises(UpstreamError) as caught:
        GeminiStream("m").close()
    assert caught.value.kind is FailureKind.STREAM_BROKEN


def test_a_last_event_without_a_blank_line_still_counts() -> None:
    _, chunks = run_stream(TEXT_STREAM.rstrip(b"\r\n"))
    assert deltas(chunks)[-1] == ({}, "stop")


def test_an_in_band_error_is_classified_like_an_http_error() -> None:
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    stream = GeminiStream("m")
    stream.feed(sse({"candidates": [candidate([{"text": "Hi"}], None)]}))
    with pytest.raises(UpstreamError) as caught:
        stream.feed(b"data: " + orjson.dumps(error) + b"\r\n\r\n")
    assert caught.value.kind is FailureKind.OVERLOADED and caught.value.status == 503


def test_a_blocked_prompt_in_a_stream_is_a_content_filter_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        GeminiStream("m").feed(sse({"promptFeedback": {"blockReason": "SAFETY"}, "responseId": "s4"}))
    assert caught.value.kind is FailureKind.CONTENT_FILTER and "SAFETY" in caught.value.message


def test_a_malformed_call_before_any_output_fails_the_stream_over() -> None:
    with pytest.raises(UpstreamError) as caught:
        GeminiStream("m").feed(sse({"candidates": [{"index": 0, "finishReason": "MALFORMED_FUNCTION_CALL"}]}))
    assert caught.value.kind is FailureKind.SERVER_ERROR


@pytest.mark.parametrize("shape", sorted(EMPTY_STOPS))
def test_a_stop_with_nothing_before_it_fails_the_stream_over(shape: str) -> None:
    thinking = {"candidates": [candidate([{"text": "Hmm.", "thought": True}], None)], "responseId": "s5"}
    with pytest.raises(UpstreamError) as caught:
        run_stream(sse(thinking, {"candidates": [EMPTY_STOPS[shape]], "responseId": "s5"}))
    assert caught.value.kind is FailureKind.SERVER_ERROR


def test_a_stop_alone_after_the_text_ends_the_stream() -> None:
    body = sse({"candidates": [candidate([{"text": "Sure"}], None)]}, {"candidates": [EMPTY_STOPS["no parts"]]})
    _, chunks = run_stream(body)
    assert deltas(chunks)[-1] == ({}, "stop")


def test_a_malformed_call_after_output_ends_the_stream_as_stop() -> None:
    body = sse({"candidates": [candidate([{"text": "Sure"}], None)]},
               {"candidates": [{"index": 0, "finishReason": "MALFORMED_FUNCTION_CALL"}]})
    _, chunks = run_stream(body)
    assert deltas(chunks)[-1] == ({}, "stop")
    assert not any(is_usage_chunk(c) for c in chunks)


# ---------------------------------------------------------------- error classification


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status, "details": list(details)}})


QUOTA_MINUTE = {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": "generate_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]}
QUOTA_DAY = {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generate_requests", "quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}
KEY_INVALID = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
               "domain": "googleapis.com"}


@pytest.mark.parametrize(("status", "body", "kind"), [
    (400, google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), FailureKind.CLIENT_ERROR),
    (400, google_error(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of "
                                                "tokens allowed (1048576)."), FailureKind.CONTEXT_LENGTH),
    (400, google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."), FailureKind.AUTH),
    (400, google_error(400, "INVALID_ARGUMENT", "Bad key.", KEY_INVALID), FailureKind.AUTH),
    (400, google_error(400, "FAILED_PRECONDITION", "User location is not supported."), FailureKind.AUTH),
    (401, google_error(401, "UNAUTHENTICATED", "Request had invalid credentials."), FailureKind.AUTH),
    (403, google_error(403, "PERMISSION_DENIED", "Permission denied."), FailureKind.AUTH),
    (404, google_error(404, "NOT_FOUND", "models/gemini-9 is not found."), FailureKind.TARGET_NOT_FOUND),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", QUOTA_MINUTE), FailureKind.RATE_LIMITED),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", QUOTA_DAY), FailureKind.QUOTA_EXHAUSTED),
    (500, google_error(500, "INTERNAL", "An internal error has occurred."), FailureKind.SERVER_ERROR),
    (503, google_error(503, "UNAVAILABLE", "The model is overloaded."), FailureKind.OVERLOADED),
    (504, google_error(504, "DEADLINE_EXCEEDED", "Deadline exceeded."), FailureKind.TIMEOUT),
    (502, b"<html>Bad Gateway</html>", FailureKind.SERVER_ERROR),
    (503, b"", FailureKind.OVERLOADED),
    (429, b"Too Many Requests", FailureKind.RATE_LIMITED),
    (413, b"Request Entity Too Large", FailureKind.CLIENT_ERROR),
    (400, b"[" + google_error(400, "INVALID_ARGUMENT", "API key not valid.") + b"]", FailureKind.AUTH),
])
def test_errors_are_classified_per_the_table(status: int, body: bytes, kind: FailureKind) -> None:
    error = PROVIDER.classify_error(status, {}, body)
    assert error.kind is kind
    assert error.status == status
    assert API_KEY not in error.message


@pytest.mark.parametrize(("delay", "seconds"), [("34s", 34.0), ("1.5s", 1.5), ("0s", 0.0)])
def test_retry_info_gives_the_back_off_hint(delay: str, seconds: float) -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    error = PROVIDER.classify_error(429, {}, google_error(429, "RESOURCE_EXHAUSTED", "Quota.", QUOTA_MINUTE, retry))
    assert error.retry_after == seconds


@pytest.mark.parametrize("answered", ["in a stream", "as a stream's whole body", "as an answer"])
def test_a_rate_limit_inside_a_200_keeps_its_retry_info_as_a_429_does(answered: str) -> None:
    """Gemini's back-off hint is in its error body, so an error it sends inside a 200 (a stream's error
    event, or the error as the whole body) carries it as well: the cooldown and the wait follow it."""
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
    body = google_error(429, "RESOURCE_EXHAUSTED", "Quota.", QUOTA_MINUTE, retry)
    guarded = provider_for(ProviderType.GEMINI)
    with pytest.raises(UpstreamError) as raised:
        if answered == "as an answer":
            guarded.chat_response(body, ChatRequest(user()), TARGET)
        else:
            stream = guarded.chat_stream(ChatRequest(user(stream=True)), TARGET)
            stream.feed(b"data: " + body + b"\r\n\r\n" if answered == "in a stream" else body)
            stream.close()
    assert (raised.value.kind, raised.value.retry_after) == (FailureKind.RATE_LIMITED, 7.0)


def test_without_retry_info_the_retry_after_header_is_used() -> None:
    error = PROVIDER.classify_error(429, {"Retry-After": "7"}, google_error(429, "RESOURCE_EXHAUSTED", "Quota."))
    assert error.retry_after == 7.0


def test_a_client_error_keeps_googles_message_for_the_client() -> None:
    error = PROVIDER.classify_error(400, {}, google_error(400, "INVALID_ARGUMENT", "Unknown name \"foo\"."))
    assert error.message == 'Unknown name "foo".'
    assert (error.error_type, error.code, error.client_status) == ("invalid_request_error", "invalid_argument", 400)


def test_a_context_length_error_carries_openais_code() -> None:
    body = google_error(400, "INVALID_ARGUMENT", "The input token count (9) exceeds the maximum number of tokens "
                                                 "allowed (8).")
    assert PROVIDER.classify_error(400, {}, body).code == "context_length_exceeded"


# ---------------------------------------------------------------- embeddings


def test_embeddings_use_batch_embed_contents_with_one_request_per_input() -> None:
    upstream = PROVIDER.embeddings_request({"model": "emb", "input": ["a", "b"], "dimensions": 256},
                                           make_target())
    assert upstream.url.endswith("/v1beta/models/gemini-2.5-flash:batchEmbedContents")
    assert upstream.headers["x-goog-api-key"] == API_KEY
    assert upstream.body is not None
    assert orjson.loads(upstream.body) == {"requests": [
        {"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 256},
        {"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 256},
    ]}


@pytest.mark.parametrize("bad", [{"input": [1, 2, 3]}, {"input": [[1, 2]]}, {"input": []},
                                 {"input": "x", "encoding_format": "int8"}])
def test_embedding_inputs_gemini_cannot_take_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        PROVIDER.embeddings_request({"model": "emb", **bad}, TARGET)


EMBEDDINGS = {"embeddings": [{"values": [0.5, -1.25, 3.0]}, {"values": [0.0, 1.0, 2.0]}]}


def test_embeddings_answer_is_an_openai_list_with_zero_usage_when_gemini_gives_none() -> None:
    for embedding in EMBEDDINGS["embeddings"]:
        types.ContentEmbedding.model_validate(embedding)
    data, usage = PROVIDER.embeddings_response(orjson.dumps(EMBEDDINGS), {"input": ["a", "b"]}, TARGET)
    assert data == {"object": "list", "model": "gemini-2.5-flash",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.25, 3.0]},
                             {"object": "embedding", "index": 1, "embedding": [0.0, 1.0, 2.0]}],
                    "usage": {"prompt_tokens": 0, "total_tokens": 0}}
    assert usage.total_tokens == 0


def test_base64_embeddings_are_little_endian_float32() -> None:
    data, _ = PROVIDER.embeddings_response(orjson.dumps(EMBEDDINGS), {"encoding_format": "base64"}, TARGET)
    raw = base64.b64decode(data["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -1.25, 3.0)


@pytest.mark.parametrize(("body", "kind", "status"), [
    ({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}},
     FailureKind.AUTH, 400),
    ([{"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}],
     FailureKind.RATE_LIMITED, 429),
    ({"error": {"code": 400, "message": "Invalid value at 'requests[0].content'", "status": "INVALID_ARGUMENT"}},
     FailureKind.CLIENT_ERROR, 400),
    ({"error": {"message": "The caller does not have permission", "status": "PERMISSION_DENIED"}},
     FailureKind.AUTH, 403),
], ids=["key invalid", "rate limited", "bad request", "no code"])
def test_an_embeddings_answer_that_is_an_error_object_is_that_error(body: Any, kind: FailureKind,
                                                                   status: int) -> None:
    """Not a server error quoting the raw error JSON: the error it carries, as if sent with its status."""
    with pytest.raises(UpstreamError) as caught:
        PROVIDER.embeddings_response(orjson.dumps(body), {"input": ["a"]}, TARGET)
    assert caught.value.kind is kind
    assert caught.value.status == status
    assert not caught.value.message.startswith("{")


def test_an_in_band_error_without_its_code_is_classified_by_its_rpc_status() -> None:
    stream = GeminiStream("m")
    with pytest.raises(UpstreamError) as caught:
        stream.feed(b'data: {"error": {"message": "Request had invalid authentication credentials.", '
                    b'"status": "UNAUTHENTICATED"}}\r\n\r\n')
    assert caught.value.kind is FailureKind.AUTH and caught.value.status == 401


def test_a_count_asks_count_tokens_for_the_whole_generate_content_request() -> None:
    request = PROVIDER.count_tokens_request(
        ChatRequest({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "hi"}]}), TARGET)

    assert request.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:countTokens"
    assert request.headers["x-goog-api-key"] == API_KEY and API_KEY not in request.url
    assert request.body is not None
    whole = orjson.loads(request.body)["generateContentRequest"]
    assert whole.pop("model") == "models/gemini-2.5-flash"
    assert whole == gemini_body({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                            {"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(("body", "tokens"), [
    (b'{"totalTokens": 7, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}]}', 7),
    (b'{"promptTokensDetails": []}', None), (b'{"totalTokens": "7"}', None), (b'{"error": {"code": 500}}', None),
])
def test_the_count_is_total_tokens(body: bytes, tokens: int | None) -> None:
    assert PROVIDER.counted_tokens(body) == tokens
