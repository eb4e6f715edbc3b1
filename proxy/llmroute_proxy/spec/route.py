"""LLMRoute documents → `RouteSpec`: tiers, rules, fallback, load balancing, experiments, budget."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.spec.fields import (
    Fields,
    Opened,
    describe,
    did_you_mean,
    join_path,
    or_default,
    quoted,
    unknown_ref,
)
from llmroute_proxy.spec.provider import ProviderSpec
from llmroute_proxy.table import (
    Budget,
    BudgetPeriod,
    FallbackPolicy,
    LoadBalancing,
    OutlierDetection,
    Strategy,
)

RESERVED_TIER_NAMES = frozenset({"auto"})  # `model: auto` asks the rules to choose

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PREFER_REGION = ("local", "none")
_ON_EXCEEDED = ("alert", "reject", "downgrade:TIER")


@dataclass(frozen=True, slots=True)
class TargetSpec:
    provider: str
    model: str
    weight: int = 1
    priority: int = 0


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    targets: tuple[TargetSpec, ...]


@dataclass(frozen=True, slots=True)
class HeaderCondition:
    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    """A rule's `when`, as written (the compiler lower-cases keywords and header names)."""

    max_prompt_tokens: int | None = None
    min_prompt_tokens: int | None = None
    contains_code: bool | None = None
    keywords: tuple[str, ...] = ()
    header: HeaderCondition | None = None
    model: str | None = None
    has_tools: bool | None = None


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str | None
    when: ConditionSpec
    tier: str


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    name: str
    tier: str
    percent: float
    targets: tuple[TargetSpec, ...]
    sticky_by: str | None = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    tiers: Mapping[str, TierSpec]  # in document order
    default_tier: str
    rules: tuple[RuleSpec, ...] = ()
    fallback: FallbackPolicy = field(default_factory=FallbackPolicy)
    load_balancing: LoadBalancing = field(default_factory=LoadBalancing)
    outlier_detection: OutlierDetection = field(default_factory=OutlierDetection)
    experiments: tuple[ExperimentSpec, ...] = ()
    budget: Budget | None = None
    pod_selector: Mapping[str, Any] = field(default_factory=dict)  # for the operator; the sidecar ignores it


_ROUTE_FIELDS = ("podSelector", "tiers", "rules", "defaultTier", "fallback", "loadBalancing",
                 "outlierDetection", "experiments", "budget")
_CONDITION_FIELDS = ("maxPromptTokens", "minPromptTokens", "containsCode", "keywords", "header", "model",
                     "hasTools")
_FALLBACK_FIELDS = ("maxAttempts", "perTryTimeout", "firstByteTimeout", "idleTimeout", "overallTimeout",
                    "onErrors", "fallbackTiers")


class _Scope:
    """The providers a route may name. One that is invalid is reported once per route, not per use."""

    __slots__ = ("providers", "reported")

    def __init__(self, providers: Mapping[str, ProviderSpec | None]) -> None:
        self.providers = providers
        self.reported: set[str] = set()


def route_spec(doc: Opened, providers: Mapping[str, ProviderSpec | None]) -> RouteSpec:
    f = Fields(doc.sink, "spec", doc.spec, _ROUTE_FIELDS)
    scope = _Scope(providers)
    tiers = _tiers(f, scope)
    known = tuple(tiers) or None
    default_tier = f.string("defaultTier", required=True)
    _tier_ref(f, "defaultTier", default_tier, known)
    return RouteSpec(
        name=doc.name,
        tiers=tiers,
        default_tier=default_tier or "",
        rules=_rules(f, known),
        fallback=_fallback(f, known),
        load_balancing=_load_balancing(f),
        outlier_detection=_outlier_detection(f),
        experiments=_experiments(f, known, scope),
        budget=_budget(f, known),
        pod_selector=_pod_selector(f),
    )


def _tier_ref(f: Fields, key: str, tier: str | None, known: Collection[str] | None) -> None:
    """`known` is None when the tiers themselves are unreadable: then no reference is judged."""
    if tier is not None and known is not None and tier not in known:
        f.error(key, unknown_ref("tier", tier, known))


