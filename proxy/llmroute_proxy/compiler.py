"""Validated specs → the routing table of one sidecar (its region, its share of global limits).

Compiling is total: `spec.py` has already refused anything that could make it fail, so the operator
can compile per pod without a second error path. Credentials arrive through a callback because where
they come from (environment, file, Kubernetes Secret) is the caller's I/O, not the compiler's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from enum import Enum

from llmroute_proxy.aws_access_keys import is_access_key
from llmroute_proxy.spec import (
    ExperimentSpec,
    ProviderSpec,
    RouteSpec,
    RuleSpec,
    TargetSpec,
    WorkloadIdentity,
)
from llmroute_proxy.table import (
    ACCESS_KEY_AUTH,
    METADATA_AUTH,
    Experiment,
    HeaderMatch,
    Limits,
    Pricing,
    ProviderType,
    Route,
    Rule,
    RuleMatch,
    Secret,
    Table,
    Target,
    TargetId,
    Tier,
)

CredentialResolver = Callable[[ProviderSpec], Secret | None]


def compile_table(
    providers: Sequence[ProviderSpec],
    routes: Sequence[RouteSpec],
    *,
    region: str,
    credentials: CredentialResolver,
    limit_share: float = 1.0,
) -> Table:
    """`limit_share` is this sidecar's fraction of every provider's global limits."""
    if not (limit_share > 0 and math.isfinite(limit_share)):
        raise ValueError(f"limit_share must be a positive number, got {limit_share!r}")
    by_name = {p.name: p for p in providers}
    secrets = {p.name: credentials(p) for p in providers}
    compiled = tuple(_route(route, by_name, secrets) for route in routes)
    limits = {p.name: share_limits(p.limits, limit_share) for p in providers}
    version = table_version(region, compiled, limits)
    return Table(version=version, region=region, routes=compiled, provider_limits=limits)


def share_limits(limits: Limits, share: float) -> Limits:
    """A sidecar's part of global limits; concurrency is rounded up so no sidecar is left with none."""
    return Limits(
        requests_per_minute=None if limits.requests_per_minute is None else limits.requests_per_minute * share,
        tokens_per_minute=None if limits.tokens_per_minute is None else limits.tokens_per_minute * share,
        max_concurrency=None if limits.max_concurrency is None else
        max(1, math.ceil(limits.max_concurrency * share)),
    )


def _route(spec: RouteSpec, providers: Mapping[str, ProviderSpec],
           secrets: Mapping[str, Secret | None]) -> Route:
    def expand(targets: Sequence[TargetSpec]) -> tuple[Target, ...]:
        return tuple(t for target in targets for t in _targets(target, providers[target.provider], secrets))

    return Route(
        name=spec.name,
        tiers={name: Tier(name, expand(tier.targets)) for name, tier in spec.tiers.items()},
        rules=tuple(_rule(i, rule) for i, rule in enumerate(spec.rules)),
        default_tier=spec.default_tier,
        fallback=spec.fallback,
        load_balancing=spec.load_balancing,
        outlier_detection=spec.outlier_detection,
        experiments=tuple(_experiment(e, expand(e.targets)) for e in spec.experiments),
        budget=spec.budget,
    )


def _targets(spec: TargetSpec, provider: ProviderSpec,
             secrets: Mapping[str, Secret | None]) -> list[Target]:
    """One target per endpoint: regions are balanced and ejected separately."""
    model = provider.model(spec.model)
    options = {"api_version": provider.api_version} if provider.api_version else {}
    if provider.responses_api:
        options["responses_api"] = "native"
    if isinstance(provider.credentials, WorkloadIdentity):
        options["auth"] = METADATA_AUTH
    secret = secrets[provider.name]
    if provider.type is ProviderType.BEDROCK and secret is not None and is_access_key(secret.reveal()):
        options["auth"] = ACCESS_KEY_AUTH
    return [
        Target(
            id=TargetId(f"{provider.name}/{spec.model}@{endpoint.region}"),
            provider=provider.name,
            provider_type=provider.type,
            model=spec.model,
            url=endpoint.url,
            region=endpoint.region,
            credential=secrets[provider.name],
            weight=spec.weight,
            priority=spec.priority,
            context_window=model.context_window if model else None,
            max_output_tokens=model.max_output_tokens if model else None,
            pricing=model.pricing if model else Pricing(),
            options=options,
            ca_bundle=provider.tls.ca_bundle if provider.tls is not None else None,
        )
        for endpoint in provider.endpoints
    ]


def _rule(index: int, spec: RuleSpec) -> Rule:
    when = spec.when
    header = when.header
    return Rule(
        name=spec.name or f"rules[{index}]",
        when=RuleMatch(
            max_prompt_tokens=when.max_prompt_tokens,
            min_prompt_tokens=when.min_prompt_tokens,
            contains_code=when.contains_code,
            keywords=tuple(word.lower() for word in when.keywords),
            header=HeaderMatch(header.name.lower(), header.value) if header else None,
            model=when.model,
            has_tools=when.has_tools,
        ),
        tier=spec.tier,
    )


def _experiment(spec: ExperimentSpec, targets: tuple[Target, ...]) -> Experiment:
    return Experiment(name=spec.name, tier=spec.tier, percent=spec.percent, targets=targets,
                      sticky_by=spec.sticky_by)


def table_version(region: str, routes: Sequence[Route], limits: Mapping[str, Limits]) -> str:
    """A content hash of everything that routes; a credential enters only as its own hash."""
    content = {"region": region, "routes": _canonical(routes), "limits": _canonical(dict(sorted(limits.items())))}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical(value: object) -> object:
    if isinstance(value, Secret):
        return {"sha256": hashlib.sha256(value.reveal().encode()).hexdigest()}
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):  # as pairs: the order of tiers is the order of concrete-model targets
        return [[str(k), _canonical(v)] for k, v in value.items()]
    if isinstance(value, frozenset | set):
        return [_canonical(v) for v in sorted(value, key=str)]
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value
