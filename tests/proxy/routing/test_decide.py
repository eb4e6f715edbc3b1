from __future__ import annotations

import pytest

from llmroute_proxy.dialects.base import NativeBody, NativeDialect
from llmroute_proxy.errors import BadRequest, ModelNotFound, RequestError
from llmroute_proxy.routing.budget import BudgetLedger
from llmroute_proxy.routing.decide import BudgetInputs, decide
from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.table import (
    Budget,
    Experiment,
    FallbackPolicy,
    Pricing,
    ProviderType,
    Route,
    Target,
    TargetId,
    Tier,
)

NOW = 1_780_000_000.0


def target(model: str, price: float = 1.0, kind: ProviderType = ProviderType.OPENAI) -> Target:
    provider = kind.value
    return Target(id=TargetId(f"{provider}/{model}@eu"), provider=provider, provider_type=kind, model=model,
                  url="https://example.invalid/v1", region="eu", pricing=Pricing(price, price))


PREMIUM = target("premium", price=10.0)
PREMIUM_ARM = target("premium-challenger", price=30.0)
CHEAP = target("cheap", price=0.1)
CHEAP_ARM = target("cheap-challenger", price=0.2)
CLAUDE = target("claude", price=5.0, kind=ProviderType.ANTHROPIC)


def route(budget: Budget | None = None, experiments: tuple[Experiment, ...] = (),
          premium: tuple[Target, ...] = (PREMIUM,)) -> Route:
    tiers = {"premium": Tier("premium", premium), "cheap": Tier("cheap", (CHEAP,))}
    return Route(name="default", tiers=tiers, rules=(), default_tier="premium", experiments=experiments,
                 budget=budget, fallback=FallbackPolicy(fallback_tiers=("cheap",)))


def arm(tier: str, *targets: Target) -> Experiment:
    return Experiment(name=f"{tier}-arm", tier=tier, percent=100.0, targets=targets)


def facts(model: str = "auto") -> RequestFacts:
    return RequestFacts(model, [{"role": "user", "content": "hi"}], {}, False, None)


def spend(ledger: BudgetLedger, budget: Budget, usd: float) -> None:
    decision = ledger.reserve("default", budget, usd, NOW)
    assert decision.reservation is not None
    ledger.settle(decision.reservation, usd, NOW)


def inputs(ledger: BudgetLedger, prompt_tokens: int = 1000, max_output: int = 1000) -> BudgetInputs:
    return BudgetInputs(ledger, NOW, prompt_tokens, max_output)


def test_without_budget_or_experiment_the_tier_targets_are_the_candidates() -> None:
    decision = decide(route(), facts(), roll=0.5)
    assert decision.choice.tier == "premium"
    assert decision.targets == (PREMIUM,)
    assert decision.target_override is None
    assert decision.budget is None


def test_an_unknown_model_is_refused() -> None:
    with pytest.raises(ModelNotFound):
        decide(route(), facts("no-such-model"), roll=0.5)


def test_a_request_in_an_arm_is_sent_to_the_arms_targets() -> None:
    decision = decide(route(experiments=(arm("premium", PREMIUM_ARM),)), facts(), roll=0.5)
    assert decision.experiment is not None and decision.experiment.name == "premium-arm"
    assert decision.target_override == (PREMIUM_ARM,)


def test_a_downgraded_request_goes_to_the_downgrade_tier_not_to_an_arm_of_the_tier_it_left() -> None:
    budget = Budget(limit_usd=1.0, on_exceeded="downgrade", downgrade_tier="cheap")
    ledger = BudgetLedger()
    spend(ledger, budget, 1.0)
    decision = decide(route(budget, experiments=(arm("premium", PREMIUM_ARM),)), facts(), roll=0.5,
                      budget=inputs(ledger))
    assert decision.choice.tier == "cheap"
    assert decision.choice.rule == "budget"
    assert decision.experiment is None
    assert decision.targets == (CHEAP,)


def test_a_downgraded_request_takes_the_downgrade_tiers_own_arm() -> None:
    budget = Budget(limit_usd=1.0, on_exceeded="downgrade", downgrade_tier="cheap")
    ledger = BudgetLedger()
    spend(ledger, budget, 1.0)
    experiments = (arm("premium", PREMIUM_ARM), arm("cheap", CHEAP_ARM))
    decision = decide(route(budget, experiments=experiments), facts(), roll=0.5, budget=inputs(ledger))
    assert decision.experiment is not None and decision.experiment.name == "cheap-arm"
    assert decision.targets == (CHEAP_ARM,)


