"""A target whose provider cannot translate a request is passed over, as if it were not in the tier:
the request goes to the next target that can take it, nothing is sent to the one that cannot, its
health and limits do not see it, and the access line and `/status` name it with the field it could
not carry (`passed_over`). Only when no target can take the request is the client answered 400, the
first target's refusal naming the field, after no upstream call at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.request import urlopen

import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy.table import TargetId
from tests.proxy.documents import route, target
from tests.proxy.server.spending import ended, status
from tests.proxy.stack import CLAUDE, GEM, OAI, Stack

CLAUDE_ID, GEM_ID = TargetId("claude/claude-sonnet-4-5@here"), TargetId("gem/gemini-2.5-flash@here")
OAI_ID = TargetId("oai/gpt-4o-mini@here")
FALLBACK = {"maxAttempts": 3, "perTryTimeout": "3s", "overallTimeout": "10s"}
CONFIG = [
    OAI, CLAUDE, GEM,
    route("mixed", {
        "smart": [target("claude", "claude-sonnet-4-5"), target("gem", "gemini-2.5-flash", priority=1)],
        "claude-only": [target("claude", "claude-sonnet-4-5")],
        "with-fallback": [target("claude", "claude-sonnet-4-5")],
        "cheap": [target("gem", "gemini-2.5-flash")],
        "embed": [target("claude", "claude-sonnet-4-5"), target("oai", "gpt-4o-mini", priority=1)],
    }, default_tier="smart",
        fallback={**FALLBACK, "fallbackTiers": ["cheap"]},
        outlierDetection={"consecutiveFailures": 1, "baseEjection": "30s"}),
    route("no-fallback", {"claude-only": [target("claude", "claude-sonnet-4-5")]}, default_tier="claude-only",
          fallback=FALLBACK),
]
HELLO: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("passed-over"), config=CONFIG) as running:
        yield running


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    caplog.set_level(logging.INFO, "llmroute.access")
    return lambda: [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "llmroute.access"]


def client(stack: Stack, route_name: str = "mixed") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0,
                         default_headers={"x-llmroute-route": route_name})


def sent_to(stack: Stack, target_id: TargetId) -> int:
    """How many attempts the sidecar made on a target."""
    return stack.call(lambda: stack.sidecar.counters_for(target_id).requests)


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_request_the_first_target_cannot_translate_goes_to_the_next_that_can(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], stream: bool) -> None:
    """Claude (priority 0) has no `seed`; Gemini (priority 1) has: it answers, and Claude is sent nothing."""
    before = sent_to(stack, CLAUDE_ID)
    raw = client(stack).chat.completions.with_raw_response.create(
        model="smart", messages=HELLO, seed=7, stream=stream)
    answer = raw.parse()
    text = "".join(chunk.choices[0].delta.content or "" for chunk in answer if chunk.choices) if stream \
        else answer.choices[0].message.content
    ended(stack)  # a stream's line is written a moment after the client read its last byte

    assert text
    assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-tier"]) == ("gem", "smart")
    assert raw.headers["x-llmroute-attempts"] == "1"  # nothing was sent to Claude
    assert sent_to(stack, CLAUDE_ID) == before
    [line] = access()
    assert line["passed_over"] == [{"target": CLAUDE_ID, "param": "seed"}]
    assert [attempt["target"] for attempt in line["tried"]] == [GEM_ID]
    assert "fallback_from" not in line
    assert status(stack)["decisions"][0]["passed_over"] == [{"target": CLAUDE_ID, "param": "seed"}]


def passed_over_total(stack: Stack) -> float:
    """`llmroute_failovers_total` for Claude on the route `mixed` with the reason `passed_over`."""
    with urlopen(stack.admin_url + "/metrics") as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "llmroute_failovers_total" and sample.labels.items() >= {
                   "llmroute_route": "mixed", "llmroute_target": CLAUDE_ID, "llmroute_failover_reason": "passed_over"}.items())


def test_each_target_passed_over_counts_as_a_failover_with_its_reason(stack: Stack) -> None:
    before = passed_over_total(stack)
    client(stack).chat.completions.create(model="smart", messages=HELLO, seed=7)
    client(stack).chat.completions.create(model="smart", messages=HELLO)  # Claude takes it: nothing counted
    assert passed_over_total(stack) == before + 1


def test_a_passed_over_target_keeps_its_health(stack: Stack) -> None:
    """One failure ejects a target on this route: ten requests Claude cannot take leave it healthy, and
    it still answers what it can."""
    for _ in range(10):
        client(stack).chat.completions.create(model="smart", messages=HELLO, seed=1)
    page = status(stack)
    claude = next(t for t in page["targets"] if t["id"] == CLAUDE_ID)
    assert (claude["state"], claude["consecutive_failures"]) == ("healthy", 0)

    raw = client(stack).chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.headers["x-llmroute-provider"] == "claude"


def test_a_request_no_target_of_the_tier_can_take_goes_to_a_fallback_tier(
        stack: Stack, access: Callable[[], list[dict[str, Any]]]) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(model="with-fallback", messages=HELLO, seed=7)

    assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-tier"]) == ("gem", "cheap")
    [line] = access()
    assert (line["tier"], line["fallback_from"]) == ("cheap", "with-fallback")
    assert line["passed_over"] == [{"target": CLAUDE_ID, "param": "seed"}]


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_request_no_target_can_take_is_refused_with_the_field_and_nothing_sent(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], stream: bool) -> None:
    before = sent_to(stack, CLAUDE_ID)
    with pytest.raises(openai.BadRequestError) as refused:
        client(stack, "no-fallback").chat.completions.create(model="claude-only", messages=HELLO, seed=7,
                                                             stream=stream)

    error = refused.value
    assert error.status_code == 400
    assert (error.param, error.code) == ("seed", "unsupported_parameter")
    assert "Anthropic does not support `seed`" in error.message
    assert error.response.headers["x-llmroute-attempts"] == "0"
    assert sent_to(stack, CLAUDE_ID) == before
    [line] = access()
    assert (line["status"], line["attempts"], line["error"]) == (400, 0, "unsupported_parameter")
    assert line["passed_over"] == [{"target": CLAUDE_ID, "param": "seed"}]


def test_embeddings_pass_over_a_provider_without_an_embeddings_api(
        stack: Stack, access: Callable[[], list[dict[str, Any]]]) -> None:
    """Anthropic has no embeddings: the tier's OpenAI target embeds instead of the client getting a 400."""
    raw = client(stack).embeddings.with_raw_response.create(model="embed", input=["hello", "world"])

    assert raw.headers["x-llmroute-provider"] == "oai"
    assert len(raw.parse().data) == 2
    [line] = access()
    assert line["passed_over"] == [{"target": CLAUDE_ID, "param": "model"}]


def test_a_request_every_target_takes_is_answered_by_the_first(stack: Stack,
                                                               access: Callable[[], list[dict[str, Any]]]) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(model="smart", messages=HELLO)

    assert raw.headers["x-llmroute-provider"] == "claude"
    [line] = access()
    assert "passed_over" not in line
    assert "passed_over" not in status(stack)["decisions"][0]
