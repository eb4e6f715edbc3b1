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
it answers).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson

from llmroute_proxy.dialects.base import ChatRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.base import TokenCounter
from llmroute_proxy.providers.registry import token_counter_for
from llmroute_proxy.routing.counting import Counter, counting_target
from llmroute_proxy.routing.decide import RouteDecision
from llmroute_proxy.server.state import Sidecar
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

    def headers(self, route: Route) -> dict[str, str]:
        out = {"x-llmroute-route": route.name, "x-llmroute-tier": self.tier,
               "x-llmroute-token-count": "exact" if self.exact else "estimated"}
        if self.target is not None:
            out["x-llmroute-provider"] = self.target.provider
            out["x-llmroute-model"] = self.target.model
        return out


async def count_tokens(sidecar: Sidecar, chat: ChatRequest, decision: RouteDecision, estimate: int) -> Count:
    """`chat`'s input tokens, counted by the target `decision` would try first, else `estimate`d."""
    counter = counting_target(decision, health=sidecar.health, load=sidecar.load, rng=sidecar.rng,
                              local_region=sidecar.table.region if sidecar.table else "", now=sidecar.clock())
    if counter is None:
        return Count(decision.choice.tier, None, exact=False, body=_input_tokens(estimate))
    estimated = Count(counter.tier, counter.target, exact=False, body=_input_tokens(estimate))
    provider = token_counter_for(counter.target.provider_type)
    if provider is None or not counter.ask:
        return estimated
    try:
        body = await _asked(sidecar, provider, chat, counter, decision.route)
    except UpstreamError as failure:
        error = sidecar.scrubber.error(failure)
        if error.kind in _CLIENTS_FAULT and error.status in (400, 413):
            return Count(counter.tier, counter.target, exact=True, error=error)
        log.info("counting tokens on %s failed (%s: %s); answered the estimate", counter.target.id,
                 error.kind.value, error.message)
        return estimated
    return Count(counter.tier, counter.target, exact=True, body=body)


async def _asked(sidecar: Sidecar, provider: TokenCounter, chat: ChatRequest, counter: Counter,
                 route: Route) -> bytes:
    """The count as the target answered it; `UpstreamError` for any failure, classified."""
    target = counter.target
    timeout = min(route.fallback.first_byte_timeout, route.fallback.per_try_timeout)
    try:
        async with asyncio.timeout(timeout):
            upstream = await sidecar.upstream.send(provider.count_tokens_request(chat, target), target.id,
                                                   ca_bundle=target.ca_bundle)
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
    return body if target.provider_type is ProviderType.ANTHROPIC else _input_tokens(tokens)


def _input_tokens(tokens: int) -> bytes:
    return orjson.dumps({"input_tokens": tokens})
