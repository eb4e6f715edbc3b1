"""Providers' rate-limit headers read by each dialect (providers.md §1.6, §2.6): pure, time injected."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict

from llmroute_proxy.dialects.anthropic.ratelimits import rate_limits as anthropic_rate_limits
from llmroute_proxy.dialects.base import Quota, RateLimits
from llmroute_proxy.dialects.openai.ratelimits import duration_seconds
from llmroute_proxy.dialects.openai.ratelimits import rate_limits as openai_rate_limits
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.table import ProviderType

NOW = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC).timestamp()

OPENAI = CIMultiDict({
    "x-ratelimit-limit-requests": "5000", "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-reset-requests": "12ms", "x-ratelimit-limit-tokens": "160000",
    "x-ratelimit-remaining-tokens": "159976", "x-ratelimit-reset-tokens": "6m0s",
})


@pytest.mark.parametrize("text, seconds", [
    ("12ms", 0.012), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("0s", 0.0), ("2.5", 2.5),
    ("", None), ("soon", None), ("1x", None), ("5m garbage", None), ("-1s", None), ("nan", None),
])
def test_openai_resets_are_go_durations(text: str, seconds: float | None) -> None:
    found = duration_seconds(text)
    assert found == pytest.approx(seconds) if seconds is not None else found is None


def test_openai_headers_give_both_windows() -> None:
    assert openai_rate_limits(OPENAI, NOW) == RateLimits(Quota(5000, 4999, 0.012), Quota(160000, 159976, 360.0))


def test_a_429_carries_its_retry_after_and_azure_sends_only_part() -> None:
    azure = CIMultiDict({"x-ratelimit-remaining-requests": "0", "retry-after-ms": "1500"})
    assert openai_rate_limits(azure, NOW) == RateLimits(Quota(None, 0, None), None, 1.5)


def test_headers_that_say_nothing_or_nonsense_give_nothing() -> None:
    assert openai_rate_limits(CIMultiDict({"content-type": "application/json"}), NOW) is None
    junk = CIMultiDict({"x-ratelimit-limit-requests": "many", "x-ratelimit-remaining-requests": "-3",
                        "x-ratelimit-reset-requests": "later"})
    assert openai_rate_limits(junk, NOW) is None


def test_anthropic_resets_are_times_counted_from_when_the_answer_came() -> None:
    headers = CIMultiDict({
        "anthropic-ratelimit-requests-limit": "4000", "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": "2026-12-03T10:00:00.015Z",
        "anthropic-ratelimit-tokens-limit": "80000", "anthropic-ratelimit-tokens-remaining": "20000",
        "anthropic-ratelimit-tokens-reset": "2026-12-03T10:00:45Z",
        "anthropic-ratelimit-input-tokens-limit": "40000",  # the combined tokens-* window is the one read
        "retry-after": "7",
    })
    said = anthropic_rate_limits(headers, NOW)
    assert said is not None and said.retry_after_s == 7.0
    assert said.requests == Quota(4000, 3999, pytest.approx(0.015, abs=1e-6))
    assert said.tokens == Quota(80000, 20000, 45.0)
    past = CIMultiDict({"anthropic-ratelimit-requests-reset": "2026-12-03T09:00:00Z",
                        "anthropic-ratelimit-requests-remaining": "10"})
    assert anthropic_rate_limits(past, NOW) == RateLimits(Quota(None, 10, 0.0))
    naive = CIMultiDict({"anthropic-ratelimit-tokens-reset": "2026-12-03T10:00:45"})  # no zone: not a time
    assert anthropic_rate_limits(naive, NOW) is None


@pytest.mark.parametrize("kind, headers, expected", [
    (ProviderType.OPENAI, OPENAI, Quota(5000, 4999, 0.012)),
    (ProviderType.OPENAI_COMPATIBLE, OPENAI, Quota(5000, 4999, 0.012)),
    (ProviderType.AZURE_OPENAI, OPENAI, Quota(5000, 4999, 0.012)),
    (ProviderType.ANTHROPIC, CIMultiDict({"anthropic-ratelimit-requests-limit": "50"}), Quota(50)),
])
def test_each_provider_reads_its_own_dialects_headers(kind: ProviderType, headers: CIMultiDict[str],
                                                      expected: Quota) -> None:
    said = provider_for(kind).rate_limits(headers, NOW)
    assert said is not None and said.requests == expected


def test_gemini_sends_no_rate_limit_headers_but_a_retry_after_is_kept() -> None:
    gemini = provider_for(ProviderType.GEMINI)
    assert gemini.rate_limits(OPENAI, NOW) is None
    assert gemini.rate_limits(CIMultiDict({"retry-after": "3"}), NOW) == RateLimits(retry_after_s=3.0)
