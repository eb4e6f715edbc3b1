"""Parsing and validating LLMProvider / LLMRoute documents."""

from __future__ import annotations

import copy
import re
from datetime import date
from typing import Any

import pytest

from llmroute_proxy.spec import (
    API_VERSION,
    ConditionSpec,
    EnvCredential,
    FileCredential,
    HeaderCondition,
    ProviderSpec,
    SecretKeyRef,
    SpecError,
    parse_documents,
    parse_duration,
    parse_provider,
    parse_route,
)
from llmroute_proxy.table import (
    Budget,
    BudgetPeriod,
    FallbackPolicy,
    Limits,
    LoadBalancing,
    OutlierDetection,
    Pricing,
    ProviderType,
    Strategy,
)

DELETE = object()
SECRET = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def openai_doc() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": "LLMProvider", "metadata": {"name": "openai-main"},
        "spec": {
            "type": "openai",
            "endpoints": [{"region": "us", "url": "https://api.openai.com/v1"},
                          {"region": "eu", "url": "https://eu.api.openai.com/v1"}],
            "credentials": {"env": "OPENAI_API_KEY"},
            "models": [{"name": "gpt-4o", "contextWindow": 128000,
                        "pricing": {"inputPerMTok": 2.5, "outputPerMTok": 10}},
                       {"name": "gpt-4o-mini"}],
        },
    }


def claude_doc() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": "LLMProvider", "metadata": {"name": "claude"},
        "spec": {"type": "anthropic", "endpoints": [{"region": "us", "url": "https://api.anthropic.com"}],
                 "credentials": {"secretRef": {"name": "llm-keys", "key": "anthropic"}}},
    }


def route_doc() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": "LLMRoute", "metadata": {"name": "chat"},
        "spec": {
            "tiers": {
                "fast": {"targets": [{"provider": "openai-main", "model": "gpt-4o-mini"},
                                     {"provider": "claude", "model": "claude-haiku-4-5", "priority": 1}]},
                "smart": {"targets": [{"provider": "openai-main", "model": "gpt-4o", "weight": 3}]},
            },
            "rules": [{"name": "short", "when": {"maxPromptTokens": 500}, "tier": "fast"}],
            "defaultTier": "smart",
        },
    }


def documents() -> list[dict[str, Any]]:
    return [openai_doc(), claude_doc(), route_doc()]


def set_path(doc: dict[str, Any], path: str, value: object) -> None:
    keys: list[str | int] = [int(k[1:-1]) if k.startswith("[") else k
                             for k in re.findall(r"\[\d+\]|[^.\[\]]+", path)]
    node: Any = doc
    for key in keys[:-1]:
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    elif isinstance(node, list) and keys[-1] == len(node):
        node.append(value)
    else:
        node[keys[-1]] = value


def errors_after(index: int, path: str, value: object) -> list[SpecError]:
    docs = documents()
    set_path(docs[index], path, value)
    return list(parse_documents(docs).errors)


PROVIDER, ROUTE = 0, 2
PROVIDER_TYPES = "openai, openai-compatible, azure-openai, anthropic, gemini"

