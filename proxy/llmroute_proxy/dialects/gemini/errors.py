"""Gemini error bodies → `UpstreamError` with the `FailureKind` that drives failover (providers.md §3.5, §6).

Gemini reports errors as a Google RPC status (`error.code`, `error.status`, `error.details`),
both as non-2xx bodies and in-band inside a 200 body or stream; both go through here so they
classify the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmroute_proxy.dialects.common import body_excerpt, retry_after_seconds
from llmroute_proxy.errors import FailureKind, UpstreamError

_KIND_BY_STATUS: Mapping[int, FailureKind] = {
    401: FailureKind.AUTH, 403: FailureKind.AUTH, 404: FailureKind.TARGET_NOT_FOUND, 408: FailureKind.TIMEOUT,
    429: FailureKind.RATE_LIMITED, 503: FailureKind.OVERLOADED, 504: FailureKind.TIMEOUT,
}


def classify_payload(status: int, headers: Mapping[str, str], payload: Mapping[str, Any] | None,
                     raw: bytes = b"") -> UpstreamError:
    error = payload.get("error") if payload else None
    if not isinstance(error, dict):
        error = {}
    upstream_message, upstream_status = error.get("message"), error.get("status")
    message = upstream_message if isinstance(upstream_message, str) else body_excerpt(raw)
    rpc_status = upstream_status if isinstance(upstream_status, str) else ""
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    kind = _kind(status, rpc_status, message, details)
    retry_after = _retry_delay(details) if kind is FailureKind.RATE_LIMITED else None
    if retry_after is None and kind in (FailureKind.RATE_LIMITED, FailureKind.OVERLOADED):
        retry_after = retry_after_seconds(headers)
    client_facing = kind in (FailureKind.CLIENT_ERROR, FailureKind.CONTEXT_LENGTH)
    if not client_facing:
        message = f"Gemini {status} {rpc_status or 'error'}" + (f": {message}" if message else "")
    return UpstreamError(
        kind=kind, status=status, retry_after=retry_after, message=message,
        error_type="invalid_request_error" if client_facing else "api_error",
        code="context_length_exceeded" if kind is FailureKind.CONTEXT_LENGTH else (rpc_status.lower() or None),
    )


_HTTP_STATUS_BY_RPC_STATUS: Mapping[str, int] = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ABORTED": 409, "ALREADY_EXISTS": 409, "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500, "UNKNOWN": 500, "DATA_LOSS": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
"""google.rpc.Code → HTTP status, as Google's APIs map them (for an in-band error without its `code`)."""


def _in_band_error(response: Mapping[str, Any]) -> UpstreamError:
    """An `{"error": {...}}` object inside a 200 body or stream: its `code` is the HTTP status
    (else its `status`, the RPC code's name, stands for one)."""
    error = response.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if not (isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600):
        rpc_status = error.get("status") if isinstance(error, dict) else None
        code = _HTTP_STATUS_BY_RPC_STATUS.get(rpc_status, 500) if isinstance(rpc_status, str) else 500
    return classify_payload(code, {}, response)


def _kind(status: int, rpc_status: str, message: str, details: Sequence[Mapping[str, Any]]) -> FailureKind:
    if status == 400 or rpc_status in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
        return _kind_of_400(rpc_status, message, details)
    if status == 429 or rpc_status == "RESOURCE_EXHAUSTED":
        return FailureKind.QUOTA_EXHAUSTED if _per_day_quota(details) else FailureKind.RATE_LIMITED
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    return FailureKind.SERVER_ERROR if status >= 500 else FailureKind.CLIENT_ERROR


def _kind_of_400(rpc_status: str, message: str, details: Sequence[Mapping[str, Any]]) -> FailureKind:
    if rpc_status == "FAILED_PRECONDITION":
        return FailureKind.AUTH
    if "API key not valid" in message or any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return FailureKind.AUTH
    lowered = message.lower()
    if "exceeds the maximum number of tokens" in lowered or ("input token count" in lowered and "exceeds" in lowered):
        return FailureKind.CONTEXT_LENGTH
    return FailureKind.CLIENT_ERROR


def _per_day_quota(details: Iterable[Mapping[str, Any]]) -> bool:
    for detail in details:
        for violation in detail.get("violations") or ():
            if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId") or ""):
                return True
    return False


def _retry_delay(details: Iterable[Mapping[str, Any]]) -> float | None:
    """`RetryInfo.retryDelay` is a protobuf Duration in JSON: decimal seconds with an `s` suffix."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None

