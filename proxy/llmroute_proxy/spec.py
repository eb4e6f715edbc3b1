"""LLMProvider and LLMRoute documents → validated, frozen specs, with every problem reported at once.

Parsing is kept apart from compiling because the operator validates resources (to explain them in
`Accepted=False`) long before it compiles a table for any pod, and because one pass that names every
problem with its field path beats a fix-one-rerun loop. Sub-policies that have an identical twin in the
table (fallback, load balancing, outlier detection, budget, pricing, limits) reuse the table's
dataclasses, so each default lives in one place. Nothing here reads files, secrets or the environment.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar
from urllib.parse import urlsplit

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.spec_fields import (
    Fields,
    Sink,
    describe,
    did_you_mean,
    join_path,
    quoted,
    unknown_ref,
)
from llmroute_proxy.spec_fields import SpecError as SpecError
from llmroute_proxy.spec_fields import parse_duration as parse_duration
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
from llmroute_proxy.trust import ca_bundle_problem

API_VERSION = "llmroute.dev/v1alpha1"
PROVIDER_KIND = "LLMProvider"
ROUTE_KIND = "LLMRoute"
RESERVED_TIER_NAMES = frozenset({"auto"})  # `model: auto` asks the rules to choose

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_AZURE_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?|v1|preview|latest")
_GEMINI_API_VERSIONS = ("v1beta", "v1")
_PREFER_REGION = ("local", "none")
_ON_EXCEEDED = ("alert", "reject", "downgrade:TIER")



@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """A key of a Kubernetes Secret in the resource's namespace; only the operator resolves it."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class EnvCredential:
    variable: str


@dataclass(frozen=True, slots=True)
class FileCredential:
    path: str


Credentials = SecretKeyRef | EnvCredential | FileCredential


@dataclass(frozen=True, slots=True)
class Endpoint:
    region: str
    url: str


