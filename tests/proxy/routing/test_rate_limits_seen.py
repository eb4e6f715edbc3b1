"""The last rate-limit headers per provider: kept by reference per answer, parsed only for a report."""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict

from llmroute_proxy.dialects.base import Quota, RateLimits
from llmroute_proxy.routing.ratelimits import SeenRateLimits

WALL = 1_800_000_000.0


class CountingParser:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __call__(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        self.calls.append((headers.get("x-remaining", ""), seen_wall))
        remaining = headers.get("x-remaining")
        return None if remaining is None else RateLimits(Quota(remaining=float(remaining)))


def test_only_the_last_answer_per_provider_is_parsed_and_only_when_a_report_is_made() -> None:
    parse, seen = CountingParser(), SeenRateLimits()
    for i in range(1000):
        seen.seen("openai", parse, CIMultiDict({"x-remaining": str(1000 - i)}), now=10.0 + i / 1000)
    seen.seen("claude", parse, CIMultiDict({"x-remaining": "7"}), now=10.5)
    assert parse.calls == []  # nothing per answer
    report = seen.since(float("-inf"), now=12.0, now_wall=WALL)
    assert report == {"openai": (RateLimits(Quota(remaining=1.0)), 12.0 - 10.999),
                      "claude": (RateLimits(Quota(remaining=7.0)), 1.5)}
    # the parser is told when the answer came, on the wall clock, for resets given as times
    assert sorted(parse.calls) == sorted([("1", WALL - (12.0 - 10.999)), ("7", WALL - 1.5)])


def test_a_report_carries_only_answers_that_came_after_the_previous_one() -> None:
    parse, seen = CountingParser(), SeenRateLimits()
    seen.seen("openai", parse, CIMultiDict({"x-remaining": "5"}), now=1.0)
    assert set(seen.since(float("-inf"), now=2.0, now_wall=WALL)) == {"openai"}
    assert seen.since(2.0, now=3.0, now_wall=WALL) == {}
    seen.seen("openai", parse, CIMultiDict({"x-remaining": "4"}), now=3.5)
    assert seen.since(2.0, now=4.0, now_wall=WALL) == {"openai": (RateLimits(Quota(remaining=4.0)), 0.5)}


def test_an_answer_without_rate_limit_headers_reports_nothing() -> None:
    parse, seen = CountingParser(), SeenRateLimits()
    seen.seen("compat", parse, CIMultiDict(), now=1.0)
    assert seen.since(float("-inf"), now=2.0, now_wall=WALL) == {}
