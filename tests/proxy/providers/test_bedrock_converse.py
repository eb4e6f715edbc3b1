"""Bedrock's Converse API: golden request and answer translation, the stream's frames, what is refused,
and the bodies checked against botocore's own service model of `bedrock-runtime`."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from botocore.model import ServiceModel, Shape, StructureShape
from botocore.validate import ParamValidator

from llmroute_proxy.dialects.base import ChatRequest, NativeBody, NativeDialect, StreamChunk
from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError
from llmroute_proxy.providers.bedrock import BedrockProvider
from llmroute_proxy.sim.bedrock import encode_frame
from llmroute_proxy.sim.bedrock_converse import event_frame
from llmroute_proxy.table import Pricing, ProviderType, Secret, Target, TargetId, bedrock_claude

GOLDEN = Path(__file__).parent / "golden" / "bedrock"
PROVIDER = BedrockProvider()
URL = "https://bedrock-runtime.us-east-1.amazonaws.com"
GPT_OSS = "openai.gpt-oss-120b-1:0"
NOVA = "us.amazon.nova-pro-v1:0"
USER_HI = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PLACE = {"type": "json_schema", "json_schema": {"name": "place", "schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}}
WITH_STRUCTURED_OUTPUTS = (GPT_OSS, "us.openai.gpt-oss-20b-1:0", "qwen.qwen3-32b-v1:0", "deepseek.v3-v1:0",
                           "google.gemma-3-27b-it", "mistral.mistral-large-3-675b-instruct",
                           "mistral.ministral-3-8b-instruct", "moonshotai.kimi-k2.5", "nvidia.nemotron-nano-12b-v2",
                           "minimax.minimax-m2", "zai.glm-4.7")
WITHOUT_STRUCTURED_OUTPUTS = (NOVA, "amazon.nova-2-lite-v1:0", "meta.llama3-3-70b-instruct-v1:0",
                              "us.meta.llama4-maverick-17b-instruct-v1:0", "deepseek.r1-v1:0",
                              "mistral.mistral-large-2407-v1:0", "mistral.pixtral-large-2502-v1:0",
                              "cohere.command-r-plus-v1:0", "writer.palmyra-x5-v1:0")
"""Converse models with structured outputs and without them (AWS's model cards)."""
NOT_CHAT_MODELS = ("amazon.titan-embed-text-v2:0", "cohere.embed-english-v3", "cohere.embed-v4:0",
                   "amazon.titan-embed-image-v1", "cohere.rerank-v3-5:0", "amazon.nova-canvas-v1:0",
                   "stability.sd3-5-large-v1:0", "amazon.nova-sonic-v1:0")


@cache
def service_model() -> ServiceModel:
    import botocore

    path = Path(botocore.__file__).parent / "data" / "bedrock-runtime" / "2023-09-30" / "service-2.json.gz"
    return ServiceModel(json.loads(gzip.decompress(path.read_bytes())), "bedrock-runtime")


def target(model: str = GPT_OSS, key: str | None = "ABSKkey", pricing: Pricing | None = None) -> Target:
    return Target(id=TargetId(f"bedrock/{model}@us-east-1"), provider="bedrock", provider_type=ProviderType.BEDROCK,
                  model=model, url=URL, region="us-east-1", credential=Secret(key) if key else None,
                  pricing=pricing or Pricing())


def converse(body: dict[str, Any], model: str = GPT_OSS) -> dict[str, Any]:
    upstream = PROVIDER.chat_request(ChatRequest(body), target(model))
    assert upstream.body is not None
    sent: dict[str, Any] = orjson.loads(upstream.body)
    return sent


def assert_valid_request(body: dict[str, Any], model: str) -> None:
    """The body is a `ConverseRequest` as botocore would send it (its blobs are base64 on the wire)."""
    report = ParamValidator().validate({"modelId": model, **body}, service_model().operation_model("Converse").input_shape)
    assert not report.has_errors(), report.generate_report()


def unknown_members(value: Any, shape: Shape, where: str = "") -> Iterator[str]:
    """Members of an answer that its shape in botocore's model does not have (botocore validates input only)."""
    if isinstance(shape, StructureShape) and shape.type_name == "structure" and isinstance(value, dict):
        if shape.name == "Document":
            return
        for name, member in value.items():
            if name not in shape.members:
                yield f"{where}.{name}"
            else:
                yield from unknown_members(member, shape.members[name], f"{where}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from unknown_members(item, shape.member, f"{where}[{i}]")  # type: ignore[attr-defined]


# ---- request ----------------------------------------------------------------------------


def test_the_tool_loop_translates_to_the_golden_converse_body_which_botocore_accepts() -> None:
    request = orjson.loads((GOLDEN / "tool_loop.request.json").read_bytes())
    expected = orjson.loads((GOLDEN / "tool_loop.converse.json").read_bytes())

    upstream = PROVIDER.chat_request(ChatRequest(request), target())

    assert upstream.url == expected["url"]
    assert upstream.body is not None and orjson.loads(upstream.body) == expected["body"]
    assert_valid_request(expected["body"], GPT_OSS)


@pytest.mark.parametrize(("model", "claude"), [
    ("anthropic.claude-sonnet-4-5-20250929-v1:0", True), ("global.anthropic.claude-haiku-4-5-20251001-v1:0", True),
    ("meta.llama3-3-70b-instruct-v1:0", False), (NOVA, False), ("mistral.mistral-large-2407-v1:0", False),
    ("deepseek.r1-v1:0", False), ("mistral.anthropic.claude-x-y/z", False), ("claude-sonnet-4-5", False),
])
def test_claude_goes_through_invoke_model_and_every_other_model_through_converse(model: str, claude: bool) -> None:
    upstream = PROVIDER.chat_request(ChatRequest({"model": "m", "messages": USER_HI}), target(model))

    assert bedrock_claude(model) is claude
    assert upstream.url.rsplit("/", 1)[-1] == ("invoke" if claude else "converse")
    if not claude:
        assert upstream.url == f"{URL}/model/{quote(model, safe=':')}/converse"
        assert upstream.body is not None and orjson.loads(upstream.body) == {
            "messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def test_the_key_is_a_bearer_header_and_a_keyless_target_is_left_to_sigv4() -> None:
    keyed = PROVIDER.chat_request(ChatRequest({"messages": USER_HI}), target(key="ABSKsecret"))
    keyless = PROVIDER.chat_request(ChatRequest({"messages": USER_HI}), target(key=None))

    assert keyed.headers == {"authorization": "Bearer ABSKsecret", "content-type": "application/json",
                             "accept": "application/json"}
    assert "authorization" not in keyless.headers


def test_an_anthropic_clients_request_to_a_converse_model_is_sent_its_canonical_translation() -> None:
    native = NativeBody(NativeDialect.ANTHROPIC_MESSAGES, {"model": "x", "max_tokens": 9, "messages": USER_HI})
    upstream = PROVIDER.chat_request(ChatRequest({"model": "x", "max_tokens": 9, "messages": USER_HI}, native),
                                     target(NOVA))

    assert upstream.body is not None and orjson.loads(upstream.body) == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"maxTokens": 9}}
    assert target(NOVA).dialect is ProviderType.BEDROCK and target("anthropic.claude-x-v1:0").dialect is ProviderType.ANTHROPIC


@pytest.mark.parametrize(("field", "value"), [
    ("n", 2), ("logprobs", True), ("top_logprobs", 2), ("seed", 7), ("presence_penalty", 0.5),
    ("frequency_penalty", 0.1), ("logit_bias", {"50256": -100}), ("top_k", 40), ("audio", {"voice": "alloy"}),
    ("response_format", {"type": "json_object"}), ("temperature", 1.5),
])
def test_what_converse_cannot_say_is_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(BadRequest) as refused:
        converse({"messages": USER_HI, field: value})

    assert refused.value.param == field


@pytest.mark.parametrize(("model", "body", "param"), [
    ("mistral.mixtral-8x7b-instruct-v0:1", {"messages": [{"role": "system", "content": "Be brief."}, *USER_HI]},
     "messages"),
    ("meta.llama3-70b-instruct-v1:0", {"messages": USER_HI, "tools": [WEATHER]}, "tools"),
    ("deepseek.r1-v1:0", {"messages": USER_HI, "tools": [WEATHER]}, "tools"),
    ("meta.llama3-3-70b-instruct-v1:0", {"messages": USER_HI, "tools": [WEATHER],
                                         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     "tool_choice"),
    ("meta.llama3-3-70b-instruct-v1:0", {"messages": [*USER_HI, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], "tools": [WEATHER], "tool_choice": "none"},
     "tool_choice"),
    ("meta.llama3-3-70b-instruct-v1:0", {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     "messages[0].content[0].image_url.url"),
])
def test_what_a_model_family_cannot_take_is_refused_before_it_is_sent(model: str, body: dict[str, Any],
                                                                      param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        converse(body, model)

    assert refused.value.param == param


def test_tool_choice_none_sends_no_tools_and_a_named_tool_goes_to_nova() -> None:
    offered = converse({"messages": USER_HI, "tools": [WEATHER], "tool_choice": "none"})
    named = converse({"messages": USER_HI, "tools": [WEATHER],
                      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, NOVA)

    assert "toolConfig" not in offered
    assert named["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    assert_valid_request(named, NOVA)


@pytest.mark.parametrize(("model", "effort", "fields"), [
    (GPT_OSS, "minimal", {"reasoning_effort": "low"}),
    ("us.amazon.nova-2-lite-v1:0", "medium", {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "medium"}}),
    ("amazon.nova-2-lite-v1:0", "none", {"reasoningConfig": {"type": "disabled"}}),
    ("meta.llama3-3-70b-instruct-v1:0", "high", None),
    ("deepseek.r1-v1:0", "low", None),
])
def test_reasoning_effort_goes_where_the_family_has_a_control_and_nowhere_else(
        model: str, effort: str, fields: dict[str, Any] | None) -> None:
    assert converse({"messages": USER_HI, "reasoning_effort": effort}, model).get("additionalModelRequestFields") == fields


@pytest.mark.parametrize("model", WITHOUT_STRUCTURED_OUTPUTS)
def test_a_response_schema_is_refused_for_a_model_without_structured_outputs(model: str) -> None:
    with pytest.raises(BadRequest) as refused:
        converse({"messages": USER_HI, "response_format": PLACE}, model)

    assert (refused.value.param, refused.value.code) == ("response_format", "unsupported_parameter")
    assert "structured outputs" in str(refused.value)


@pytest.mark.parametrize("model", WITH_STRUCTURED_OUTPUTS)
def test_a_response_schema_goes_to_every_family_with_structured_outputs(model: str) -> None:
    body = converse({"messages": USER_HI, "response_format": PLACE}, model)

    assert body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]["name"] == "place"
    assert_valid_request(body, model)


@pytest.mark.parametrize("model", [GPT_OSS, NOVA])
def test_json_mode_is_refused_for_every_model_as_converse_has_only_json_schema(model: str) -> None:
    with pytest.raises(BadRequest) as refused:
        converse({"messages": USER_HI, "response_format": {"type": "json_object"}}, model)

    assert refused.value.param == "response_format" and "no JSON mode" in str(refused.value)
    assert service_model().shape_for("OutputFormatType").enum == ["json_schema"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", [*NOT_CHAT_MODELS, "us.cohere.embed-v4:0"])
def test_a_chat_request_to_a_model_that_is_not_a_chat_model_is_refused_naming_model(model: str) -> None:
    with pytest.raises(BadRequest) as refused:
        converse({"messages": USER_HI, "seed": 7}, model)

    assert (refused.value.param, refused.value.code) == ("model", "unsupported_operation")
    assert "not a chat model" in str(refused.value)


def test_a_json_schema_response_format_is_bedrocks_structured_output() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = converse({"messages": USER_HI, "response_format": {"type": "json_schema", "json_schema": {
        "name": "place", "schema": schema, "strict": True}}})

    assert body["outputConfig"] == {"textFormat": {"type": "json_schema", "structure": {
        "jsonSchema": {"schema": orjson.dumps(schema).decode(), "name": "place"}}}}
    assert_valid_request(body, GPT_OSS)


def test_a_pdf_becomes_a_named_document_block() -> None:
    body = converse({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "Q3 report (final).v2.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "text", "text": "Summarise."}]}]})

    assert body["messages"][0]["content"][0] == {"document": {"format": "pdf", "name": "Q3 report (final) v2",
                                                              "source": {"bytes": "JVBERi0="}}}
    assert_valid_request(body, GPT_OSS)


def test_a_foreign_tool_call_id_is_made_to_fit_the_same_way_for_the_call_and_its_result() -> None:
    body = converse({"messages": [*USER_HI, {"role": "assistant", "tool_calls": [
        {"id": "call|with spaces|" + "x" * 70, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call|with spaces|" + "x" * 70, "content": "done"}], "tools": [WEATHER]})

    call_id = body["messages"][1]["content"][0]["toolUse"]["toolUseId"]
    assert body["messages"][2]["content"][0]["toolResult"]["toolUseId"] == call_id
    assert_valid_request(body, GPT_OSS)


# ---- answers ----------------------------------------------------------------------------


def test_the_golden_answer_translates_to_the_golden_completion() -> None:
    raw = (GOLDEN / "answer.converse.json").read_bytes()
    expected = orjson.loads((GOLDEN / "answer.openai.json").read_bytes())

    result = PROVIDER.chat_response(raw, ChatRequest({"messages": USER_HI}), target())

    assert result.data.pop("id").startswith("chatcmpl-")
    assert result.data == expected
    assert (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.cache_write_tokens) == (1120, 900, 100)
    assert not list(unknown_members(orjson.loads(raw), service_model().operation_model("Converse").output_shape))


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
    ("model_context_window_exceeded", "length"), ("a_reason_added_later", "stop"),
])
def test_each_stop_reason_is_its_finish_reason(stop_reason: str, finish: str) -> None:
    answer = {"output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}}, "stopReason": stop_reason,
              "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}}

    result = PROVIDER.chat_response(orjson.dumps(answer), ChatRequest({"messages": USER_HI}), target())

    assert result.data["choices"][0]["finish_reason"] == finish


def test_a_malformed_tool_use_is_a_billed_failure_that_fails_over() -> None:
    answer = {"output": {"message": {"role": "assistant", "content": []}}, "stopReason": "malformed_tool_use",
              "usage": {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13}, "metrics": {"latencyMs": 1}}

    with pytest.raises(UpstreamError) as failed:
        PROVIDER.chat_response(orjson.dumps(answer), ChatRequest({"messages": USER_HI}), target())

    assert failed.value.kind is FailureKind.SERVER_ERROR and "malformed_tool_use" in failed.value.message


# ---- streams ----------------------------------------------------------------------------


def frames(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(event_frame(name, event, encode_frame) for name, event in events)


TOOL_STREAM = frames(
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Think."}}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Checking"}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"city\": "}}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
    ("contentBlockStop", {"contentBlockIndex": 2}),
    ("contentBlockStart", {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "tooluse_2", "name": "ping"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": ""}}}),
    ("contentBlockStop", {"contentBlockIndex": 3}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": {"inputTokens": 50, "outputTokens": 20, "totalTokens": 70}, "metrics": {"latencyMs": 400}}),
)


def translate(body: bytes, step: int) -> tuple[list[StreamChunk], Any]:
    translator = PROVIDER.chat_stream(ChatRequest({"messages": USER_HI, "stream": True}), target())
    out: list[StreamChunk] = []
    for at in range(0, len(body), step):
        out.extend(translator.feed(body[at:at + step]))
    out.extend(translator.close())
    return out, translator


@pytest.mark.parametrize("step", [1, 7, 10_000])
def test_a_streamed_tool_call_comes_out_as_openai_deltas_whatever_the_split(step: int) -> None:
    chunks, translator = translate(TOOL_STREAM, step)

    deltas = [c.data["choices"][0]["delta"] for c in chunks if c.data["choices"]]
    calls: dict[int, str] = {}
    for delta in deltas:
        for call in delta.get("tool_calls") or ():
            calls[call["index"]] = calls.get(call["index"], "") + call["function"].get("arguments", "")
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Think."
    assert "".join(d.get("content") or "" for d in deltas) == "Checking"
    assert calls == {0: '{"city": "Paris"}', 1: "{}"}, "a tool without parameters gets {}"
    assert translator.finish_reason == "tool_calls" and translator.finish_reasons == {0: "tool_calls"}
    assert chunks[-1].data["choices"] == [] and chunks[-1].data["usage"]["total_tokens"] == 70
    assert len({c.data["id"] for c in chunks}) == 1


def test_the_simulators_stream_events_are_members_of_botocores_event_shapes() -> None:
    stream_shape = service_model().operation_model("ConverseStream").output_shape.members["stream"]  # type: ignore[attr-defined]
    from llmroute_proxy.dialects.eventstream import EventStreamDecoder

    for frame in EventStreamDecoder().feed(TOOL_STREAM):
        event = {k: v for k, v in orjson.loads(frame.payload).items() if k != "p"}
        shape = stream_shape.members[frame.headers[":event-type"]]
        assert not list(unknown_members(event, shape, frame.headers[":event-type"]))
        assert set(shape.required_members) <= set(event)


def test_an_exception_frame_is_the_failure_its_type_says() -> None:
    body = frames(("messageStart", {"role": "assistant"})) + encode_frame(
        {":exception-type": "throttlingException", ":content-type": "application/json", ":message-type": "exception"},
        b'{"message":"Too many requests, please wait before trying again."}')
    translator = PROVIDER.chat_stream(ChatRequest({"messages": USER_HI, "stream": True}), target())

    with pytest.raises(UpstreamError) as failed:
        translator.feed(body)

    assert failed.value.kind is FailureKind.RATE_LIMITED and failed.value.status == 429


def test_an_exception_frame_after_text_in_the_same_bytes_raises_after_that_text_is_given() -> None:
    body = frames(("messageStart", {"role": "assistant"}),
                  ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}})) + encode_frame(
        {":exception-type": "modelStreamErrorException", ":content-type": "application/json",
         ":message-type": "exception"}, b'{"message":"The model failed."}')
    translator = PROVIDER.chat_stream(ChatRequest({"messages": USER_HI, "stream": True}), target())

    given = translator.feed(body)
    with pytest.raises(UpstreamError) as failed:
        translator.close()

    assert [c.data["choices"][0]["delta"].get("content") for c in given] == ["", "Hel"]
    assert failed.value.kind is FailureKind.SERVER_ERROR and "ModelStreamErrorException" in failed.value.message


def test_a_stream_that_ends_before_message_stop_is_broken() -> None:
    translator = PROVIDER.chat_stream(ChatRequest({"messages": USER_HI, "stream": True}), target())
    translator.feed(frames(("messageStart", {"role": "assistant"}),
                           ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}})))

    with pytest.raises(UpstreamError) as failed:
        translator.close()

    assert failed.value.kind is FailureKind.STREAM_BROKEN


def test_a_converse_validation_exception_is_the_clients_and_a_throttle_a_rate_limit() -> None:
    invalid = PROVIDER.classify_error(400, {"x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/"},
                                      b'{"message":"This model doesn\'t support tool use."}')
    throttled = PROVIDER.classify_error(429, {"x-amzn-ErrorType": "ThrottlingException"}, b'{"message":"slow down"}')

    assert invalid.kind is FailureKind.CLIENT_ERROR and "tool use" in invalid.message
    assert throttled.kind is FailureKind.RATE_LIMITED


def test_tool_calls_in_the_messages_without_tools_declared_are_refused_naming_tools() -> None:
    with pytest.raises(BadRequest) as refused:
        converse({"messages": [*USER_HI, {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]})

    assert refused.value.param == "tools"


def test_a_blank_text_part_is_left_out_and_a_bad_part_is_named_by_its_place() -> None:
    body = converse({"messages": [{"role": "user", "content": [{"type": "text", "text": " "},
                                                               {"type": "text", "text": "hi"}]}]})
    with pytest.raises(BadRequest) as refused:
        converse({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                            {"type": "input_audio", "input_audio": {}}]}]})

    assert body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    assert refused.value.param == "messages[0].content[1].type"


@pytest.mark.parametrize(("asked", "sent"), [
    ("flex", "flex"), ("priority", "priority"), ("scale", "priority"), ("default", "default"), ("auto", None), (None, None),
])
def test_a_service_tier_goes_to_converse_as_its_service_tier_type(asked: str | None, sent: str | None) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **({"service_tier": asked} if asked else {})}
    tiers = {tier: Pricing(1.0, 1.0) for tier in ("default", "flex", "priority")}
    upstream = PROVIDER.chat_request(ChatRequest(body), target(NOVA, pricing=Pricing(1.0, 1.0, service_tiers=tiers)))
    assert upstream.body is not None
    sent_body = orjson.loads(upstream.body)
    assert sent_body.get("serviceTier") == (None if sent is None else {"type": sent})
    assert_valid_request(sent_body, NOVA)


def test_a_tier_the_model_does_not_price_is_not_asked_for() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "service_tier": "flex"}
    upstream = PROVIDER.chat_request(ChatRequest(body), target(NOVA))
    assert upstream.body is not None and "serviceTier" not in orjson.loads(upstream.body)


@pytest.mark.parametrize(("priced", "sent"), [(True, "flex"), (False, None)])
def test_claude_through_invoke_model_is_asked_for_its_tier_in_a_header(priced: bool, sent: str | None) -> None:
    """InvokeModel's body is Anthropic's: the tier goes in `X-Amzn-Bedrock-Service-Tier` (botocore's model),
    and only when the model prices it."""
    claude = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "service_tier": "flex"}
    pricing = Pricing(3.0, 15.0, service_tiers={"flex": Pricing(1.5, 7.5)}) if priced else None
    upstream = PROVIDER.chat_request(ChatRequest(body), target(claude, pricing=pricing))
    assert upstream.body is not None and b"service" not in upstream.body.lower()
    assert upstream.headers.get("x-amzn-bedrock-service-tier") == sent


@pytest.mark.parametrize("stream", [False, True])
def test_the_tier_an_answer_reports_is_read_whole_or_streamed(stream: bool) -> None:
    usage = {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}
    if not stream:
        answer = {"output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}}, "stopReason": "end_turn",
                  "usage": usage, "metrics": {"latencyMs": 10}, "serviceTier": {"type": "flex"}}
        assert not list(unknown_members(answer, service_model().operation_model("Converse").output_shape))
        result = PROVIDER.chat_response(orjson.dumps(answer), ChatRequest({"model": "m", "messages": []}), target(NOVA))
        assert result.usage.service_tier == "flex"
        return
    frames = b"".join(event_frame(name, event, encode_frame) for name, event in (
        ("messageStart", {"role": "assistant"}), ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": usage, "metrics": {"latencyMs": 10}, "serviceTier": {"type": "priority"}})))
    translator = PROVIDER.chat_stream(ChatRequest({"model": "m", "messages": [], "stream": True}), target(NOVA))
    translator.feed(frames)
    translator.close()
    assert translator.usage is not None and translator.usage.service_tier == "priority"