@dataclass(frozen=True, slots=True)
class TrustSpec:
    """`spec.tls`: the CAs that alone verify the provider's endpoints (exactly one field is set)."""

    ca_bundle: str | None = None
    """PEM certificates, inline: travels with the table and is checked when parsed."""
    ca_file: str | None = None
    """A PEM file on the sidecar's disk; standalone mode reads it when the config loads."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    context_window: int | None = None
    pricing: Pricing = field(default_factory=Pricing)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    type: ProviderType
    endpoints: tuple[Endpoint, ...]
    credentials: Credentials | None = None
    limits: Limits = field(default_factory=Limits)  # global, across every sidecar
    models: tuple[ModelSpec, ...] = ()
    api_version: str | None = None  # azure.apiVersion or gemini.apiVersion
    tls: TrustSpec | None = None  # None: the system's CAs (and SSL_CERT_FILE)

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


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


@dataclass(frozen=True, slots=True)
class Specs:
    """The valid documents of a set, and every error of the invalid ones."""

    providers: tuple[ProviderSpec, ...]
    routes: tuple[RouteSpec, ...]
    errors: tuple[SpecError, ...]


# ---------------------------------------------------------------------------------------------------
# Documents


def parse_documents(documents: Iterable[object]) -> Specs:
    """Every document of a set, cross-checked: routes may only name valid providers of the same set.

    `providers` and `routes` hold the documents free of errors (so they compile), in document order.
    Empty documents (None, as a stray `---` gives) are skipped but keep their place in the numbering.
    """
    opened = [_open(index, document) for index, document in enumerate(documents) if document is not None]
    providers: dict[str, ProviderSpec | None] = {}
    for doc in opened:
        if doc.kind == PROVIDER_KIND:
            _register(doc, providers, _provider_spec(doc) if doc.parse else None)
    routes: dict[str, RouteSpec | None] = {}
    for doc in opened:
        if doc.kind == ROUTE_KIND:
            _register(doc, routes, _route_spec(doc, providers) if doc.parse else None)
    return Specs(
        providers=tuple(p for p in providers.values() if p is not None),
        routes=tuple(r for r in routes.values() if r is not None),
        errors=tuple(error for doc in opened for error in doc.sink.errors),
    )


def parse_provider(document: object) -> tuple[ProviderSpec | None, list[SpecError]]:
    doc = _open(0, document)
    spec = _provider_spec(doc) if _expect(doc, PROVIDER_KIND) else None
    return (spec if not doc.sink.errors else None), doc.sink.errors


def parse_route(
    document: object, providers: Mapping[str, ProviderSpec | None]
) -> tuple[RouteSpec | None, list[SpecError]]:
    """`providers` holds every provider name in scope; None marks one that exists but is invalid."""
    doc = _open(0, document)
    spec = _route_spec(doc, providers) if _expect(doc, ROUTE_KIND) else None
    return (spec if not doc.sink.errors else None), doc.sink.errors


@dataclass(slots=True)
class _Opened:
    kind: str | None  # a known kind, else None
    name: str
    sink: Sink
    spec: object
    parse: bool  # header valid enough to read the spec


def _open(index: int, document: object) -> _Opened:
    placeholder = f"<document {index + 1}>"
    if not isinstance(document, Mapping):
        sink = Sink("", placeholder)
        sink.error("", f"expected a mapping with apiVersion, kind, metadata and spec, found {describe(document)}")
        return _Opened(None, placeholder, sink, None, parse=False)
    kind = document.get("kind")
    metadata = document.get("metadata")
    raw_name = metadata.get("name") if isinstance(metadata, Mapping) else None
    name = raw_name if isinstance(raw_name, str) and raw_name else placeholder
    if kind not in (PROVIDER_KIND, ROUTE_KIND):
        sink = Sink("", name)
        sink.error("kind", _unknown_kind(kind))
        return _Opened(None, name, sink, None, parse=False)
    assert isinstance(kind, str)
    sink = Sink(kind, name)
    top = Fields(sink, "", document, ("apiVersion", "kind", "metadata", "spec", "status"))
    version_ok = document.get("apiVersion") == API_VERSION
    if not version_ok:
        found = document.get("apiVersion")
        sink.error("apiVersion", f"unsupported apiVersion {quoted(found)} for {kind} (expected {API_VERSION})")
    _check_name(sink, metadata, raw_name)
    spec = top.require("spec")
    if spec is not None and not isinstance(spec, Mapping):
        sink.error("spec", f"expected a mapping, found {describe(spec)}")
    return _Opened(kind, name, sink, spec, parse=version_ok and isinstance(spec, Mapping))


def _unknown_kind(kind: object) -> str:
    expected = f"expected {PROVIDER_KIND} or {ROUTE_KIND}"
    if kind is None:
        return f"missing kind ({expected})"
    if not isinstance(kind, str):
        return f"{expected}, found {describe(kind)}"
    return f"unknown kind '{kind}'{did_you_mean(kind, (PROVIDER_KIND, ROUTE_KIND))} ({expected})"


def _check_name(sink: Sink, metadata: object, name: object) -> None:
    if not isinstance(metadata, Mapping):
        sink.error("metadata", "missing required field" if metadata is None else
                   f"expected a mapping, found {describe(metadata)}")
    elif name is None:
        sink.error("metadata.name", "missing required field")
    elif not isinstance(name, str):
        sink.error("metadata.name", f"expected a string, found {describe(name)}")
    elif len(name) > 253 or not _NAME.fullmatch(name):
        sink.error("metadata.name", f"'{name}' is not a valid name (lower-case letters, digits, '-' and '.')")


def _register(doc: _Opened, seen: dict[str, Any], spec: object) -> None:
    """Keep the first document of each name; an invalid one is kept as None, so it is still known."""
    if doc.name.startswith("<"):
        return
    if doc.name in seen:
        doc.sink.error("metadata.name", f"duplicate {doc.kind} name '{doc.name}'")
    else:
        seen[doc.name] = None if doc.sink.errors else spec


def _expect(doc: _Opened, kind: str) -> bool:
    if doc.kind is not None and doc.kind != kind:
        doc.sink.error("kind", f"expected {kind}, found {doc.kind}")
    return doc.kind == kind and doc.parse


# ---------------------------------------------------------------------------------------------------
# LLMProvider

_PROVIDER_FIELDS = ("type", "endpoints", "credentials", "limits", "models", "azure", "gemini", "tls")


def _provider_spec(doc: _Opened) -> ProviderSpec:
    f = Fields(doc.sink, "spec", doc.spec, _PROVIDER_FIELDS)
    provider_type = f.enum("type", ProviderType, required=True)
    endpoints = _endpoints(f)
    credentials = _credentials(f, provider_type)
    limits = _limits(f)
    models = _models(f)
    api_version = _api_version(f, provider_type)
    if provider_type is ProviderType.AZURE_OPENAI and api_version and api_version[:1].isdigit() and any(
            "/openai/v1" in urlsplit(e.url).path for e in endpoints):
        f.sink.error("spec.azure.apiVersion", f"the dated api-version '{api_version}' belongs to the classic form "
                                    "(the resource endpoint as url); an .../openai/v1 endpoint takes "
                                    "'v1', 'preview', 'latest' or none")
    return ProviderSpec(
        name=doc.name,
        type=provider_type or ProviderType.OPENAI,
        endpoints=endpoints,
        credentials=credentials,
        limits=limits,
        models=models,
        api_version=api_version,
        tls=_trust(f),
    )


def _trust(spec: Fields) -> TrustSpec | None:
    f = spec.mapping("tls", ("caBundle", "caFile"))
    if f is None or not isinstance(spec.get("tls"), Mapping):
        return None
    given = [key for key in ("caBundle", "caFile") if f.get(key) is not None]
    if len(given) != 1:
        spec.error("tls", "give exactly one of caBundle (PEM text) and caFile (a PEM file's path)")
        return None
    bundle, path = f.string("caBundle"), f.string("caFile")
    if bundle is not None:
        problem = ca_bundle_problem(bundle)
        if problem is not None:
            f.error("caBundle", problem)
            return None
        return TrustSpec(ca_bundle=bundle)
    return TrustSpec(ca_file=path) if path is not None else None


def _endpoints(spec: Fields) -> tuple[Endpoint, ...]:
    out: list[Endpoint] = []
    seen: dict[str, str] = {}
    for path, item in spec.items("endpoints", required=True, nonempty=True):
        f = Fields(spec.sink, path, item, ("region", "url"))
        region = f.string("region", required=True)
        if region is not None and not _REGION.fullmatch(region):
            f.error("region", f"'{region}' is not a valid region (letters, digits, '.', '_' and '-')")
        elif region is not None and region in seen:
            f.error("region", f"duplicate region '{region}' (also in {seen[region]}): "
                              "a target is identified by provider, model and region")
        elif region is not None:
            seen[region] = path
        url = _url(f)
        out.append(Endpoint(region or "", url or ""))
    return tuple(out)


def _url(f: Fields) -> str | None:
    url = f.string("url", required=True)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        f.error("url", f"expected an http:// or https:// URL, found {quoted(url)}")
        return None
    if parts.username is not None or parts.password is not None:
        f.error("url", "must not carry credentials (user:password@); use spec.credentials")
        return None
    return url


def _credentials(spec: Fields, provider_type: ProviderType | None) -> Credentials | None:
    if spec.get("credentials") is None:
        if provider_type not in (None, ProviderType.OPENAI_COMPATIBLE):
            spec.error("credentials", f"missing required field (type {provider_type.value} needs a key; "
                                      "only openai-compatible may go without)")
        return None
    choices = ("secretRef", "env", "file")
    f = spec.mapping("credentials", choices, redact=True)
    if f is None or not isinstance(spec.get("credentials"), Mapping):
        return None
    given = [key for key in choices if f.get(key) is not None]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        spec.error("credentials", f"give exactly one of secretRef, env, file (found: {found})")
        return None
    if given == ["env"]:
        return _env_credential(f)
    if given == ["file"]:
        path = f.string("file")
        return FileCredential(path) if path else None
    ref = f.mapping("secretRef", ("name", "key"), redact=True)
    assert ref is not None
    name, key = ref.string("name", required=True), ref.string("key", required=True)
    return SecretKeyRef(name, key) if name and key else None


def _env_credential(f: Fields) -> EnvCredential | None:
    variable = f.string("env")
    if variable is not None and not _ENV_NAME.fullmatch(variable):
        # do not echo it: a key pasted here by mistake must not end up in a log
        f.error("env", "is not an environment variable name (give the name of the variable "
                       "that holds the key, not the key itself)")
        return None
    return EnvCredential(variable) if variable else None


def _limits(spec: Fields) -> Limits:
    f = spec.mapping("limits", ("requestsPerMinute", "tokensPerMinute", "maxConcurrency"))
    if f is None:
        return Limits()
    return Limits(
        requests_per_minute=f.number("requestsPerMinute", positive=True),
        tokens_per_minute=f.number("tokensPerMinute", positive=True),
        max_concurrency=f.integer("maxConcurrency", minimum=1),
    )


def _models(spec: Fields) -> tuple[ModelSpec, ...]:
    out: list[ModelSpec] = []
    seen: set[str] = set()
    for path, item in spec.items("models"):
        f = Fields(spec.sink, path, item, ("name", "contextWindow", "pricing"))
        name = f.string("name", required=True)
        if name is not None and name in seen:
            f.error("name", f"duplicate model '{name}'")
        seen.add(name or "")
        out.append(ModelSpec(name or "", f.integer("contextWindow", minimum=1), _pricing(f)))
    return tuple(out)


def _pricing(model: Fields) -> Pricing:
    f = model.mapping("pricing", ("inputPerMTok", "outputPerMTok", "cachedInputPerMTok"))
    if f is None:
        return Pricing()
    return Pricing(
        input_per_mtok=f.number("inputPerMTok", minimum=0) or 0.0,
        output_per_mtok=f.number("outputPerMTok", minimum=0) or 0.0,
        cached_input_per_mtok=f.number("cachedInputPerMTok", minimum=0),
    )


def _api_version(spec: Fields, provider_type: ProviderType | None) -> str | None:
    versions: str | None = None
    for key, owner in (("azure", ProviderType.AZURE_OPENAI), ("gemini", ProviderType.GEMINI)):
        if spec.get(key) is None:
            continue
        if provider_type is not None and provider_type is not owner:
            spec.error(key, f"only for type {owner.value} (this provider is {provider_type.value})")
            continue
        f = spec.mapping(key, ("apiVersion",))
        assert f is not None
        versions = _azure_version(f) if owner is ProviderType.AZURE_OPENAI else \
            f.choice("apiVersion", _GEMINI_API_VERSIONS, required=True)
    return versions


def _azure_version(f: Fields) -> str | None:
    value = f.get("apiVersion")
    if isinstance(value, date):  # YAML reads an unquoted 2024-10-21 as a date
        value = value.isoformat()
    if value is None:
        f.require("apiVersion")
        return None
    if not isinstance(value, str) or not _AZURE_API_VERSION.fullmatch(value):
        f.error("apiVersion", f"expected an Azure OpenAI api-version such as '2024-10-21', "
                              f"'2025-04-01-preview' or 'v1', found {describe(value)}")
        return None
    return value


# ---------------------------------------------------------------------------------------------------
# LLMRoute

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


def _route_spec(doc: _Opened, providers: Mapping[str, ProviderSpec | None]) -> RouteSpec:
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
        max_attempts=_or(f.integer("maxAttempts", minimum=1, maximum=10), default.max_attempts),
        per_try_timeout=_or(f.duration("perTryTimeout"), default.per_try_timeout),
        first_byte_timeout=_or(f.duration("firstByteTimeout"), default.first_byte_timeout),
        idle_timeout=_or(f.duration("idleTimeout"), default.idle_timeout),
        overall_timeout=_or(f.duration("overallTimeout"), default.overall_timeout),
        on_errors=_on_errors(f),
        fallback_tiers=tuple(dict.fromkeys(fallback_tiers)),
    )


def _on_errors(f: Fields) -> frozenset[str] | None:
    if f.get("onErrors") is None:
        return None
    recoverable = [kind.value for kind in FailureKind if kind.fails_over]
    kinds: set[str] = set()
    for path, value in f.strings("onErrors"):
        if value in recoverable:
            kinds.add(value)
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
        strategy=_or(f.enum("strategy", Strategy), default.strategy),
        prefer_region=_or(f.choice("preferRegion", _PREFER_REGION), default.prefer_region),
    )


def _outlier_detection(spec: Fields) -> OutlierDetection:
    f = spec.mapping("outlierDetection", ("consecutiveFailures", "baseEjection", "maxEjection",
                                          "maxEjectionPercent"))
    default = OutlierDetection()
    if f is None:
        return default
    result = OutlierDetection(
        consecutive_failures=_or(f.integer("consecutiveFailures", minimum=1), default.consecutive_failures),
        base_ejection=_or(f.duration("baseEjection"), default.base_ejection),
        max_ejection=_or(f.duration("maxEjection"), default.max_ejection),
        max_ejection_percent=_or(f.integer("maxEjectionPercent", minimum=0, maximum=100),
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
        period=_or(f.enum("period", BudgetPeriod), default.period),
        alert_at_percent=_or(f.number("alertAtPercent", positive=True, maximum=100), default.alert_at_percent),
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


_T = TypeVar("_T")


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value
