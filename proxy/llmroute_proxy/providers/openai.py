"""OpenAI Chat Completions, and the servers that copy its API (vLLM, Ollama, Groq, Together, Mistral…).

OpenAI in → OpenAI out is the sidecar's common case, so this module stays a near pass-through:
a request is the client's body with `model` swapped (one shallow copy, one `orjson.dumps`), a
response is parsed once and forwarded as the upstream's own bytes, and a stream chunk costs one
`orjson.loads` and a few dict lookups. Azure OpenAI speaks the same wire format and reuses the
body builders, the stream translator and the error classifier defined here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.base import ChatRequest, ChatResult, StreamChunk, UpstreamRequest, Usage
from llmroute_proxy.providers.common import body_excerpt, loads_object, retry_after_seconds
from llmroute_proxy.providers.sse import SSEParser
from llmroute_proxy.table import ProviderType, Secret, Target

# --- requests -------------------------------------------------------------------------------------


def chat_body(request: ChatRequest, model: str, stream_usage: bool = True) -> bytes:
    """The client's body aimed at `model`.

    A stream always asks for usage: billing and budgets need it, and the server hides the
    usage chunk from a client that did not ask for it. An upstream that rejects
    `stream_options` (`stream_usage=False`) gets none, and its streams go unmetered.
    """
    body = {**request.body, "model": model}
    if request.stream and not stream_usage:
        body.pop("stream_options", None)
    elif request.stream:
        options = body.get("stream_options")
        body["stream_options"] = (
            {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        )
    return orjson.dumps(body)


def embeddings_body(body: Mapping[str, Any], model: str) -> bytes:
    return orjson.dumps({**body, "model": model})


def bearer_headers(credential: Secret | None) -> dict[str, str]:
    """Nothing from the client's headers is forwarded; servers such as Ollama need no key at all."""
    if credential:
        return {"Content-Type": "application/json", "Authorization": "Bearer " + credential.reveal()}
    return {"Content-Type": "application/json"}


# --- responses ------------------------------------------------------------------------------------


def parse_chat_completion(body: bytes) -> ChatResult:
    """Keep the upstream's bytes as `raw` so the server forwards them without re-encoding."""
    data = _loads_or_none(body)
    if isinstance(data, dict):
        if isinstance(data.get("choices"), list):
            return ChatResult(data, Usage.from_openai(_usage_object(data.get("usage"))), raw=body)
        if data.get("error") is not None:
            raise in_band_error(data["error"])
    raise _not_a("chat completion", body)


def parse_embeddings(body: bytes) -> tuple[dict[str, Any], Usage]:
    data = _loads_or_none(body)
    if isinstance(data, dict):
        if isinstance(data.get("data"), list):
            return data, Usage.from_openai(_usage_object(data.get("usage")))
        if data.get("error") is not None:
            raise in_band_error(data["error"])
    raise _not_a("list of embeddings", body)


def _loads_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _usage_object(usage: Any) -> Mapping[str, Any] | None:
    return usage if isinstance(usage, dict) else None


def _not_a(what: str, body: bytes) -> UpstreamError:
    excerpt = body_excerpt(body) if body else "an empty body"
    return UpstreamError(FailureKind.SERVER_ERROR,
                         f"The upstream answered 200 with something that is not a {what}: {excerpt}",
                         status=200)


# --- streams --------------------------------------------------------------------------------------

_DONE = b"[DONE]"
_USAGE_CHUNK_FIELDS = ("id", "object", "created", "model", "system_fingerprint", "service_tier")