INVALID = [
    # (document, mutated path, new value, error path, error message)
    (PROVIDER, "spec.type", "opnai", "spec.type",
     f"expected one of: {PROVIDER_TYPES}; found a string ('opnai') (did you mean 'openai'?)"),
    (PROVIDER, "spec.type", DELETE, "spec.type", "missing required field"),
    (PROVIDER, "spec.type", 3, "spec.type", f"expected one of: {PROVIDER_TYPES}; found an integer (3)"),
    (PROVIDER, "spec.endpoints", [], "spec.endpoints", "must not be empty"),
    (PROVIDER, "spec.endpoints", DELETE, "spec.endpoints", "missing required field"),
    (PROVIDER, "spec.endpoints", {"region": "us"}, "spec.endpoints", "expected a list, found a mapping"),
    (PROVIDER, "spec.endpoints[0].url", "ftp://files.example.com", "spec.endpoints[0].url",
     "expected an http:// or https:// URL, found 'ftp://files.example.com'"),
    (PROVIDER, "spec.endpoints[0].url", "api.openai.com/v1", "spec.endpoints[0].url",
     "expected an http:// or https:// URL, found 'api.openai.com/v1'"),
    (PROVIDER, "spec.endpoints[0].url", DELETE, "spec.endpoints[0].url", "missing required field"),
    (PROVIDER, "spec.endpoints[1].region", "us", "spec.endpoints[1].region",
     "duplicate region 'us' (also in spec.endpoints[0]): a target is identified by provider, model and region"),
    (PROVIDER, "spec.endpoints[0].region", "us east", "spec.endpoints[0].region",
     "'us east' is not a valid region (letters, digits, '.', '_' and '-')"),
    (PROVIDER, "spec.endpoints[0].regoin", "us", "spec.endpoints[0].regoin",
     "unknown field 'regoin' (did you mean 'region'?)"),
    (PROVIDER, "spec.endpoint", [], "spec.endpoint", "unknown field 'endpoint' (did you mean 'endpoints'?)"),
    (PROVIDER, "spec.colour", "blue", "spec.colour",
     "unknown field 'colour' (expected one of: type, endpoints, credentials, limits, models, azure, gemini, tls)"),
    (PROVIDER, "spec.credentials", DELETE, "spec.credentials",
     "missing required field (type openai needs a key; only openai-compatible may go without)"),
    (PROVIDER, "spec.credentials.file", "/run/key", "spec.credentials",
     "give exactly one of secretRef, env, file (found: env, file)"),
    (PROVIDER, "spec.credentials", {}, "spec.credentials",
     "give exactly one of secretRef, env, file (found: none)"),
    (PROVIDER, "spec.credentials", {"secretRef": {"name": "keys"}}, "spec.credentials.secretRef.key",
     "missing required field"),
    (PROVIDER, "spec.credentials.env", "9LIVES", "spec.credentials.env",
     "is not an environment variable name (give the name of the variable that holds the key, "
     "not the key itself)"),
    (PROVIDER, "spec.credentials.envVar", "X", "spec.credentials",
     "unknown field (expected one of: secretRef, env, file)"),
    (PROVIDER, "spec.limits", {"requestsPerMinute": 0}, "spec.limits.requestsPerMinute",
     "must be greater than 0, found 0"),
    (PROVIDER, "spec.limits", {"tokensPerMinute": "1M"}, "spec.limits.tokensPerMinute",
     "expected a number, found a string ('1M')"),
    (PROVIDER, "spec.limits", {"maxConcurrency": 1.5}, "spec.limits.maxConcurrency",
     "expected an integer, found a number (1.5)"),
    (PROVIDER, "spec.limits", {"maxConcurrency": True}, "spec.limits.maxConcurrency",
     "expected an integer, found a boolean (true)"),
    (PROVIDER, "spec.limits", {"requestsPerMinut": 10}, "spec.limits.requestsPerMinut",
     "unknown field 'requestsPerMinut' (did you mean 'requestsPerMinute'?)"),
    (PROVIDER, "spec.models[1].name", "gpt-4o", "spec.models[1].name", "duplicate model 'gpt-4o'"),
    (PROVIDER, "spec.models[1].name", DELETE, "spec.models[1].name", "missing required field"),
    (PROVIDER, "spec.models[0].contextWindow", 0, "spec.models[0].contextWindow", "must be at least 1, found 0"),
    (PROVIDER, "spec.models[0].pricing.inputPerMTok", -1, "spec.models[0].pricing.inputPerMTok",
     "must be at least 0, found -1"),
    (PROVIDER, "spec.models[0].pricing.inputPerMtok", 1, "spec.models[0].pricing.inputPerMtok",
     "unknown field 'inputPerMtok' (did you mean 'inputPerMTok'?)"),
    (PROVIDER, "spec.models", "gpt-4o", "spec.models", "expected a list, found a string ('gpt-4o')"),
    (PROVIDER, "spec.azure", {"apiVersion": "2024-10-21"}, "spec.azure",
     "only for type azure-openai (this provider is openai)"),
    (PROVIDER, "spec.gemini", {"apiVersion": "v1"}, "spec.gemini", "only for type gemini (this provider is openai)"),
    # LLMRoute
    (ROUTE, "spec.tiers", DELETE, "spec.tiers", "missing required field"),
    (ROUTE, "spec.tiers", {}, "spec.tiers", "must define at least one tier"),
    (ROUTE, "spec.tiers", ["fast"], "spec.tiers", "expected a mapping of tier names to tiers, found a list"),
    (ROUTE, "spec.tiers.auto", {"targets": [{"provider": "claude", "model": "x"}]}, "spec.tiers.auto",
     "'auto' is reserved (model 'auto' lets the rules choose)"),
    (ROUTE, "spec.tiers.fast.targets[1].provider", "opnai", "spec.tiers.fast.targets[1].provider",
     "unknown provider 'opnai' (known: openai-main, claude)"),
    (ROUTE, "spec.tiers.fast.targets[0].model", "gpt-5", "spec.tiers.fast.targets[0].model",
     "model 'gpt-5' is not listed by provider 'openai-main' (listed: gpt-4o, gpt-4o-mini)"),
    (ROUTE, "spec.tiers.fast.targets[0].model", DELETE, "spec.tiers.fast.targets[0].model",
     "missing required field"),
    (ROUTE, "spec.tiers.fast.targets[0].weight", -1, "spec.tiers.fast.targets[0].weight",
     "must be at least 0, found -1"),
    (ROUTE, "spec.tiers.fast.targets[0].weight", "3", "spec.tiers.fast.targets[0].weight",
     "expected an integer, found a string ('3')"),
    (ROUTE, "spec.tiers.fast.targets[0].priority", 0.5, "spec.tiers.fast.targets[0].priority",
     "expected an integer, found a number (0.5)"),
    (ROUTE, "spec.tiers.fast.targets[0].wieght", 2, "spec.tiers.fast.targets[0].wieght",
     "unknown field 'wieght' (did you mean 'weight'?)"),
    (ROUTE, "spec.tiers.fast.targets", [], "spec.tiers.fast.targets", "must not be empty"),
    (ROUTE, "spec.tiers.fast", {}, "spec.tiers.fast.targets", "missing required field"),
    (ROUTE, "spec.tiers.smart.targets[0].weight", 0, "spec.tiers.smart.targets",
     "every target has weight 0; at least one needs a positive weight"),
    (ROUTE, "spec.tiers.fast.targets[1]", {"provider": "openai-main", "model": "gpt-4o-mini"},
     "spec.tiers.fast.targets[1]", "duplicate target openai-main/gpt-4o-mini (also spec.tiers.fast.targets[0])"),
    (ROUTE, "spec.defaultTier", DELETE, "spec.defaultTier", "missing required field"),
    (ROUTE, "spec.defaultTier", "smrt", "spec.defaultTier", "unknown tier 'smrt' (known: fast, smart)"),
    (ROUTE, "spec.rules[0].tier", "slow", "spec.rules[0].tier", "unknown tier 'slow' (known: fast, smart)"),
    (ROUTE, "spec.rules[0].tier", DELETE, "spec.rules[0].tier", "missing required field"),
    (ROUTE, "spec.rules[1]", {"name": "short", "tier": "smart"}, "spec.rules[1].name",
     "duplicate rule name 'short'"),
    (ROUTE, "spec.rules[1]", {"when": {"header": {"name": "x-team"}}, "tier": "smart"}, "spec.rules[1].name",
     "missing required field (a rule with a header condition needs a name)"),
    (ROUTE, "spec.rules[0].when.maxPromptToken", 3, "spec.rules[0].when.maxPromptToken",
     "unknown field 'maxPromptToken' (did you mean 'maxPromptTokens'?)"),
    (ROUTE, "spec.rules[0].when.minPromptTokens", 900, "spec.rules[0].when.minPromptTokens",
     "is greater than maxPromptTokens (900 > 500): the rule never matches"),
    (ROUTE, "spec.rules[0].when.maxPromptTokens", -5, "spec.rules[0].when.maxPromptTokens",
     "must be at least 0, found -5"),
    (ROUTE, "spec.rules[0].when.containsCode", "yes", "spec.rules[0].when.containsCode",
     "expected true or false, found a string ('yes')"),
    (ROUTE, "spec.rules[0].when.keywords", [], "spec.rules[0].when.keywords", "must not be empty"),
    (ROUTE, "spec.rules[0].when.keywords", "prove", "spec.rules[0].when.keywords",
     "expected a list, found a string ('prove')"),
    (ROUTE, "spec.rules[0].when.keywords", ["ok", 7], "spec.rules[0].when.keywords[1]",
     "expected a string, found an integer (7)"),
    (ROUTE, "spec.rules[0].when.header", {"name": "x-batch", "value": True}, "spec.rules[0].when.header.value",
     "expected a string, found a boolean (true) (quote it in YAML to keep it a string)"),
    (ROUTE, "spec.rules[0].when.header", {"name": "x batch"}, "spec.rules[0].when.header.name",
     "'x batch' is not a valid HTTP header name"),
    (ROUTE, "spec.rules[0].when.header", {"value": "v"}, "spec.rules[0].when.header.name",
     "missing required field"),
    (ROUTE, "spec.rules[0].when", "always", "spec.rules[0].when", "expected a mapping, found a string ('always')"),
    (ROUTE, "spec.rules", {"name": "x"}, "spec.rules", "expected a list, found a mapping"),
    (ROUTE, "spec.fallback", {"maxAttempts": 11}, "spec.fallback.maxAttempts", "must be at most 10, found 11"),
    (ROUTE, "spec.fallback", {"maxAttempts": 0}, "spec.fallback.maxAttempts", "must be at least 1, found 0"),
    (ROUTE, "spec.fallback", {"perTryTimeout": 30}, "spec.fallback.perTryTimeout",
     "expected a duration such as '500ms', '2s', '1m' or '1h', found an integer (30); "
     "durations need a unit, e.g. '30s'"),
    (ROUTE, "spec.fallback", {"firstByteTimeout": "5 sec"}, "spec.fallback.firstByteTimeout",
     "expected a duration such as '500ms', '2s', '1m' or '1h', found a string ('5 sec')"),
    (ROUTE, "spec.fallback", {"idleTimeout": "0s"}, "spec.fallback.idleTimeout", "must be longer than 0, found '0s'"),
    (ROUTE, "spec.fallback", {"perTryTimout": "1s"}, "spec.fallback.perTryTimout",
     "unknown field 'perTryTimout' (did you mean 'perTryTimeout'?)"),
    (ROUTE, "spec.fallback", {"onErrors": ["client_error"]}, "spec.fallback.onErrors[0]",
     "'client_error' is never failed over: it is the request's own fault"),
    (ROUTE, "spec.fallback", {"onErrors": ["timeout", "ratelimited"]}, "spec.fallback.onErrors[1]",
     "unknown error kind 'ratelimited' (did you mean 'rate_limited'?) (expected one of: rate_limited, "
     "quota_exhausted, auth, target_not_found, overloaded, server_error, timeout, connection, "
     "stream_broken, context_length)"),
    (ROUTE, "spec.fallback", {"fallbackTiers": ["fast", "cheap"]}, "spec.fallback.fallbackTiers[1]",
     "unknown tier 'cheap' (known: fast, smart)"),
    (ROUTE, "spec.fallback", {"fallbackTiers": ["fast", "fast"]}, "spec.fallback.fallbackTiers[1]",
     "duplicate tier 'fast'"),
    (ROUTE, "spec.loadBalancing", {"strategy": "round-robin"}, "spec.loadBalancing.strategy",
     "expected one of: weighted, least-outstanding, least-latency; found a string ('round-robin')"),
    (ROUTE, "spec.loadBalancing", {"preferRegion": "remote"}, "spec.loadBalancing.preferRegion",
     "expected one of: local, none; found a string ('remote')"),
    (ROUTE, "spec.outlierDetection", {"consecutiveFailures": 0}, "spec.outlierDetection.consecutiveFailures",
     "must be at least 1, found 0"),
    (ROUTE, "spec.outlierDetection", {"maxEjectionPercent": 101}, "spec.outlierDetection.maxEjectionPercent",
     "must be at most 100, found 101"),
    (ROUTE, "spec.outlierDetection", {"baseEjection": "10m"}, "spec.outlierDetection.baseEjection",
     "is longer than maxEjection (600s > 300s)"),
    (ROUTE, "spec.experiments", [{"name": "e", "tier": "fast", "percent": 101,
                                  "targets": [{"provider": "claude", "model": "m"}]}],
     "spec.experiments[0].percent", "must be at most 100, found 101"),
    (ROUTE, "spec.experiments", [{"name": "a", "tier": "fast", "percent": 60,
                                  "targets": [{"provider": "claude", "model": "m"}]},
                                 {"name": "b", "tier": "fast", "percent": 50,
                                  "targets": [{"provider": "claude", "model": "n"}]}],
     "spec.experiments[1].percent", "experiments on tier 'fast' add up to 110% (more than 100%)"),
    (ROUTE, "spec.experiments", [{"name": "a", "tier": "fats", "percent": 5,
                                  "targets": [{"provider": "claude", "model": "m"}]}],
     "spec.experiments[0].tier", "unknown tier 'fats' (known: fast, smart)"),
    (ROUTE, "spec.experiments", [{"name": "a", "tier": "fast", "percent": 5,
                                  "targets": [{"provider": "claud", "model": "m"}]}],
     "spec.experiments[0].targets[0].provider", "unknown provider 'claud' (known: openai-main, claude)"),
    (ROUTE, "spec.experiments", [{"name": "a", "tier": "fast", "percent": 5, "targets": []}],
     "spec.experiments[0].targets", "must not be empty"),
    (ROUTE, "spec.experiments", [{"name": "a", "tier": "fast", "percent": 5, "stickyBy": "cookie",
                                  "targets": [{"provider": "claude", "model": "m"}]}],
     "spec.experiments[0].stickyBy", "expected 'user' or 'header:<name>', found 'cookie'"),
    (ROUTE, "spec.experiments", [{"name": "a", "tier": "fast", "percent": 5,
                                  "targets": [{"provider": "claude", "model": "m"}]},
                                 {"name": "a", "tier": "smart", "percent": 5,
                                  "targets": [{"provider": "claude", "model": "m"}]}],
     "spec.experiments[1].name", "duplicate experiment name 'a'"),
    (ROUTE, "spec.experiments", [{"tier": "fast", "percent": 5, "targets": [{"provider": "claude", "model": "m"}]}],
     "spec.experiments[0].name", "missing required field"),
    (ROUTE, "spec.budget", {"period": "day"}, "spec.budget.limitUSD", "missing required field"),
    (ROUTE, "spec.budget", {"limitUSD": 0}, "spec.budget.limitUSD", "must be greater than 0, found 0"),
    (ROUTE, "spec.budget", {"limitUSD": 5, "period": "week"}, "spec.budget.period",
     "expected one of: hour, day, month; found a string ('week')"),
    (ROUTE, "spec.budget", {"limitUSD": 5, "alertAtPercent": 120}, "spec.budget.alertAtPercent",
     "must be at most 100, found 120"),
    (ROUTE, "spec.budget", {"limitUSD": 5, "onExceeded": "downgrade:cheap"}, "spec.budget.onExceeded",
     "unknown tier 'cheap' (known: fast, smart)"),
    (ROUTE, "spec.budget", {"limitUSD": 5, "onExceeded": "block"}, "spec.budget.onExceeded",
     "expected one of: alert, reject, downgrade:TIER; found 'block'"),
    (ROUTE, "spec.budget", {"limitUSD": 5, "onExceeded": "downgrade"}, "spec.budget.onExceeded",
     "expected one of: alert, reject, downgrade:TIER; found 'downgrade' (did you mean 'downgrade:'?)"),
    (ROUTE, "spec.podSelector", {"matchLabel": {"app": "x"}}, "spec.podSelector.matchLabel",
     "unknown field 'matchLabel' (did you mean 'matchLabels'?)"),
    (ROUTE, "spec.podSelector", {"matchLabels": {"tier": 1}}, "spec.podSelector.matchLabels.tier",
     "expected a string, found an integer (1)"),
    # the document itself
    (ROUTE, "apiVersion", "llmroute.dev/v1", "apiVersion",
     "unsupported apiVersion 'llmroute.dev/v1' for LLMRoute (expected llmroute.dev/v1alpha1)"),
    (ROUTE, "metadata.name", "Chat_Route", "metadata.name",
     "'Chat_Route' is not a valid name (lower-case letters, digits, '-' and '.')"),
    (ROUTE, "specs", {}, "specs", "unknown field 'specs' (did you mean 'spec'?)"),
    (ROUTE, "spec", DELETE, "spec", "missing required field"),
    (ROUTE, "spec", [], "spec", "expected a mapping, found a list"),
]


