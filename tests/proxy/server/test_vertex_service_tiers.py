"""Gemini on Vertex AI at the capacity the client asked for, billed at the tier its answer reports.

Vertex serves Flex and Priority PayGo to Gemini on its global endpoint only, asked for by the header
`X-Vertex-AI-LLM-Shared-Request-Type`, and reports what served a request as `usageMetadata.trafficType`
(`ON_DEMAND_PRIORITY`…). A regional endpoint is sent no tier and serves on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web

from llmroute_proxy.sim import FaultPlan, sim_state
from llmroute_proxy.sim.vertex import vertex_app
from tests.proxy.documents import model, provider, route, target
from tests.proxy.google_keys import service_account
from tests.proxy.server.spending import ended
from tests.proxy.stack import Stack

ACCOUNT = service_account()
GEMINI = "gemini-2.5-pro"
BASE = {"inputPerMTok": 1.25, "outputPerMTok": 10.0}
FLEX = {"inputPerMTok": 0.625, "outputPerMTok": 5.0}
PRIORITY = {"inputPerMTok": 2.25, "outputPerMTok": 18.0}
PRICED = {**model(GEMINI), "pricing": {**BASE, "serviceTiers": {"flex": FLEX, "priority": PRIORITY}}}
PROJECT = "{vertex}/v1/projects/sim-project/locations"
CONFIG = [
    provider("vx-global", "vertex", f"{PROJECT}/global", key_env="TEST_VERTEX_KEY", models=[PRICED]),
    provider("vx-east", "vertex", f"{PROJECT}/us-east5", key_env="TEST_VERTEX_KEY", models=[PRICED]),
    route("main", {"global": [target("vx-global", GEMINI)], "regional": [target("vx-east", GEMINI)]},
          default_tier="global"),
]


def vertex_sim(faults: FaultPlan) -> web.Application:
    return vertex_app(ACCOUNT.client_email, ACCOUNT.public_key, ACCOUNT.key_id, faults=faults)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("vertex-tiers"), config=CONFIG, extra_sims={"vertex": vertex_sim},
               environ={"TEST_VERTEX_KEY": ACCOUNT.key_file}) as running:
        yield running


def cost(prices: dict[str, float], usage: Any) -> float:
    return (usage.prompt_tokens * prices["inputPerMTok"] + usage.completion_tokens * prices["outputPerMTok"]) / 1e6


def shared_request_type(stack: Stack) -> str | None:
    return stack.call(lambda: sim_state(stack.sims["vertex"].app).stats.last.headers.get(
        "X-Vertex-AI-LLM-Shared-Request-Type"))


@pytest.mark.parametrize(("tier", "asked", "header", "prices"), [
    ("global", "priority", "priority", PRIORITY),
    ("global", "flex", "flex", FLEX),
    ("global", "default", None, BASE),
    ("global", None, None, BASE),
    ("regional", "priority", None, BASE),  # not served there: not asked for, billed on demand
], ids=["priority", "flex", "default", "none", "priority on a regional endpoint"])
def test_gemini_on_vertex_is_asked_for_a_tier_where_vertex_serves_it_and_billed_at_what_served_it(
        stack: Stack, tier: str, asked: str | None, header: str | None, prices: dict[str, float]) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    answered = client.chat.completions.with_raw_response.create(
        model=tier, messages=[{"role": "user", "content": "Name a colour."}],
        service_tier=openai.NOT_GIVEN if asked is None else asked)  # type: ignore[arg-type]

    assert shared_request_type(stack) == header
    usage = answered.parse().usage
    assert usage is not None
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(cost(prices, usage), rel=1e-9)


def test_a_streamed_answer_is_billed_at_the_tier_its_usage_reports(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    with client.chat.completions.create(model="global", messages=[{"role": "user", "content": "Name a colour."}],
                                        service_tier="priority", stream=True,
                                        stream_options={"include_usage": True}) as stream:
        usage = list(stream)[-1].usage

    assert usage is not None
    outcome = ended(stack)
    assert outcome.usage is not None and outcome.usage.service_tier == "priority"
    assert outcome.cost_usd == pytest.approx(cost(PRIORITY, usage), rel=1e-9)