def test_the_budget_estimate_is_taken_over_the_arms_targets_not_the_tiers() -> None:
    budget = Budget(limit_usd=1000.0, on_exceeded="reject")
    ledger = BudgetLedger()
    decision = decide(route(budget, experiments=(arm("premium", PREMIUM_ARM),)), facts(), roll=0.5,
                      budget=inputs(ledger, prompt_tokens=1_000_000, max_output=0))
    assert decision.budget is not None and decision.budget.reservation is not None
    assert decision.budget.reservation.estimate_usd == pytest.approx(30.0)  # the arm's price, not premium's 10


def test_the_budget_estimate_is_taken_over_a_concrete_models_target_only() -> None:
    budget = Budget(limit_usd=1000.0, on_exceeded="reject")
    ledger = BudgetLedger()
    small = target("gpt-small", price=1.0)
    decision = decide(route(budget, premium=(small, PREMIUM_ARM)), facts("gpt-small"), roll=0.5,
                      budget=inputs(ledger, prompt_tokens=1_000_000, max_output=0))
    assert decision.targets == (small,)
    assert decision.budget is not None and decision.budget.reservation is not None
    assert decision.budget.reservation.estimate_usd == pytest.approx(1.0)  # not the tier's dearest, 30


def test_an_exhausted_reject_budget_refuses_without_reserving() -> None:
    budget = Budget(limit_usd=1.0, on_exceeded="reject")
    ledger = BudgetLedger()
    spend(ledger, budget, 1.0)
    decision = decide(route(budget), facts(), roll=0.5, budget=inputs(ledger))
    assert decision.budget is not None
    assert not decision.budget.allowed and decision.budget.reservation is None


ANTHROPIC_ONLY = NativeBody(NativeDialect.ANTHROPIC_MESSAGES, {"model": "auto"},
                            only=BadRequest("web_search is served by Anthropic only.", param="tools"))


def test_an_anthropic_only_request_is_narrowed_to_anthropic_targets_without_fallback_tiers() -> None:
    decision = decide(route(premium=(PREMIUM, CLAUDE)), facts(), roll=0.5, native=ANTHROPIC_ONLY)
    assert decision.targets == (CLAUDE,)
    assert decision.route.fallback.fallback_tiers == ()


def test_an_anthropic_only_request_goes_to_claude_on_a_cloud_only_when_the_tier_has_no_anthropic_target() -> None:
    bedrock = target("anthropic.claude-sonnet-4-5-20250929-v1:0", price=5.0, kind=ProviderType.BEDROCK)
    assert decide(route(premium=(bedrock, PREMIUM, CLAUDE)), facts(), roll=0.5, native=ANTHROPIC_ONLY).targets == (CLAUDE,)
    assert decide(route(premium=(bedrock, PREMIUM)), facts(), roll=0.5, native=ANTHROPIC_ONLY).targets == (bedrock,)


def test_an_anthropic_only_request_does_not_go_to_a_bedrock_model_that_speaks_converse() -> None:
    nova = target("us.amazon.nova-pro-v1:0", price=5.0, kind=ProviderType.BEDROCK)
    with pytest.raises(BadRequest):
        decide(route(premium=(nova, PREMIUM)), facts(), roll=0.5, native=ANTHROPIC_ONLY)


def test_an_anthropic_only_request_with_no_anthropic_target_names_the_field() -> None:
    with pytest.raises(BadRequest) as refused:
        decide(route(), facts(), roll=0.5, native=ANTHROPIC_ONLY)
    assert refused.value.param == "tools"
    assert "no Anthropic target" in refused.value.message


def test_an_anthropic_only_request_the_downgrade_tier_cannot_take_is_refused_by_the_budget() -> None:
    budget = Budget(limit_usd=1.0, on_exceeded="downgrade", downgrade_tier="cheap")
    ledger = BudgetLedger()
    spend(ledger, budget, 1.0)
    decision = decide(route(budget, premium=(CLAUDE,)), facts(), roll=0.5, native=ANTHROPIC_ONLY,
                      budget=inputs(ledger))
    assert decision.budget is not None and not decision.budget.allowed
    assert ledger.snapshot("default", NOW).reserved_usd == 0.0  # the reservation taken before the downgrade was released


AZURE = target("gpt5-prod", kind=ProviderType.AZURE_OPENAI)
COMPATIBLE = target("llama", kind=ProviderType.OPENAI_COMPATIBLE)
RESPONSES_ONLY = NativeBody(NativeDialect.OPENAI_RESPONSES, {"model": "auto"},
                            only=BadRequest("tools[0].type 'web_search' runs on OpenAI's servers.", param="tools[0].type"))


