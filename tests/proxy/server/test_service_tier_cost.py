"""An answer costs what its provider bills for the service tier that served it.

OpenAI bills Flex at about half its standard prices and Priority at about twice, and reports the tier
that served a request (`service_tier` on a completion, on every chunk, on a Response); Anthropic reports
`usage.service_tier`, `priority` while an organisation's Priority Tier capacity lasts. A model's
`pricing.serviceTiers` gives each tier's list: the cost (`x-llmroute-cost-usd`, the access line, which
names a tier other than the standard one) is at the reported tier's list. `oai-prio` is a project whose
default tier is Priority; `claude-prio` an organisation with Priority Tier capacity. Gemini takes
`serviceTier` (`standard`, `flex`, `priority`) and reports the tier in `usageMetadata.serviceTier`, and
serves a Priority request at `standard` once its Priority capacity ran out (`gem-prio-out`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from llmroute_proxy.server.accesslog import access_entry
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.sim.anthropic import anthropic_app
from llmroute_proxy.sim.bedrock import bedrock_app
from llmroute_proxy.sim.faults import FaultPlan
from llmroute_proxy.sim.gemini import gemini_app
from llmroute_proxy.sim.openai import openai_app
from tests.proxy.documents import model, provider, route, target
from tests.proxy.server.conftest import last_request
from tests.proxy.server.spending import ended
from tests.proxy.stack import Stack

BASE = {"inputPerMTok": 1.25, "outputPerMTok": 10.0}
FLEX = {"inputPerMTok": 0.625, "outputPerMTok": 5.0}
PRIORITY = {"inputPerMTok": 2.5, "outputPerMTok": 20.0}
CLAUDE_BASE = {"inputPerMTok": 3.0, "outputPerMTok": 15.0}
CLAUDE_PRIORITY = {"inputPerMTok": 4.5, "outputPerMTok": 22.5}
GEMINI_BASE = {"inputPerMTok": 0.3, "outputPerMTok": 2.5}
GEMINI_FLEX = {"inputPerMTok": 0.15, "outputPerMTok": 1.25}
GEMINI_PRIORITY = {"inputPerMTok": 0.54, "outputPerMTok": 4.5}


def priced(name: str, base: dict[str, float], tiers: dict[str, dict[str, float]]) -> dict[str, Any]:
    entry = model(name)
    entry["pricing"] = {**base, "serviceTiers": tiers}
    return entry


GPT = priced("gpt-5", BASE, {"flex": FLEX, "priority": PRIORITY})
CLAUDE = priced("claude-sonnet-4-5", CLAUDE_BASE, {"priority": CLAUDE_PRIORITY})
GEMINI = priced("gemini-2.5-flash", GEMINI_BASE, {"flex": GEMINI_FLEX, "priority": GEMINI_PRIORITY})
GEMINI_STANDARD = priced("gemini-2.5-flash", GEMINI_BASE, {"standard": GEMINI_BASE})
NOVA_BASE = {"inputPerMTok": 0.8, "outputPerMTok": 3.2}
NOVA_FLEX = {"inputPerMTok": 0.4, "outputPerMTok": 1.6}
NOVA_PRIORITY = {"inputPerMTok": 1.4, "outputPerMTok": 5.6}
NOVA = priced("us.amazon.nova-pro-v1:0", NOVA_BASE, {"flex": NOVA_FLEX, "priority": NOVA_PRIORITY})
SONNET_FLEX = {"inputPerMTok": 1.5, "outputPerMTok": 7.5}
BEDROCK_SONNET = priced("anthropic.claude-sonnet-4-5-20250929-v1:0", CLAUDE_BASE, {"flex": SONNET_FLEX})
BEDROCK_KEY = "ABSKQmVkcm9ja0FQSUtleS1zaW0tdGllcnM="
CONFIG = [
    provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=[GPT]),
    provider("oai-prio", "openai", "{oai_prio}/v1", key_env="TEST_OAI_KEY", models=[GPT]),
    provider("claude-prio", "anthropic", "{claude_prio}", key_env="TEST_CLAUDE_KEY", models=[CLAUDE]),
    provider("gem", "gemini", "{gem}", key_env="TEST_GEM_KEY", models=[GEMINI]),
    provider("gem-prio-out", "gemini", "{gem_prio_out}", key_env="TEST_GEM_KEY", models=[GEMINI]),
    provider("gem-std", "gemini", "{gem}", key_env="TEST_GEM_KEY", models=[GEMINI_STANDARD]),
    provider("bedrock", "bedrock", "{bedrock}", key_env="TEST_BEDROCK_KEY", models=[NOVA, BEDROCK_SONNET]),
    route("tiers", {"gpt": [target("oai", "gpt-5")], "gpt-prio": [target("oai-prio", "gpt-5")],
                    "claude": [target("claude-prio", "claude-sonnet-4-5")],
                    "gemini": [target("gem", "gemini-2.5-flash")],
                    "gemini-standard": [target("gem-std", "gemini-2.5-flash")],
                    "gemini-prio-out": [target("gem-prio-out", "gemini-2.5-flash")],
                    "nova": [target("bedrock", "us.amazon.nova-pro-v1:0")],
                    "bedrock-claude": [target("bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0")]},
          default_tier="gpt", budget={"limitUSD": 100, "period": "day", "onExceeded": "reject"}),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    def oai_prio(faults: FaultPlan) -> Any:
        return openai_app("sk-test-oai", name="sim-oai-prio", faults=faults, service_tier="priority", quirks=True)

    def claude_prio(faults: FaultPlan) -> Any:
        return anthropic_app("sk-ant-test", faults=faults, service_tier="priority", quirks=True)

    def gem_prio_out(faults: FaultPlan) -> Any:
        return gemini_app("gem-test-key", faults=faults, priority_capacity=False, quirks=True)

    def bedrock(faults: FaultPlan) -> Any:
        return bedrock_app(BEDROCK_KEY, faults=faults)

    with Stack(tmp_path_factory.mktemp("service-tier"), config=CONFIG, quirks=True,
               extra_sims={"oai-prio": oai_prio, "claude-prio": claude_prio, "gem-prio-out": gem_prio_out,
                           "bedrock": bedrock}, environ={"TEST_BEDROCK_KEY": BEDROCK_KEY}) as running:
        yield running


def cost(prices: dict[str, float], input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * prices["inputPerMTok"] + output_tokens * prices["outputPerMTok"]) / 1e6


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)


@pytest.mark.parametrize(("model_name", "asked", "served", "prices"), [
    ("gpt", "flex", "flex", FLEX),
    ("gpt", "priority", "priority", PRIORITY),
    ("gpt", "default", "default", BASE),
    ("gpt", None, "default", BASE),
    ("gpt-prio", "auto", "priority", PRIORITY),  # the project's default tier is Priority
    ("gpt-prio", None, "priority", PRIORITY),
], ids=["flex", "priority", "default", "none", "auto on a priority project", "none on a priority project"])
def test_a_completion_is_billed_at_the_tier_that_served_it(
        stack: Stack, model_name: str, asked: str | None, served: str, prices: dict[str, float]) -> None:
    tier: Any = openai.NOT_GIVEN if asked is None else asked
    answered = openai_client(stack).chat.completions.with_raw_response.create(
        model=model_name, messages=[{"role": "user", "content": "Name a colour."}], service_tier=tier)

    completion = answered.parse()
    assert completion.service_tier == served and completion.usage is not None
    expected = cost(prices, completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(expected, rel=1e-9)
    entry = access_entry(ended(stack))
    assert entry.get("service_tier") == (None if served == "default" else served)


@pytest.mark.parametrize(("asked", "prices"), [("flex", FLEX), ("priority", PRIORITY)])
def test_a_stream_is_billed_at_the_tier_its_chunks_report(stack: Stack, asked: str, prices: dict[str, float]) -> None:
    with openai_client(stack).chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "Name a colour."}], service_tier=asked,  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True}) as stream:
        chunks = list(stream)

    assert {chunk.service_tier for chunk in chunks} == {asked}
    usage = chunks[-1].usage
    assert usage is not None
    outcome = ended(stack)
    assert outcome.cost_usd == pytest.approx(cost(prices, usage.prompt_tokens, usage.completion_tokens), rel=1e-9)
    assert access_entry(outcome)["service_tier"] == asked


def test_a_stream_cut_before_its_usage_is_estimated_at_the_tier_its_chunks_reported(stack: Stack) -> None:
    """The usage comes in the last chunk; the tier in every chunk. A stream broken after two chunks is
    charged its estimate, at the Priority prices its chunks said it was served at."""
    stack.call(lambda: stack.faults["oai"].next(Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=2)))
    with pytest.raises(openai.APIError):
        list(openai_client(stack).chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "Name a colour."}], service_tier="priority",
            stream=True, stream_options={"include_usage": True}))

    outcome = ended(stack)
    assert outcome.usage_estimated and outcome.usage is not None and outcome.usage.service_tier == "priority"
    assert outcome.cost_usd == pytest.approx(
        cost(PRIORITY, outcome.usage.input_tokens, outcome.usage.output_tokens), rel=1e-9)
    assert access_entry(outcome)["service_tier"] == "priority"


def test_a_response_is_billed_at_the_tier_it_reports_streamed_or_not(stack: Stack) -> None:
    client = openai_client(stack)

    answered = client.responses.with_raw_response.create(model="gpt", input="Name a colour.", service_tier="flex")
    response = answered.parse()
    assert response.service_tier == "flex" and response.usage is not None
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(
        cost(FLEX, response.usage.input_tokens, response.usage.output_tokens), rel=1e-9)

    with client.responses.stream(model="gpt", input="Name a colour.", service_tier="priority") as stream:
        streamed = stream.get_final_response()
    assert streamed.service_tier == "priority" and streamed.usage is not None
    assert ended(stack).cost_usd == pytest.approx(
        cost(PRIORITY, streamed.usage.input_tokens, streamed.usage.output_tokens), rel=1e-9)


@pytest.mark.parametrize(("asked", "served", "prices"), [
    (None, "priority", CLAUDE_PRIORITY), ("auto", "priority", CLAUDE_PRIORITY), ("standard_only", "standard", CLAUDE_BASE),
])
def test_a_message_is_billed_at_the_tier_its_usage_reports(
        stack: Stack, asked: str | None, served: str, prices: dict[str, float]) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    tier: Any = anthropic.NOT_GIVEN if asked is None else asked

    answered = client.messages.with_raw_response.create(
        model="claude", max_tokens=100, messages=[{"role": "user", "content": "Name a colour."}], service_tier=tier)

    usage = answered.parse().usage
    assert usage.service_tier == served
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(
        cost(prices, usage.input_tokens, usage.output_tokens), rel=1e-9)
    assert access_entry(ended(stack)).get("service_tier") == (None if served == "standard" else served)

    with client.messages.stream(model="claude", max_tokens=100, messages=[{"role": "user", "content": "Again."}],
                                service_tier=tier) as stream:
        final = stream.get_final_message().usage
    assert final.service_tier == served
    assert ended(stack).cost_usd == pytest.approx(cost(prices, final.input_tokens, final.output_tokens), rel=1e-9)


@pytest.mark.parametrize(("asked", "sent", "prices"), [
    ("default", "standard_only", CLAUDE_BASE), ("flex", "standard_only", CLAUDE_BASE), ("priority", None, CLAUDE_PRIORITY),
])
def test_an_openai_clients_tier_reaches_claude_as_its_nearest(
        stack: Stack, asked: str, sent: str | None, prices: dict[str, float]) -> None:
    answered = openai_client(stack).chat.completions.with_raw_response.create(
        model="claude", messages=[{"role": "user", "content": "Name a colour."}], service_tier=asked)  # type: ignore[arg-type]

    assert last_request(stack, "claude-prio").body.get("service_tier") == sent
    usage = answered.parse().usage
    assert usage is not None
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(
        cost(prices, usage.prompt_tokens, usage.completion_tokens), rel=1e-9)


@pytest.mark.parametrize(("model_name", "sim", "field", "sent"), [
    ("gpt-prio", "oai-prio", "service_tier", "default"), ("gemini-standard", "gem", "serviceTier", "standard"),
], ids=["openai", "gemini"])
def test_an_anthropic_clients_standard_only_reaches_another_provider_as_its_standard_tier(
        stack: Stack, model_name: str, sim: str, field: str, sent: str) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)

    client.messages.create(model=model_name, max_tokens=100, messages=[{"role": "user", "content": "Name a colour."}],
                           service_tier="standard_only")

    assert last_request(stack, sim).body[field] == sent
    assert "service_tier" not in access_entry(ended(stack))


@pytest.mark.parametrize(("model_name", "asked", "sent", "prices"), [
    ("gemini", "flex", "flex", GEMINI_FLEX),
    ("gemini", "priority", "priority", GEMINI_PRIORITY),
    ("gemini", "scale", "priority", GEMINI_PRIORITY),  # OpenAI's reserved capacity: Gemini's nearest
    ("gemini", "default", None, GEMINI_BASE),  # its prices list no `standard`: not asked for, Gemini's default
    ("gemini", None, None, GEMINI_BASE),  # Gemini's default, standard
    ("gemini-prio-out", "priority", "priority", GEMINI_BASE),  # served at standard: its Priority capacity ran out
], ids=["flex", "priority", "scale", "default", "none", "priority capacity ran out"])
def test_a_gemini_answer_is_billed_at_the_tier_its_usage_reports(
        stack: Stack, model_name: str, asked: str | None, sent: str | None, prices: dict[str, float]) -> None:
    tier: Any = openai.NOT_GIVEN if asked is None else asked
    answered = openai_client(stack).chat.completions.with_raw_response.create(
        model=model_name, messages=[{"role": "user", "content": "Name a colour."}], service_tier=tier)

    assert last_request(stack, "gem" if model_name == "gemini" else "gem-prio-out").body.get("serviceTier") == sent
    usage = answered.parse().usage
    assert usage is not None
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(
        cost(prices, usage.prompt_tokens, usage.completion_tokens), rel=1e-9)
    served = "standard" if prices is GEMINI_BASE else sent
    assert access_entry(ended(stack)).get("service_tier") == (None if served == "standard" else served)


@pytest.mark.parametrize(("model_name", "asked", "prices"), [
    ("gemini", "flex", GEMINI_FLEX), ("gemini", "priority", GEMINI_PRIORITY), ("gemini-prio-out", "priority", GEMINI_BASE),
])
def test_a_gemini_stream_is_billed_at_the_tier_its_usage_reports(
        stack: Stack, model_name: str, asked: str, prices: dict[str, float]) -> None:
    with openai_client(stack).chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": "Name a colour."}], service_tier=asked,  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True}) as stream:
        usage = list(stream)[-1].usage

    assert usage is not None
    outcome = ended(stack)
    assert not outcome.usage_estimated
    assert outcome.cost_usd == pytest.approx(cost(prices, usage.prompt_tokens, usage.completion_tokens), rel=1e-9)


def test_a_responses_client_gets_geminis_flex_at_flex_prices(stack: Stack) -> None:
    client = openai_client(stack)

    answered = client.responses.with_raw_response.create(model="gemini", input="Name a colour.", service_tier="flex")

    assert last_request(stack, "gem").body["serviceTier"] == "flex"
    usage = answered.parse().usage
    assert usage is not None
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(
        cost(GEMINI_FLEX, usage.input_tokens, usage.output_tokens), rel=1e-9)


@pytest.mark.parametrize(("asked", "sent", "prices"), [
    ("flex", "flex", NOVA_FLEX), ("priority", "priority", NOVA_PRIORITY), ("scale", "priority", NOVA_PRIORITY),
    ("default", None, NOVA_BASE), (None, None, NOVA_BASE),  # its prices list no `default`: not asked for
])
def test_a_bedrock_converse_answer_is_billed_at_the_tier_it_reports(
        stack: Stack, asked: str | None, sent: str | None, prices: dict[str, float]) -> None:
    tier: Any = openai.NOT_GIVEN if asked is None else asked
    client = openai_client(stack)
    answered = client.chat.completions.with_raw_response.create(
        model="nova", messages=[{"role": "user", "content": "Name a colour."}], service_tier=tier)

    assert last_request(stack, "bedrock").body.get("serviceTier") == (None if sent is None else {"type": sent})
    usage = answered.parse().usage
    assert usage is not None
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(
        cost(prices, usage.prompt_tokens, usage.completion_tokens), rel=1e-9)
    assert_stream_billed(stack, "nova", tier, prices)


@pytest.mark.parametrize(("asked", "prices"), [("flex", SONNET_FLEX), ("priority", CLAUDE_BASE), (None, CLAUDE_BASE)],
                         ids=["flex", "a tier the model does not price", "none"])
def test_claude_on_bedrock_is_billed_at_the_tier_invoke_model_reports_in_its_header(
        stack: Stack, asked: str | None, prices: dict[str, float]) -> None:
    tier: Any = openai.NOT_GIVEN if asked is None else asked
    client = openai_client(stack)
    answered = client.chat.completions.with_raw_response.create(
        model="bedrock-claude", messages=[{"role": "user", "content": "Name a colour."}], service_tier=tier)

    sent = last_request(stack, "bedrock").headers.get("X-Amzn-Bedrock-Service-Tier")
    assert sent == ("flex" if prices is SONNET_FLEX else None)
    usage = answered.parse().usage
    assert usage is not None
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(
        cost(prices, usage.prompt_tokens, usage.completion_tokens), rel=1e-9)
    assert access_entry(ended(stack)).get("service_tier") == ("flex" if prices is SONNET_FLEX else None)
    assert_stream_billed(stack, "bedrock-claude", tier, prices)


def assert_stream_billed(stack: Stack, model_name: str, tier: Any, prices: dict[str, float]) -> None:
    """A stream asked at `tier` is billed, by its own usage, at `prices`."""
    with openai_client(stack).chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": "Again."}], service_tier=tier, stream=True,
            stream_options={"include_usage": True}) as stream:
        streamed = list(stream)[-1].usage
    assert streamed is not None
    assert ended(stack).cost_usd == pytest.approx(cost(prices, streamed.prompt_tokens, streamed.completion_tokens),
                                                  rel=1e-9)
