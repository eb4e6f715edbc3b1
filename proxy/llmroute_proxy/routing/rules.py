"""Which tier serves a request: the requested model, then the route's rules.

`model` in a request is, in this order: a tier name (that tier); `auto` (the rules in
order, first match wins, else the default tier); a concrete upstream model that some
target serves (those targets only); or an alias, which only rules whose `when.model`
glob matches it consider. An alias that no rule names is unknown: 404, listing what
exists. A known alias whose rules' other conditions all fail gets the default tier,
as `auto` does: the client asked for something that exists.

This runs on every request, so the facts a rule needs are computed only when a rule
asks for them, once, and what a route needs beyond its table (the concrete models,
the rules that apply to `auto`) is derived once per route object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llmroute_proxy.errors import ModelNotFound
from llmroute_proxy.routing import tokens
from llmroute_proxy.table import Route, Rule, RuleMatch, Target

AUTO = "auto"
_TOKENS_PER_MESSAGE = 3  # OpenAI's chat framing: role and separators per message, plus the reply's priming
_LONGEST_MODEL_NAME = 256  # longer names never match a glob: bounds the work on hostile input


class RequestFacts:
    """What rules look at in one request; derived facts are computed on first use."""

    __slots__ = ("_code", "_text", "_text_lower", "_tokens", "embedding_input", "has_tools", "headers", "messages", "model",
                 "user")

    def __init__(self, model: str, messages: list[Any], headers: Mapping[str, str], has_tools: bool,
                 user: str | None, *, embedding_input: Any = None) -> None:
        """`embedding_input`: an embeddings request's `input`, which is its prompt (it has no `messages`)."""
        self.model = model
        self.messages = messages
        self.headers = headers  # lower-case names
        self.has_tools = has_tools
        self.user = user
        self.embedding_input = embedding_input
        self._text: str | None = None
        self._text_lower: str | None = None
        self._tokens: int | None = None
        self._code: bool | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = tokens.prompt_text(self.messages)
        return self._text

    @property
    def text_lower(self) -> str:
        if self._text_lower is None:
            self._text_lower = self.text.lower()
        return self._text_lower

    @property
    def prompt_tokens(self) -> int:
        if self._tokens is None and self.embedding_input is not None:
            self._tokens = tokens.embedding_input_tokens(self.embedding_input)
        elif self._tokens is None:
            framing = _TOKENS_PER_MESSAGE * (len(self.messages) + 1)
            self._tokens = tokens.estimate_tokens(self.text) + framing
        return self._tokens

    @property
    def contains_code(self) -> bool:
        if self._code is None:
            self._code = tokens.contains_code(self.text)
        return self._code


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class TierChoice:
    tier: str
    rule: str  # the rule's name, or "model", "concrete-model", "default"
    reason: str  # why, for headers, traces and the status page
    targets: tuple[Target, ...] | None = None  # only these, when the request named a concrete model


def choose_tier(route: Route, facts: RequestFacts) -> TierChoice:
    """The tier for this request; raises `ModelNotFound` for a model the route does not know."""
    model = facts.model
    if model in route.tiers:
        return TierChoice(model, "model", f"model names tier '{model}'")
    plan = _plan(route)
    if model == AUTO:
        return _first_match(route, plan.auto_rules, facts) or TierChoice(
            route.default_tier, "default", "auto: no rule matched")
    concrete = plan.concrete.get(model)
    if concrete is not None:
        tier, targets = concrete
        return TierChoice(tier, "concrete-model", f"model '{model}' is served by {len(targets)} target(s)",
                          targets)
    candidates = plan.alias_rules(model)
    if not candidates:
        raise ModelNotFound(model, plan.available)
    return _first_match(route, candidates, facts) or TierChoice(
        route.default_tier, "default", f"alias '{model}': no rule matched")


def _first_match(route: Route, rules: tuple[Rule, ...], facts: RequestFacts) -> TierChoice | None:
    for rule in rules:
        if _holds(rule.when, facts):
            return TierChoice(rule.tier, rule.name, f"rule '{rule.name}': {_explain(rule.when, facts)}")
    return None


def _holds(when: RuleMatch, facts: RequestFacts) -> bool:
    """Cheap conditions first, so a failing one spares the costly ones."""
    if when.has_tools is not None and when.has_tools != facts.has_tools:
        return False
    if when.header is not None and not _header_holds(when, facts):
        return False
    if when.min_prompt_tokens is not None and facts.prompt_tokens < when.min_prompt_tokens:
        return False
    if when.max_prompt_tokens is not None and facts.prompt_tokens > when.max_prompt_tokens:
        return False
    if when.contains_code is not None and when.contains_code != facts.contains_code:
        return False
    return not when.keywords or _matched_keyword(when.keywords, facts.text_lower) is not None


