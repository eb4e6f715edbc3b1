"""Counting a Messages request's input tokens (`POST /v1/messages/count_tokens`) where it would be sent.

Clients count every turn (Claude Code does, to manage its context window), and a count is advisory:
it must be fast, and it must not fail for a reason the client cannot fix. So one target is asked,
the one `routing.counting` names, and only if its provider has a count endpoint (Anthropic's
`count_tokens`, Gemini's `countTokens`); its count is exact. Every other case gets the sidecar's own
estimate of the prompt, the one routing and budgets use: a target without a count endpoint (OpenAI,
Azure OpenAI, OpenAI-compatible), every circuit open, and a recoverable failure (429, 5xx,
overloaded, a timeout, a refused connection, an unreadable answer, a refused key), which is not
failed over. A 400 or 413 that is the client's own fault is its answer (its keys scrubbed).

Nothing is charged: no budget reservation, no tokens-per-minute admission, no request in the usage
counters or the spend, no verdict for the circuit breakers (how a target counts says nothing of how
it answers). A count is seen all the same: one access line (`CountLine`), a SERVER span with the
target's CLIENT span under it when one is asked (an unmetered scope: no metric point).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson

from llmroute_proxy.dialects.base import ChatRequest
from llmroute_proxy.errors import AttemptRecord, FailureKind, UpstreamError
from llmroute_proxy.providers.base import TokenCounter
from llmroute_proxy.providers.registry import token_counter_for
from llmroute_proxy.routing.counting import Counter, counting_target
from llmroute_proxy.routing.decide import RouteDecision
from llmroute_proxy.server.outcome import Outcome, TokenCount
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.server.telemetry import RequestScope
from llmroute_proxy.server.upstream import MAX_ERROR_BODY
from llmroute_proxy.table import ProviderType, Route, Target

log = logging.getLogger("llmroute.proxy")

_CLIENTS_FAULT = frozenset({FailureKind.CLIENT_ERROR, FailureKind.CONTEXT_LENGTH})


@dataclass(frozen=True, slots=True)
class Count:
    """What a count request is answered: `body` (`{"input_tokens": N}`), or the client's `error`."""

    tier: str
    target: Target | None
    exact: bool
    body: bytes = b""
    error: UpstreamError | None = None
    tried: Sequence[AttemptRecord] = ()  # the target asked, if one was

    @property
    def how(self) -> TokenCount:
        if self.error is not None:
            return "none"
        return "exact" if self.exact else "estimated"

    def headers(self, route: Route) -> dict[str, str]:
        out = {"x-llmroute-route": route.name, "x-llmroute-tier": self.tier,
               "x-llmroute-token-count": "exact" if self.exact else "estimated"}
        if self.target is not None:
            out["x-llmroute-provider"] = self.target.provider
            out["x-llmroute-model"] = self.target.model
        return out


async def count_tokens(sidecar: Sidecar, chat: ChatRequest, decision: RouteDecision, estimate: int,
                       scope: RequestScope) -> Count:
    """`chat`'s input tokens, counted by the target `decision` would try first, else `estimate`d."""
    counter = counting_target(decision, health=sidecar.health, load=sidecar.load, rng=sidecar.rng,
                              local_region=sidecar.table.region if sidecar.table else "", now=sidecar.clock())
    if counter is None:
        return Count(decision.choice.tier, None, exact=False, body=_input_tokens(estimate))
    estimated = Count(counter.tier, counter.target, exact=False, body=_input_tokens(estimate))
    provider = token_counter_for(counter.target.provider_type)
    if provider is None or not counter.ask:
        return estimated
    answer, tried = await _attempted(sidecar, provider, chat, counter, decision.route, scope)
    if isinstance(answer, bytes):
        return Count(counter.tier, counter.target, exact=True, body=answer, tried=tried)
    if answer.kind in _CLIENTS_FAULT and answer.status in (400, 413):
        return Count(counter.tier, counter.target, exact=True, error=answer, tried=tried)
    log.info("counting tokens on %s failed (%s: %s); answered the estimate", counter.target.id,
             answer.kind.value, answer.message)
    return replace(estimated, tried=tried)