def test_a_responses_only_request_goes_to_the_openai_and_azure_targets_of_its_tier_only() -> None:
    decision = decide(route(premium=(CLAUDE, PREMIUM, COMPATIBLE, AZURE)), facts(), roll=0.5, native=RESPONSES_ONLY)
    assert decision.targets == (PREMIUM, AZURE)
    assert decision.route.fallback.fallback_tiers == ()


def test_a_responses_only_request_with_no_speaker_in_its_tier_names_the_field_and_who_could_serve_it() -> None:
    with pytest.raises(BadRequest) as refused:
        decide(route(premium=(CLAUDE, COMPATIBLE)), facts(), roll=0.5, native=RESPONSES_ONLY)
    assert refused.value.param == "tools[0].type"
    assert "no Azure OpenAI or OpenAI target" in refused.value.message


class ConversationNotHere(RequestError):
    status = 404


CONTINUED_ELSEWHERE = NativeBody(NativeDialect.OPENAI_RESPONSES, {"model": "auto"},
                                 only=BadRequest("only a provider can continue it", param="previous_response_id"),
                                 unserved=ConversationNotHere("No stored response 'resp_1': never stored here."))


def test_a_request_only_a_provider_can_continue_goes_to_its_speakers_or_is_its_own_error() -> None:
    decision = decide(route(premium=(CLAUDE, PREMIUM)), facts(), roll=0.5, native=CONTINUED_ELSEWHERE)
    assert decision.targets == (PREMIUM,)
    with pytest.raises(ConversationNotHere):
        decide(route(premium=(CLAUDE, COMPATIBLE)), facts(), roll=0.5, native=CONTINUED_ELSEWHERE)


def test_a_continued_request_the_downgrade_tier_cannot_take_is_refused_by_the_budget() -> None:
    budget = Budget(limit_usd=1.0, on_exceeded="downgrade", downgrade_tier="cheap")
    ledger = BudgetLedger()
    spend(ledger, budget, 1.0)
    cheap_claude = Route(name="default", tiers={"premium": Tier("premium", (PREMIUM,)), "cheap": Tier("cheap", (CLAUDE,))},
                         rules=(), default_tier="premium", budget=budget)
    decision = decide(cheap_claude, facts(), roll=0.5, native=CONTINUED_ELSEWHERE, budget=inputs(ledger))
    assert decision.budget is not None and not decision.budget.allowed
    assert ledger.snapshot("default", NOW).reserved_usd == 0.0


def test_a_conversation_one_provider_holds_goes_to_that_providers_targets_only() -> None:
    other_account = Target(id=TargetId("openai-b/premium@eu"), provider="openai-b", provider_type=ProviderType.OPENAI,
                           model="premium", url="https://example.invalid/v1", region="eu", pricing=Pricing(1.0, 1.0))
    held = NativeBody(NativeDialect.OPENAI_RESPONSES, {"model": "auto"}, only=CONTINUED_ELSEWHERE.only,
                      unserved=CONTINUED_ELSEWHERE.unserved, held_by=other_account.response_store)
    decision = decide(route(premium=(PREMIUM, other_account, CLAUDE)), facts(), roll=0.5, native=held)
    assert decision.targets == (other_account,)
    with pytest.raises(ConversationNotHere):  # the tier does not reach the provider that holds it
        decide(route(premium=(PREMIUM, CLAUDE)), facts(), roll=0.5, native=held)


def test_a_conversation_one_region_of_a_provider_holds_goes_to_that_regions_endpoint_only() -> None:
    east, west = (Target(id=TargetId(f"azure/premium@{region}"), provider="azure", provider_type=ProviderType.AZURE_OPENAI,
                         model="premium", url=f"https://llm-{region}.openai.azure.com/openai/v1", region=region)
                  for region in ("east", "west"))
    assert east.response_store == "azure (llm-east.openai.azure.com)" != west.response_store  # two Azure resources
    held = NativeBody(NativeDialect.OPENAI_RESPONSES, {"model": "auto"}, only=CONTINUED_ELSEWHERE.only,
                      unserved=CONTINUED_ELSEWHERE.unserved, held_by=west.response_store)
    assert decide(route(premium=(east, west)), facts(), roll=0.5, native=held).targets == (west,)