def _header_holds(when: RuleMatch, facts: RequestFacts) -> bool:
    assert when.header is not None
    value = facts.headers.get(when.header.name)
    return value is not None and (when.header.value is None or value == when.header.value)


def _matched_keyword(keywords: tuple[str, ...], text_lower: str) -> str | None:
    return next((k for k in keywords if _contains_word(text_lower, k)), None)


def _contains_word(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` not glued to letters or digits on either side.

    Substring matching makes short keywords useless ("sql" in "nosql", "ai" in "said",
    "art" in "start"); a regex `\\b` search per keyword scans the text far slower than
    `str.find`. A boundary is required only where the keyword itself starts or ends with
    a word character, so "c++" and "#include" work too. Rules list word forms
    ("translate", "translation") when they want them.
    """
    if not word:
        return False
    check_start = _is_word_char(word[0])
    check_end = _is_word_char(word[-1])
    at = text.find(word)
    while at >= 0:
        end = at + len(word)
        if (not check_start or at == 0 or not _is_word_char(text[at - 1])) and (
                not check_end or end == len(text) or not _is_word_char(text[end])):
            return True
        at = text.find(word, at + 1)
    return False


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _explain(when: RuleMatch, facts: RequestFacts) -> str:
    parts: list[str] = []
    if when.model is not None:
        parts.append(f"model '{facts.model}' matches '{when.model}'")
    if when.min_prompt_tokens is not None and when.max_prompt_tokens is not None:
        parts.append(f"prompt ≈ {facts.prompt_tokens} tokens in [{when.min_prompt_tokens}, {when.max_prompt_tokens}]")
    elif when.min_prompt_tokens is not None:
        parts.append(f"prompt ≈ {facts.prompt_tokens} tokens ≥ {when.min_prompt_tokens}")
    elif when.max_prompt_tokens is not None:
        parts.append(f"prompt ≈ {facts.prompt_tokens} tokens ≤ {when.max_prompt_tokens}")
    if when.contains_code is not None:
        parts.append("prompt contains code" if when.contains_code else "prompt contains no code")
    if when.keywords:
        parts.append(f"keyword '{_matched_keyword(when.keywords, facts.text_lower)}'")
    if when.header is not None:
        shown = f": {when.header.value}" if when.header.value is not None else " present"
        parts.append(f"header {when.header.name}{shown}")
    if when.has_tools is not None:
        parts.append("request has tools" if when.has_tools else "request has no tools")
    return ", ".join(parts) or "matches every request"


def _model_matches(pattern: str, model: str) -> bool:
    if "*" not in pattern:
        return pattern == model
    return len(model) <= _LONGEST_MODEL_NAME and _glob(pattern).fullmatch(model) is not None


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


class _RoutePlan:
    """What `choose_tier` needs from a route beyond the table itself, derived once."""

    __slots__ = ("_aliases", "auto_rules", "available", "concrete", "model_rules")

    _ALIAS_CACHE_SIZE = 256

    def __init__(self, route: Route) -> None:
        self.auto_rules = tuple(r for r in route.rules if r.when.model is None or _model_matches(r.when.model, AUTO))
        self.model_rules = tuple(r for r in route.rules if r.when.model is not None)
        self.concrete = _concrete_models(route)
        aliases = [r.when.model for r in self.model_rules if r.when.model is not None]
        self.available = tuple(dict.fromkeys([*route.tiers, AUTO, *aliases, *self.concrete]))
        self._aliases: dict[str, tuple[Rule, ...]] = {}

    def alias_rules(self, model: str) -> tuple[Rule, ...]:
        rules = self._aliases.get(model)
        if rules is None:
            rules = tuple(r for r in self.model_rules if r.when.model is not None and _model_matches(r.when.model, model))
            if len(self._aliases) < self._ALIAS_CACHE_SIZE:
                self._aliases[model] = rules
        return rules


def _concrete_models(route: Route) -> dict[str, tuple[str, tuple[Target, ...]]]:
    first_tier: dict[str, str] = {}
    for tier in route.tiers.values():
        for target in tier.targets:
            first_tier.setdefault(target.model, tier.name)
    return {model: (first_tier[model], targets) for model, targets in route.models().items()}


_PLANS: dict[int, tuple[Route, _RoutePlan]] = {}
_PLANS_KEPT = 16  # a sidecar holds one table (a few routes) at a time; old ones age out


def _plan(route: Route) -> _RoutePlan:
    """Keyed by identity: routes are immutable, and a new table brings new route objects."""
    entry = _PLANS.get(id(route))
    if entry is not None and entry[0] is route:
        return entry[1]
    plan = _RoutePlan(route)
    if len(_PLANS) >= _PLANS_KEPT:
        del _PLANS[next(iter(_PLANS))]
    _PLANS[id(route)] = (route, plan)
    return plan
