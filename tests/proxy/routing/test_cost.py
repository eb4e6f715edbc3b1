from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from llmroute_proxy.dialects.base import StreamChunk, Usage
from llmroute_proxy.routing.cost import (
    DEFAULT_OUTPUT_ESTIMATE,
    answer_usage,
    cost_usd,
    estimate_cost_usd,
    streamed_usage,
)
from llmroute_proxy.routing.tokens import estimate_tokens
from llmroute_proxy.table import LongContextPricing, Pricing

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


SONNET = Pricing(input_per_mtok=3.0, output_per_mtok=15.0, cached_input_per_mtok=0.30, cache_write_per_mtok=3.75,
                 cache_write_1h_per_mtok=6.0)


def test_cache_writes_are_a_subset_of_input_billed_at_the_write_price() -> None:
    usage = Usage(input_tokens=10_000, cached_input_tokens=2000, cache_write_tokens=7000, output_tokens=100)
    expected = (1000 * 3.0 + 2000 * 0.30 + 7000 * 3.75 + 100 * 15.0) / 1e6
    assert cost_usd(usage, SONNET) == pytest.approx(expected, rel=1e-12)


def test_writes_kept_an_hour_are_billed_at_their_own_price() -> None:
    usage = Usage(input_tokens=10_000, cache_write_tokens=8000, cache_write_1h_tokens=5000)
    expected = (2000 * 3.0 + 3000 * 3.75 + 5000 * 6.0) / 1e6
    assert cost_usd(usage, SONNET) == pytest.approx(expected, rel=1e-12)


def test_without_write_prices_writes_cost_the_input_price_and_hour_long_ones_the_write_price() -> None:
    input_only = Pricing(input_per_mtok=3.0)
    written = Usage(input_tokens=1000, cache_write_tokens=1000, cache_write_1h_tokens=400)
    assert cost_usd(written, input_only) == cost_usd(Usage(input_tokens=1000), input_only)
    writes_only = Pricing(input_per_mtok=3.0, cache_write_per_mtok=3.75)
    assert cost_usd(written, writes_only) == pytest.approx(1000 * 3.75 / 1e6, rel=1e-12)


def test_counts_that_overlap_more_than_the_input_never_bill_a_token_twice() -> None:
    usage = Usage(input_tokens=100, cached_input_tokens=80, cache_write_tokens=50, cache_write_1h_tokens=90)
    assert cost_usd(usage, SONNET) == pytest.approx((80 * 0.30 + 20 * 6.0) / 1e6, rel=1e-12)


def test_estimate_prices_the_prompt_at_the_dearest_write_price_so_a_written_prompt_is_covered() -> None:
    written = Usage(input_tokens=1000, cache_write_tokens=1000, cache_write_1h_tokens=1000, output_tokens=200)
    assert estimate_cost_usd(1000, 200, SONNET) == pytest.approx((1000 * 6.0 + 200 * 15.0) / 1e6)
    assert estimate_cost_usd(1000, 200, SONNET) >= cost_usd(written, SONNET)


def test_web_searches_are_billed_per_thousand_beside_the_tokens() -> None:
    searching = Pricing(input_per_mtok=3.0, output_per_mtok=15.0, web_search_per_1k=10.0)
    usage = Usage(input_tokens=1000, output_tokens=100, web_searches=2)
    assert cost_usd(usage, searching) == pytest.approx((1000 * 3.0 + 100 * 15.0) / 1e6 + 2 * 10.0 / 1000, rel=1e-12)
    assert cost_usd(usage, Pricing(input_per_mtok=3.0, output_per_mtok=15.0)) == pytest.approx(
        (1000 * 3.0 + 100 * 15.0) / 1e6, rel=1e-12)  # no search price: searches are free


def test_estimate_reserves_the_searches_a_request_allows() -> None:
    searching = Pricing(input_per_mtok=3.0, output_per_mtok=15.0, web_search_per_1k=10.0)
    assert estimate_cost_usd(1000, 200, searching, web_searches=3) == pytest.approx(
        (1000 * 3.0 + 200 * 15.0) / 1e6 + 0.03)
    real = Usage(input_tokens=1000, output_tokens=200, web_searches=3)
    assert estimate_cost_usd(1000, 200, searching, web_searches=3) >= cost_usd(real, searching)


GEMINI_PRO = Pricing(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.31, long_context=LongContextPricing(
    200_000, Pricing(input_per_mtok=2.5, output_per_mtok=15.0, cached_input_per_mtok=0.625)))


def test_a_prompt_above_the_long_context_threshold_makes_every_token_dearer() -> None:
    long = Usage(input_tokens=250_000, cached_input_tokens=100_000, output_tokens=1000)
    assert cost_usd(long, GEMINI_PRO) == pytest.approx((150_000 * 2.5 + 100_000 * 0.625 + 1000 * 15.0) / 1e6)


