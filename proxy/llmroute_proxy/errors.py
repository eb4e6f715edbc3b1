"""What can go wrong with a request, and what each failure makes the sidecar do.

    LLMRouteError
    ├── RequestError            the client's own fault: answered as is, never failed over
    │   ├── BadRequest          400  malformed JSON, wrong types, a field no target can honour
    │   ├── ModelNotFound       404  unknown model or tier; the message lists what exists
    │   └── BodyTooLarge        413
    ├── LocalLimitExceeded      429  llmroute's own budget or rate limit, with Retry-After
    ├── NoTableLoaded           503  the sidecar has no routing table yet
    ├── DrainDeadlinePassed     503  SIGTERM's drain time ran out before the answer was complete
    ├── UpstreamError           one upstream attempt failed; `kind` classifies it (providers.md §6)
    └── AttemptsExhausted       every attempt failed: 502, or 429 when all were rate limited,
                                or 504 when the overall deadline passed

Only `UpstreamError.kind` drives failover; the rest map straight to an HTTP answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    """How an upstream attempt failed, which decides failover, breaker and cooldown."""

    RATE_LIMITED = "rate_limited"  # 429 short window: fail over, cool the target for Retry-After
    QUOTA_EXHAUSTED = "quota_exhausted"  # insufficient_quota, billing, daily quota: fail over, eject long
    AUTH = "auth"  # 401/403, invalid key: fail over, eject long, alert
    TARGET_NOT_FOUND = "target_not_found"  # 404 model/deployment missing on this target: fail over, eject long
    OVERLOADED = "overloaded"  # 529, 503: fail over
    SERVER_ERROR = "server_error"  # 500/502/504 and other 5xx: fail over
    TIMEOUT = "timeout"  # first byte, idle or per-try deadline passed: fail over
    CONNECTION = "connection"  # refused, reset, DNS, TLS: fail over
    STREAM_BROKEN = "stream_broken"  # stream ended or errored before completion
    CONTEXT_LENGTH = "context_length"  # prompt too long: fail over only to a larger context window
    NOT_HELD = "not_held"  # 404 for previous_response_id: only a target of another store may hold it
    CLIENT_ERROR = "client_error"  # 400/413/422 that is the request's fault: returned as is
    CONTENT_FILTER = "content_filter"  # safety block on the prompt: returned as is

    @property
    def fails_over(self) -> bool:
        return self not in _RETURNED_TO_CLIENT

    @property
    def chosen_by_on_errors(self) -> bool:
        """Whether a route's `onErrors` may leave it out: every failure that fails over but `not_held`,
        which is no failure of the provider's (another store is simply asked for the conversation)."""
        return self.fails_over and self is not FailureKind.NOT_HELD

    @property
    def counts_against_target(self) -> bool:
        """Whether the failure is the target's (breaker, error ratio), not the request's."""
        return self not in _NOT_THE_TARGETS_FAULT

    @property
    def ejects_for_long(self) -> bool:
        """Credential, quota and configuration failures: retrying soon is pointless."""
        return self in _LONG_EJECTION


_RETURNED_TO_CLIENT = frozenset({FailureKind.CLIENT_ERROR, FailureKind.CONTENT_FILTER})
_NOT_THE_TARGETS_FAULT = frozenset(
    {FailureKind.CLIENT_ERROR, FailureKind.CONTENT_FILTER, FailureKind.CONTEXT_LENGTH, FailureKind.NOT_HELD}
)
_LONG_EJECTION = frozenset({FailureKind.AUTH, FailureKind.QUOTA_EXHAUSTED, FailureKind.TARGET_NOT_FOUND})


class LLMRouteError(Exception):
    """Base of every error llmroute raises on purpose."""

    status: int = 500
    error_type: str = "api_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def label(self) -> str:
        """What went wrong in one word, for access lines: the error's code, else its type. Never its
        message, which may quote the request."""
        return self.code or self.error_type

    def headers(self) -> dict[str, str]:
        return {}


class RequestError(LLMRouteError):
    """The request itself is at fault; never failed over."""

    status = 400
    error_type = "invalid_request_error"


class BadRequest(RequestError):
    def __init__(self, message: str, param: str | None = None, code: str | None = "invalid_request") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ModelNotFound(RequestError):
    status = 404
    code = "model_not_found"

    def __init__(self, model: str, available: Sequence[str]) -> None:
        listed = ", ".join(available) if available else "none"
        super().__init__(f"The model '{model}' does not exist here. Available: {listed}.")
        self.param = "model"
        self.model = model
        self.available = tuple(available)