@pytest.mark.parametrize(("document", "mutated", "value", "path", "message"), INVALID,
                         ids=[f"{case[1]}={case[2]!r}"[:70] for case in INVALID])
def test_each_invalid_field_is_reported_once_at_its_path(document: int, mutated: str, value: object, path: str,
                                                     message: str) -> None:
    errors = errors_after(document, mutated, value)
    kind, name = ("LLMProvider", "openai-main") if document == PROVIDER else ("LLMRoute", "chat")
    if mutated == "metadata.name":
        name = value  # type: ignore[assignment]
    own = [e for e in errors if e.name == name]
    assert own == [SpecError(kind, name, path, message)], "\n".join(map(str, errors))


@pytest.mark.parametrize(("document", "mutated", "value", "path", "message"), INVALID,
                         ids=[f"{case[1]}={case[2]!r}"[:70] for case in INVALID])
def test_a_document_with_an_error_is_left_out_of_the_result(document: int, mutated: str, value: object,
                                                           path: str, message: str) -> None:
    docs = documents()
    set_path(docs[document], mutated, value)
    specs = parse_documents(docs)
    names = [p.name for p in specs.providers] + [r.name for r in specs.routes]
    invalid_name = docs[document]["metadata"]["name"]
    assert invalid_name not in names


def test_the_valid_set_parses_with_the_tables_defaults() -> None:
    specs = parse_documents(documents())
    assert specs.errors == ()
    openai, claude = specs.providers
    assert openai.type is ProviderType.OPENAI
    assert openai.credentials == EnvCredential("OPENAI_API_KEY")
    assert claude.credentials == SecretKeyRef("llm-keys", "anthropic")
    assert openai.limits == Limits()
    assert openai.models[0].pricing == Pricing(2.5, 10.0, None)
    assert openai.models[1].context_window is None
    (route,) = specs.routes
    assert list(route.tiers) == ["fast", "smart"]
    assert route.tiers["fast"].targets[1].priority == 1
    assert route.tiers["fast"].targets[0].weight == 1
    assert route.tiers["smart"].targets[0].weight == 3
    assert route.rules[0].when == ConditionSpec(max_prompt_tokens=500)
    assert (route.fallback, route.load_balancing, route.outlier_detection) == (
        FallbackPolicy(), LoadBalancing(), OutlierDetection())
    assert route.budget is None and route.experiments == ()


