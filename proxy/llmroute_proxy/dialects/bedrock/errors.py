"""Bedrock's errors, classified (providers.md §4.2, §6.2): one table for every Bedrock runtime operation,
InvokeModel's and Converse's alike, as an HTTP error (`x-amzn-ErrorType`) or as a stream's exception frame
(`:exception-type`), which is the same failure arriving after the 200."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmroute_proxy.dialects.common import body_excerpt, loads_object, retry_after_seconds
from llmroute_proxy.dialects.eventstream import Frame
from llmroute_proxy.errors import FailureKind, UpstreamError

_KINDS = {
    "ThrottlingException": FailureKind.RATE_LIMITED,
    "ServiceQuotaExceededException": FailureKind.QUOTA_EXHAUSTED,
    "ModelNotReadyException": FailureKind.OVERLOADED,
    "ServiceUnavailableException": FailureKind.OVERLOADED,
    "InternalServerException": FailureKind.SERVER_ERROR,
    "ModelErrorException": FailureKind.SERVER_ERROR,
    "ModelStreamErrorException": FailureKind.SERVER_ERROR,
    "ModelTimeoutException": FailureKind.TIMEOUT,
    "AccessDeniedException": FailureKind.AUTH,
    "UnrecognizedClientException": FailureKind.AUTH,
    "InvalidSignatureException": FailureKind.AUTH,  # a bad signature, or one signed more than 5 min off
    "IncompleteSignatureException": FailureKind.AUTH,
    "MissingAuthenticationTokenException": FailureKind.AUTH,
    "ExpiredTokenException": FailureKind.AUTH,  # temporary credentials used past their expiry
    "ResourceNotFoundException": FailureKind.TARGET_NOT_FOUND,
}
"""Bedrock's exception types (the `x-amzn-ErrorType` header, an exception frame's `:exception-type`)
→ what they mean for failover (providers.md §4.2, §6.2). `ValidationException` is the request's."""
_STATUS_KINDS = {401: FailureKind.AUTH, 403: FailureKind.AUTH, 404: FailureKind.TARGET_NOT_FOUND,
                 408: FailureKind.TIMEOUT, 429: FailureKind.RATE_LIMITED, 503: FailureKind.OVERLOADED}
"""For an answer without a type AWS names (a proxy's, a load balancer's)."""
_CONTEXT_OVERFLOW_MARKERS = ("input is too long", "too many input tokens", "prompt is too long",
                             "exceed context limit", "context window")
_STREAM_STATUS = {"ThrottlingException": 429, "ModelStreamErrorException": 424, "ValidationException": 400,
                  "InternalServerException": 500, "ServiceUnavailableException": 503, "ModelTimeoutException": 408}


def classify_error(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
    """A non-2xx answer of any Bedrock runtime operation."""
    parsed = loads_object(body)
    kind = error_type(headers.get("x-amzn-errortype") or headers.get("x-amzn-ErrorType")
                      or (parsed or {}).get("__type"))
    message = _message(parsed) or body_excerpt(body) or f"HTTP {status}"
    return bedrock_error(status, kind, message, retry_after_seconds(headers))


def bedrock_error(status: int, kind_name: str, message: str, retry_after: float | None) -> UpstreamError:
    """One classification for HTTP errors and exception frames (providers.md §6.2)."""
    kind = _KINDS.get(kind_name)
    if kind is None and (kind_name == "ValidationException" or 400 <= status < 500):
        kind = _STATUS_KINDS.get(status, FailureKind.CLIENT_ERROR)
        if kind is FailureKind.CLIENT_ERROR and any(m in message.lower() for m in _CONTEXT_OVERFLOW_MARKERS):
            kind = FailureKind.CONTEXT_LENGTH
    if kind in (FailureKind.CLIENT_ERROR, FailureKind.CONTEXT_LENGTH):
        code = "context_length_exceeded" if kind is FailureKind.CONTEXT_LENGTH else None
        return UpstreamError(kind, message, status=status, error_type="invalid_request_error", code=code)
    return UpstreamError(kind or _STATUS_KINDS.get(status, FailureKind.SERVER_ERROR),
                         f"Bedrock {status} {kind_name or 'error'}: {message}", status=status,
                         retry_after=retry_after, error_type=kind_name or "api_error")


def event_payload(frame: Frame) -> dict[str, Any] | None:
    """An event frame's JSON payload (None when it is not a JSON object); an exception frame's failure
    raised, as its HTTP error would be."""
    parsed = loads_object(frame.payload)
    headers = frame.headers
    if headers.get(":message-type") != "event":
        kind = error_type(headers.get(":exception-type") or headers.get(":error-code"))
        message = _message(parsed) or headers.get(":error-message") or body_excerpt(frame.payload) or kind
        raise bedrock_error(_STREAM_STATUS.get(kind, 500), kind, message, None)
    return parsed


def error_type(value: Any) -> str:
    """`ThrottlingException` from `ThrottlingException:http://internal.amazon.com/…`, from
    `com.amazonaws…#ThrottlingException` and from a stream's `throttlingException`."""
    if not isinstance(value, str) or not value:
        return ""
    name = value.split(":", 1)[0].rsplit("#", 1)[-1]
    return name[:1].upper() + name[1:]


def _message(parsed: dict[str, Any] | None) -> str:
    message = (parsed or {}).get("message") or (parsed or {}).get("Message")
    return message if isinstance(message, str) else ""