class OpenAIStreamTranslator:
    """OpenAI SSE in, the same chunks out, each with its original bytes when left unchanged.

    The only rewriting: `usage` that a compatible server puts on a chunk with choices moves to a
    separate usage chunk, so the output ends with exactly one usage chunk like OpenAI's own.
    `tolerant` (compatible servers) accepts a stream that stops without `[DONE]` right after a
    finish chunk; OpenAI itself always sends `[DONE]`, so without it the stream was cut.
    """

    __slots__ = ("_done", "_ended", "_parser", "_pending_usage", "_tolerant", "finish_reason", "usage")

    drops_annotations: ClassVar[bool] = False
    """Whether to drop chunks whose choices carry neither a delta nor a finish (Azure filter notes)."""

    def __init__(self, tolerant: bool = False) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._tolerant = tolerant
        self._parser = SSEParser()
        self._done = False
        self._ended = False
        self._pending_usage: StreamChunk | None = None

    def feed(self, data: bytes) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        single = self._parser.single_data(data)
        events = [(None, single)] if single is not None else self._parser.feed(data)
        for event, payload in events:
            try:
                self._take(event, payload, out)
            except orjson.JSONDecodeError:
                raise UpstreamError(
                    FailureKind.SERVER_ERROR,
                    f"The upstream sent a stream event that is not JSON: {_excerpt(payload)}") from None
        return out

    def close(self) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        for event, payload in self._parser.close():
            try:
                self._take(event, payload, out)
            except orjson.JSONDecodeError:
                raise UpstreamError(FailureKind.STREAM_BROKEN,
                                    "The upstream stream ended in the middle of an event") from None
        if not self._done:
            if not (self._tolerant and self._ended):
                where = "after its finish chunk" if self._ended else "before its finish chunk"
                raise UpstreamError(FailureKind.STREAM_BROKEN,
                                    f"The upstream stream ended without [DONE], {where}")
            self._end(out)
        return out

    def _take(self, event: str | None, payload: bytes, out: list[StreamChunk]) -> None:
        if self._done or not payload:
            return
        if payload == _DONE:
            self._end(out)
            return
        chunk = orjson.loads(payload)
        if type(chunk) is not dict:
            raise UpstreamError(FailureKind.SERVER_ERROR,
                                f"The upstream sent a stream event that is not an object: {_excerpt(payload)}")
        error = chunk.get("error")
        if error is not None:
            raise in_band_error(error)
        if event == "error":
            raise in_band_error(chunk)
        choices = chunk.get("choices")
        if choices:
            self._take_choices(chunk, choices, payload, out)
            return
        usage = chunk.get("usage")
        if type(usage) is dict:
            self.usage = Usage.from_openai(usage)
            self._pending_usage = StreamChunk(chunk, payload)
        # else: an empty-choices chunk without usage (Azure's prompt filter results): nothing to show

    def _take_choices(self, chunk: dict[str, Any], choices: list[Any], payload: bytes,
                      out: list[StreamChunk]) -> None:
        raw: bytes | None = payload
        usage = chunk.get("usage")
        if usage is not None:
            del chunk["usage"]
            raw = None
            if type(usage) is dict:
                self.usage = Usage.from_openai(usage)
                self._pending_usage = StreamChunk(_usage_chunk_like(chunk, usage))
        if self.drops_annotations and not any(c.get("delta") or c.get("finish_reason") for c in choices):
            return
        ended = False
        for choice in choices:
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = reason
                ended = True
        self._ended = ended
        out.append(StreamChunk(chunk, raw))

    def _end(self, out: list[StreamChunk]) -> None:
        self._done = True
        if self._pending_usage is not None:
            out.append(self._pending_usage)
            self._pending_usage = None