def test_a_prompt_at_the_threshold_is_not_long() -> None:
    at = Usage(input_tokens=200_000, output_tokens=1000)
    assert cost_usd(at, GEMINI_PRO) == pytest.approx((200_000 * 1.25 + 1000 * 10.0) / 1e6)


def test_the_estimate_takes_the_long_context_prices_when_the_prompt_may_be_above_the_threshold() -> None:
    short, near, long = 100_000, 180_000, 300_000  # near: the real count may be 15 % more, above 200,000
    assert estimate_cost_usd(short, 1000, GEMINI_PRO) == pytest.approx((short * 1.25 + 1000 * 10.0) / 1e6)
    assert estimate_cost_usd(near, 1000, GEMINI_PRO) == pytest.approx((near * 2.5 + 1000 * 15.0) / 1e6)
    assert estimate_cost_usd(long, 1000, GEMINI_PRO) == pytest.approx((long * 2.5 + 1000 * 15.0) / 1e6)


FLEX = Pricing(input_per_mtok=0.625, output_per_mtok=5.0, cached_input_per_mtok=0.0625)
PRIORITY = Pricing(input_per_mtok=2.5, output_per_mtok=20.0, cached_input_per_mtok=0.25)
GPT5 = Pricing(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125, web_search_per_1k=10.0,
               service_tiers={"flex": FLEX, "priority": PRIORITY})
SPENT = Usage(input_tokens=10_000, cached_input_tokens=4000, output_tokens=1000)


@pytest.mark.parametrize(("tier", "prices"), [
    ("flex", FLEX), ("priority", PRIORITY), ("default", GPT5), ("scale", GPT5), (None, GPT5),
], ids=["flex", "priority", "an unlisted tier", "a tier of no list", "no tier reported"])
def test_an_answer_is_priced_at_the_list_of_the_tier_it_reports_else_at_the_base_list(
        tier: str | None, prices: Pricing) -> None:
    expected = (6000 * prices.input_per_mtok + 4000 * (prices.cached_input_per_mtok or 0)
                + 1000 * prices.output_per_mtok) / 1e6
    assert cost_usd(replace(SPENT, service_tier=tier), GPT5) == pytest.approx(expected, rel=1e-12)


def test_a_tier_list_keeps_the_base_lists_search_price_and_has_its_own_long_context_or_none() -> None:
    long_priority = replace(PRIORITY, web_search_per_1k=10.0, long_context=LongContextPricing(
        200_000, Pricing(input_per_mtok=5.0, output_per_mtok=30.0, web_search_per_1k=10.0)))
    tiered = replace(GEMINI_PRO, service_tiers={"priority": long_priority, "flex": replace(FLEX, web_search_per_1k=10.0)})
    long = Usage(input_tokens=250_000, output_tokens=1000, web_searches=1)

    assert cost_usd(replace(long, service_tier="priority"), tiered) == pytest.approx(
        (250_000 * 5.0 + 1000 * 30.0) / 1e6 + 0.01)
    assert cost_usd(replace(long, service_tier="flex"), tiered) == pytest.approx(  # flex: no long list of its own
        (250_000 * 0.625 + 1000 * 5.0) / 1e6 + 0.01)
    assert cost_usd(long, tiered) == pytest.approx((250_000 * 2.5 + 1000 * 15.0) / 1e6)  # the base's long list


@pytest.mark.parametrize(("tiers", "prices"), [
    (("flex",), FLEX), (("priority", "default"), PRIORITY), (("default",), GPT5), ((), GPT5), (None, PRIORITY),
], ids=["flex asked", "priority asked", "default asked", "no tier reported", "any tier"])
def test_the_estimate_is_at_the_dearest_list_the_request_may_be_served_at(
        tiers: tuple[str, ...] | None, prices: Pricing) -> None:
    expected = (10_000 * prices.input_per_mtok + 1000 * prices.output_per_mtok) / 1e6
    assert estimate_cost_usd(10_000, 1000, GPT5, tiers=tiers) == pytest.approx(expected, rel=1e-12)


def test_an_estimate_at_any_tier_is_never_below_the_cost_at_any_of_them() -> None:
    dearest = estimate_cost_usd(10_000, 1000, GPT5, tiers=None)
    for tier in (None, "default", "flex", "priority"):
        assert dearest >= cost_usd(Usage(input_tokens=10_000, output_tokens=1000, service_tier=tier), GPT5)


def test_a_stream_stopped_midway_keeps_the_tier_its_usage_reported() -> None:
    started = Usage(input_tokens=900, output_tokens=1, service_tier="priority")
    assert streamed_usage(started, False, 1000, received=21, seen=[ROLE, chunk(content=WORD)]).service_tier == "priority"


