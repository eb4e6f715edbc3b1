from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from llmroute_proxy.errors import ModelNotFound
from llmroute_proxy.routing import tokens as tokens_module
from llmroute_proxy.routing.rules import RequestFacts, TierChoice, choose_tier
from llmroute_proxy.table import HeaderMatch, ProviderType, Route, Rule, RuleMatch, Target, TargetId, Tier

LONG_PROSE = "The quick brown fox jumps over the lazy dog near the river bank. " * 400  # ≈ 5,600 tokens
CODE = "Why does this fail?\n\ndef parse(line):\n    return line.split(',')\n"


def target(provider: str, model: str) -> Target:
    return Target(id=TargetId(f"{provider}/{model}@eu"), provider=provider, provider_type=ProviderType.OPENAI,
                  model=model, url="https://api.example.com/v1", region="eu")


TIERS = {
    "small": Tier("small", (target("openai", "gpt-4o-mini"), target("anthropic", "claude-haiku"))),
    "large": Tier("large", (target("openai", "gpt-4o"), target("anthropic", "claude-sonnet"))),
    "code": Tier("code", (target("openai", "gpt-4o"), target("deepseek", "deepseek-coder"))),
}


def route(*rules: Rule, default: str = "small") -> Route:
    return Route(name="default", tiers=TIERS, rules=tuple(rules), default_tier=default)


def rule(name: str, tier: str, **when: Any) -> Rule:
    return Rule(name=name, when=RuleMatch(**when), tier=tier)


def facts(text: str = "hello", model: str = "auto", headers: Mapping[str, str] | None = None,
          has_tools: bool = False, user: str | None = None) -> RequestFacts:
    return RequestFacts(model, [{"role": "user", "content": text}], headers or {}, has_tools, user)


@pytest.mark.parametrize(("when", "request_facts", "matches"), [
    ({"min_prompt_tokens": 4000}, facts(LONG_PROSE), True),
    ({"min_prompt_tokens": 4000}, facts("short question"), False),
    ({"max_prompt_tokens": 100}, facts("short question"), True),
    ({"max_prompt_tokens": 100}, facts(LONG_PROSE), False),
    ({"min_prompt_tokens": 1000, "max_prompt_tokens": 10_000}, facts(LONG_PROSE), True),
    ({"min_prompt_tokens": 1000, "max_prompt_tokens": 2000}, facts(LONG_PROSE), False),
    ({"contains_code": True}, facts(CODE), True),
    ({"contains_code": True}, facts("tell me a story"), False),
    ({"contains_code": False}, facts("tell me a story"), True),
    ({"contains_code": False}, facts(CODE), False),
    ({"keywords": ("translate", "summarize")}, facts("Please SUMMARIZE this."), True),
    ({"keywords": ("sql",)}, facts("We moved to a NoSQL store."), False),
    ({"keywords": ("sql",)}, facts("Write SQL for this."), True),
    ({"keywords": ("c++",)}, facts("Port it to C++, please."), True),
    ({"keywords": ("step by step",)}, facts("Think step by step."), True),
    ({"keywords": ("art",)}, facts("Let us start."), False),
    ({"header": HeaderMatch("x-priority", "high")}, facts(headers={"x-priority": "high"}), True),
    ({"header": HeaderMatch("x-priority", "high")}, facts(headers={"x-priority": "low"}), False),
    ({"header": HeaderMatch("x-priority")}, facts(headers={"x-priority": "low"}), True),
    ({"header": HeaderMatch("x-priority")}, facts(), False),
    ({"has_tools": True}, facts(has_tools=True), True),
    ({"has_tools": True}, facts(has_tools=False), False),
    ({"has_tools": False}, facts(has_tools=False), True),
    ({}, facts(), True),
])
def test_each_condition_alone_decides_whether_a_rule_matches(when: dict[str, Any], request_facts: RequestFacts,
                                                              matches: bool) -> None:
    choice = choose_tier(route(rule("r", "large", **when)), request_facts)
    assert (choice.tier, choice.rule) == (("large", "r") if matches else ("small", "default"))


