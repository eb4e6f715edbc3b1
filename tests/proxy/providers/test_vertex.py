"""Vertex AI's addresses and differences over the Gemini and Anthropic providers it delegates to."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.base import ChatRequest, NativeBody, NativeDialect
from llmroute_proxy.errors import BadRequest, FailureKind
from llmroute_proxy.providers.base import TokenCounter
from llmroute_proxy.providers.registry import PROVIDERS, token_counter_for
from llmroute_proxy.table import Pricing, ProviderType, Secret, Target, TargetId

BASE = "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5"
PROVIDER = PROVIDERS[ProviderType.VERTEX]
KEY = Secret('{"type": "service_account", "private_key": "never sent"}')


def target(model: str) -> Target:
    return Target(TargetId(f"vx/{model}@us-east5"), "vx", ProviderType.VERTEX, model, BASE + "/", "us-east5",
                  credential=KEY)


GEMINI, CLAUDE = target("gemini-2.5-pro"), target("claude-sonnet-4-5@20250929")
CHAT = ChatRequest({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "hi"}], "max_tokens": 100})


def body(request: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(request.body)
    return parsed


@pytest.mark.parametrize(("stream", "method"), [(False, "generateContent"), (True, "streamGenerateContent?alt=sse")])
def test_gemini_goes_to_the_google_publisher_with_roles_and_no_key(stream: bool, method: str) -> None:
    request = PROVIDER.chat_request(ChatRequest({**CHAT.body, "stream": stream}), GEMINI)

    assert request.url == f"{BASE}/publishers/google/models/gemini-2.5-pro:{method}"
    assert request.headers == {"content-type": "application/json"}
    sent = body(request)
    assert [content["role"] for content in sent["contents"]] == ["user"] and "systemInstruction" in sent


@pytest.mark.parametrize(("stream", "method"), [(False, "rawPredict"), (True, "streamRawPredict")])
def test_claude_goes_to_the_anthropic_publisher_without_model_and_with_vertex_s_version(stream: bool,
                                                                                     method: str) -> None:
    request = PROVIDER.chat_request(ChatRequest({**CHAT.body, "stream": stream}), CLAUDE)

    assert request.url == f"{BASE}/publishers/anthropic/models/claude-sonnet-4-5@20250929:{method}"
    assert request.headers == {"content-type": "application/json"}
    sent = body(request)
    assert "model" not in sent and sent["anthropic_version"] == "vertex-2023-10-16"
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 100 and "anthropic_beta" not in sent


def test_a_native_messages_request_keeps_its_body_and_carries_its_betas_in_their_header() -> None:
    native = {"model": "alias", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}],
              "context_management": {"edits": []}}
    chat = ChatRequest({"model": "alias", "messages": [{"role": "user", "content": "hi"}]},
                       NativeBody(NativeDialect.ANTHROPIC_MESSAGES, native, betas="context-management-2025-06-27, x"))

    request = PROVIDER.chat_request(chat, CLAUDE)

    assert body(request) == {"max_tokens": 50, "messages": native["messages"], "context_management": {"edits": []},
                             "anthropic_version": "vertex-2023-10-16"}
    assert request.headers["anthropic-beta"] == "context-management-2025-06-27, x"  # as the client wrote it
    assert chat.native is not None and chat.native.spoken_by(CLAUDE) and not chat.native.spoken_by(GEMINI)


def test_counting_uses_each_publisher_s_count_endpoint() -> None:
    counter = token_counter_for(ProviderType.VERTEX)
    assert isinstance(counter, TokenCounter)

    gemini = counter.count_tokens_request(CHAT, GEMINI)
    claude = counter.count_tokens_request(CHAT, CLAUDE)

    assert gemini.url == f"{BASE}/publishers/google/models/gemini-2.5-pro:countTokens"
    assert set(body(gemini)) == {"contents", "systemInstruction"}  # not the Developer API's generateContentRequest
    assert claude.url == f"{BASE}/publishers/anthropic/models/count-tokens:rawPredict"
    assert body(claude)["model"] == "claude-sonnet-4-5@20250929" and "max_tokens" not in body(claude)
    assert counter.counted_tokens(b'{"totalTokens": 7}') == 7 and counter.counted_tokens(b'{"input_tokens": 9}') == 9


def test_embeddings_are_refused_naming_the_model() -> None:
    with pytest.raises(BadRequest) as refused:
        PROVIDER.embeddings_request({"model": "e", "input": "x"}, GEMINI)
    assert refused.value.param == "model" and refused.value.code == "unsupported_operation"


GOOGLE_429 = b'{"error": {"code": 429, "message": "Quota exceeded for aiplatform.googleapis.com", ' \
             b'"status": "RESOURCE_EXHAUSTED"}}'


@pytest.mark.parametrize(("status", "payload", "kind"), [
    (429, GOOGLE_429, FailureKind.RATE_LIMITED),
    (401, b'{"error": {"code": 401, "message": "Request had invalid authentication credentials.", '
          b'"status": "UNAUTHENTICATED"}}', FailureKind.AUTH),
    (403, b'{"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}',
     FailureKind.AUTH),
    (404, b'{"error": {"code": 404, "message": "Publisher Model not found.", "status": "NOT_FOUND"}}',
     FailureKind.TARGET_NOT_FOUND),
    (529, b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
     FailureKind.OVERLOADED),
    (429, b'{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}',
     FailureKind.RATE_LIMITED),
    (400, b'{"type": "error", "error": {"type": "invalid_request_error", "message": "messages: required"}}',
     FailureKind.CLIENT_ERROR),
    (503, b"<html>Service Unavailable</html>", FailureKind.OVERLOADED),
])
def test_google_s_front_end_errors_and_claude_s_own_are_both_classified(status: int, payload: bytes,
                                                                        kind: FailureKind) -> None:
    assert PROVIDER.classify_error(status, {}, payload).kind is kind


def test_google_s_front_end_errors_name_vertex_ai_not_gemini() -> None:
    """The 429 may be about Claude: it comes from Vertex AI's front end, whichever publisher was asked."""
    error = PROVIDER.classify_error(429, {}, GOOGLE_429)
    assert error.message.startswith("Vertex AI 429 RESOURCE_EXHAUSTED") and "Gemini" not in error.message
    assert error.kind is FailureKind.RATE_LIMITED


