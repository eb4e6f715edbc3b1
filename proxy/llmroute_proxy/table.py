"""The compiled routing table: immutable, versioned, free of Kubernetes types.

A table is what one sidecar routes by. The compiler (`compiler.py`) builds it from
`LLMProvider`/`LLMRoute` specs for one pod (its region, its share of global limits);
the sidecar swaps whole tables atomically and never mutates one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType
from urllib.parse import urlsplit

TargetId = NewType("TargetId", str)


class Secret:
    """A credential value that never shows itself in logs, reprs, traces or status."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class ProviderType(StrEnum):
    OPENAI = "openai"
    OPENAI_COMPATIBLE = "openai-compatible"
    AZURE_OPENAI = "azure-openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    VERTEX = "vertex"
    BEDROCK = "bedrock"


REPORTED_SERVICE_TIERS: Mapping[ProviderType, tuple[str, ...]] = {
    ProviderType.OPENAI: ("default", "flex", "priority", "scale"),
    ProviderType.AZURE_OPENAI: ("default", "flex", "priority", "scale"),
    ProviderType.OPENAI_COMPATIBLE: ("default", "flex", "priority", "scale"),
    ProviderType.ANTHROPIC: ("standard", "priority"),
    ProviderType.GEMINI: ("standard", "flex", "priority"),
    ProviderType.VERTEX: ("standard", "flex", "priority"),
    ProviderType.BEDROCK: ("default", "flex", "priority", "reserved"),
}
"""The service tiers each provider type's answers report, the names `Pricing.service_tiers` is keyed by
(`dialects/service_tiers.py`). Anthropic's `batch` comes only from its Batches API; Vertex AI's Gemini
answers report theirs as `trafficType`, read under these names; Bedrock's Converse answers as
`serviceTier.type` (Claude's, through InvokeModel, report none in their body)."""


ACCESS_KEY_AUTH = "access-key"
"""`Target.options["auth"]` of a Bedrock target whose credential is an IAM access key (`aws_access_keys`):
its requests are signed with it (SigV4), not sent it as a bearer token."""

METADATA_AUTH = "metadata"
"""`Target.options["auth"]` of a target that takes the pod's own identity (`credentials.workloadIdentity`)
and holds no credential: a Vertex AI target's token comes from the GCP metadata server, a Bedrock target's
requests are signed with the pod's AWS credentials (IRSA, EKS Pod Identity)."""


_BEDROCK_CLAUDE = re.compile(r"(?:[a-z]{2,6}\.)?anthropic\.claude-[A-Za-z0-9._:-]+")


def bedrock_claude(model: str) -> bool:
    """Whether a Bedrock model id is Claude's (`anthropic.claude-…`, or a cross-region inference profile's:
    `us.`, `eu.`, `apac.`, `global.`… before it), which Bedrock serves through InvokeModel with Anthropic's
    Messages body; any other speaks Converse."""
    return _BEDROCK_CLAUDE.fullmatch(model) is not None


def vertex_publisher(model: str) -> str:
    """The Vertex AI publisher of a model: `anthropic` for Claude (`claude-*`), `google` for any other."""
    return "anthropic" if model.startswith("claude-") else "google"


def vertex_location(url: str) -> str:
    """The location of a Vertex AI endpoint URL (`…/projects/P/locations/L`): `global`, `us-east5`…"""
    return url.rstrip("/").rpartition("/locations/")[2].partition("/")[0]


class Strategy(StrEnum):
    WEIGHTED = "weighted"
    LEAST_OUTSTANDING = "least-outstanding"
    LEAST_LATENCY = "least-latency"


