"""Embeddings are charged for their input, also where the provider does not count it.

Gemini's embedding answers carry no usage at all (`{"embeddings": [{"values": […]}]}`), and some
OpenAI-compatible servers send none either. The provider bills the input all the same, so the
route's budget, its spend, the cost metric and the request's outcome take the sidecar's estimate of
the input (texts estimated, token ids counted), marked as an estimate, instead of nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llmroute_proxy.routing.tokens import embedding_input_tokens
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import Pricing
from tests.proxy.documents import model, provider, route, target
from tests.proxy.server import spending
from tests.proxy.server.spending import ended
from tests.proxy.stack import OAI, Stack

GEMINI_EMBEDDING = Pricing(input_per_mtok=0.15, output_per_mtok=0.0)
OPENAI_EMBEDDING_INPUT_PER_MTOK = 0.02  # text-embedding-3-small, as the stack's `oai` provider prices it
CONFIG = [
    OAI,
    provider("gem", "gemini", "{gem}", key_env="TEST_GEM_KEY", models=[
        model("gemini-embedding-001", input_per_mtok=GEMINI_EMBEDDING.input_per_mtok, output_per_mtok=0.0)]),
    route("chat-ui", {"gemini": [target("gem", "gemini-embedding-001")],
                      "openai": [target("oai", "text-embedding-3-small")]},
          default_tier="gemini", budget={"limitUSD": 10.0, "period": "day", "onExceeded": "reject"}),
]
TEXTS = ["The history of the bicycle begins in 1817 with Karl Drais's running machine.",
         "Pneumatic tyres arrived in 1888, and with them the bicycle boom of the 1890s."]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("embeddings-spend"), config=CONFIG) as running:
        yield running


def embed(stack: Stack, tier: str, given: Any) -> tuple[int | None, str | None]:
    """Embed `given` on `tier`: the prompt tokens the client was told (None: no usage), and the cost header."""
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0,
                           default_headers={"x-llmroute-route": "chat-ui"})
    raw = client.embeddings.with_raw_response.create(model=tier, input=given)
    answer = raw.parse()
    assert len(answer.data) == (len(given) if isinstance(given, list) and isinstance(given[0], (str, list)) else 1)
    return answer.usage.prompt_tokens if answer.usage else None, raw.headers.get("x-llmroute-cost-usd")


@pytest.fixture
def unmetered(stack: Stack) -> Iterator[None]:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.NO_USAGE)))
    yield
    stack.call(lambda: stack.faults["oai"].clear())


@pytest.mark.parametrize("tier, given", [("gemini", TEXTS), ("gemini", TEXTS[0]),
                                         ("unmetered", [[9906, 1917, 0], [1820, 1543]])],
                         ids=["gemini-texts", "gemini-text", "compatible-token-ids"])
def test_embeddings_without_usage_are_charged_the_estimate_of_their_input(
        stack: Stack, tier: str, given: Any, request: pytest.FixtureRequest) -> None:
    if tier == "unmetered":  # an OpenAI-style server that counts nothing
        request.getfixturevalue("unmetered")
    spent_before = spending.budget(stack)["spent_usd"]
    spend_before = spending.route_spend(stack).get("input_tokens", 0)
    metric_before = spending.cost_metric(stack)
    told, cost_header = embed(stack, "openai" if tier == "unmetered" else tier, given)
    outcome = ended(stack)

    expected = embedding_input_tokens(given)
    assert expected > 0 and not told  # the client is told what the provider said: nothing counted
    assert outcome.status == 200 and outcome.usage_estimated
    assert outcome.usage is not None and (outcome.usage.input_tokens, outcome.usage.output_tokens) == (expected, 0)
    price = GEMINI_EMBEDDING.input_per_mtok if tier == "gemini" else OPENAI_EMBEDDING_INPUT_PER_MTOK
    cost = expected * price / 1e6
    assert outcome.cost_usd == pytest.approx(cost) and float(cost_header or 0) == pytest.approx(cost, rel=1e-3)
    assert spending.budget(stack)["spent_usd"] - spent_before == pytest.approx(cost)
    assert spending.route_spend(stack)["input_tokens"] - spend_before == expected
    assert spending.cost_metric(stack) - metric_before == pytest.approx(cost)
    assert spending.status(stack)["decisions"][0]["usage_estimated"] is True


def test_token_ids_count_one_each_and_texts_are_estimated() -> None:
    assert embedding_input_tokens([[1, 2, 3], [4]]) == 4
    assert embedding_input_tokens([1, 2, 3]) == 3  # one tokenised text
    assert embedding_input_tokens(["a cat", [1, 2]]) == embedding_input_tokens("a cat") + 2


def test_embeddings_with_usage_are_charged_the_providers_count(stack: Stack) -> None:
    told, _ = embed(stack, "openai", TEXTS)
    outcome = ended(stack)

    assert told and not outcome.usage_estimated
    assert outcome.usage is not None and outcome.usage.input_tokens == told