@pytest.mark.parametrize(("request_facts", "matches"), [
    (facts(CODE + " " + LONG_PROSE, headers={"x-team": "ml"}), True),
    (facts(LONG_PROSE, headers={"x-team": "ml"}), False),
    (facts(CODE + " " + LONG_PROSE), False),
    (facts(CODE, headers={"x-team": "ml"}), False),
])
def test_all_conditions_of_a_rule_must_hold(request_facts: RequestFacts, matches: bool) -> None:
    combined = rule("big-code", "code", min_prompt_tokens=2000, contains_code=True, header=HeaderMatch("x-team", "ml"))
    assert (choose_tier(route(combined), request_facts).tier == "code") is matches


def test_the_first_matching_rule_wins() -> None:
    ordered = route(rule("code", "code", contains_code=True), rule("long", "large", min_prompt_tokens=10),
                    rule("catch-all", "small"))
    assert choose_tier(ordered, facts(CODE)).rule == "code"
    assert choose_tier(ordered, facts(LONG_PROSE)).rule == "long"
    assert choose_tier(ordered, facts("hi")).rule == "catch-all"


def test_auto_without_a_matching_rule_gets_the_default_tier() -> None:
    choice = choose_tier(route(rule("code", "code", contains_code=True), default="large"), facts("hi"))
    assert choice == TierChoice("large", "default", "auto: no rule matched")


def test_a_tier_name_forces_that_tier_whatever_the_rules_say() -> None:
    choice = choose_tier(route(rule("code", "code", contains_code=True)), facts(CODE, model="large"))
    assert choice == TierChoice("large", "model", "model names tier 'large'")


def test_a_concrete_model_selects_only_the_targets_serving_it() -> None:
    choice = choose_tier(route(rule("code", "code", contains_code=True)), facts(CODE, model="gpt-4o"))
    assert choice.tier == "large"
    assert choice.rule == "concrete-model"
    assert choice.targets == (TIERS["large"].targets[0],)


def test_a_concrete_model_in_a_later_tier_names_that_tier() -> None:
    choice = choose_tier(route(), facts(model="deepseek-coder"))
    assert (choice.tier, choice.targets) == ("code", (TIERS["code"].targets[1],))


def test_an_alias_considers_only_rules_whose_model_glob_matches_it() -> None:
    aliased = route(rule("long", "large", min_prompt_tokens=10),
                    rule("fast-code", "code", model="fast-*", contains_code=True),
                    rule("fast", "small", model="fast-*"))
    assert choose_tier(aliased, facts(CODE, model="fast-v2")).rule == "fast-code"
    assert choose_tier(aliased, facts(LONG_PROSE, model="fast-v2")).rule == "fast"


def test_a_rule_with_a_model_condition_does_not_apply_to_auto() -> None:
    aliased = route(rule("fast", "large", model="fast"))
    assert choose_tier(aliased, facts(model="auto")).rule == "default"


def test_a_model_glob_can_match_auto_itself() -> None:
    assert choose_tier(route(rule("any", "large", model="*")), facts(model="auto")).rule == "any"


def test_a_known_alias_whose_rules_do_not_match_gets_the_default_tier() -> None:
    aliased = route(rule("fast-long", "large", model="fast", min_prompt_tokens=4000))
    choice = choose_tier(aliased, facts("hi", model="fast"))
    assert (choice.tier, choice.rule) == ("small", "default")


def test_an_unknown_model_is_404_listing_tiers_auto_aliases_and_concrete_models() -> None:
    aliased = route(rule("fast", "small", model="fast-*"))
    with pytest.raises(ModelNotFound) as caught:
        choose_tier(aliased, facts(model="gpt-5"))
    assert caught.value.status == 404
    assert caught.value.available == ("small", "large", "code", "auto", "fast-*", "gpt-4o-mini", "claude-haiku",
                                      "gpt-4o", "claude-sonnet", "deepseek-coder")
    assert "gpt-5" in caught.value.message


