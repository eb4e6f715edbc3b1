"""What a request costs, from its token usage and the target's price list.

Prices are USD per million tokens. Usage follows OpenAI's semantics (cached ⊂ input), so
cached input tokens are taken out of the input count and billed at their own price, which
falls back to the input price. Cache writes stay inside the input count at the input price:
the price list has no separate rate for them. Results are unrounded floats; rounding is the
presenter's business (`x-llmroute-cost-usd` is written unrounded).
"""

from __future__ import annotations

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.table import Pricing

PER_MTOK = 1_000_000.0

DEFAULT_OUTPUT_ESTIMATE = 4096
"""Output tokens assumed for a reservation when the client set no `max_tokens`."""


def cost_usd(usage: Usage, pricing: Pricing) -> float:
    cached = min(max(usage.cached_input_tokens, 0), max(usage.input_tokens, 0))
    uncached = max(usage.input_tokens, 0) - cached
    cached_price = pricing.input_per_mtok if pricing.cached_input_per_mtok is None else pricing.cached_input_per_mtok
    return (uncached * pricing.input_per_mtok
            + cached * cached_price
            + max(usage.output_tokens, 0) * pricing.output_per_mtok) / PER_MTOK


def estimate_cost_usd(prompt_tokens: int, max_output_tokens: int | None, pricing: Pricing) -> float:
    """The most a request can cost: every prompt token uncached, every allowed output token used.

    Budgets reserve this before dispatch, so an estimate must never be below the real cost
    for a request that respects its own `max_tokens`.
    """
    output = DEFAULT_OUTPUT_ESTIMATE if max_output_tokens is None else max(max_output_tokens, 0)
    return (max(prompt_tokens, 0) * pricing.input_per_mtok + output * pricing.output_per_mtok) / PER_MTOK