def _pod_selector(spec: Fields) -> dict[str, Any]:
    f = spec.mapping("podSelector", ("matchLabels", "matchExpressions"))
    if f is None:
        return {}
    labels = f.get("matchLabels")
    if labels is not None and not isinstance(labels, Mapping):
        f.error("matchLabels", f"expected a mapping of label names to values, found {describe(labels)}")
    elif labels is not None:
        for key, value in labels.items():
            if not isinstance(value, str):
                f.sink.error(join_path(f.at("matchLabels"), str(key)), f"expected a string, found {describe(value)}")
    f.items("matchExpressions")
    return dict(f.data)


def _tiers(spec: Fields, scope: _Scope) -> dict[str, TierSpec]:
    raw = spec.require("tiers")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        spec.error("tiers", f"expected a mapping of tier names to tiers, found {describe(raw)}")
        return {}
    if not raw:
        spec.error("tiers", "must define at least one tier")
    out: dict[str, TierSpec] = {}
    for name, item in raw.items():
        path = join_path(spec.at("tiers"), str(name))
        if not isinstance(name, str) or not name.strip():
            spec.sink.error(path, "a tier name must be a non-empty string")
            continue
        if name in RESERVED_TIER_NAMES:
            spec.sink.error(path, f"'{name}' is reserved (model '{name}' lets the rules choose)")
        f = Fields(spec.sink, path, item, ("targets",))
        out[name] = TierSpec(name, _targets(f, scope))
    return out


def _targets(owner: Fields, scope: _Scope) -> tuple[TargetSpec, ...]:
    out: list[TargetSpec] = []
    seen: dict[tuple[str, str], str] = {}
    for path, item in owner.items("targets", required=True, nonempty=True):
        target = _target(Fields(owner.sink, path, item, ("provider", "model", "weight", "priority")), scope)
        pair = (target.provider, target.model)
        if all(pair) and pair in seen:
            owner.sink.error(path, f"duplicate target {target.provider}/{target.model} (also {seen[pair]})")
        seen.setdefault(pair, path)
        out.append(target)
    if out and all(t.weight == 0 for t in out):
        owner.error("targets", "every target has weight 0; at least one needs a positive weight")
    return tuple(out)


def _target(f: Fields, scope: _Scope) -> TargetSpec:
    provider = f.string("provider", required=True)
    model = f.string("model", required=True)
    if provider is not None and provider not in scope.providers:
        f.error("provider", unknown_ref("provider", provider, scope.providers))
    elif provider is not None and scope.providers[provider] is None and provider not in scope.reported:
        scope.reported.add(provider)
        f.error("provider", f"provider '{provider}' is invalid (see its own errors)")
    spec = scope.providers.get(provider) if provider is not None else None
    if spec is not None and spec.models and model is not None and spec.model(model) is None:
        listed = ", ".join(m.name for m in spec.models)
        f.error("model", f"model '{model}' is not listed by provider '{provider}' (listed: {listed})")
    weight = f.integer("weight", minimum=0)
    priority = f.integer("priority", minimum=0)
    return TargetSpec(provider or "", model or "", 1 if weight is None else weight,
                      0 if priority is None else priority)


def _rules(spec: Fields, tiers: Collection[str] | None) -> tuple[RuleSpec, ...]:
    out: list[RuleSpec] = []
    names: set[str] = set()
    for path, item in spec.items("rules"):
        f = Fields(spec.sink, path, item, ("name", "when", "tier"))
        name = f.string("name")
        if name is not None and name in names:
            f.error("name", f"duplicate rule name '{name}'")
        names.add(name or "")
        tier = f.string("tier", required=True)
        _tier_ref(f, "tier", tier, tiers)
        when = _condition(f)
        if when.header is not None and name is None and f.get("name") is None:
            f.error("name", "missing required field (a rule with a header condition needs a name)")
        out.append(RuleSpec(name, when, tier or ""))
    return tuple(out)