def _usage_chunk_like(chunk: Mapping[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    out = {name: chunk[name] for name in _USAGE_CHUNK_FIELDS if name in chunk}
    out["choices"] = []
    out["usage"] = usage
    return out


def _excerpt(payload: bytes) -> str:
    return body_excerpt(payload, 200)


# --- errors ---------------------------------------------------------------------------------------

_STATUS_KINDS = {
    401: FailureKind.AUTH,
    402: FailureKind.QUOTA_EXHAUSTED,
    403: FailureKind.AUTH,
    404: FailureKind.TARGET_NOT_FOUND,
    408: FailureKind.TIMEOUT,
    409: FailureKind.SERVER_ERROR,
    503: FailureKind.OVERLOADED,
    504: FailureKind.TIMEOUT,
    529: FailureKind.OVERLOADED,
}
_CONTEXT_CODES = frozenset({"context_length_exceeded"})
_CONTEXT_MARKERS = ("maximum context length", "context_length_exceeded", "context length exceeded")
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation", "invalid_prompt"})
_FILTER_INNER_CODES = frozenset({"ResponsibleAIPolicyViolation"})
_NOT_FOUND_CODES = frozenset({"model_not_found", "DeploymentNotFound"})
_QUOTA_CODES = frozenset({"insufficient_quota"})
_REQUEST_KINDS = frozenset({FailureKind.CLIENT_ERROR, FailureKind.CONTENT_FILTER, FailureKind.CONTEXT_LENGTH})
_HINTED_KINDS = frozenset({FailureKind.RATE_LIMITED, FailureKind.QUOTA_EXHAUSTED, FailureKind.OVERLOADED,
                           FailureKind.SERVER_ERROR, FailureKind.TIMEOUT})

# the HTTP status an error object inside a 200 answer stands for, by its `code` or `type`
_IN_BAND_STATUS = {
    "invalid_request_error": 400, "context_length_exceeded": 400, "content_filter": 400,
    "content_policy_violation": 400, "authentication_error": 401, "invalid_api_key": 401,
    "permission_error": 403, "not_found_error": 404, "model_not_found": 404,
    "rate_limit_error": 429, "rate_limit_exceeded": 429, "insufficient_quota": 429, "tokens": 429,
    "requests": 429, "server_error": 500, "api_error": 500, "internal_error": 500,
    "overloaded_error": 503, "service_unavailable": 503, "timeout": 504, "timeout_error": 504,
}


def classify_openai_error(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
    """Classify a non-2xx OpenAI-style answer (providers.md §6.2); HTML from an edge classifies by status."""
    payload = loads_object(body)
    if payload is None:
        message = f"HTTP {status}: {body_excerpt(body)}" if body.strip() else f"HTTP {status} with an empty body"
        return _classified(status, headers, {}, message)
    error = _error_object(payload.get("error", payload))
    found = error.get("message") or payload.get("message") or payload.get("detail")
    message = found if isinstance(found, str) else f"HTTP {status}: {body_excerpt(body)}"
    return _classified(status, headers, error, message)


def in_band_error(error: Any) -> UpstreamError:
    """An error object inside a 200 answer or a stream, classified as the HTTP error it stands for."""
    fields = _error_object(error)
    message = fields.get("message")
    if not isinstance(message, str) or not message:
        message = "The upstream reported an error: " + orjson.dumps(error).decode()[:300]
    return _classified(_in_band_status(fields), {}, fields, message)


def _error_object(error: Any) -> dict[str, Any]:
    if isinstance(error, dict):
        return error
    return {"message": error} if isinstance(error, str) else {}


def _in_band_status(error: Mapping[str, Any]) -> int:
    for value in (error.get("status"), error.get("code")):
        number = _as_status(value)
        if number is not None:
            return number
    for value in (error.get("code"), error.get("type")):
        if isinstance(value, str) and value in _IN_BAND_STATUS:
            return _IN_BAND_STATUS[value]
    return 500


def _as_status(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
        return value
    return None


def _classified(status: int, headers: Mapping[str, str], error: Mapping[str, Any], message: str) -> UpstreamError:
    code = _text(error.get("code"))
    error_type = _text(error.get("type"))
    kind = _failure_kind(status, code, error_type, message, error)
    if kind in _REQUEST_KINDS:
        if kind is FailureKind.CONTENT_FILTER and code is None:
            code = "content_filter"
        return UpstreamError(kind, message, status=status, error_type=error_type or "invalid_request_error",
                             code=code, param=_text(error.get("param")))
    retry_after = retry_after_seconds(headers) if kind in _HINTED_KINDS and headers else None
    return UpstreamError(kind, message, status=status, retry_after=retry_after,
                         error_type=error_type or "api_error", code=code)


def _failure_kind(status: int, code: str | None, error_type: str | None, message: str,
                  error: Mapping[str, Any]) -> FailureKind:
    if status == 429:
        quota = code in _QUOTA_CODES or error_type in _QUOTA_CODES
        return FailureKind.QUOTA_EXHAUSTED if quota else FailureKind.RATE_LIMITED
    if 400 <= status < 500:
        return _STATUS_KINDS.get(status) or _request_failure_kind(code, error_type, message, error)
    if status >= 500 and code == "429":
        return FailureKind.RATE_LIMITED
    return _STATUS_KINDS.get(status, FailureKind.SERVER_ERROR)


def _request_failure_kind(code: str | None, error_type: str | None, message: str,
                          error: Mapping[str, Any]) -> FailureKind:
    if code in _CONTEXT_CODES or error_type in _CONTEXT_CODES:
        return FailureKind.CONTEXT_LENGTH
    if code in _FILTER_CODES or _inner_code(error) in _FILTER_INNER_CODES:
        return FailureKind.CONTENT_FILTER
    if code in _NOT_FOUND_CODES:
        return FailureKind.TARGET_NOT_FOUND
    lowered = message.lower()
    if any(marker in lowered for marker in _CONTEXT_MARKERS):
        return FailureKind.CONTEXT_LENGTH
    return FailureKind.CLIENT_ERROR


def _inner_code(error: Mapping[str, Any]) -> str | None:
    inner = error.get("innererror")
    return _text(inner.get("code")) if isinstance(inner, dict) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# --- providers ------------------------------------------------------------------------------------


class OpenAIProvider:
    type: ClassVar[str] = ProviderType.OPENAI.value
    tolerant: ClassVar[bool] = False

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        return UpstreamRequest("POST", target.url.rstrip("/") + "/chat/completions",
                               bearer_headers(target.credential), chat_body(request, target.model))

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        return parse_chat_completion(body)

    def chat_stream(self, request: ChatRequest, target: Target) -> OpenAIStreamTranslator:
        return OpenAIStreamTranslator(self.tolerant)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return UpstreamRequest("POST", target.url.rstrip("/") + "/embeddings",
                               bearer_headers(target.credential), embeddings_body(body, target.model))

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        return parse_embeddings(body)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return classify_openai_error(status, headers, body)


class OpenAICompatibleProvider(OpenAIProvider):
    """vLLM, Ollama, Groq, Together, Mistral…: OpenAI's API with looser stream endings."""

    type: ClassVar[str] = ProviderType.OPENAI_COMPATIBLE.value
    tolerant: ClassVar[bool] = True