def test_the_budget_estimate_reserves_the_searches_the_request_allows() -> None:
    searching = Target(id=TargetId("anthropic/claude@eu"), provider="anthropic", provider_type=ProviderType.ANTHROPIC,
                       model="claude", url="https://example.invalid", region="eu",
                       pricing=Pricing(0.0, 0.0, web_search_per_1k=10.0))
    ledger = BudgetLedger()
    decision = decide(route(Budget(limit_usd=1000.0, on_exceeded="reject"), premium=(searching,)), facts(), roll=0.5,
                      budget=BudgetInputs(ledger, NOW, 1000, 1000, web_searches=3))
    assert decision.budget is not None and decision.budget.reservation is not None
    assert decision.budget.reservation.estimate_usd == pytest.approx(0.03)


TIERED = Pricing(1.0, 1.0, service_tiers={"flex": Pricing(0.5, 0.5), "priority": Pricing(2.0, 2.0),
                                          "standard": Pricing(1.0, 1.0)})


def tiered(kind: ProviderType) -> Target:
    return Target(id=TargetId(f"{kind.value}/tiered@eu"), provider=kind.value, provider_type=kind, model="tiered",
                  url="https://example.invalid/v1", region="eu", pricing=TIERED)


@pytest.mark.parametrize(("kind", "asked", "native", "per_token"), [
    (ProviderType.OPENAI, "flex", None, 0.5),
    (ProviderType.OPENAI, "default", None, 1.0),
    (ProviderType.OPENAI, "priority", None, 2.0),
    (ProviderType.OPENAI, "auto", None, 2.0),  # the project's default may be priority
    (ProviderType.OPENAI, None, None, 2.0),
    (ProviderType.AZURE_OPENAI, "flex", None, 0.5),
    (ProviderType.ANTHROPIC, "default", None, 1.0),  # sent as standard_only
    (ProviderType.ANTHROPIC, "flex", None, 1.0),  # Anthropic has no flex: standard_only
    (ProviderType.ANTHROPIC, "priority", None, 2.0),
    (ProviderType.ANTHROPIC, None, {"service_tier": "standard_only"}, 1.0),
    (ProviderType.ANTHROPIC, None, {"service_tier": "auto"}, 2.0),
    (ProviderType.GEMINI, "priority", None, 2.0),  # served at priority, or at standard once that capacity ran out
    (ProviderType.GEMINI, "scale", None, 2.0),  # sent as priority, the nearest
    (ProviderType.GEMINI, "flex", None, 0.5),  # best-effort: served at flex or refused, never moved
    (ProviderType.GEMINI, "default", None, 1.0),  # sent as standard
    (ProviderType.GEMINI, None, None, 1.0),  # Gemini's default is its standard tier
    (ProviderType.GEMINI, None, {"service_tier": "standard_only"}, 1.0),
    (ProviderType.VERTEX, "priority", None, 1.0),  # not sent: Vertex AI reports no tier, priced at the base list
], ids=lambda value: str(value))
def test_the_budget_reserves_at_the_dearest_tier_the_request_may_be_served_at(
        kind: ProviderType, asked: str | None, native: dict[str, str] | None, per_token: float) -> None:
    body = NativeBody(NativeDialect.ANTHROPIC_MESSAGES, {"model": "m", **native}) if native else None
    decision = decide(route(Budget(limit_usd=1000.0, on_exceeded="reject"), premium=(tiered(kind),)), facts(),
                      roll=0.5, native=body, budget=BudgetInputs(BudgetLedger(), NOW, 1000, 1000, service_tier=asked))
    assert decision.budget is not None and decision.budget.reservation is not None
    assert decision.budget.reservation.estimate_usd == pytest.approx(2000 * per_token / 1e6)


@pytest.mark.parametrize(("model", "asked", "per_token"), [
    ("gemini-2.5-pro", "priority", 2.0), ("gemini-2.5-pro", "flex", 1.0),  # a Flex fallback is not documented
    ("gemini-2.5-pro", "default", 1.0), ("claude-sonnet-4-5@20250929", "priority", 1.0),
])
def test_a_vertex_budget_reserves_at_the_tier_its_global_endpoint_may_serve(
        model: str, asked: str, per_token: float) -> None:
    where = Target(id=TargetId(f"vertex/{model}@eu"), provider="vertex", provider_type=ProviderType.VERTEX, model=model,
                   url="https://aiplatform.googleapis.com/v1/projects/p/locations/global", region="eu", pricing=TIERED)
    decision = decide(route(Budget(limit_usd=1000.0, on_exceeded="reject"), premium=(where,)), facts(), roll=0.5,
                      budget=BudgetInputs(BudgetLedger(), NOW, 1000, 1000, service_tier=asked))
    assert decision.budget is not None and decision.budget.reservation is not None
    assert decision.budget.reservation.estimate_usd == pytest.approx(2000 * per_token / 1e6)