def test_cost_is_not_rounded() -> None:
    assert cost_usd(Usage(input_tokens=1, output_tokens=1), GPT4O) == (2.5 + 10.0) / 1e6


def test_estimate_prices_every_prompt_token_uncached_and_every_allowed_output_token() -> None:
    assert estimate_cost_usd(1000, 200, GPT4O) == pytest.approx((1000 * 2.5 + 200 * 10.0) / 1e6)


def test_estimate_without_max_tokens_assumes_the_default_output() -> None:
    assert estimate_cost_usd(0, None, GPT4O) == pytest.approx(DEFAULT_OUTPUT_ESTIMATE * 10.0 / 1e6)


def test_estimate_is_never_below_the_real_cost_of_a_request_that_respects_its_max_tokens() -> None:
    real = Usage(input_tokens=1000, cached_input_tokens=600, output_tokens=150)
    assert estimate_cost_usd(1000, 200, GPT4O) >= cost_usd(real, GPT4O)


def chunk(**delta: Any) -> StreamChunk:
    return StreamChunk({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta,
                                                                         "finish_reason": None}]})


ROLE = chunk(role="assistant", content="")
WORD = " hello"  # one token, as OpenAI streams them


def test_a_stopped_stream_without_usage_is_its_prompt_estimate_and_its_chunks_at_the_size_of_those_at_hand() -> None:
    """40 chunks read: the role chunk and 39 one-token chunks; only the first two and the last are at hand."""
    used = streamed_usage(None, False, prompt_tokens=120, received=40,
                          seen=[ROLE, chunk(content=WORD), chunk(content=WORD)])
    assert estimate_tokens(WORD) == 1
    assert used == Usage(input_tokens=120, output_tokens=39)  # the role chunk shows nothing: not averaged in


def test_chunks_of_several_tokens_count_as_several() -> None:
    text = " the quick brown fox jumps"  # how Claude streams: a few tokens a chunk
    used = streamed_usage(None, False, 10, received=11, seen=[ROLE, chunk(content=text)])
    assert used.output_tokens == 10 * estimate_tokens(text) > 10


def test_tool_call_arguments_reasoning_and_refusals_are_output_too() -> None:
    shown = [chunk(tool_calls=[{"index": 0, "function": {"name": "lookup", "arguments": '{"city": "Paris"}'}}]),
             chunk(reasoning_content="Let me think about it"), chunk(refusal="I can't help with that")]
    used = streamed_usage(None, False, 10, received=3, seen=shown)
    assert used.output_tokens == estimate_tokens('lookup{"city": "Paris"}Let me think about itI can\'t help with that')


def test_a_stream_stopped_before_any_output_chunk_used_its_prompt_alone() -> None:
    assert streamed_usage(None, False, 50, received=1, seen=[ROLE]) == Usage(input_tokens=50)


def test_the_final_usage_a_stream_carried_is_what_it_used() -> None:
    final = Usage(input_tokens=900, output_tokens=12, cached_input_tokens=800)
    assert streamed_usage(final, True, 1000, received=500, seen=[chunk(content=WORD)]) == final


def test_running_usage_gives_the_prompt_and_a_floor_under_the_output_streamed_since() -> None:
    """Anthropic's `message_start` counts the prompt exactly and one output token; Gemini's chunks count
    all the output up to them. Output streamed after the last count is still billed."""
    started = Usage(input_tokens=900, output_tokens=1, cached_input_tokens=800, cache_write_tokens=50)
    used = streamed_usage(started, False, 1000, received=21, seen=[ROLE, chunk(content=WORD)])
    assert used == Usage(input_tokens=900, output_tokens=20, cached_input_tokens=800, cache_write_tokens=50)
    counted = Usage(input_tokens=900, output_tokens=64)
    assert streamed_usage(counted, False, 1000, received=21, seen=[ROLE, chunk(content=WORD)]) == Usage(
        input_tokens=900, output_tokens=64)


def test_an_answer_without_usage_is_its_prompt_estimate_and_the_output_it_shows() -> None:
    text = "Paris is the capital of France, and has been since the tenth century."
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Paris"}'}}
    answer = {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
         "finish_reason": "tool_calls"}]}
    used = answer_usage(120, answer)
    assert used == Usage(input_tokens=120, output_tokens=estimate_tokens(text + 'lookup{"city": "Paris"}'))
    assert used.output_tokens > estimate_tokens(text) > 10


def test_an_answer_that_shows_nothing_used_its_prompt_alone() -> None:
    assert answer_usage(50, {"choices": []}) == Usage(input_tokens=50)