def test_every_section_is_read_into_the_spec() -> None:
    docs = documents()
    spec = docs[ROUTE]["spec"]
    spec["rules"] = [{"name": "batch", "when": {"header": {"name": "X-Workload", "value": "batch"},
                                                "keywords": ["Prove"], "containsCode": False, "hasTools": True,
                                                "model": "gpt-*", "minPromptTokens": 10}, "tier": "fast"},
                     {"when": {}, "tier": "smart"}]
    spec["fallback"] = {"maxAttempts": 5, "perTryTimeout": "1m30s", "firstByteTimeout": "500ms",
                        "idleTimeout": "1.5s", "overallTimeout": "1h", "onErrors": ["timeout", "rate_limited"],
                        "fallbackTiers": ["fast"]}
    spec["loadBalancing"] = {"strategy": "least-latency", "preferRegion": "none"}
    spec["outlierDetection"] = {"consecutiveFailures": 2, "baseEjection": "10s", "maxEjection": "1m",
                                "maxEjectionPercent": 100}
    spec["experiments"] = [{"name": "haiku", "tier": "fast", "percent": 12.5, "stickyBy": "header:x-user",
                            "targets": [{"provider": "claude", "model": "claude-haiku-4-5"}]}]
    spec["budget"] = {"limitUSD": 250, "period": "month", "alertAtPercent": 90, "onExceeded": "downgrade:fast"}
    spec["podSelector"] = {"matchLabels": {"app": "chat"}}
    docs[ROUTE]["status"] = {"anything": ["is", "ignored"]}
    docs[ROUTE]["metadata"].update(namespace="team-a", labels={"x": "y"}, resourceVersion="12")
    specs = parse_documents(docs)
    assert specs.errors == ()
    (route,) = specs.routes
    assert route.rules[0].when == ConditionSpec(
        min_prompt_tokens=10, contains_code=False, keywords=("Prove",),
        header=HeaderCondition("X-Workload", "batch"), model="gpt-*", has_tools=True)
    assert route.rules[1].name is None and route.rules[1].when == ConditionSpec()
    assert route.fallback == FallbackPolicy(5, 90.0, 0.5, 1.5, 3600.0, frozenset({"timeout", "rate_limited"}),
                                            ("fast",))
    assert route.load_balancing == LoadBalancing(Strategy.LEAST_LATENCY, "none")
    assert route.outlier_detection == OutlierDetection(2, 10.0, 60.0, 100)
    assert route.experiments[0].percent == 12.5
    assert route.experiments[0].sticky_by == "header:x-user"
    assert route.budget == Budget(250.0, BudgetPeriod.MONTH, 90.0, "downgrade", "fast")
    assert route.pod_selector == {"matchLabels": {"app": "chat"}}


