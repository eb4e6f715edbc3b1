"""What a request costs, from its token usage and the target's price list.

Prices are USD per million tokens. Usage follows OpenAI's semantics (cache reads and writes ⊂
input), so cached input tokens (reads) and cache writes are taken out of the input count and billed
at their own prices, each falling back to the input price; writes kept an hour (Anthropic's
`ttl: 1h`) at theirs, falling back to the writes' price. An answer is priced at the list of the service
tier it reports (OpenAI's `flex` at about half the standard price, `priority` at about twice), a
long-context list being that tier list's own. Anthropic bills a write above the input
price (1.25x for 5 minutes, 2x for an hour) and a read at a tenth of it. Results are unrounded
floats; rounding is the presenter's business (`x-llmroute-cost-usd` is written unrounded).

A stream its client stopped (or the drain's deadline cut, or its provider broke) is billed by the
provider for what it generated until the connection closed, and an answer that came without usage
(a server that sends none) for what it answered: `streamed_usage` and `answer_usage` estimate them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from llmroute_proxy.dialects.base import StreamChunk, Usage
from llmroute_proxy.routing.tokens import ESTIMATE_TOLERANCE, collect_message_texts, estimate_tokens
from llmroute_proxy.table import Pricing

PER_MTOK = 1_000_000.0
PER_THOUSAND = 1000.0

DEFAULT_OUTPUT_ESTIMATE = 4096
"""Output tokens assumed for a reservation when the client set no `max_tokens`."""


def cost_usd(usage: Usage, pricing: Pricing) -> float:
    """An answer's cost at the list of the service tier it reports (the base list when that tier is not
    listed, or it reports none), and within that list at its long-context prices above their threshold."""
    if usage.service_tier is not None:
        pricing = pricing.service_tiers.get(usage.service_tier, pricing)
    long = pricing.long_context
    if long is not None and usage.input_tokens > long.above_input_tokens:
        pricing = long.pricing
    prompt = max(usage.input_tokens, 0)
    cached = min(max(usage.cached_input_tokens, 0), prompt)
    written = min(max(usage.cache_write_tokens, 0), prompt - cached)
    written_1h = min(max(usage.cache_write_1h_tokens, 0), written)
    input_price, cached_price, write_price, write_1h_price = _input_prices(pricing)
    return ((prompt - cached - written) * input_price
            + cached * cached_price
            + (written - written_1h) * write_price
            + written_1h * write_1h_price
            + max(usage.output_tokens, 0) * pricing.output_per_mtok) / PER_MTOK \
        + max(usage.web_searches, 0) * pricing.web_search_per_1k / PER_THOUSAND


def estimate_cost_usd(prompt_tokens: int, max_output_tokens: int | None, pricing: Pricing,
                      web_searches: int = 0, tiers: Collection[str] | None = ()) -> float:
    """The most a request can cost: every prompt token at the dearest input price (a cache write's,
    when it costs more than plain input), every allowed output token used, and `web_searches`
    searches (the most its server-side search tool may run); at the long-context prices too (the
    dearer estimate) when the prompt may be above their threshold, as far as the estimate of its
    tokens can be off (`ESTIMATE_TOLERANCE`); at the dearest list of the service tiers it may be served
    at (`tiers`, `service_tiers.landing_tiers`: None when any, () at the base list only).

    Budgets reserve this before dispatch, so an estimate must never be below the real cost
    for a request that respects its own `max_tokens` (and its search tool's `max_uses`).
    """
    if pricing.service_tiers:
        base = replace(pricing, service_tiers={})
        lists = [base, *pricing.service_tiers.values()] if tiers is None else [
            pricing.service_tiers.get(tier, base) for tier in tiers] or [base]
        return max(estimate_cost_usd(prompt_tokens, max_output_tokens, prices, web_searches) for prices in lists)
    long = pricing.long_context
    if long is not None and prompt_tokens * (1 + ESTIMATE_TOLERANCE) > long.above_input_tokens:
        return max(estimate_cost_usd(prompt_tokens, max_output_tokens, replace(pricing, long_context=None), web_searches),
                   estimate_cost_usd(prompt_tokens, max_output_tokens, long.pricing, web_searches))
    output = DEFAULT_OUTPUT_ESTIMATE if max_output_tokens is None else max(max_output_tokens, 0)
    return ((max(prompt_tokens, 0) * max(_input_prices(pricing)) + output * pricing.output_per_mtok) / PER_MTOK
            + max(web_searches, 0) * pricing.web_search_per_1k / PER_THOUSAND)


def _input_prices(pricing: Pricing) -> tuple[float, float, float, float]:
    """Plain input's price, a cache read's, a cache write's and an hour-long write's, fallbacks applied."""
    input_price = pricing.input_per_mtok
    cached_price = input_price if pricing.cached_input_per_mtok is None else pricing.cached_input_per_mtok
    write_price = input_price if pricing.cache_write_per_mtok is None else pricing.cache_write_per_mtok
    write_1h_price = write_price if pricing.cache_write_1h_per_mtok is None else pricing.cache_write_1h_per_mtok
    return input_price, cached_price, write_price, write_1h_price


def streamed_usage(carried: Usage | None, final: bool, prompt_tokens: int, received: int,
                   seen: Sequence[StreamChunk]) -> Usage:
    """What a stream stopped midway, or one that ended without usage, has used, as the provider bills
    it: the prompt, and the output generated until the connection closed.

    `carried` is the usage the stream reported so far: `final` when it came with the stream's end
    (OpenAI's usage chunk), else running counts (Gemini's on every chunk, Anthropic's
    `message_start`) that later output adds to. Without it the prompt is `prompt_tokens`, the
    request's estimate. The output is the `received` chunks read so far at the tokens per chunk
    of those still at hand (`seen`: the first ones and the last read's). A provider streams its
    output in chunks of a steady size (one token each from OpenAI, a few from Claude), and
    counting every chunk's text instead would add several lookups per chunk to every stream.
    Chunks in `seen` that show nothing (the role chunk ahead of the text, a relay's carrier) are
    taken out of `received` rather than averaged in."""
    shown = [text for text in (_shown_text(chunk.data, "delta") for chunk in seen) if text]
    per_chunk = estimate_tokens("".join(shown)) / len(shown) if shown else 0.0
    streamed = round(per_chunk * max(received - (len(seen) - len(shown)), 0))
    if carried is None:
        return Usage(input_tokens=prompt_tokens, output_tokens=streamed)
    if final:
        return carried
    return replace(carried, input_tokens=carried.input_tokens or prompt_tokens,
                   output_tokens=max(carried.output_tokens, streamed))


def answer_usage(prompt_tokens: int, answer: dict[str, Any]) -> Usage:
    """What a complete answer that came without usage has used: `prompt_tokens` (the request's
    estimate), and its output, estimated from what the canonical `chat.completion` shows."""
    return Usage(input_tokens=prompt_tokens, output_tokens=estimate_tokens(_shown_text(answer, "message")))


def _shown_text(data: dict[str, Any], part: str) -> str:
    """The output a canonical chunk (`part` "delta") or answer ("message") shows: text, refusal,
    reasoning, tool names and arguments."""
    parts: list[str] = []
    for choice in data.get("choices") or ():
        shown: dict[str, Any] = choice.get(part) or {}
        collect_message_texts(shown, parts)
        parts.extend(value for key in ("refusal", "reasoning_content") if isinstance(value := shown.get(key), str))
    return "".join(parts)
