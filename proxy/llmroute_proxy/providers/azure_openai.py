"""Azure OpenAI: OpenAI's wire format behind Azure's URLs, key header and content filters.

Only the addressing differs from OpenAI (providers.md §4.1), so bodies, error classification
and stream translation are the OpenAI module's. A target's `url` is either the resource endpoint
(`https://{resource}.openai.azure.com`: the classic form, deployment in the path, dated
`api-version`) or a v1 base URL (`…/openai/v1`: the deployment goes in the body's `model`).
Azure adds content-filter chunks to streams that carry nothing for the client; they are dropped.
A request that came in on `/v1/responses` goes to Azure's own Responses API, always in the v1 form
(`{resource}/openai/v1/responses`, the deployment in `model`), which needs no dated api-version.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote, urlsplit

from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
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

DEFAULT_API_VERSION = "2024-10-21"
FIRST_VERSION_WITH_STREAM_USAGE = "2024-09-01"  # older dated versions reject `stream_options`


class AzureURLs(NamedTuple):
    chat: str
    embeddings: str
    responses: str


@lru_cache(maxsize=1024)
def azure_urls(url: str, deployment: str, api_version: str | None) -> AzureURLs:
    """Both URL forms; `api_version` None means the default (and none at all in the v1 form).

    An undated version (`v1`, `preview`, `latest`) selects the v1 form even when the url is
    the resource endpoint; `preview`/`latest` travel as its api-version, `v1` needs none.
    """
    base = url.rstrip("/")
    undated = api_version is not None and not api_version[:1].isdigit()
    in_v1 = "/openai/v1" in urlsplit(base).path
    v1 = base if in_v1 else base.removesuffix("/openai") + "/openai/v1"
    if undated or in_v1:
        query = f"?api-version={quote(api_version, safe='')}" if api_version and api_version != "v1" else ""
        return AzureURLs(f"{v1}/chat/completions{query}", f"{v1}/embeddings{query}", f"{v1}/responses{query}")
    responses = f"{v1}/responses"  # a dated api-version is for the classic paths only
    base = base.removesuffix("/openai")
    prefix = f"{base}/openai/deployments/{quote(deployment, safe='')}"
    query = f"?api-version={quote(api_version or DEFAULT_API_VERSION, safe='')}"
    return AzureURLs(f"{prefix}/chat/completions{query}", f"{prefix}/embeddings{query}", responses)


def target_urls(target: Target) -> AzureURLs:
    return azure_urls(target.url, target.model, target.options.get("api_version"))


def streams_usage(target: Target) -> bool:
    """Whether the target's api-version accepts `stream_options` (dated versions from 2024-09-01,
    and the undated v1/preview/latest)."""
    version = target.options.get("api_version")
    return version is None or not version[:1].isdigit() or version >= FIRST_VERSION_WITH_STREAM_USAGE


def api_key_headers(credential: Secret | None) -> dict[str, str]:
    if credential:
        return {"Content-Type": "application/json", "api-key": credential.reveal()}
    return {"Content-Type": "application/json"}


class AzureStreamTranslator(OpenAIStreamTranslator):
    """Drops the prompt-filter chunk (`choices: []`) and filter annotations (choices without delta)."""

    __slots__ = ()

    drops_annotations: ClassVar[bool] = True


class AzureOpenAIProvider:
    type: ClassVar[str] = ProviderType.AZURE_OPENAI.value

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        native = responses_body(request, target)
        if native is not None:
            return responses_request(target_urls(target).responses, api_key_headers(target.credential),
                                     native, target)
        return UpstreamRequest("POST", target_urls(target).chat, api_key_headers(target.credential),
                               chat_body(request.without_thinking_blocks(), target.model,
                                         stream_usage=streams_usage(target)))

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        return read_answer(body, request, target)

    def chat_stream(self, request: ChatRequest, target: Target) -> StreamTranslator:
        if responses_body(request, target) is not None:
            return ResponsesEventTranslator(target.model)
        return AzureStreamTranslator()

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return UpstreamRequest("POST", target_urls(target).embeddings, api_key_headers(target.credential),
                               embeddings_body(body, target.model))

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        return parse_embeddings(body)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return classify_openai_error(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        """Azure sends OpenAI's names, often only `remaining` and without resets (providers.md §1.6)."""
        return openai_rate_limits(headers, seen_wall)

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        collection, _, query = target_urls(target).responses.partition("?")
        url = f"{collection}/{quote(response_id, safe='')}"
        if input_items is not None:
            url += "/input_items"
            query = "&".join(part for part in (query, input_items) if part)
        return UpstreamRequest(method, url + (f"?{query}" if query else ""), api_key_headers(target.credential))