def test_an_empty_on_errors_list_means_no_failover_at_all() -> None:
    docs = documents()
    docs[ROUTE]["spec"]["fallback"] = {"onErrors": []}
    (route,) = parse_documents(docs).routes
    assert route.fallback.on_errors == frozenset()


def test_every_error_of_a_set_is_reported_in_one_pass() -> None:
    docs = documents()
    docs[PROVIDER]["spec"]["type"] = "opnai"
    docs[PROVIDER]["spec"]["limits"] = {"maxConcurrency": 0}
    docs[ROUTE]["spec"]["defaultTier"] = "nope"
    docs[ROUTE]["spec"]["fallback"] = {"maxAttempts": 99, "overallTimeout": 5}
    docs[ROUTE]["spec"]["tiers"]["fast"]["targets"][1]["weight"] = -2
    paths = [(e.name, e.path) for e in parse_documents(docs).errors]
    assert paths == [
        ("openai-main", "spec.type"),
        ("openai-main", "spec.limits.maxConcurrency"),
        ("chat", "spec.tiers.fast.targets[0].provider"),  # names the invalid provider
        ("chat", "spec.tiers.fast.targets[1].weight"),
        ("chat", "spec.defaultTier"),
        ("chat", "spec.fallback.maxAttempts"),
        ("chat", "spec.fallback.overallTimeout"),
    ]


