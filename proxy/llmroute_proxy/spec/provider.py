"""LLMProvider documents → `ProviderSpec`: endpoints, credentials, limits, models, API versions, trust."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from urllib.parse import urlsplit

from llmroute_proxy.aws_access_keys import access_key_problem, is_access_key
from llmroute_proxy.service_accounts import service_account_problem
from llmroute_proxy.spec.fields import Fields, Opened, describe, quoted
from llmroute_proxy.table import REPORTED_SERVICE_TIERS, Limits, LongContextPricing, Pricing, ProviderType
from llmroute_proxy.trust import ca_bundle_problem

_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AZURE_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?|v1|preview|latest")
_GEMINI_API_VERSIONS = ("v1beta", "v1")
_VERTEX_PATH = re.compile(r"/(v1|v1beta1)/projects/[a-z0-9][a-z0-9.:-]*/locations/[a-z0-9][a-z0-9-]*/?")


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


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """No key: the pod's own cloud identity. Vertex AI: the GCP metadata server gives the pod's service
    account's tokens (GKE Workload Identity, a GCE VM's attached account). Bedrock: the pod's AWS role's
    temporary credentials (EKS Pod Identity, IRSA), with which the sidecar signs (SigV4)."""


WORKLOAD_IDENTITY_TYPES = (ProviderType.VERTEX, ProviderType.BEDROCK)
WORKLOAD_IDENTITY_ONLY = ("only for types vertex and bedrock (the pod's own Google or AWS identity: "
                          "the GCP metadata server, EKS Pod Identity or IRSA)")

Credentials = SecretKeyRef | EnvCredential | FileCredential | WorkloadIdentity


def holds_key(credentials: Credentials | None) -> bool:
    """Whether the credentials name a key that must be resolved (a Secret's, a variable's, a file's)."""
    return credentials is not None and not isinstance(credentials, WorkloadIdentity)


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
    max_output_tokens: int | None = None
    """The most output tokens the model gives in one answer (OpenAI's gpt-4o: 16,384)."""
    priced: bool = False
    """Whether its `pricing` was given (zeros included: a free model says so); without it, it costs 0 unsaid."""


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
    responses_api: bool = False  # openaiCompatible.responsesAPI: the server speaks the Responses API too

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)



_PROVIDER_FIELDS = ("type", "endpoints", "credentials", "limits", "models", "azure", "gemini", "openaiCompatible",
                    "tls")


def provider_spec(doc: Opened) -> ProviderSpec:
    f = Fields(doc.sink, "spec", doc.spec, _PROVIDER_FIELDS)
    provider_type = f.enum("type", ProviderType, required=True)
    endpoints = _endpoints(f, provider_type)
    credentials = _credentials(f, provider_type)
    limits = _limits(f)
    models = _models(f, provider_type)
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
        responses_api=_responses_api(f, provider_type),
    )


def _responses_api(spec: Fields, provider_type: ProviderType | None) -> bool:
    if spec.get("openaiCompatible") is None:
        return False
    if provider_type is not None and provider_type is not ProviderType.OPENAI_COMPATIBLE:
        spec.error("openaiCompatible", f"only for type openai-compatible (this provider is {provider_type.value})")
        return False
    f = spec.mapping("openaiCompatible", ("responsesAPI",))
    return f is not None and f.boolean("responsesAPI") is True


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


def _endpoints(spec: Fields, provider_type: ProviderType | None) -> tuple[Endpoint, ...]:
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
        if url is not None and provider_type is ProviderType.VERTEX and not _vertex_url(url):
            f.error("url", f"a Vertex AI endpoint carries project and location: expected "
                           f"https://LOCATION-aiplatform.googleapis.com/v1/projects/PROJECT/locations/LOCATION "
                           f"(v1 or v1beta1; the global endpoint: https://aiplatform.googleapis.com/v1/projects/"
                           f"PROJECT/locations/global), found {quoted(url)}")
            url = None
        out.append(Endpoint(region or "", url or ""))
    return tuple(out)


def _vertex_url(url: str) -> bool:
    parts = urlsplit(url)
    return bool(_VERTEX_PATH.fullmatch(parts.path)) and not parts.query and not parts.fragment


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
    choices = ("secretRef", "env", "file", "workloadIdentity")
    f = spec.mapping("credentials", choices, redact=True)
    if f is None or not isinstance(spec.get("credentials"), Mapping):
        return None
    given = [key for key in choices if f.get(key) is not None]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        spec.error("credentials", f"give exactly one of secretRef, env, file, workloadIdentity (found: {found})")
        return None
    if given == ["workloadIdentity"]:
        return _workload_identity(f, provider_type)
    if given == ["env"]:
        return _env_credential(f)
    if given == ["file"]:
        path = f.string("file")
        return FileCredential(path) if path else None
    ref = f.mapping("secretRef", ("name", "key"), redact=True)
    assert ref is not None
    name, key = ref.string("name", required=True), ref.string("key", required=True)
    return SecretKeyRef(name, key) if name and key else None