def _condition(rule: Fields) -> ConditionSpec:
    f = rule.mapping("when", _CONDITION_FIELDS)
    if f is None:
        return ConditionSpec()
    low = f.integer("minPromptTokens", minimum=0)
    high = f.integer("maxPromptTokens", minimum=0)
    if low is not None and high is not None and low > high:
        f.error("minPromptTokens", f"is greater than maxPromptTokens ({low} > {high}): the rule never matches")
    keywords = f.strings("keywords", nonempty=True)
    return ConditionSpec(
        max_prompt_tokens=high,
        min_prompt_tokens=low,
        contains_code=f.boolean("containsCode"),
        keywords=tuple(word for _, word in keywords),
        header=_header(f),
        model=f.string("model"),
        has_tools=f.boolean("hasTools"),
    )


def _header(when: Fields) -> HeaderCondition | None:
    f = when.mapping("header", ("name", "value"))
    if f is None:
        return None
    name = f.string("name", required=True)
    if name is not None and not _HEADER_NAME.fullmatch(name):
        f.error("name", f"{quoted(name)} is not a valid HTTP header name")
    return HeaderCondition(name or "", f.string("value"))


def _fallback(spec: Fields, tiers: Collection[str] | None) -> FallbackPolicy:
    f = spec.mapping("fallback", _FALLBACK_FIELDS)
    default = FallbackPolicy()
    if f is None:
        return default
    fallback_tiers: list[str] = []
    for path, tier in f.strings("fallbackTiers"):
        if tiers is not None and tier not in tiers:
            f.sink.error(path, unknown_ref("tier", tier, tiers))
        elif tier in fallback_tiers:
            f.sink.error(path, f"duplicate tier '{tier}'")
        fallback_tiers.append(tier)
    return FallbackPolicy(
        max_attempts=or_default(f.integer("maxAttempts", minimum=1, maximum=10), default.max_attempts),
        per_try_timeout=or_default(f.duration("perTryTimeout"), default.per_try_timeout),
        first_byte_timeout=or_default(f.duration("firstByteTimeout"), default.first_byte_timeout),
        idle_timeout=or_default(f.duration("idleTimeout"), default.idle_timeout),
        overall_timeout=or_default(f.duration("overallTimeout"), default.overall_timeout),
        on_errors=_on_errors(f),
        fallback_tiers=tuple(dict.fromkeys(fallback_tiers)),
    )


def _on_errors(f: Fields) -> frozenset[str] | None:
    if f.get("onErrors") is None:
        return None
    recoverable = [kind.value for kind in FailureKind if kind.chosen_by_on_errors]
    kinds: set[str] = set()
    for path, value in f.strings("onErrors"):
        if value in recoverable:
            kinds.add(value)
        elif value == FailureKind.NOT_HELD:
            f.sink.error(path, f"'{value}' is not a failure to choose: a conversation one provider's store does "
                               "not hold is always looked for at the next")
        elif value in {kind.value for kind in FailureKind}:
            f.sink.error(path, f"'{value}' is never failed over: it is the request's own fault")
        else:
            f.sink.error(path, f"unknown error kind '{value}'{did_you_mean(value, recoverable)} "
                               f"(expected one of: {', '.join(recoverable)})")
    return frozenset(kinds)


def _load_balancing(spec: Fields) -> LoadBalancing:
    f = spec.mapping("loadBalancing", ("strategy", "preferRegion"))
    default = LoadBalancing()
    if f is None:
        return default
    return LoadBalancing(
        strategy=or_default(f.enum("strategy", Strategy), default.strategy),
        prefer_region=or_default(f.choice("preferRegion", _PREFER_REGION), default.prefer_region),
    )


def _outlier_detection(spec: Fields) -> OutlierDetection:
    f = spec.mapping("outlierDetection", ("consecutiveFailures", "baseEjection", "maxEjection",
                                          "maxEjectionPercent"))
    default = OutlierDetection()
    if f is None:
        return default
    result = OutlierDetection(
        consecutive_failures=or_default(f.integer("consecutiveFailures", minimum=1), default.consecutive_failures),
        base_ejection=or_default(f.duration("baseEjection"), default.base_ejection),
        max_ejection=or_default(f.duration("maxEjection"), default.max_ejection),
        max_ejection_percent=or_default(f.integer("maxEjectionPercent", minimum=0, maximum=100),
                                 default.max_ejection_percent),
    )
    if result.base_ejection > result.max_ejection:
        f.error("baseEjection", f"is longer than maxEjection ({result.base_ejection:g}s > "
                                f"{result.max_ejection:g}s)")
    return result


