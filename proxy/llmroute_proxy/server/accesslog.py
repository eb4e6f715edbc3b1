"""One JSON line per request on the `llmroute.access` logger, for people grepping and log pipelines.

The line says where the request went and what it cost: route, tier, rule, target, every
attempt with its outcome, status, latency, tokens, cost and the trace id that joins it to
its spans. It never holds prompt or completion text, header values or credentials: attempt
reasons are failure kinds, not upstream messages (which may quote what the client sent).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from llmroute_proxy.errors import AttemptRecord
from llmroute_proxy.providers.base import ChatRequest, Usage
from llmroute_proxy.table import Target

log = logging.getLogger("llmroute.access")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Choice(Protocol):
    @property
    def tier(self) -> str: ...

    @property
    def rule(self) -> str | None: ...


class ExchangeView(Protocol):
    """What the access line reads from the server's `Exchange`."""

    @property
    def route(self) -> _Named: ...

    @property
    def choice(self) -> _Choice: ...

    @property
    def experiment(self) -> _Named | None: ...

    @property
    def target(self) -> Target | None: ...

    @property
    def attempts(self) -> Sequence[AttemptRecord]: ...

    @property
    def usage(self) -> Usage | None: ...

    @property
    def cost(self) -> float | None: ...

    @property
    def requested_model(self) -> str: ...

    @property
    def chat(self) -> ChatRequest: ...


def access_entry(ex: ExchangeView, status: int, elapsed_s: float, trace_id: str) -> dict[str, Any]:
    target = ex.target
    usage = ex.usage
    return {
        "route": ex.route.name,
        "model": ex.requested_model,
        "tier": ex.choice.tier,
        "rule": ex.choice.rule,
        "experiment": ex.experiment.name if ex.experiment is not None else None,
        "target": target.id if target is not None else None,
        "provider": target.provider if target is not None else None,
        "upstream_model": target.model if target is not None else None,
        "stream": ex.chat.stream,
        "attempts": len(ex.attempts),
        "tried": [{"target": a.target, "status": a.status, "outcome": a.kind.value if a.kind else "ok",
                   "ms": round(a.duration_s * 1000, 2)} for a in ex.attempts],
        "status": status,
        "latency_ms": round(elapsed_s * 1000, 2),
        "input_tokens": usage.input_tokens if usage is not None else None,
        "output_tokens": usage.output_tokens if usage is not None else None,
        "cached_input_tokens": usage.cached_input_tokens if usage is not None else None,
        "cost_usd": ex.cost,
        "trace_id": trace_id or None,
    }


def log_access(ex: ExchangeView, status: int, elapsed_s: float, trace_id: str) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("%s", orjson.dumps(access_entry(ex, status, elapsed_s, trace_id)).decode())
