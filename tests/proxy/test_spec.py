"""Parsing and validating LLMProvider / LLMRoute documents."""

from __future__ import annotations

import copy
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
    LongContextPricing,
    OutlierDetection,
    Pricing,
    ProviderType,
    Strategy,
)
from tests.proxy.spec_cases import (
    AZURE_VERSIONS,
    BAD_AZURE_BLOCKS,
    GEMINI_VERSIONS,
    INVALID,
    MISTAKES_WITH_A_SECRET,
    PROVIDER,
    ROUTE,
    SECRET,
    documents,
    every_section_documents,
    openai_doc,
    route_doc,
    set_path,
)


def errors_after(index: int, path: str, value: object) -> list[SpecError]:
    docs = documents()
    set_path(docs[index], path, value)
    return list(parse_documents(docs).errors)




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


def test_cache_write_and_search_prices_are_read_beside_the_other_prices() -> None:
    docs = documents()
    docs[0]["spec"]["models"][0]["pricing"] = {"inputPerMTok": 3, "outputPerMTok": 15, "cachedInputPerMTok": 0.3,
                                                "cacheWritePerMTok": 3.75, "cacheWrite1hPerMTok": 6,
                                                "webSearchPer1K": 10}
    specs = parse_documents(docs)
    assert specs.errors == ()
    assert specs.providers[0].models[0].pricing == Pricing(3.0, 15.0, 0.3, 3.75, 6.0, 10.0)


def test_a_long_context_price_list_takes_the_base_lists_search_price() -> None:
    docs = documents()
    docs[0]["spec"]["models"][0]["pricing"] = {
        "inputPerMTok": 1.25, "outputPerMTok": 10, "webSearchPer1K": 35,
        "longContext": {"aboveInputTokens": 200000, "inputPerMTok": 2.5, "outputPerMTok": 15,
                        "cachedInputPerMTok": 0.625}}
    specs = parse_documents(docs)
    assert specs.errors == ()
    assert specs.providers[0].models[0].pricing == Pricing(1.25, 10.0, web_search_per_1k=35.0, long_context=(
        LongContextPricing(200_000, Pricing(2.5, 15.0, 0.625, web_search_per_1k=35.0))))


def test_service_tier_price_lists_are_whole_lists_with_their_own_long_context_and_the_base_search_price() -> None:
    docs = documents()
    docs[0]["spec"]["models"][0]["pricing"] = {
        "inputPerMTok": 1.25, "outputPerMTok": 10, "webSearchPer1K": 10,
        "serviceTiers": {"flex": {"inputPerMTok": 0.625, "outputPerMTok": 5, "cachedInputPerMTok": 0.0625},
                         "priority": {"inputPerMTok": 2.5, "outputPerMTok": 20, "longContext": {
                             "aboveInputTokens": 272000, "inputPerMTok": 5, "outputPerMTok": 30}}}}
    specs = parse_documents(docs)
    assert specs.errors == ()
    assert specs.providers[0].models[0].pricing == Pricing(1.25, 10.0, web_search_per_1k=10.0, service_tiers={
        "flex": Pricing(0.625, 5.0, 0.0625, web_search_per_1k=10.0),
        "priority": Pricing(2.5, 20.0, web_search_per_1k=10.0, long_context=LongContextPricing(
            272_000, Pricing(5.0, 30.0, web_search_per_1k=10.0)))})