async def _attempted(sidecar: Sidecar, provider: TokenCounter, chat: ChatRequest, counter: Counter, route: Route,
                     scope: RequestScope) -> tuple[bytes | UpstreamError, tuple[AttemptRecord]]:
    """The count as the target answered it, or its failure (scrubbed), and the attempt as the access
    line and the CLIENT span show it."""
    target = counter.target
    attempt = scope.attempt(target, 1, chat.body["model"], tier=counter.tier)
    started = sidecar.clock()
    try:
        body = await _asked(sidecar, provider, chat, counter, route)
    except UpstreamError as failure:
        error = sidecar.scrubber.error(failure)
        attempt.end(error=error)
        return error, (AttemptRecord(target.id, error.status, error.kind, error.message, sidecar.clock() - started),)
    except BaseException as exc:
        attempt.end(error=exc)
        raise
    attempt.end()
    return body, (AttemptRecord(target.id, 200, None, "ok", sidecar.clock() - started),)


async def _asked(sidecar: Sidecar, provider: TokenCounter, chat: ChatRequest, counter: Counter,
                 route: Route) -> bytes:
    """The count as the target answered it; `UpstreamError` for any failure, classified."""
    target = counter.target
    timeout = min(route.fallback.first_byte_timeout, route.fallback.per_try_timeout)
    try:
        async with asyncio.timeout(timeout):
            request = await sidecar.google_tokens.with_token(provider.count_tokens_request(chat, target), target)
            upstream = await sidecar.upstream.send(request, target.id, ca_bundle=target.ca_bundle)
            async with upstream:
                body = await upstream.read(MAX_ERROR_BODY)
    except TimeoutError:
        raise UpstreamError(FailureKind.TIMEOUT, f"no count within {timeout:.3g}s") from None
    if upstream.status >= 300:
        raise provider.classify_error(upstream.status, upstream.headers, body)
    tokens = provider.counted_tokens(body)
    if tokens is None:
        raise UpstreamError(FailureKind.SERVER_ERROR, "the count answer holds no count", status=upstream.status)
    # an Anthropic count is in the client's own dialect: relayed as it came, any field it adds included
    return body if target.dialect is ProviderType.ANTHROPIC else _input_tokens(tokens)


def _input_tokens(tokens: int) -> bytes:
    return orjson.dumps({"input_tokens": tokens})


@dataclass(slots=True)
class CountLine:
    """What a count's access line says, filled in as the request goes: `model` and `decision` once
    it is routed, `count` once it is answered (a refused one stops early, with its `refused` code; a
    routed one that fails says its `error` code)."""

    route: str  # the route the request names, until it is routed
    model: str = ""
    decision: RouteDecision | None = None
    count: Count | None = None
    refused: str | None = None
    error: str | None = None

    @property
    def how(self) -> TokenCount:
        return self.count.how if self.count is not None else "none"

    def outcome(self, sidecar: Sidecar, status: int, latency_s: float, trace_id: str) -> Outcome:
        decision, count = self.decision, self.count
        route, tier, rule, reason, experiment = self.route, "", "", "", None
        if decision is not None:
            choice = decision.choice
            route, tier, rule, reason = decision.route.name, choice.tier, choice.rule, choice.reason
            experiment = decision.experiment.name if decision.experiment is not None else None
        target: Target | None = None
        tried: Sequence[AttemptRecord] = ()
        routed = tier
        if count is not None:
            tier, target, tried = count.tier, count.target, count.tried
        return Outcome(sidecar.wallclock(), route, self.model, tier, rule, reason, experiment, False, target, tried,
                       status, latency_s, None, None, trace_id, token_count=self.how, refused=self.refused,
                       error=self.error, fallback_from=routed if tier != routed else None)
