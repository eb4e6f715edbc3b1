"""What became of one request: one record, built once when the request ends, read by everything
that reports it — the access line, `/status`'s recent decisions, the request's metrics and span."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.errors import AttemptRecord
from llmroute_proxy.table import Target

TokenCount = Literal["exact", "estimated", "none"]
"""How a token count was answered: counted by its target, estimated by the sidecar, or not at all
(its body refused, or the target refused it as the client's fault)."""


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class Outcome:
    at: float  # wall-clock time when it ended
    route: str
    model: str  # as the client asked for it: a tier, an alias, "auto" or a concrete model
    tier: str  # the one whose target answered, or was tried last when none did; the chosen one before any attempt
    rule: str
    reason: str  # why the chosen tier
    experiment: str | None
    stream: bool
    target: Target | None  # the one that answered
    attempts: Sequence[AttemptRecord]
    status: int  # 499: the client went away first; 500: a bug (the client is answered 500)
    latency_s: float
    usage: Usage | None
    cost_usd: float | None
    trace_id: str
    usage_estimated: bool = False  # usage and cost are the sidecar's estimate: a stream stopped, an unmetered answer
    token_count: TokenCount | None = None  # set only for a token count (POST /v1/messages/count_tokens)
    refused: str | None = None  # set only for a request refused before routing: the error code it was answered
    error: str | None = None  # a routed request that failed: the error code it was answered (its status or its stream)
    fallback_from: str | None = None  # the chosen tier, when `tier` is one of its `fallbackTiers` instead
    passed_over: Sequence[tuple[str, str | None]] = ()  # targets that could not take it: (target, the field named)

    def passed_over_shown(self) -> list[dict[str, str | None]]:
        """`passed_over` as the access line and `/status` show it."""
        return [{"target": target, "param": param} for target, param in self.passed_over]

    @property
    def error_type(self) -> str | None:
        return None if self.status < 400 else str(self.status)