def test_globs_do_not_treat_other_characters_as_patterns() -> None:
    aliased = route(rule("dotted", "large", model="v1.*"))
    assert choose_tier(aliased, facts(model="v1.5")).rule == "dotted"
    with pytest.raises(ModelNotFound):
        choose_tier(aliased, facts(model="v105"))


def test_a_huge_model_name_never_matches_a_glob() -> None:
    with pytest.raises(ModelNotFound):
        choose_tier(route(rule("any", "large", model="*a*b*c*")), facts(model="a" * 100_000))


@pytest.mark.parametrize(("when", "request_facts", "reason"), [
    ({"min_prompt_tokens": 4000}, facts(LONG_PROSE), "rule 'r': prompt ≈ {tokens} tokens ≥ 4000"),
    ({"max_prompt_tokens": 100}, facts("hi"), "rule 'r': prompt ≈ {tokens} tokens ≤ 100"),
    ({"min_prompt_tokens": 1, "max_prompt_tokens": 100}, facts("hi"), "rule 'r': prompt ≈ {tokens} tokens in [1, 100]"),
    ({"contains_code": True}, facts(CODE), "rule 'r': prompt contains code"),
    ({"keywords": ("poem", "story")}, facts("a story please"), "rule 'r': keyword 'story'"),
    ({"header": HeaderMatch("x-tier", "gold")}, facts(headers={"x-tier": "gold"}), "rule 'r': header x-tier: gold"),
    ({"has_tools": True}, facts(has_tools=True), "rule 'r': request has tools"),
    ({}, facts(), "rule 'r': matches every request"),
])
def test_the_reason_says_why_the_rule_matched(when: dict[str, Any], request_facts: RequestFacts, reason: str) -> None:
    choice = choose_tier(route(rule("r", "large", **when)), request_facts)
    assert choice.reason == reason.format(tokens=request_facts.prompt_tokens)


class ExplodingMessages(list[Any]):
    """Messages whose content must not be read: reading them fails the test."""

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("the prompt text was computed")

    def __len__(self) -> int:
        raise AssertionError("the prompt size was computed")


def test_rules_that_need_no_prompt_never_read_it() -> None:
    cheap = route(rule("tools", "large", has_tools=True), rule("gold", "code", header=HeaderMatch("x-tier", "gold")))
    request = RequestFacts("auto", ExplodingMessages(), {"x-tier": "gold"}, False, None)
    assert choose_tier(cheap, request).rule == "gold"


def test_a_failing_cheap_condition_spares_the_costly_ones() -> None:
    mixed = route(rule("big-tools", "large", has_tools=True, min_prompt_tokens=10, contains_code=True, keywords=("x",)))
    request = RequestFacts("auto", ExplodingMessages(), {}, False, None)
    assert choose_tier(mixed, request).rule == "default"


def test_facts_are_computed_once_however_many_rules_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"estimate": 0, "code": 0, "text": 0}
    real_estimate, real_code, real_text = (tokens_module.estimate_tokens, tokens_module.contains_code,
                                           tokens_module.prompt_text)

    def counting(name: str, real: Any) -> Any:
        def wrapper(arg: Any) -> Any:
            calls[name] += 1
            return real(arg)
        return wrapper

    monkeypatch.setattr(tokens_module, "estimate_tokens", counting("estimate", real_estimate))
    monkeypatch.setattr(tokens_module, "contains_code", counting("code", real_code))
    monkeypatch.setattr(tokens_module, "prompt_text", counting("text", real_text))
    many = route(*(rule(f"r{i}", "large", min_prompt_tokens=10_000 + i, contains_code=True) for i in range(5)),
                 rule("code", "code", contains_code=True), rule("kw", "large", keywords=("never",)))
    request = facts("plain words here")
    choose_tier(many, request)
    assert calls == {"estimate": 1, "code": 1, "text": 1}


def test_a_new_route_object_is_planned_afresh() -> None:
    first = route(rule("a", "large"))
    second = route(rule("b", "code"))
    assert choose_tier(first, facts()).rule == "a"
    assert choose_tier(second, facts()).rule == "b"
    assert choose_tier(first, facts()).rule == "a"