def test_a_route_naming_an_invalid_provider_says_so_rather_than_unknown() -> None:
    docs = documents()
    docs[PROVIDER]["spec"]["type"] = "opnai"
    errors = parse_documents(docs).errors
    route_errors = [str(e) for e in errors if e.kind == "LLMRoute"]
    assert route_errors == [  # once, though the route names it twice
        "LLMRoute/chat: spec.tiers.fast.targets[0].provider: provider 'openai-main' is invalid (see its own errors)",
    ]


def test_valid_documents_are_kept_beside_invalid_ones() -> None:
    docs = documents()
    docs[1]["spec"]["endpoints"] = []
    docs[ROUTE]["spec"]["tiers"]["fast"]["targets"].pop()  # no longer names the broken provider
    specs = parse_documents(docs)
    assert [p.name for p in specs.providers] == ["openai-main"]
    assert [r.name for r in specs.routes] == ["chat"]
    assert [e.name for e in specs.errors] == ["claude"]


def test_the_error_string_names_kind_document_path_and_problem() -> None:
    errors = errors_after(ROUTE, "spec.tiers.fast.targets[1].provider", "opnai")
    assert [str(e) for e in errors] == [
        "LLMRoute/chat: spec.tiers.fast.targets[1].provider: unknown provider 'opnai' (known: openai-main, claude)"]


