"""LLMProvider / LLMRoute documents and the mistakes made in them, with what the parser says of each.

Shared by the parser's tests (tests/proxy/test_spec.py) and the CRD agreement tests (tests/crds), which
run every one of these documents through both the sidecar's parser and the CRDs' schemas.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from tests.proxy.documents import model, provider, route, target

DELETE = object()
SECRET = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def openai_doc() -> dict[str, Any]:
    return provider("openai-main", "openai", [("us", "https://api.openai.com/v1"), ("eu", "https://eu.api.openai.com/v1")],
                    key_env="OPENAI_API_KEY",
                    models=[model("gpt-4o", context_window=128000, max_output_tokens=16384, input_per_mtok=2.5,
                                  output_per_mtok=10), "gpt-4o-mini"])


def claude_doc() -> dict[str, Any]:
    return provider("claude", "anthropic", "https://api.anthropic.com", region="us",
                    credentials={"secretRef": {"name": "llm-keys", "key": "anthropic"}})


def route_doc() -> dict[str, Any]:
    return route("chat", {
        "fast": [target("openai-main", "gpt-4o-mini"), target("claude", "claude-haiku-4-5", priority=1)],
        "smart": [target("openai-main", "gpt-4o", weight=3)],
    }, default_tier="smart", rules=[{"name": "short", "when": {"maxPromptTokens": 500}, "tier": "fast"}])


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




PROVIDER, ROUTE = 0, 2
PROVIDER_TYPES = "openai, openai-compatible, azure-openai, anthropic, gemini, vertex, bedrock"

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
     "unknown field 'colour' (expected one of: type, endpoints, credentials, limits, models, azure, gemini, "
     "openaiCompatible, tls)"),
    (PROVIDER, "spec.credentials", DELETE, "spec.credentials",
     "missing required field (type openai needs a key; only openai-compatible may go without)"),
    (PROVIDER, "spec.credentials.file", "/run/key", "spec.credentials",
     "give exactly one of secretRef, env, file, workloadIdentity (found: env, file)"),
    (PROVIDER, "spec.credentials", {}, "spec.credentials",
     "give exactly one of secretRef, env, file, workloadIdentity (found: none)"),
    (PROVIDER, "spec.credentials", {"secretRef": {"name": "keys"}}, "spec.credentials.secretRef.key",
     "missing required field"),
    (PROVIDER, "spec.credentials.env", "9LIVES", "spec.credentials.env",
     "is not an environment variable name (give the name of the variable that holds the key, "
     "not the key itself)"),
    (PROVIDER, "spec.credentials.envVar", "X", "spec.credentials",
     "unknown field (expected one of: secretRef, env, file, workloadIdentity)"),
    (PROVIDER, "spec.credentials", {"workloadIdentity": {}}, "spec.credentials.workloadIdentity",
     "only for types vertex and bedrock (the pod's own Google or AWS identity: the GCP metadata server, "
     "EKS Pod Identity or IRSA); type openai needs a key"),
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
    (PROVIDER, "spec.models[0].maxOutputTokens", 0, "spec.models[0].maxOutputTokens", "must be at least 1, found 0"),
    (PROVIDER, "spec.models[0].maxOutputTokens", "16k", "spec.models[0].maxOutputTokens",
     "expected an integer, found a string ('16k')"),
    (PROVIDER, "spec.models[0].pricing.inputPerMTok", -1, "spec.models[0].pricing.inputPerMTok",
     "must be at least 0, found -1"),
    (PROVIDER, "spec.models[0].pricing.inputPerMtok", 1, "spec.models[0].pricing.inputPerMtok",
     "unknown field 'inputPerMtok' (did you mean 'inputPerMTok'?)"),
    (PROVIDER, "spec.models[0].pricing.cacheWritePerMTok", -3.75, "spec.models[0].pricing.cacheWritePerMTok",
     "must be at least 0, found -3.75"),
    (PROVIDER, "spec.models[0].pricing.cacheWrite1hPerMTok", "6", "spec.models[0].pricing.cacheWrite1hPerMTok",
     "expected a number, found a string ('6')"),
    (PROVIDER, "spec.models[0].pricing.webSearchPer1K", -10, "spec.models[0].pricing.webSearchPer1K",
     "must be at least 0, found -10"),
    (PROVIDER, "spec.models[0].pricing.longContext", {"inputPerMTok": 2.5, "outputPerMTok": 15},
     "spec.models[0].pricing.longContext.aboveInputTokens", "missing required field"),
    (PROVIDER, "spec.models[0].pricing.longContext", {"aboveInputTokens": 200000, "inputPerMTok": 2.5},
     "spec.models[0].pricing.longContext.outputPerMTok", "missing required field"),
    (PROVIDER, "spec.models[0].pricing.longContext", {"aboveInputTokens": 0, "inputPerMTok": 2.5, "outputPerMTok": 15},
     "spec.models[0].pricing.longContext.aboveInputTokens", "must be at least 1, found 0"),
    (PROVIDER, "spec.models[0].pricing.serviceTiers", {"prority": {"inputPerMTok": 2.5, "outputPerMTok": 20}},
     "spec.models[0].pricing.serviceTiers.prority", "unknown field 'prority' (did you mean 'priority'?)"),
    (PROVIDER, "spec.models[0].pricing.serviceTiers", {"flex": {"inputPerMTok": 0.625}},
     "spec.models[0].pricing.serviceTiers.flex.outputPerMTok", "missing required field"),
    (PROVIDER, "spec.models[0].pricing.serviceTiers", {"priority": {"inputPerMTok": -2.5, "outputPerMTok": 20}},
     "spec.models[0].pricing.serviceTiers.priority.inputPerMTok", "must be at least 0, found -2.5"),
    (PROVIDER, "spec.models[0].pricing.serviceTiers", {"standard": {"inputPerMTok": 2.5, "outputPerMTok": 10}},
     "spec.models[0].pricing.serviceTiers.standard",
     "type openai answers report no tier 'standard' (they report default, flex, priority, scale)"),
    (PROVIDER, "spec.models", "gpt-4o", "spec.models", "expected a list, found a string ('gpt-4o')"),
    (PROVIDER, "spec.azure", {"apiVersion": "2024-10-21"}, "spec.azure",
     "only for type azure-openai (this provider is openai)"),
    (PROVIDER, "spec.gemini", {"apiVersion": "v1"}, "spec.gemini", "only for type gemini (this provider is openai)"),
    (PROVIDER, "spec.openaiCompatible", {"responsesAPI": True}, "spec.openaiCompatible",
     "only for type openai-compatible (this provider is openai)"),
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
    (ROUTE, "spec.fallback", {"onErrors": ["not_held"]}, "spec.fallback.onErrors[0]",
     "'not_held' is not a failure to choose: a conversation one provider's store does not hold is always looked "
     "for at the next"),
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


def every_section_documents() -> list[dict[str, Any]]:
    """The valid set, its route using every section of an LLMRoute."""
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
    return docs


AZURE_VERSIONS = [
    ("2024-10-21", "2024-10-21"),
    (date(2024, 10, 21), "2024-10-21"),  # unquoted in YAML
    ("2025-04-01-preview", "2025-04-01-preview"),
    ("v1", "v1"),
]

BAD_AZURE_BLOCKS = [
    ({"apiVersion": "2024-13"}, "spec.azure.apiVersion",
     "expected an Azure OpenAI api-version such as '2024-10-21', '2025-04-01-preview' or 'v1', "
     "found a string ('2024-13')"),
    ({}, "spec.azure.apiVersion", "missing required field"),
    ({"version": "v1"}, "spec.azure.version", "unknown field 'version' (did you mean 'apiVersion'?)"),
]

GEMINI_VERSIONS = [
    ("v1beta", []),
    ("v1", []),
    ("v2", ["LLMProvider/openai-main: spec.gemini.apiVersion: expected one of: v1beta, v1; found a string ('v2')"]),
]

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


VERTEX_URLS = (
    "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5",
    "https://europe-west1-aiplatform.googleapis.com/v1beta1/projects/my-project/locations/europe-west1/",
    "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global",
    "http://127.0.0.1:8080/v1/projects/sim-project/locations/us-east5",
)
"""Vertex AI endpoints as `spec.endpoints[].url` takes them: a location of a project, v1 or v1beta1."""

BAD_VERTEX_URLS = (
    "https://us-east5-aiplatform.googleapis.com",
    "https://us-east5-aiplatform.googleapis.com/v1",
    "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project",
    "https://us-east5-aiplatform.googleapis.com/v2/projects/my-project/locations/us-east5",
    "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5/publishers/google",
    "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5?alt=sse",
)
"""Endpoints without project and location, or with more than them (the publisher follows from the model)."""
