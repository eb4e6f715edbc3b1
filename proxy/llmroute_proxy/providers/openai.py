"""OpenAI Chat Completions, and the servers that copy its API (vLLM, Ollama, Groq, Together, Mistral…).

The addressing and the key; the wire format is the OpenAI dialect's (`dialects/openai`), which
Azure OpenAI speaks too. A request that came in on `/v1/responses` goes to OpenAI's own
`/responses` as the client sent it (only `model` replaced), and its answer is read back by the
OpenAI dialect (`dialects/openai/responses.py`) and relayed; OpenAI-compatible servers get the
canonical chat request instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    NativeDialect,
    RateLimits,
    StreamTranslator,
    UpstreamRequest,
    Usage,
)
from llmroute_proxy.dialects.openai.chat import (
    OpenAIStreamTranslator,
    chat_body,
    embeddings_body,
    parse_embeddings,
)
from llmroute_proxy.dialects.openai.errors import classify_openai_error
from llmroute_proxy.dialects.openai.ratelimits import rate_limits as openai_rate_limits
from llmroute_proxy.dialects.openai.responses import (
    ResponsesEventTranslator,
    read_answer,
    responses_body,
    responses_request,
)
from llmroute_proxy.errors import UpstreamError
from llmroute_proxy.table import ProviderType, Secret, Target


def bearer_headers(credential: Secret | None) -> dict[str, str]:
    """Nothing from the client's headers is forwarded; servers such as Ollama need no key at all."""
    if credential:
        return {"Content-Type": "application/json", "Authorization": "Bearer " + credential.reveal()}
    return {"Content-Type": "application/json"}


# --- providers ------------------------------------------------------------------------------------


class OpenAIProvider:
    type: ClassVar[str] = ProviderType.OPENAI.value
    tolerant: ClassVar[bool] = False

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        native = responses_body(request, target)
        if native is not None:
            return responses_request(target.url.rstrip("/") + "/responses", bearer_headers(target.credential),
                                     native, target)
        return UpstreamRequest("POST", target.url.rstrip("/") + "/chat/completions",
                               bearer_headers(target.credential), chat_body(request.without_thinking_blocks(), target.model))

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        return read_answer(body, request, target)

    def chat_stream(self, request: ChatRequest, target: Target) -> StreamTranslator:
        if responses_body(request, target) is not None:
            return ResponsesEventTranslator(target.model)
        return OpenAIStreamTranslator(self.tolerant)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return UpstreamRequest("POST", target.url.rstrip("/") + "/embeddings",
                               bearer_headers(target.credential), embeddings_body(body, target.model))

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        return parse_embeddings(body)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return classify_openai_error(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        return openai_rate_limits(headers, seen_wall)

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        if target.provider_type not in NativeDialect.OPENAI_RESPONSES.speakers:
            return None  # OpenAI-compatible servers: whether they keep Responses is theirs to say, not ours
        url = f"{target.url.rstrip('/')}/responses/{quote(response_id, safe='')}"
        if input_items is not None:
            url += "/input_items" + (f"?{input_items}" if input_items else "")
        return UpstreamRequest(method, url, bearer_headers(target.credential))


class OpenAICompatibleProvider(OpenAIProvider):
    """vLLM, Ollama, Groq, Together, Mistral…: OpenAI's API with looser stream endings."""

    type: ClassVar[str] = ProviderType.OPENAI_COMPATIBLE.value
    tolerant: ClassVar[bool] = True
