"""OpenAI's error bodies, both ways: an upstream's non-2xx answer or in-band error classified for
failover (providers.md §6.2), and the error body the sidecar writes for an OpenAI or Responses client
(§1.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from llmroute_proxy.dialects.common import body_excerpt, loads_object, retry_after_seconds
from llmroute_proxy.errors import FailureKind, LLMRouteError, UpstreamError

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
_REQUEST_KINDS = frozenset({FailureKind.CLIENT_ERROR, FailureKind.CONTENT_FILTER, FailureKind.CONTEXT_LENGTH,
                            FailureKind.NOT_HELD})
_HINTED_KINDS = frozenset({FailureKind.RATE_LIMITED, FailureKind.QUOTA_EXHAUSTED, FailureKind.OVERLOADED,
                           FailureKind.SERVER_ERROR, FailureKind.TIMEOUT})

# the HTTP status an error object inside a 200 answer stands for, by its `code` or `type`
_IN_BAND_STATUS = {
    "invalid_request_error": 400, "context_length_exceeded": 400, "content_filter": 400,
    "content_policy_violation": 400, "authentication_error": 401, "invalid_api_key": 401,
    "permission_error": 403, "unsupported_country_region_territory": 403, "not_found_error": 404,
    "model_not_found": 404, "DeploymentNotFound": 404,
    "rate_limit_error": 429, "rate_limit_exceeded": 429, "insufficient_quota": 429, "tokens": 429,
    "requests": 429, "server_error": 500, "api_error": 500, "internal_error": 500,
    "overloaded_error": 503, "service_unavailable": 503, "ServiceUnavailable": 503, "timeout": 504,
    "timeout_error": 504,
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
    if status == 404 and code not in _NOT_FOUND_CODES and (param := _text(error.get("param"))) is not None:
        if param == "previous_response_id":
            return FailureKind.NOT_HELD  # this target's store lacks the conversation; another's may hold it
        return FailureKind.CLIENT_ERROR  # what the request named (an input item) is missing, not the model
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


def openai_error_body(error: LLMRouteError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.error_type, "param": error.param,
                      "code": error.code}}
