from __future__ import annotations

import pytest

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.routing.cost import DEFAULT_OUTPUT_ESTIMATE, cost_usd, estimate_cost_usd
from llmroute_proxy.table import Pricing

GPT4O = Pricing(input_per_mtok=2.5, output_per_mtok=10.0, cached_input_per_mtok=1.25)


@pytest.mark.parametrize(("usage", "pricing", "expected"), [
    (Usage(input_tokens=1_000_000), GPT4O, 2.5),
    (Usage(output_tokens=1_000_000), GPT4O, 10.0),
    (Usage(input_tokens=1000, output_tokens=500), GPT4O, (1000 * 2.5 + 500 * 10.0) / 1e6),
    (Usage(), GPT4O, 0.0),
    (Usage(input_tokens=1000, output_tokens=10), Pricing(), 0.0),
], ids=["input only", "output only", "input and output", "no usage", "free model"])
def test_cost_is_tokens_times_price_per_million(usage: Usage, pricing: Pricing, expected: float) -> None:
    assert cost_usd(usage, pricing) == pytest.approx(expected, rel=1e-12)


def test_cached_input_is_a_subset_of_input_billed_at_the_cached_price() -> None:
    usage = Usage(input_tokens=1000, cached_input_tokens=800, output_tokens=100)
    expected = (200 * 2.5 + 800 * 1.25 + 100 * 10.0) / 1e6
    assert cost_usd(usage, GPT4O) == pytest.approx(expected, rel=1e-12)


def test_cached_input_falls_back_to_the_input_price_when_the_model_has_no_cached_price() -> None:
    pricing = Pricing(input_per_mtok=3.0, output_per_mtok=15.0)
    cached = Usage(input_tokens=1000, cached_input_tokens=1000)
    assert cost_usd(cached, pricing) == cost_usd(Usage(input_tokens=1000), pricing)


def test_a_zero_cached_price_makes_cached_tokens_free() -> None:
    pricing = Pricing(input_per_mtok=3.0, output_per_mtok=15.0, cached_input_per_mtok=0.0)
    assert cost_usd(Usage(input_tokens=1000, cached_input_tokens=1000), pricing) == 0.0


def test_more_cached_than_input_tokens_never_bills_cached_tokens_twice() -> None:
    assert cost_usd(Usage(input_tokens=100, cached_input_tokens=500), GPT4O) == pytest.approx(100 * 1.25 / 1e6)


def test_cost_is_not_rounded() -> None:
    assert cost_usd(Usage(input_tokens=1, output_tokens=1), GPT4O) == (2.5 + 10.0) / 1e6


def test_estimate_prices_every_prompt_token_uncached_and_every_allowed_output_token() -> None:
    assert estimate_cost_usd(1000, 200, GPT4O) == pytest.approx((1000 * 2.5 + 200 * 10.0) / 1e6)


def test_estimate_without_max_tokens_assumes_the_default_output() -> None:
    assert estimate_cost_usd(0, None, GPT4O) == pytest.approx(DEFAULT_OUTPUT_ESTIMATE * 10.0 / 1e6)


def test_estimate_is_never_below_the_real_cost_of_a_request_that_respects_its_max_tokens() -> None:
    real = Usage(input_tokens=1000, cached_input_tokens=600, output_tokens=150)
    assert estimate_cost_usd(1000, 200, GPT4O) >= cost_usd(real, GPT4O)