class BudgetPeriod(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Pricing:
    """USD per million tokens. Cached input and cache writes fall back to the input price when not
    given, writes kept an hour to the writes' price; web searches (a provider's server-side tool) in
    USD per thousand, 0 when not given."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    cache_write_1h_per_mtok: float | None = None
    web_search_per_1k: float = 0.0
    long_context: LongContextPricing | None = None
    """Dearer prices for every token of a request whose prompt is longer than a threshold (Gemini
    2.5 Pro's and Claude's 1M-context prices above 200,000 input tokens)."""
    service_tiers: Mapping[str, Pricing] = field(default_factory=dict, hash=False)  # a dict: kept out of the hash
    """Whole price lists by the name of the service tier an answer reports it was served at (OpenAI's
    `flex` and `priority`, Anthropic's `priority`): each replaces this list, long context included
    (its own `long_context`, none when not given), searches at this list's price; a tier not listed,
    or an answer that reports none, is priced at this list."""


@dataclass(frozen=True, slots=True)
class LongContextPricing:
    """`pricing` replaces the whole price list for a request whose input (cached and cache writes
    included) is above `above_input_tokens` tokens. Its search price is the base list's."""

    above_input_tokens: int
    pricing: Pricing


@dataclass(frozen=True, slots=True)
class Limits:
    """This sidecar's share of a provider's limits; None means unlimited."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One provider endpoint serving one model: the unit that is balanced, ejected and billed."""

    id: TargetId  # "{provider}/{model}@{region}"
    provider: str  # the LLMProvider's name
    provider_type: ProviderType
    model: str  # the upstream model (Azure: the deployment name)
    url: str  # base URL as the provider's official SDK takes it
    region: str
    credential: Secret | None = None
    weight: int = 1
    priority: int = 0
    context_window: int | None = None
    max_output_tokens: int | None = None  # the most the model gives in one answer, when its provider says
    pricing: Pricing = Pricing()
    options: Mapping[str, str] = field(default_factory=dict)  # provider-specific: api_version, responses_api, auth
    ca_bundle: str | None = None  # PEM: the CAs that alone verify this target's TLS (None: the system's)

    @property
    def dialect(self) -> ProviderType:
        """The provider type whose API the target speaks: its own, but a Vertex AI target speaks its
        model's publisher's (Claude: Anthropic Messages; any other: Gemini), and a Bedrock target
        Anthropic Messages for Claude (InvokeModel takes Claude's body), its own Converse for any other."""
        if self.provider_type is ProviderType.VERTEX:
            return ProviderType.ANTHROPIC if vertex_publisher(self.model) == "anthropic" else ProviderType.GEMINI
        if self.provider_type is ProviderType.BEDROCK and bedrock_claude(self.model):
            return ProviderType.ANTHROPIC
        return self.provider_type

    @property
    def response_store(self) -> str:
        """Where its provider keeps the responses this target answers (OpenAI, Azure OpenAI): the
        provider, whose key they are stored under, at the endpoint's host. One provider's endpoints in
        two regions (two Azure resources) keep theirs apart; its models at one endpoint share one."""
        return f"{self.provider} ({urlsplit(self.url).netloc})"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str  # lower-case
    value: str | None = None  # None: the header is present with any value


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """Every condition given must hold (AND); an empty match holds always."""

    max_prompt_tokens: int | None = None
    min_prompt_tokens: int | None = None
    contains_code: bool | None = None
    keywords: tuple[str, ...] = ()  # lower-case; any one of them matches
    header: HeaderMatch | None = None
    model: str | None = None  # the requested model (an alias); `*` globs allowed
    has_tools: bool | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    name: str  # the rule's `name`, or "rules[i]"
    when: RuleMatch
    tier: str


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Experiment:
    """Send `percent` of a tier's traffic to other targets, sticky by a request key."""

    name: str
    tier: str
    percent: float
    targets: tuple[Target, ...]
    sticky_by: str | None = None  # "user" (the OpenAI `user` field) or "header:<name>"


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    max_attempts: int = 3
    per_try_timeout: float = 300.0
    first_byte_timeout: float = 30.0
    idle_timeout: float = 30.0
    overall_timeout: float = 600.0
    on_errors: frozenset[str] | None = None  # FailureKind values that fail over; None: every recoverable kind
    fallback_tiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LoadBalancing:
    strategy: Strategy = Strategy.WEIGHTED
    prefer_region: str = "local"  # "local" or "none"


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_failures: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejection_percent: int = 50


@dataclass(frozen=True, slots=True)
class Budget:
    limit_usd: float
    period: BudgetPeriod = BudgetPeriod.DAY
    alert_at_percent: float = 80.0
    on_exceeded: str = "alert"  # "alert" | "reject" | "downgrade"
    downgrade_tier: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    tiers: Mapping[str, Tier]
    rules: tuple[Rule, ...]
    default_tier: str
    fallback: FallbackPolicy = FallbackPolicy()
    load_balancing: LoadBalancing = LoadBalancing()
    outlier_detection: OutlierDetection = OutlierDetection()
    experiments: tuple[Experiment, ...] = ()
    budget: Budget | None = None

    def models(self) -> dict[str, tuple[Target, ...]]:
        """Concrete upstream model names → the targets serving them, in tier order."""
        out: dict[str, list[Target]] = {}
        for tier in self.tiers.values():
            for target in tier.targets:
                bucket = out.setdefault(target.model, [])
                if target not in bucket:
                    bucket.append(target)
        return {name: tuple(targets) for name, targets in out.items()}


@dataclass(frozen=True, slots=True)
class Table:
    """Everything one sidecar routes by. `version` is a content hash."""

    version: str
    region: str
    routes: tuple[Route, ...]  # the first is the default route
    provider_limits: Mapping[str, Limits] = field(default_factory=dict)

    def route(self, name: str | None) -> Route | None:
        if name is None:
            return self.routes[0] if self.routes else None
        return next((r for r in self.routes if r.name == name), None)

    def targets(self) -> dict[TargetId, Target]:
        out: dict[TargetId, Target] = {}
        for route in self.routes:
            for tier in route.tiers.values():
                for t in tier.targets:
                    out.setdefault(t.id, t)
            for exp in route.experiments:
                for t in exp.targets:
                    out.setdefault(t.id, t)
        return out
