"""LLMProvider and LLMRoute documents → validated, frozen specs, with every problem reported at once.

Parsing is kept apart from compiling because the operator validates resources (to explain them in
`Accepted=False`) long before it compiles a table for any pod, and because one pass that names every
problem with its field path beats a fix-one-rerun loop. Sub-policies that have an identical twin in the
table (fallback, load balancing, outlier detection, budget, pricing, limits) reuse the table's
dataclasses, so each default lives in one place. Nothing here reads files, secrets or the environment.

The package is split by resource kind: `fields` (typed field readers and `SpecError`), `provider`
(LLMProvider), `route` (LLMRoute) and `documents` (opening documents and parsing sets of them). Every
public name is re-exported here, so `from llmroute_proxy.spec import X` is the one import to use.
"""

from llmroute_proxy.spec.documents import (
    API_VERSION,
    PROVIDER_KIND,
    ROUTE_KIND,
    Specs,
    parse_documents,
    parse_provider,
    parse_route,
)
from llmroute_proxy.spec.fields import SpecError, parse_duration
from llmroute_proxy.spec.provider import (
    Credentials,
    Endpoint,
    EnvCredential,
    FileCredential,
    ModelSpec,
    ProviderSpec,
    SecretKeyRef,
    TrustSpec,
    WorkloadIdentity,
    credential_problem,
    holds_key,
)
from llmroute_proxy.spec.route import (
    RESERVED_TIER_NAMES,
    ConditionSpec,
    ExperimentSpec,
    HeaderCondition,
    RouteSpec,
    RuleSpec,
    TargetSpec,
    TierSpec,
    unpriced_message,
    unpriced_targets,
)

__all__ = [
    "API_VERSION",
    "PROVIDER_KIND",
    "RESERVED_TIER_NAMES",
    "ROUTE_KIND",
    "ConditionSpec",
    "Credentials",
    "Endpoint",
    "EnvCredential",
    "ExperimentSpec",
    "FileCredential",
    "HeaderCondition",
    "ModelSpec",
    "ProviderSpec",
    "RouteSpec",
    "RuleSpec",
    "SecretKeyRef",
    "SpecError",
    "Specs",
    "TargetSpec",
    "TierSpec",
    "TrustSpec",
    "WorkloadIdentity",
    "credential_problem",
    "holds_key",
    "parse_documents",
    "parse_duration",
    "parse_provider",
    "parse_route",
    "unpriced_message",
    "unpriced_targets",
]
