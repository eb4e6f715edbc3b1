"""Anthropic's error bodies, both ways (providers.md §2.5, §6): an upstream's error answer →
`UpstreamError` with the `FailureKind` that drives failover, and the error body the sidecar writes
for a client that spoke Anthropic. One table pair maps error types and statuses each way.

HTTP error bodies, `type: error` bodies and in-band stream `error` events all go through
`upstream_error`, so they classify the same way.
"""

from __future__ import annotations

from typing import Any

from llmroute_proxy.errors import FailureKind, LLMRouteError, UpstreamError

_KIND_BY_STATUS = {
    401: FailureKind.AUTH, 402: FailureKind.QUOTA_EXHAUSTED, 403: FailureKind.AUTH,
    404: FailureKind.TARGET_NOT_FOUND, 408: FailureKind.TIMEOUT, 409: FailureKind.SERVER_ERROR,
    429: FailureKind.RATE_LIMITED, 500: FailureKind.SERVER_ERROR, 503: FailureKind.OVERLOADED,
    504: FailureKind.TIMEOUT, 529: FailureKind.OVERLOADED,
}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "overloaded_error",
                    504: "timeout_error", 529: "overloaded_error"}
"""The error type a client is told for the sidecar's status; any other 4xx is `invalid_request_error`,
as Anthropic does ("we may also use this error type for other 4XX status codes")."""
_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}
_CONTEXT_OVERFLOW_MARKERS = ("prompt is too long", "exceed context limit", "context window")
_RETURNED_AS_IS = frozenset({FailureKind.CLIENT_ERROR, FailureKind.CONTEXT_LENGTH})


def upstream_error(status: int, error_type: str, message: str, retry_after: float | None) -> UpstreamError:
    """One classification for HTTP errors and in-band stream `error` events (providers.md §6.2)."""
    kind = _failure_kind(status, error_type, message)
    if kind in _RETURNED_AS_IS:
        code = "context_length_exceeded" if kind is FailureKind.CONTEXT_LENGTH else None
        if status == 413:
            code = "request_too_large"
        return UpstreamError(kind, message, status=status, error_type="invalid_request_error", code=code)
    return UpstreamError(kind, f"Anthropic {status} {error_type}: {message}", status=status,
                         retry_after=retry_after, error_type=error_type)


def _failure_kind(status: int, error_type: str, message: str) -> FailureKind:
    if error_type == "billing_error":
        return FailureKind.QUOTA_EXHAUSTED
    if error_type == "overloaded_error":
        return FailureKind.OVERLOADED
    if status in (400, 413):
        lowered = message.lower()
        if any(marker in lowered for marker in _CONTEXT_OVERFLOW_MARKERS):
            return FailureKind.CONTEXT_LENGTH
        if "credit balance" in lowered:
            return FailureKind.QUOTA_EXHAUSTED
    kind = _KIND_BY_STATUS.get(status)
    if kind is not None:
        return kind
    return FailureKind.SERVER_ERROR if status >= 500 else FailureKind.CLIENT_ERROR


def anthropic_error_body(error: LLMRouteError, status: int) -> dict[str, Any]:
    return {"type": "error",
            "error": {"type": _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error"),
                      "message": error.message}}