@pytest.mark.parametrize(("kind", "tiers", "error"), [
    ("anthropic", {"priority": {"inputPerMTok": 6, "outputPerMTok": 30}}, None),
    ("anthropic", {"flex": {"inputPerMTok": 1.5, "outputPerMTok": 7.5}},
     "spec.models[0].pricing.serviceTiers.flex: type anthropic answers report no tier 'flex' (they report standard, "
     "priority)"),
    ("gemini", {"flex": {"inputPerMTok": 0.15, "outputPerMTok": 1.25},
                "priority": {"inputPerMTok": 0.54, "outputPerMTok": 4.5}}, None),
    ("gemini", {"scale": {"inputPerMTok": 0.54, "outputPerMTok": 4.5}},
     "spec.models[0].pricing.serviceTiers.scale: type gemini answers report no tier 'scale' (they report standard, "
     "flex, priority)"),
    ("bedrock", {"flex": {"inputPerMTok": 1.5, "outputPerMTok": 7.5}, "priority": {"inputPerMTok": 5.25, "outputPerMTok": 26.25},
                 "reserved": {"inputPerMTok": 0, "outputPerMTok": 0}}, None),
    ("bedrock", {"standard": {"inputPerMTok": 3, "outputPerMTok": 15}},
     "spec.models[0].pricing.serviceTiers.standard: type bedrock answers report no tier 'standard' (they report "
     "default, flex, priority, reserved)"),
])
def test_a_tier_is_priced_only_under_a_provider_whose_answers_report_it(
        kind: str, tiers: dict[str, Any], error: str | None) -> None:
    doc = openai_doc()
    doc["spec"]["type"] = kind
    doc["spec"]["models"][0]["pricing"] = {"inputPerMTok": 3, "outputPerMTok": 15, "serviceTiers": tiers}
    errors = [f"{e.path}: {e.message}" for e in parse_documents([doc]).errors]
    assert errors == ([] if error is None else [error])


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
    assert (openai.models[0].max_output_tokens, openai.models[1].max_output_tokens) == (16384, None)
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
    docs = every_section_documents()
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


@pytest.mark.parametrize(("value", "expected"), AZURE_VERSIONS)
def test_azure_api_versions_are_read_as_strings(value: object, expected: str) -> None:
    doc = openai_doc()
    doc["spec"]["type"] = "azure-openai"
    doc["spec"]["azure"] = {"apiVersion": value}
    spec, errors = parse_provider(doc)
    assert errors == [] and spec is not None and spec.api_version == expected


@pytest.mark.parametrize(("block", "path", "message"), BAD_AZURE_BLOCKS)
def test_invalid_azure_blocks_are_reported(block: dict[str, Any], path: str, message: str) -> None:
    doc = openai_doc()
    doc["spec"]["type"] = "azure-openai"
    doc["spec"]["azure"] = block
    _, errors = parse_provider(doc)
    assert SpecError("LLMProvider", "openai-main", path, message) in errors


def test_a_bedrock_provider_parses_with_its_api_key_and_claude_model_ids() -> None:
    doc = openai_doc()
    doc["spec"].update(type="bedrock", credentials={"secretRef": {"name": "bedrock", "key": "api-key"}},
                       endpoints=[{"region": "us-east-1", "url": "https://bedrock-runtime.us-east-1.amazonaws.com"}],
                       models=[{"name": "anthropic.claude-sonnet-4-5-20250929-v1:0"},
                               {"name": "us.anthropic.claude-haiku-4-5-20251001-v1:0"}])
    spec, errors = parse_provider(doc)
    assert errors == [] and spec is not None
    assert spec.type is ProviderType.BEDROCK and spec.credentials == SecretKeyRef("bedrock", "api-key")
    assert [m.name for m in spec.models] == ["anthropic.claude-sonnet-4-5-20250929-v1:0",
                                             "us.anthropic.claude-haiku-4-5-20251001-v1:0"]


def test_a_bedrock_provider_needs_its_api_key() -> None:
    doc = openai_doc()
    doc["spec"].update(type="bedrock", credentials=None)
    del doc["spec"]["credentials"]
    _, errors = parse_provider(doc)
    assert [e.path for e in errors] == ["spec.credentials"]


@pytest.mark.parametrize(("version", "errors"), GEMINI_VERSIONS)
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
    ("\u0665s", None), ("1\u0660ms", None),  # digits are ASCII only, as Kubernetes' RE2 patterns have them
])
def test_durations_need_a_unit(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds




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


def test_an_azure_api_version_has_ascii_digits_only() -> None:
    doc = openai_doc()
    doc["spec"]["type"] = "azure-openai"
    doc["spec"]["azure"] = {"apiVersion": "\u0662\u0660\u0662\u0664-10-21"}  # Arabic-Indic 2024
    _, errors = parse_provider(doc)
    assert [e.path for e in errors] == ["spec.azure.apiVersion"]