def _experiments(spec: Fields, tiers: Collection[str] | None, scope: _Scope) -> tuple[ExperimentSpec, ...]:
    out: list[ExperimentSpec] = []
    names: set[str] = set()
    percent_by_tier: dict[str, float] = {}
    for path, item in spec.items("experiments"):
        f = Fields(spec.sink, path, item, ("name", "tier", "percent", "targets", "stickyBy"))
        name = f.string("name", required=True)
        if name is not None and name in names:
            f.error("name", f"duplicate experiment name '{name}'")
        names.add(name or "")
        tier = f.string("tier", required=True)
        _tier_ref(f, "tier", tier, tiers)
        percent = f.number("percent", minimum=0, maximum=100, required=True)
        if tier is not None and percent is not None:
            total = percent_by_tier[tier] = percent_by_tier.get(tier, 0.0) + percent
            if total > 100:
                f.error("percent", f"experiments on tier '{tier}' add up to {total:g}% (more than 100%)")
        out.append(ExperimentSpec(name or "", tier or "", percent or 0.0, _targets(f, scope),
                                  _sticky_by(f)))
    return tuple(out)


def _sticky_by(f: Fields) -> str | None:
    value = f.string("stickyBy")
    if value is None or value == "user":
        return value
    header = value.removeprefix("header:")
    if value.startswith("header:") and _HEADER_NAME.fullmatch(header):
        return value
    f.error("stickyBy", f"expected 'user' or 'header:<name>', found {quoted(value)}")
    return None


def _budget(spec: Fields, tiers: Collection[str] | None) -> Budget | None:
    f = spec.mapping("budget", ("limitUSD", "period", "alertAtPercent", "onExceeded"))
    if f is None:
        return None
    default = Budget(limit_usd=1.0)
    on_exceeded, downgrade_tier = _on_exceeded(f, tiers)
    return Budget(
        limit_usd=f.number("limitUSD", positive=True, required=True) or 1.0,
        period=or_default(f.enum("period", BudgetPeriod), default.period),
        alert_at_percent=or_default(f.number("alertAtPercent", positive=True, maximum=100), default.alert_at_percent),
        on_exceeded=on_exceeded,
        downgrade_tier=downgrade_tier,
    )


def _on_exceeded(f: Fields, tiers: Collection[str] | None) -> tuple[str, str | None]:
    value = f.string("onExceeded")
    if value is None or value in ("alert", "reject"):
        return value or "alert", None
    tier = value.removeprefix("downgrade:")
    if value.startswith("downgrade:") and tier:
        _tier_ref(f, "onExceeded", tier, tiers)
        return "downgrade", tier
    f.error("onExceeded", f"expected one of: {', '.join(_ON_EXCEEDED)}; found {quoted(value)}"
                          f"{did_you_mean(value, ('alert', 'reject', 'downgrade:'))}")
    return "alert", None


def unpriced_targets(route: RouteSpec, providers: Mapping[str, ProviderSpec]) -> tuple[str, ...]:
    """`provider/model` of the route's targets (tiers and experiment arms) whose model has no `pricing`: a
    model its provider does not list, or lists without prices. Their answers cost 0 in spend, budgets and
    metrics, which is rarely what was meant: a free model says so with `pricing` of zeros."""
    targets = [*(t for tier in route.tiers.values() for t in tier.targets),
               *(t for arm in route.experiments for t in arm.targets)]
    unpriced = []
    for target in targets:
        provider = providers.get(target.provider)
        model = provider.model(target.model) if provider is not None else None
        if provider is not None and (model is None or not model.priced):
            unpriced.append(f"{target.provider}/{target.model}")
    return tuple(dict.fromkeys(unpriced))


def unpriced_message(route: RouteSpec, unpriced: Collection[str]) -> str:
    """What a person is told of a route's unpriced targets, and what to do."""
    blind = "its budget never counts them" if route.budget is not None else "they cost 0 in spend and metrics"
    return (f"{', '.join(unpriced)} {'has' if len(unpriced) == 1 else 'have'} no pricing: {blind}; give the "
            "model's pricing in its LLMProvider (pricing of zeros for a free model)")
