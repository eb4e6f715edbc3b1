"""Compiling validated specs into one sidecar's routing table."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from llmroute_proxy.compiler import compile_table, share_limits
from llmroute_proxy.spec import API_VERSION, ProviderSpec, RouteSpec, parse_documents
from llmroute_proxy.table import HeaderMatch, Limits, Pricing, ProviderType, RuleMatch, Secret, Table, Target

KEYS = {"openai-main": "sk-openai-3b1f0c9e7d5a", "azure-eu": "az-key-77f0e1d2c3b4", "claude": "sk-ant-5e6f7a8b9c"}


def docs() -> list[dict[str, Any]]:
    def provider(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": "LLMProvider", "metadata": {"name": name}, "spec": spec}

    return [
        provider("openai-main", {
            "type": "openai", "endpoints": [{"region": "us", "url": "https://api.openai.com/v1"}],
            "credentials": {"env": "OPENAI_API_KEY"},
            "limits": {"requestsPerMinute": 1000, "tokensPerMinute": 400000, "maxConcurrency": 10},
            "models": [{"name": "gpt-4o", "contextWindow": 128000, "maxOutputTokens": 16384,
                        "pricing": {"inputPerMTok": 2.5, "outputPerMTok": 10, "cachedInputPerMTok": 1.25}}]}),
        provider("azure-eu", {
            "type": "azure-openai", "credentials": {"env": "AZURE_KEY"}, "azure": {"apiVersion": "2024-10-21"},
            "endpoints": [{"region": "westeurope", "url": "https://a-weu.openai.azure.com"},
                          {"region": "swedencentral", "url": "https://a-swc.openai.azure.com"}]}),
        provider("claude", {
            "type": "anthropic", "endpoints": [{"region": "us", "url": "https://api.anthropic.com"}],
            "credentials": {"secretRef": {"name": "keys", "key": "claude"}}}),
        {"apiVersion": API_VERSION, "kind": "LLMRoute", "metadata": {"name": "chat"}, "spec": {
            "tiers": {
                "smart": {"targets": [{"provider": "openai-main", "model": "gpt-4o", "weight": 3},
                                      {"provider": "azure-eu", "model": "gpt-4o", "priority": 1}]},
                "fast": {"targets": [{"provider": "claude", "model": "claude-haiku-4-5"}]},
            },
            "rules": [{"when": {"keywords": ["Prove", "STEP by step"]}, "tier": "smart"},
                      {"name": "batch", "when": {"header": {"name": "X-Workload", "value": "Batch"}}, "tier": "fast"}],
            "defaultTier": "smart",
            "experiments": [{"name": "sonnet", "tier": "fast", "percent": 10, "stickyBy": "user",
                             "targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}]}],
            "budget": {"limitUSD": 100, "onExceeded": "downgrade:fast"},
        }},
        {"apiVersion": API_VERSION, "kind": "LLMRoute", "metadata": {"name": "batch"}, "spec": {
            "tiers": {"only": {"targets": [{"provider": "claude", "model": "claude-haiku-4-5"}]}},
            "defaultTier": "only"}},
    ]


def specs(documents: list[dict[str, Any]] | None = None) -> tuple[tuple[ProviderSpec, ...], tuple[RouteSpec, ...]]:
    parsed = parse_documents(documents or docs())
    assert parsed.errors == ()
    return parsed.providers, parsed.routes


def keys(overrides: dict[str, str] | None = None) -> Callable[[ProviderSpec], Secret | None]:
    table = {**KEYS, **(overrides or {})}
    return lambda provider: Secret(table[provider.name])


def compiled(documents: list[dict[str, Any]] | None = None, *, region: str = "us",
             key_overrides: dict[str, str] | None = None, limit_share: float = 1.0) -> Table:
    providers, routes = specs(documents)
    return compile_table(providers, routes, region=region, credentials=keys(key_overrides),
                         limit_share=limit_share)


def test_each_tier_target_becomes_one_target_per_endpoint() -> None:
    smart = compiled().routes[0].tiers["smart"]
    assert [t.id for t in smart.targets] == [
        "openai-main/gpt-4o@us", "azure-eu/gpt-4o@westeurope", "azure-eu/gpt-4o@swedencentral"]
    first, weu, swc = smart.targets
    assert first == Target(
        id=first.id, provider="openai-main", provider_type=ProviderType.OPENAI, model="gpt-4o",
        url="https://api.openai.com/v1", region="us", credential=Secret(KEYS["openai-main"]), weight=3,
        priority=0, context_window=128000, max_output_tokens=16384, pricing=Pricing(2.5, 10.0, 1.25), options={})
    assert (weu.url, weu.region, weu.priority, weu.weight) == ("https://a-weu.openai.azure.com", "westeurope", 1, 1)
    assert swc.url == "https://a-swc.openai.azure.com"
    assert weu.options == {"api_version": "2024-10-21"}
    assert weu.credential == Secret(KEYS["azure-eu"])


def test_an_openai_compatible_server_that_speaks_the_responses_api_is_marked_on_its_targets() -> None:
    documents = docs()
    documents[0]["spec"] |= {"type": "openai-compatible", "openaiCompatible": {"responsesAPI": True}}
    first = compiled(documents).routes[0].tiers["smart"].targets[0]
    assert (first.provider_type, first.options) == (ProviderType.OPENAI_COMPATIBLE, {"responses_api": "native"})
    documents[0]["spec"]["openaiCompatible"] = {"responsesAPI": False}
    assert compiled(documents).routes[0].tiers["smart"].targets[0].options == {}


def test_a_model_the_provider_does_not_list_has_zero_pricing_and_no_context_window() -> None:
    (target,) = compiled().routes[0].tiers["fast"].targets
    assert target.pricing == Pricing() and target.context_window is None and target.max_output_tokens is None


def test_rules_get_their_name_or_their_index_and_lower_case_matching() -> None:
    first, second = compiled().routes[0].rules
    assert first.name == "rules[0]"
    assert first.when == RuleMatch(keywords=("prove", "step by step"))
    assert second.name == "batch"
    assert second.when.header == HeaderMatch("x-workload", "Batch")  # values are matched as written
    assert (first.tier, second.tier) == ("smart", "fast")


def test_policies_and_experiments_are_carried_over() -> None:
    route = compiled().routes[0]
    assert route.default_tier == "smart"
    assert route.budget is not None and (route.budget.on_exceeded, route.budget.downgrade_tier) == ("downgrade", "fast")
    (experiment,) = route.experiments
    assert (experiment.name, experiment.tier, experiment.percent, experiment.sticky_by) == ("sonnet", "fast", 10.0,
                                                                                            "user")
    assert [t.id for t in experiment.targets] == ["claude/claude-sonnet-4-5@us"]
    assert "claude/claude-sonnet-4-5@us" in compiled().targets()


def test_routes_keep_document_order_and_the_first_is_the_default() -> None:
    table = compiled()
    assert [r.name for r in table.routes] == ["chat", "batch"]
    assert table.route(None) is table.routes[0]
    assert table.region == "us"


@pytest.mark.parametrize(("limits", "share", "expected"), [
    (Limits(1000, 400000, 10), 1.0, Limits(1000, 400000, 10)),
    (Limits(1000, 400000, 10), 0.25, Limits(250, 100000, 3)),
    (Limits(1000, None, 3), 0.1, Limits(100, None, 1)),
    (Limits(None, None, 1), 0.01, Limits(None, None, 1)),
    (Limits(), 0.5, Limits()),
])
def test_a_sidecar_gets_its_share_of_global_limits(limits: Limits, share: float, expected: Limits) -> None:
    assert share_limits(limits, share) == expected


def test_provider_limits_are_shared_for_every_provider() -> None:
    table = compiled(limit_share=0.5)
    assert table.provider_limits == {"openai-main": Limits(500, 200000, 5), "azure-eu": Limits(),
                                     "claude": Limits()}


@pytest.mark.parametrize("share", [0.0, -1.0, float("nan"), float("inf")])
def test_a_meaningless_limit_share_is_refused(share: float) -> None:
    providers, routes = specs()
    with pytest.raises(ValueError, match="limit_share"):
        compile_table(providers, routes, region="us", credentials=keys(), limit_share=share)


def test_the_same_input_gives_the_same_version() -> None:
    assert compiled().version == compiled().version
    assert len(compiled().version) == 16


def change_weight(documents: list[dict[str, Any]]) -> None:
    documents[3]["spec"]["tiers"]["smart"]["targets"][0]["weight"] = 4


def change_tier_order(documents: list[dict[str, Any]]) -> None:
    tiers = documents[3]["spec"]["tiers"]
    documents[3]["spec"]["tiers"] = dict(reversed(tiers.items()))


def change_timeout(documents: list[dict[str, Any]]) -> None:
    documents[3]["spec"]["fallback"] = {"firstByteTimeout": "5s"}


def change_price(documents: list[dict[str, Any]]) -> None:
    documents[0]["spec"]["models"][0]["pricing"]["outputPerMTok"] = 11


def change_api_version(documents: list[dict[str, Any]]) -> None:
    documents[1]["spec"]["azure"]["apiVersion"] = "2025-04-01-preview"


@pytest.mark.parametrize("change", [change_weight, change_tier_order, change_timeout, change_price,
                                   change_api_version])
def test_a_change_to_the_specs_changes_the_version(change: Callable[[list[dict[str, Any]]], None]) -> None:
    documents = docs()
    change(documents)
    assert compiled(documents).version != compiled().version


@pytest.mark.parametrize("kwargs", [
    {"key_overrides": {"claude": "sk-ant-rotated"}},
    {"region": "eu"},
    {"limit_share": 0.5},
])
def test_a_rotated_key_another_region_or_share_changes_the_version(kwargs: dict[str, Any]) -> None:
    assert compiled(**kwargs).version != compiled().version


def test_the_order_of_provider_documents_does_not_change_the_version() -> None:
    documents = docs()
    documents[0], documents[2] = documents[2], documents[0]
    assert compiled(documents).version == compiled().version


def test_no_key_appears_in_the_table_repr_or_version() -> None:
    table = compiled()
    shown = repr(table) + str(table) + table.version + repr(table.targets())
    for key in KEYS.values():
        assert key not in shown
    assert "Secret(***)" in shown


def test_a_provider_without_credentials_gives_targets_without_one() -> None:
    documents = docs()
    documents[2]["spec"] = {"type": "openai-compatible", "endpoints": [{"region": "local",
                                                                        "url": "http://127.0.0.1:11434/v1"}]}
    providers, routes = specs(documents)
    table = compile_table(providers, routes, region="local", credentials=lambda p: None)
    (target,) = table.routes[1].tiers["only"].targets
    assert target.credential is None and target.id == "claude/claude-haiku-4-5@local"


def test_credentials_are_asked_once_per_provider() -> None:
    asked: list[str] = []

    def resolve(provider: ProviderSpec) -> Secret:
        asked.append(provider.name)
        return Secret(KEYS[provider.name])

    providers, routes = specs()
    compile_table(providers, routes, region="us", credentials=resolve)
    assert sorted(asked) == sorted(KEYS)


def test_the_table_is_frozen() -> None:
    table = compiled()
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.routes[0].tiers["smart"].targets[0].weight = 9  # type: ignore[misc]