def _workload_identity(f: Fields, provider_type: ProviderType | None) -> WorkloadIdentity | None:
    if f.mapping("workloadIdentity", ()) is None:
        return None
    if provider_type not in (None, *WORKLOAD_IDENTITY_TYPES):
        f.error("workloadIdentity", f"{WORKLOAD_IDENTITY_ONLY}; type {provider_type.value} needs a key")
        return None
    return WorkloadIdentity()


def credential_problem(provider_type: ProviderType, value: str) -> str | None:
    """Why a resolved credential cannot serve a provider of this type, or None. Every loader (standalone
    file, pushed table, operator) asks before it takes a key; the answer never quotes the key.
    A Vertex AI credential is a service-account key file (JSON), which must load to sign tokens; a Bedrock
    credential given as JSON is an IAM access key (`aws_access_keys`), which must load to sign requests."""
    if provider_type is ProviderType.VERTEX:
        problem = service_account_problem(value)
        return None if problem is None else f"the service-account key {problem}"
    if provider_type is ProviderType.BEDROCK and is_access_key(value):
        problem = access_key_problem(value)
        return None if problem is None else f"the access key {problem}"
    return None


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


def _models(spec: Fields, provider_type: ProviderType | None) -> tuple[ModelSpec, ...]:
    out: list[ModelSpec] = []
    seen: set[str] = set()
    for path, item in spec.items("models"):
        f = Fields(spec.sink, path, item, ("name", "contextWindow", "maxOutputTokens", "pricing"))
        name = f.string("name", required=True)
        if name is not None and name in seen:
            f.error("name", f"duplicate model '{name}'")
        seen.add(name or "")
        out.append(ModelSpec(name or "", f.integer("contextWindow", minimum=1), _pricing(f, provider_type),
                             f.integer("maxOutputTokens", minimum=1), priced=_given(item, "pricing")))
    return tuple(out)


def _given(item: object, name: str) -> bool:
    return isinstance(item, Mapping) and isinstance(item.get(name), Mapping)


_TOKEN_PRICES = ("inputPerMTok", "outputPerMTok", "cachedInputPerMTok", "cacheWritePerMTok", "cacheWrite1hPerMTok")


_SERVICE_TIERS = tuple(dict.fromkeys(tier for tiers in REPORTED_SERVICE_TIERS.values() for tier in tiers))


def _pricing(model: Fields, provider_type: ProviderType | None) -> Pricing:
    f = model.mapping("pricing", (*_TOKEN_PRICES, "webSearchPer1K", "longContext", "serviceTiers"))
    if f is None:
        return Pricing()
    searches = f.number("webSearchPer1K", minimum=0) or 0.0
    return replace(_token_prices(f), web_search_per_1k=searches, long_context=_long_context(f, searches),
                   service_tiers=_service_tiers(f, searches, provider_type))


def _service_tiers(pricing: Fields, searches: float, provider_type: ProviderType | None) -> dict[str, Pricing]:
    """A whole price list (long context included) by the name of each tier the provider reports."""
    f = pricing.mapping("serviceTiers", _SERVICE_TIERS)
    if f is None:
        return {}
    reported = _SERVICE_TIERS if provider_type is None else REPORTED_SERVICE_TIERS[provider_type]
    tiers: dict[str, Pricing] = {}
    for tier in _SERVICE_TIERS:
        prices = f.mapping(tier, (*_TOKEN_PRICES, "longContext"))
        if prices is None:
            continue
        if tier not in reported:
            f.error(tier, f"type {provider_type} answers report no tier '{tier}' (they report "
                          f"{', '.join(reported)})")
            continue
        tiers[tier] = replace(_token_prices(prices, required=True), web_search_per_1k=searches,
                              long_context=_long_context(prices, searches))
    return tiers


def _token_prices(f: Fields, required: bool = False) -> Pricing:
    return Pricing(
        input_per_mtok=f.number("inputPerMTok", minimum=0, required=required) or 0.0,
        output_per_mtok=f.number("outputPerMTok", minimum=0, required=required) or 0.0,
        cached_input_per_mtok=f.number("cachedInputPerMTok", minimum=0),
        cache_write_per_mtok=f.number("cacheWritePerMTok", minimum=0),
        cache_write_1h_per_mtok=f.number("cacheWrite1hPerMTok", minimum=0),
    )


def _long_context(pricing: Fields, searches: float) -> LongContextPricing | None:
    f = pricing.mapping("longContext", ("aboveInputTokens", *_TOKEN_PRICES))
    if f is None:
        return None
    above = f.integer("aboveInputTokens", minimum=1, required=True)
    prices = replace(_token_prices(f, required=True), web_search_per_1k=searches)
    return None if above is None else LongContextPricing(above, prices)


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
