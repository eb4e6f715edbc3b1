"""Azure OpenAI: both URL forms, the api-key header, content filters in errors and streams."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.base import ChatRequest, StreamChunk, Usage
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.azure_openai import AzureOpenAIProvider
from llmroute_proxy.providers.base import Provider
from llmroute_proxy.scrubbing import Scrubber
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

GOLDEN = Path(__file__).parent / "golden" / "azure_openai"
KEY = "0123456789abcdef0123456789abcdef"
# typed as `Provider` so that mypy checks the class against the protocol
AZURE: Provider = AzureOpenAIProvider()


def make_target(url: str = "https://contoso.openai.azure.com", deployment: str = "gpt-4o-prod",
                options: Mapping[str, str] | None = None, key: str | None = KEY) -> Target:
    return Target(id=TargetId(f"azure/{deployment}@eastus"), provider="azure",
                  provider_type=ProviderType.AZURE_OPENAI, model=deployment, url=url, region="eastus",
                  credential=Secret(key) if key is not None else None, options=options or {})


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def translate(pieces: list[bytes]) -> tuple[list[StreamChunk], Any]:
    translator = AZURE.chat_stream(ChatRequest({"stream": True}), make_target())
    out: list[StreamChunk] = []
    for piece in pieces:
        out.extend(translator.feed(piece))
    out.extend(translator.close())
    return out, translator


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*_request*.json")))
def test_requests_are_built_exactly_as_the_golden_file_says(name: str) -> None:
    case = golden(name)
    spec = case["target"]
    target = make_target(spec["url"], spec["model"], spec["options"], spec["key"])
    if name.startswith("embeddings"):
        built = AZURE.embeddings_request(case["request"], target)
    else:
        built = AZURE.chat_request(ChatRequest(case["request"]), target)
    expected = case["expected"]
    assert (built.method, built.url, built.headers) == (expected["method"], expected["url"], expected["headers"])
    assert built.body is not None
    assert orjson.loads(built.body) == expected["body"]


CHAT_URLS = [
    ("https://contoso.openai.azure.com", {}, "gpt-4o-prod",
     "https://contoso.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"),
    ("https://contoso.openai.azure.com/", {"api_version": "2025-01-01-preview"}, "gpt-4o-prod",
     "https://contoso.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions"
     "?api-version=2025-01-01-preview"),
    ("https://contoso.openai.azure.com/openai", {}, "gpt-4o-prod",
     "https://contoso.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"),
    ("https://contoso.openai.azure.com", {"api_version": "2024-06-01"}, "gpt 4o/eu",
     "https://contoso.openai.azure.com/openai/deployments/gpt%204o%2Feu/chat/completions?api-version=2024-06-01"),
    ("https://contoso.openai.azure.com/openai/v1", {}, "gpt-4o-prod",
     "https://contoso.openai.azure.com/openai/v1/chat/completions"),
    ("https://contoso.openai.azure.com/openai/v1/", {"api_version": "preview"}, "gpt-4o-prod",
     "https://contoso.openai.azure.com/openai/v1/chat/completions?api-version=preview"),
    ("https://contoso.services.ai.azure.com/openai/v1/", {}, "gpt-4o-prod",
     "https://contoso.services.ai.azure.com/openai/v1/chat/completions"),
]


@pytest.mark.parametrize(("url", "options", "deployment", "expected"), CHAT_URLS)
def test_chat_urls_follow_the_classic_or_the_v1_form(url: str, options: dict[str, str], deployment: str,
                                                     expected: str) -> None:
    built = AZURE.chat_request(ChatRequest({"model": "auto", "messages": []}), make_target(url, deployment, options))
    assert built.url == expected
    assert built.body is not None
    assert orjson.loads(built.body)["model"] == deployment


@pytest.mark.parametrize(("url", "expected"), [
    ("https://contoso.openai.azure.com",
     "https://contoso.openai.azure.com/openai/deployments/embed-small/embeddings?api-version=2024-10-21"),
    ("https://contoso.openai.azure.com/openai/v1/", "https://contoso.openai.azure.com/openai/v1/embeddings"),
])
def test_embedding_urls_follow_the_same_forms(url: str, expected: str) -> None:
    built = AZURE.embeddings_request({"model": "e", "input": "x"}, make_target(url, "embed-small"))
    assert built.url == expected


def test_the_key_goes_in_the_api_key_header_and_nowhere_else() -> None:
    built = AZURE.chat_request(ChatRequest({"model": "m", "messages": [], "stream": True}), make_target())
    assert built.headers["api-key"] == KEY
    assert "Authorization" not in built.headers
    assert KEY not in built.url and KEY not in repr(built.body)


def test_a_target_without_credential_sends_no_api_key() -> None:
    built = AZURE.chat_request(ChatRequest({"model": "m", "messages": []}), make_target(key=None))
    assert "api-key" not in built.headers


def test_the_provider_declares_its_registry_type() -> None:
    assert ProviderType(AzureOpenAIProvider.type) is ProviderType.AZURE_OPENAI


def test_a_response_with_filter_results_is_forwarded_raw_with_its_usage() -> None:
    body = (GOLDEN / "chat_response_with_filter_results.json").read_bytes()
    result = AZURE.chat_response(body, ChatRequest({}), make_target())
    assert result.raw is body
    assert result.usage == Usage(input_tokens=14, output_tokens=2)


STREAM = (GOLDEN / "stream_with_filter_chunks.sse").read_bytes()


def test_filter_chunks_are_dropped_and_the_stream_ends_with_its_usage_chunk() -> None:
    chunks, translator = translate([STREAM])
    assert [chunk.data["id"] for chunk in chunks] == ["chatcmpl-az1"] * 5
    assert "".join(c.data["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "Hello world"
    assert chunks[-1].data["choices"] == [] and chunks[-1].data["usage"]["total_tokens"] == 16
    assert all(chunk.raw is not None and orjson.loads(chunk.raw) == chunk.data for chunk in chunks)
    assert translator.usage == Usage(input_tokens=14, output_tokens=2)
    assert translator.finish_reason == "stop"


@pytest.mark.parametrize("step", [1, 3, 64])
def test_the_azure_stream_translates_identically_in_any_split(step: int) -> None:
    reference, _ = translate([STREAM])
    crlf = STREAM.replace(b"\n", b"\r\n")
    for body in (STREAM, crlf):
        chunks, _ = translate([body[i:i + step] for i in range(0, len(body), step)])
        assert [(c.data, c.raw) for c in chunks] == [(c.data, c.raw) for c in reference]


def test_an_azure_stream_cut_before_done_is_broken() -> None:
    with pytest.raises(UpstreamError) as caught:
        translate([STREAM[:STREAM.index(b"data: [DONE]")]])
    assert caught.value.kind is FailureKind.STREAM_BROKEN


def test_a_content_filter_400_is_returned_to_the_client_with_code_content_filter() -> None:
    body = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                      "management policy. Please modify your prompt and retry.", "type": None, "param": "prompt",
                      "code": "content_filter", "status": 400,
                      "innererror": {"code": "ResponsibleAIPolicyViolation",
                                     "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}}}}
    error = AZURE.classify_error(400, {}, orjson.dumps(body))
    assert (error.kind, error.code, error.param, error.client_status) == (
        FailureKind.CONTENT_FILTER, "content_filter", "prompt", 400)
    assert not error.kind.fails_over


def test_a_429_honours_retry_after_ms() -> None:
    body = {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI "
                      "API version 2024-10-21 have exceeded call rate limit of your current OpenAI S0 pricing tier. "
                      "Please retry after 1 second."}}
    error = AZURE.classify_error(429, {"retry-after": "1", "retry-after-ms": "750"}, orjson.dumps(body))
    assert (error.kind, error.retry_after) == (FailureKind.RATE_LIMITED, 0.75)


def test_a_missing_deployment_ejects_the_target() -> None:
    body = {"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}}
    error = AZURE.classify_error(404, {}, orjson.dumps(body))
    assert error.kind is FailureKind.TARGET_NOT_FOUND and error.kind.ejects_for_long


def test_a_rejected_key_is_auth_and_the_key_is_not_in_the_message() -> None:
    """Every upstream error passes the sidecar's scrubber; one that holds no key at all masks the
    opaque key of a credential failure still."""
    body = {"error": {"code": "401", "message": f"Access denied due to invalid subscription key {KEY}."}}
    error = Scrubber().error(AZURE.classify_error(401, {}, orjson.dumps(body)))
    assert error.kind is FailureKind.AUTH
    assert KEY not in error.message


@pytest.mark.parametrize(("api_version", "asks_usage"), [
    ("2024-06-01", False), ("2024-08-01-preview", False), ("2024-09-01-preview", True), ("2024-10-21", True),
    ("preview", True), (None, True),
])
def test_streams_ask_for_usage_only_where_the_api_version_accepts_stream_options(
        api_version: str | None, asks_usage: bool) -> None:
    target = Target(TargetId("az/gpt@eu"), "az", ProviderType.AZURE_OPENAI, "gpt", "https://r.openai.azure.com",
                    "eu", Secret("k"), options={"api_version": api_version} if api_version else {})
    request = ChatRequest({"model": "x", "messages": [], "stream": True, "stream_options": {"include_usage": True}})
    body = orjson.loads(AzureOpenAIProvider().chat_request(request, target).body or b"{}")
    assert ("stream_options" in body) is asks_usage


@pytest.mark.parametrize(("url", "api_version", "chat_url"), [
    ("https://r.openai.azure.com", "v1", "https://r.openai.azure.com/openai/v1/chat/completions"),
    ("https://r.openai.azure.com", "preview", "https://r.openai.azure.com/openai/v1/chat/completions?api-version=preview"),
    ("https://r.openai.azure.com/openai/v1", "v1", "https://r.openai.azure.com/openai/v1/chat/completions"),
    ("https://r.openai.azure.com", "2024-10-21",
     "https://r.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21"),
])
def test_an_undated_api_version_selects_the_v1_form(url: str, api_version: str, chat_url: str) -> None:
    target = Target(TargetId("az/gpt@eu"), "az", ProviderType.AZURE_OPENAI, "gpt", url, "eu", Secret("k"),
                    options={"api_version": api_version})
    request = ChatRequest({"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert AzureOpenAIProvider().chat_request(request, target).url == chat_url


def test_claudes_thinking_blocks_are_not_sent_to_azure() -> None:
    step = {"role": "assistant", "content": "Looking.", "thinking_blocks": [{"type": "redacted_thinking", "data": "E"}]}
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}, step, {"role": "user", "content": "go"}]}
    sent = orjson.loads(AZURE.chat_request(ChatRequest(body), make_target()).body or b"")
    assert sent["messages"][1] == {"role": "assistant", "content": "Looking."}