class BodyTooLarge(RequestError):
    status = 413
    code = "request_too_large"

    def __init__(self, size_limit: int) -> None:
        super().__init__(f"Request body is larger than the limit of {size_limit} bytes.")


class LocalLimitExceeded(LLMRouteError):
    """llmroute's own limit (budget, rate limit, saturation) refused the request."""

    status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, retry_after: float, code: str = "rate_limit_exceeded",
                 should_retry: bool = True) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)
        self.code = code
        self.should_retry = should_retry  # false for a spent budget: nothing changes before it resets

    def headers(self) -> dict[str, str]:
        return {"retry-after": retry_after_header(self.retry_after),
                "x-should-retry": "true" if self.should_retry else "false"}


class NoTableLoaded(LLMRouteError):
    status = 503
    error_type = "service_unavailable"
    code = "no_routing_table"

    def __init__(self) -> None:
        super().__init__("llmroute has no routing table loaded yet.")


class NoRouteSelects(LLMRouteError):
    """The operator pushed a table without routes: no LLMRoute selects this pod (any more)."""

    status = 503
    error_type = "service_unavailable"
    code = "no_route"

    def __init__(self) -> None:
        super().__init__("No LLMRoute selects this pod: the operator's table for it has no routes (the routes that "
                         "selected it were deleted, or their podSelector no longer matches its labels).")


class DrainDeadlinePassed(LLMRouteError):
    """The sidecar is stopping and its drain time ran out: what is still open ends with this,
    in its own dialect (an in-band error event for a stream that has begun)."""

    status = 503
    error_type = "service_unavailable"
    code = "draining"

    def __init__(self, drain_s: float) -> None:
        super().__init__(f"This llmroute sidecar is shutting down: its drain time of {drain_s:g}s ran out "
                         "before the answer was complete. Send the request again.")


@dataclass(eq=False)
class UpstreamError(LLMRouteError):
    """One upstream attempt failed.

    `status` is the upstream's HTTP status (None for network failures and timeouts).
    `retry_after` is the provider's back-off hint in seconds, when it gave one.
    For `CLIENT_ERROR`/`CONTENT_FILTER`, `message`, `error_type`, `code` and `param`
    are what the client is told, in OpenAI's error shape.
    """

    kind: FailureKind
    message: str
    status: int | None = None  # type: ignore[assignment]
    retry_after: float | None = None
    error_type: str = "api_error"
    code: str | None = None
    param: str | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message

    @property
    def client_status(self) -> int:
        """The status a client sees when this error is returned to it unchanged."""
        if self.status is not None and 400 <= self.status < 500:
            return self.status
        return 400


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class AttemptRecord:
    """One upstream attempt, as reported in errors, headers and traces."""

    target: str
    status: int | None
    kind: FailureKind | None
    reason: str
    duration_s: float


class AttemptsExhausted(LLMRouteError):
    """Every permitted attempt failed; the message lists each attempt."""

    error_type = "upstream_error"
    code = "all_targets_failed"

    def __init__(self, attempts: Sequence[AttemptRecord], deadline_passed: bool = False,
                 retry_after: float | None = None, note: str | None = None) -> None:
        self.attempts = tuple(attempts)
        self.retry_after = retry_after
        tried = "; ".join(
            f"{a.target}: {a.status if a.status is not None else '-'} {a.reason}" for a in self.attempts
        )
        if deadline_passed:
            self.status = 504
            self.error_type = "timeout_error"
            self.code = "deadline_exceeded"
            head = "The overall request deadline passed"
        elif self.attempts and all(a.kind is FailureKind.RATE_LIMITED for a in self.attempts):
            self.status = 429
            self.error_type = "rate_limit_error"
            self.code = "upstream_rate_limited"
            head = "Every target is rate limited"
        else:
            self.status = 502
            head = "All targets failed"
        tail = f"; {note}" if note else ""
        super().__init__(f"{head} ({len(self.attempts)} attempts): {tried or 'no target was available'}{tail}")

    def headers(self) -> dict[str, str]:
        out = {"x-should-retry": "false"}
        if self.status == 429 and self.retry_after is not None:
            out = {"retry-after": retry_after_header(self.retry_after), "x-should-retry": "true"}
        return out


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds: round up, and never say 0."""
    return str(max(1, math.ceil(seconds)))
