"""A failed answer that its provider billed is charged, though the client never sees it.

Gemini 2.5 now and then ends an answer with nothing in it (STOP, or MALFORMED_FUNCTION_CALL, and no
content) after reading the prompt and thinking: the sidecar asks again, unseen, but Google bills the
prompt and the thoughts of the empty answer. The route's budget, the spend, the cost metric, the
request's cost (its header, its access line) and the failed attempt's metrics all take that usage.
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

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.routing.cost import cost_usd
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.sim.gemini import THOUGHTS_TOKENS
from llmroute_proxy.table import Pricing
from tests.proxy.documents import model, provider, route, target
from tests.proxy.server.conftest import sim_requests
from tests.proxy.server.spending import SettledLimits, ended, status
from tests.proxy.stack import Stack

PRICING = Pricing(input_per_mtok=0.3, output_per_mtok=2.5)
CONFIG = [
    provider("gem", "gemini", "{gem}", key_env="TEST_GEM_KEY", limits={"tokensPerMinute": 1_000_000}, models=[
        model("gemini-2.5-flash", input_per_mtok=PRICING.input_per_mtok, output_per_mtok=PRICING.output_per_mtok)]),
    route("gemini-ui", {"gemini": [target("gem", "gemini-2.5-flash")]}, default_tier="gemini",
          budget={"limitUSD": 100, "period": "day", "onExceeded": "reject"},
          fallback={"maxAttempts": 3, "perTryTimeout": "3s", "overallTimeout": "10s"}),
]
ASK: Any = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("billed"), config=CONFIG, quirks=True) as running:
        yield running


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    caplog.set_level(logging.INFO, "llmroute.access")
    return lambda: [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "llmroute.access"]


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)


def spent(stack: Stack) -> tuple[float, dict[str, Any]]:
    """The route's budget spent, and the target's spend (with the cost metric's total as `metric_usd`)."""
    page = status(stack)
    budget = next(b for b in page["budgets"] if b["route"] == "gemini-ui")
    with urlopen(stack.admin_url + "/metrics") as response:
        metric = sum(sample.value for family in text_string_to_metric_families(response.read().decode())
                     for sample in family.samples if sample.name == "llmroute_cost_usd_total")
    return budget["spent_usd"], {**page["spend"]["targets"].get("gem/gemini-2.5-flash@here", {}), "metric_usd": metric}


THOUGHT = {FaultKind.EMPTY_ANSWER: THOUGHTS_TOKENS, FaultKind.MALFORMED_CALL: 0}
"""What the simulator's answer says was thought before it ended empty (a malformed call: nothing)."""


def billed_for_nothing(prompt_tokens: int, fault: FaultKind) -> Usage:
    """What an empty answer to the prompt is billed: the prompt and the thoughts (the simulator's usage)."""
    return Usage(input_tokens=prompt_tokens, output_tokens=THOUGHT[fault], reasoning_tokens=THOUGHT[fault])


@pytest.mark.parametrize("fault", [FaultKind.EMPTY_ANSWER, FaultKind.MALFORMED_CALL])
@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_billed_empty_answer_asked_again_is_charged_with_the_answer(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], limits: SettledLimits, fault: FaultKind,
        stream: bool) -> None:
    budget_before, spend_before = spent(stack)
    stack.call(lambda: stack.faults["gem"].next(Fault(fault)))
    if stream:
        chunks = list(client(stack).chat.completions.create(
            model="gemini", messages=ASK, stream=True, stream_options={"include_usage": True}))
        answered = next(c.usage for c in chunks if c.usage is not None)
        header = None
    else:
        raw = client(stack).chat.completions.with_raw_response.create(model="gemini", messages=ASK)
        answered, header = raw.parse().usage, raw.headers.get("x-llmroute-cost-usd")
    assert answered is not None
    outcome = ended(stack)

    empty = billed_for_nothing(answered.prompt_tokens, fault)
    answer_cost = cost_usd(Usage(input_tokens=answered.prompt_tokens, output_tokens=answered.completion_tokens),
                           PRICING)
    total = cost_usd(empty, PRICING) + answer_cost
    assert sim_requests(stack, "gem") == 2 and outcome.status == 200
    assert outcome.cost_usd == pytest.approx(total)
    assert header is None or float(header) == pytest.approx(total)
    [line] = access()
    assert line["cost_usd"] == pytest.approx(total) and line["input_tokens"] == answered.prompt_tokens
    budget_after, spend_after = spent(stack)
    assert budget_after - budget_before == pytest.approx(total)
    assert spend_after["cost_usd"] - spend_before.get("cost_usd", 0) == pytest.approx(total)
    assert spend_after["metric_usd"] - spend_before["metric_usd"] == pytest.approx(total)
    assert spend_after["input_tokens"] - spend_before.get("input_tokens", 0) == 2 * answered.prompt_tokens
    assert [(provider, actual) for provider, _, actual in limits.settled] == [  # the tokens-per-minute limit
        ("gem", empty.total_tokens), ("gem", answered.total_tokens)]


def test_a_request_whose_every_answer_was_billed_and_empty_is_charged_though_it_failed(
        stack: Stack, access: Callable[[], list[dict[str, Any]]]) -> None:
    budget_before, spend_before = spent(stack)
    stack.call(lambda: stack.faults["gem"].always(Fault(FaultKind.EMPTY_ANSWER)))
    with pytest.raises(openai.APIStatusError) as failed:
        client(stack).chat.completions.create(model="gemini", messages=ASK)
    outcome = ended(stack)

    attempts = sim_requests(stack, "gem")
    budget_after, spend_after = spent(stack)
    prompt_tokens = (spend_after["input_tokens"] - spend_before.get("input_tokens", 0)) // attempts
    assert failed.value.status_code == 502 and attempts == len(outcome.attempts) >= 2 and prompt_tokens > 0
    billed = cost_usd(billed_for_nothing(prompt_tokens, FaultKind.EMPTY_ANSWER), PRICING) * attempts
    assert outcome.usage is None and outcome.cost_usd == pytest.approx(billed)
    [line] = access()
    assert line["cost_usd"] == pytest.approx(billed) and line["status"] == 502
    assert budget_after - budget_before == pytest.approx(billed)
    assert spend_after["metric_usd"] - spend_before["metric_usd"] == pytest.approx(billed)
    assert status(stack)["budgets"][0]["reserved_usd"] == 0