def test_a_document_of_unknown_kind_is_named() -> None:
    docs: list[object] = [*documents(), {"apiVersion": API_VERSION, "kind": "LLMRoutes", "metadata": {"name": "x"}}]
    assert [str(e) for e in parse_documents(docs).errors] == [
        "x: kind: unknown kind 'LLMRoutes' (did you mean 'LLMRoute'?) (expected LLMProvider or LLMRoute)"]


@pytest.mark.parametrize(("document", "expected"), [
    ({"kind": "Deployment", "apiVersion": "apps/v1"},
     "<document 4>: kind: unknown kind 'Deployment' (expected LLMProvider or LLMRoute)"),
    ({"apiVersion": API_VERSION}, "<document 4>: kind: missing kind (expected LLMProvider or LLMRoute)"),
    (["a", "list"], "<document 4>: expected a mapping with apiVersion, kind, metadata and spec, found a list"),
    ({"apiVersion": API_VERSION, "kind": "LLMRoute", "spec": {}}, "LLMRoute/<document 4>: metadata: missing required field"),
    ({"apiVersion": API_VERSION, "kind": "LLMRoute", "metadata": {}, "spec": {}},
     "LLMRoute/<document 4>: metadata.name: missing required field"),
])
def test_documents_that_cannot_be_identified_are_numbered(document: object, expected: str) -> None:
    errors = parse_documents([*documents(), document]).errors
    assert str(errors[0]) == expected


def test_empty_documents_are_skipped_but_counted() -> None:
    errors = parse_documents([None, *documents(), None, {"kind": "Service"}]).errors
    assert [str(e) for e in errors] == [
        "<document 6>: kind: unknown kind 'Service' (expected LLMProvider or LLMRoute)"]


def test_a_second_document_with_the_same_name_is_refused() -> None:
    errors = parse_documents([*documents(), route_doc(), openai_doc()]).errors
    assert [str(e) for e in errors] == [  # in document order
        "LLMRoute/chat: metadata.name: duplicate LLMRoute name 'chat'",
        "LLMProvider/openai-main: metadata.name: duplicate LLMProvider name 'openai-main'",
    ]


def test_openai_compatible_providers_need_no_credentials() -> None:
    doc = openai_doc()
    doc["spec"]["type"] = "openai-compatible"
    del doc["spec"]["credentials"]
    spec, errors = parse_provider(doc)
    assert errors == [] and spec is not None and spec.credentials is None


def test_a_file_credential_is_kept_as_its_path() -> None:
    doc = openai_doc()
    doc["spec"]["credentials"] = {"file": "/var/run/keys/openai"}
    spec, _ = parse_provider(doc)
    assert spec is not None and spec.credentials == FileCredential("/var/run/keys/openai")


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-10-21", "2024-10-21"),
    (date(2024, 10, 21), "2024-10-21"),  # unquoted in YAML
    ("2025-04-01-preview", "2025-04-01-preview"),
    ("v1", "v1"),
])
def test_azure_api_versions_are_read_as_strings(value: object, expected: str) -> None:
    doc = openai_doc()
    doc["spec"]["type"] = "azure-openai"
    doc["spec"]["azure"] = {"apiVersion": value}
    spec, errors = parse_provider(doc)
    assert errors == [] and spec is not None and spec.api_version == expected


