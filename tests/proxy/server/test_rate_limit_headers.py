"""Providers' rate-limit headers are kept from every answer, ok or not, streamed or not, for the usage reports."""

from __future__ import annotations

import openai

from llmroute_proxy.dialects.base import Quota, RateLimits
from llmroute_proxy.sim import Fault, FaultKind
from tests.proxy.stack import Stack

HELLO = [{"role": "user", "content": "hello"}]


def reported(stack: Stack) -> dict[str, tuple[RateLimits, float]]:
    sidecar = stack.sidecar
    return stack.call(lambda: sidecar.rate_limits_seen.since(float("-inf"), sidecar.clock(), sidecar.wallclock()))


def test_the_last_answers_headers_of_each_provider_are_reported_as_the_dialect_reads_them(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="openai", messages=HELLO)
    for _ in client.chat.completions.create(model="anthropic", messages=HELLO, stream=True):
        pass
    seen = reported(stack)
    oai, age = seen["oai"]
    assert oai == RateLimits(Quota(10000, 9999, 0.006), Quota(10000000, 9999000, 0.006)) and 0 <= age < 10
    claude, _ = seen["claude"]
    assert claude.requests == Quota(4000, 3999, 0.0)  # its reset, a time in the past, is now
    assert "gem" not in seen  # not asked


def test_a_429s_retry_after_is_kept_though_the_request_failed_over(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=429, retry_after=5)))
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    assert client.chat.completions.with_raw_response.create(model="ha", messages=HELLO).status_code == 200
    oai, _ = reported(stack)["oai"]
    assert oai.retry_after_s == 5.0
