"""What the tests of a route's spend share: a route `chat-ui` with a budget in front of the OpenAI
simulator, and readers of what the sidecar recorded (the outcome, /status, the metrics)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.request import urlopen

import openai
import orjson
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy.routing.limits import LimitBook
from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.server.outcome import Outcome
from llmroute_proxy.table import Pricing
from tests.proxy.documents import model, provider, route, target
from tests.proxy.stack import DOCUMENTS, Stack

PRICING = Pricing(input_per_mtok=1.0, output_per_mtok=2.0)
MAX_TOKENS = 4096
WORST_CASE = MAX_TOKENS * PRICING.output_per_mtok / 1e6  # what a reservation holds for the answer alone
CONFIG = [
    *DOCUMENTS,
    provider("metered", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", limits={"tokensPerMinute": 1_000_000},
             models=[model("gpt-4o-mini", input_per_mtok=PRICING.input_per_mtok,
                           output_per_mtok=PRICING.output_per_mtok)]),
    # room for two answers at their worst case: a third stopped stream charged as one would be refused
    route("chat-ui", {"fast": [target("metered", "gpt-4o-mini")]},
          default_tier="fast", budget={"limitUSD": 2.5 * WORST_CASE, "period": "day", "onExceeded": "reject"}),
    route("claude-ui", {"claude": [target("claude", "claude-sonnet-4-5")]}, default_tier="claude"),
]
MESSAGES: list[Any] = [{"role": "user", "content": "Tell me everything about the history of the bicycle, please."}]
PROMPT = RequestFacts("fast", MESSAGES, {}, False, None).prompt_tokens  # the sidecar's own estimate


class SettledLimits(LimitBook):
    """The sidecar's limit book, with every tokens-per-minute settlement kept for the test to read."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: list[tuple[str, int, int]] = []

    def settle_tokens(self, provider: str, estimated: int, actual: int, now: float) -> None:
        self.settled.append((provider, estimated, actual))
        super().settle_tokens(provider, estimated, actual, now)


def install_limits(stack: Stack) -> SettledLimits:
    """The stack's sidecar, given a limit book that keeps what it settles."""
    book = SettledLimits()

    def install() -> None:
        assert stack.sidecar.table is not None
        book.configure(stack.sidecar.table.provider_limits)
        stack.sidecar.limits = book

    stack.call(install)
    return book


def chat(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0,
                         default_headers={"x-llmroute-route": "chat-ui"})


def ended(stack: Stack) -> Outcome:
    """The sidecar's record of the last request, once its handler has ended (a closed connection
    reaches it a moment after the client closed it)."""
    async def idle() -> None:
        while stack.sidecar.in_flight:
            await asyncio.sleep(0.005)

    stack.run(asyncio.wait_for(idle(), 10))
    return stack.call(lambda: stack.sidecar.decisions[-1])


def status(stack: Stack) -> dict[str, Any]:
    with urlopen(stack.admin_url + "/status") as response:
        body: dict[str, Any] = orjson.loads(response.read())
    return body


def budget(stack: Stack) -> dict[str, Any]:
    return next(b for b in status(stack)["budgets"] if b["route"] == "chat-ui")


def route_spend(stack: Stack) -> dict[str, Any]:
    spend: dict[str, Any] = status(stack)["spend"]["routes"].get("chat-ui", {})
    return spend


def cost_metric(stack: Stack) -> float:
    with urlopen(stack.admin_url + "/metrics") as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "llmroute_cost_usd_total" and sample.labels.get("llmroute_route") == "chat-ui")