@pytest.mark.parametrize(("block", "path", "message"), [
    ({"apiVersion": "2024-13"}, "spec.azure.apiVersion",
     "expected an Azure OpenAI api-version such as '2024-10-21', '2025-04-01-preview' or 'v1', "
     "found a string ('2024-13')"),
    ({}, "spec.azure.apiVersion", "missing required field"),
    ({"version": "v1"}, "spec.azure.version", "unknown field 'version' (did you mean 'apiVersion'?)"),
])
def test_invalid_azure_blocks_are_reported(block: dict[str, Any], path: str, message: str) -> None:
    doc = openai_doc()
    doc["spec"]["type"] = "azure-openai"
    doc["spec"]["azure"] = block
    _, errors = parse_provider(doc)
    assert SpecError("LLMProvider", "openai-main", path, message) in errors


@pytest.mark.parametrize(("version", "errors"), [
    ("v1beta", []),
    ("v1", []),
    ("v2", ["LLMProvider/openai-main: spec.gemini.apiVersion: expected one of: v1beta, v1; found a string ('v2')"]),
])
def test_gemini_api_version_is_v1beta_or_v1(version: str, errors: list[str]) -> None:
    doc = openai_doc()
    doc["spec"]["type"] = "gemini"
    doc["spec"]["gemini"] = {"apiVersion": version}
    spec, found = parse_provider(doc)
    assert [str(e) for e in found] == errors
    assert (spec.api_version if spec else None) == (None if errors else version)


def test_parsing_one_document_of_the_wrong_kind_is_an_error() -> None:
    spec, errors = parse_provider(route_doc())
    assert spec is None
    assert [str(e) for e in errors] == ["LLMRoute/chat: kind: expected LLMProvider, found LLMRoute"]


def test_a_single_route_is_checked_against_the_providers_in_scope() -> None:
    provider, _ = parse_provider(openai_doc())
    assert provider is not None
    route, errors = parse_route(route_doc(), {"openai-main": provider})
    assert route is None
    assert [e.path for e in errors] == ["spec.tiers.fast.targets[1].provider"]
    scope: dict[str, ProviderSpec | None] = {"openai-main": provider, "claude": None}
    route, errors = parse_route(route_doc(), scope)
    assert route is None and "is invalid" in errors[0].message


def test_a_model_is_free_when_the_provider_lists_none() -> None:
    docs = documents()
    docs[ROUTE]["spec"]["tiers"]["fast"]["targets"][1]["model"] = "any-model-at-all"
    assert parse_documents(docs).errors == ()


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("2s", 2.0), ("1.5s", 1.5), ("1m", 60.0), ("1h", 3600.0), ("1m30s", 90.0),
    ("0s", 0.0), ("2", None), ("1d", None), ("-1s", None), ("1 s", None), ("", None), ("s", None), (".5s", None),
])
def test_durations_need_a_unit(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


MISTAKES_WITH_A_SECRET = [
    (PROVIDER, "spec.credentials", {"env": SECRET}),
    (PROVIDER, "spec.credentials", SECRET),
    (PROVIDER, "spec.credentials", {"apiKey": SECRET}),
    (PROVIDER, "spec.credentials", {SECRET: "x"}),
    (PROVIDER, "spec.credentials", {"secretRef": SECRET}),
    (PROVIDER, "spec.credentials", {"secretRef": {"name": 5, "key": SECRET, SECRET: 1}}),
    (PROVIDER, "spec.credentials", {"env": 12345678901234567890}),
    (PROVIDER, "spec.endpoints[0].url", f"https://user:{SECRET}@api.openai.com/v1"),
]


@pytest.mark.parametrize(("document", "mutated", "value"), MISTAKES_WITH_A_SECRET)
def test_a_key_pasted_in_the_wrong_place_is_never_echoed(document: int, mutated: str, value: object) -> None:
    errors = errors_after(document, mutated, value)
    assert errors, "the mistake must be reported"
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error)
        assert "12345678901234567890" not in str(error)


def test_the_input_documents_are_not_modified() -> None:
    docs = documents()
    before = copy.deepcopy(docs)
    parse_documents(docs)
    assert docs == before


def test_a_dated_azure_api_version_with_a_v1_endpoint_is_refused() -> None:
    from llmroute_proxy.spec import parse_documents

    doc = {"apiVersion": "llmroute.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "az"},
           "spec": {"type": "azure-openai", "credentials": {"env": "AZ_KEY"},
                    "endpoints": [{"region": "eu", "url": "https://r.openai.azure.com/openai/v1"}],
                    "azure": {"apiVersion": "2024-10-21"}}}
    errors = [str(e) for e in parse_documents([doc]).errors]
    assert any("LLMProvider/az: spec.azure.apiVersion" in e and "classic form" in e for e in errors), errors