def test_a_vertex_target_speaks_its_model_s_publisher_s_dialect() -> None:
    assert CLAUDE.dialect is ProviderType.ANTHROPIC and GEMINI.dialect is ProviderType.GEMINI


GLOBAL = "https://aiplatform.googleapis.com/v1/projects/p/locations/global"


@pytest.mark.parametrize(("model", "url", "asked", "sent"), [
    ("gemini-2.5-pro", GLOBAL, "priority", "priority"),
    ("gemini-2.5-pro", GLOBAL, "scale", "priority"),
    ("gemini-2.5-pro", GLOBAL, "flex", "flex"),
    ("gemini-2.5-pro", GLOBAL, "default", None),  # the standard tier: no header
    ("gemini-2.5-pro", GLOBAL, None, None),
    ("gemini-2.5-pro", BASE, "priority", None),  # Vertex serves Flex and Priority on the global endpoint only
    ("claude-sonnet-4-5@20250929", GLOBAL, "priority", None),  # a Gemini PayGo option, not Claude's
])
def test_flex_and_priority_paygo_are_asked_for_by_header_where_vertex_serves_them(
        model: str, url: str, asked: str | None, sent: str | None) -> None:
    where = Target(TargetId(f"vx/{model}@g"), "vx", ProviderType.VERTEX, model, url, "g", credential=KEY,
                   pricing=Pricing(1.25, 10.0, service_tiers={"flex": Pricing(0.6, 5.0), "priority": Pricing(2.2, 18.0)}))
    request = PROVIDER.chat_request(ChatRequest({**CHAT.body, **({"service_tier": asked} if asked else {})}), where)

    assert request.headers.get("x-vertex-ai-llm-shared-request-type") == sent
    assert request.body is not None and b"serviceTier" not in request.body  # the Gemini API's field, not Vertex's


@pytest.mark.parametrize(("traffic", "tier"), [
    ("ON_DEMAND", "standard"), ("ON_DEMAND_PRIORITY", "priority"), ("ON_DEMAND_FLEX", "flex"),
    ("PROVISIONED_THROUGHPUT", None), (None, None),
])
def test_the_tier_a_gemini_answer_reports_as_its_traffic_type_is_read(traffic: str | None, tier: str | None) -> None:
    usage = {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4,
             **({"trafficType": traffic} if traffic else {})}
    answer = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP"}],
              "usageMetadata": usage}

    assert PROVIDER.chat_response(orjson.dumps(answer), CHAT, GEMINI).usage.service_tier == tier


def test_a_paygo_tier_the_model_does_not_price_is_not_asked_for() -> None:
    where = Target(TargetId("vx/gemini-2.5-pro@g"), "vx", ProviderType.VERTEX, "gemini-2.5-pro", GLOBAL, "g",
                   credential=KEY)
    request = PROVIDER.chat_request(ChatRequest({**CHAT.body, "service_tier": "priority"}), where)
    assert "x-vertex-ai-llm-shared-request-type" not in request.headers
