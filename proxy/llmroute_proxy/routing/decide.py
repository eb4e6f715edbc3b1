"""The whole routing decision for one request, made in one place.

In order: the tier (rules, aliases, a concrete model), the narrowing of a request only its own
dialect can carry (an Anthropic-only `/v1/messages` request) to the tier's targets that speak it,
the experiment arm, and the budget: its worst-case estimate is taken over the targets that will
really be tried (the arm's, the concrete model's, the narrowed ones, or the tier's), each at the
dearest service tier the request may be served at there, and a downgrade is decided before the arm, so a downgraded
request is sent to the downgrade tier's own targets (or to that tier's arm), never to an arm of
the tier it left. The budget ledger is the only state touched: a reservation is opened here and
settled by the caller when the request is over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmroute_proxy.dialects.base import DIALECT_NAMES, NativeBody, NativeDialect
from llmroute_proxy.dialects.service_tiers import landing_tiers, sent_tier
from llmroute_proxy.errors import BadRequest, RequestError
from llmroute_proxy.routing.budget import BudgetDecision, BudgetLedger
from llmroute_proxy.routing.cost import estimate_cost_usd
from llmroute_proxy.routing.experiments import choose_arm
from llmroute_proxy.routing.rules import RequestFacts, TierChoice, choose_tier
from llmroute_proxy.table import Experiment, ProviderType, Route, Target


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class RouteDecision:
    route: Route  # narrowed to no fallback tiers for an Anthropic-only request
    choice: TierChoice  # the tier served, and why (after any downgrade)
    experiment: Experiment | None
    targets: tuple[Target, ...]  # the candidates, before health and balancing order them
    budget: BudgetDecision | None  # None when the route has no budget

    @property
    def target_override(self) -> tuple[Target, ...] | None:
        """The candidates when they are not simply the tier's targets (for the attempt planner)."""
        return None if self.targets == self.route.tiers[self.choice.tier].targets else self.targets


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class BudgetInputs:
    ledger: BudgetLedger
    now: float  # wall-clock epoch seconds: budget periods are calendar periods
    prompt_tokens: int
    max_output_tokens: int  # every answer's together (the cap times `n`)
    web_searches: int = 0  # the most its provider's server-side search tool may run
    service_tier: str | None = None  # the tier the client asked for, in OpenAI's terms (`ChatRequest.service_tier`)


def decide(route: Route, facts: RequestFacts, *, roll: float, native: NativeBody | None = None,
           budget: BudgetInputs | None = None) -> RouteDecision:
    """Raises `ModelNotFound` for an unknown model; for a request only its own dialect can carry
    (`native.only`) whose tier has no target speaking it, `native.unserved`, or else `BadRequest`;
    `roll` is a uniform draw in [0, 1) for unsticky arms."""
    only = native if native is not None and native.only is not None else None
    route, choice = _tier(route, facts, only)
    experiment = _arm(route, choice, facts, roll, only)
    targets = _candidates(route, choice, experiment)
    if route.budget is None or budget is None:
        return RouteDecision(route, choice, experiment, targets, None)
    estimate = max(estimate_cost_usd(budget.prompt_tokens, budget.max_output_tokens, t.pricing, budget.web_searches,
                                     landing_tiers(t.provider_type, sent_tier(t, budget.service_tier, native)))
                   for t in targets)
    verdict = budget.ledger.reserve(route.name, route.budget, estimate, budget.now)
    downgrade = verdict.downgrade_to
    if downgrade is None or downgrade not in route.tiers or downgrade == choice.tier:
        return RouteDecision(route, choice, experiment, targets, verdict)
    choice = TierChoice(downgrade, "budget", f"budget exceeded: downgraded from '{choice.tier}' to '{downgrade}'")
    if only is not None:
        try:
            choice = _speakers_only(route, choice, only)[1]
        except RequestError:  # the downgrade tier cannot take it natively: the budget refuses it
            if verdict.reservation is not None:
                budget.ledger.release(verdict.reservation)
            refused = BudgetDecision(allowed=False, retry_after=verdict.retry_after, exceeded=True)
            return RouteDecision(route, choice, None, (), refused)
    experiment = _arm(route, choice, facts, roll, only)
    return RouteDecision(route, choice, experiment, _candidates(route, choice, experiment), verdict)


def _tier(route: Route, facts: RequestFacts, only: NativeBody | None) -> tuple[Route, TierChoice]:
    choice = choose_tier(route, facts)
    if only is None:
        return route, choice
    return _speakers_only(route, choice, only)


def _arm(route: Route, choice: TierChoice, facts: RequestFacts, roll: float,
         only: NativeBody | None) -> Experiment | None:
    if not route.experiments or choice.targets is not None or only is not None:
        return None
    return choose_arm(route, choice.tier, facts, roll)


def _candidates(route: Route, choice: TierChoice, experiment: Experiment | None) -> tuple[Target, ...]:
    if experiment is not None:
        return experiment.targets
    if choice.targets is not None:
        return choice.targets
    return route.tiers[choice.tier].targets


def _speakers_only(route: Route, choice: TierChoice, only: NativeBody) -> tuple[Route, TierChoice]:
    """Narrow the choice to the tier's targets that speak the request's own dialect (those of the
    provider that holds its conversation, when one does), without fallback tiers (they would get a
    request they cannot be sent); refuse with the untranslatable field (or `unserved`) when there are
    none."""
    assert only.only is not None
    candidates = choice.targets if choice.targets is not None else route.tiers[choice.tier].targets
    native = tuple(t for t in candidates
                   if only.spoken_by(t) and (not only.held_by or t.response_store == only.held_by))
    if only.dialect is NativeDialect.ANTHROPIC_MESSAGES:
        # Claude on a cloud (Bedrock, Vertex AI) runs only some of Anthropic's server tools, and refuses the
        # rest with a 400 that is not failed over: such a request goes to Anthropic's own API when it can
        native = tuple(t for t in native if t.provider_type is ProviderType.ANTHROPIC) or native
    name = only.dialect.value
    if not native:
        if only.unserved is not None:
            raise only.unserved
        speakers = " or ".join(sorted(DIALECT_NAMES[t] for t in only.dialect.speakers))
        also = (" (nor an openai-compatible one with openaiCompatible.responsesAPI)"
                if only.dialect is NativeDialect.OPENAI_RESPONSES else "")
        raise BadRequest(f"{only.only.message} Tier '{choice.tier}' has no {speakers} target{also} to send it to "
                         "natively.", param=only.only.param)
    narrowed = replace(route, fallback=replace(route.fallback, fallback_tiers=()))
    return narrowed, replace(choice, targets=native,
                             reason=f"{choice.reason}; {name}-only request: {name} targets only")
