"""Each LLMProvider and LLMRoute judged on its own: its verdict, and the version of it that serves. Pure.

A version that does not parse, names a provider that does not serve, or names a Secret key that is not
there gets a verdict with every problem's field path and serves nothing new: the last good version of
that resource keeps serving (`Resource.serving`), so one bad apply changes no running table. A route is
judged against the providers that serve, so providers are judged first (the index does that).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from llmroute_proxy.spec import (
    API_VERSION,
    EnvCredential,
    FileCredential,
    ProviderSpec,
    RouteSpec,
    SecretKeyRef,
    SpecError,
    WorkloadIdentity,
    credential_problem,
    parse_provider,
    parse_route,
)

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # inside the resource, e.g. spec.tiers.fast.targets[0].provider
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of a resource's current version.

    `problems` make it not Accepted; `unresolved` (missing providers, Secrets, keys) make it neither
    Accepted nor ResolvedRefs. `serving` is the content hash of the version that serves — the current
    one when accepted, an older good one otherwise, None when no version ever was good.
    """

    kind: str
    namespace: str
    name: str
    generation: int | None
    problems: tuple[Problem, ...] = ()
    unresolved: tuple[Problem, ...] = ()
    serving: str | None = None
    uid: str | None = None

    @property
    def accepted(self) -> bool:
        return not self.problems and not self.unresolved


@dataclass(frozen=True, slots=True)
class ServingProvider:
    name: str
    document: Mapping[str, Any]
    spec: ProviderSpec
    credential: str | None
    hash: str  # of the document and the credential


@dataclass(frozen=True, slots=True)
class ServingRoute:
    name: str
    document: Mapping[str, Any]
    spec: RouteSpec
    providers: frozenset[str]
    hash: str


@dataclass(slots=True)
class Resource:
    document: Mapping[str, Any]
    verdict: Verdict
    serving: Any = None  # ServingProvider | ServingRoute | None


def judge_provider(namespace: str, resource: Resource, secrets: Mapping[Key, Mapping[str, str]]) -> None:
    """The provider's verdict, and its current version serving when it is good (with its credential)."""
    spec, errors = parse_provider(resource.document)
    problems, unresolved = [_problem(e) for e in errors], []
    credential: str | None = None
    if spec is not None:
        match spec.credentials:
            case SecretKeyRef(name=secret, key=key):
                data = secrets.get((namespace, secret))
                if data is None:
                    unresolved.append(Problem("spec.credentials.secretRef.name",
                                              f"Secret '{secret}' not found in namespace '{namespace}'"))
                elif not data.get(key):
                    unresolved.append(Problem("spec.credentials.secretRef.key",
                                              f"Secret '{secret}' has no non-empty text key '{key}'"))
                elif (unusable := credential_problem(spec.type, data[key])) is not None:
                    problems.append(Problem("spec.credentials.secretRef.key",
                                            f"Secret '{secret}' key '{key}': {unusable}"))
                else:
                    credential = data[key]
            case WorkloadIdentity():
                pass  # no key: the pods' own identity (GCP metadata server, AWS IRSA or Pod Identity)
            case EnvCredential() | FileCredential():
                problems.append(Problem("spec.credentials", "in a cluster only secretRef credentials "
                                        "reach the sidecars; env and file work in standalone mode"))
    if spec is not None and not problems and not unresolved:
        digest = content_hash(resource.document, content_hash(credential))
        old = resource.serving
        if old is None or old.hash != digest:
            resource.serving = ServingProvider(spec.name, resource.document, spec, credential, digest)
    resource.verdict = _verdict(resource, problems, unresolved)


def judge_route(resource: Resource, providers: Mapping[str, Resource]) -> None:
    """The route's verdict against the namespace's `providers` that serve, and its version serving when good."""
    scope = {name: (p.serving.spec if p.serving is not None else None) for name, p in providers.items()}
    spec, errors = parse_route(resource.document, scope)
    problems = [_problem(e) for e in errors if not e.path.endswith(".provider")]
    unresolved = [_problem(e) for e in errors if e.path.endswith(".provider")]
    if spec is not None and not errors:
        digest = content_hash(resource.document)
        old = resource.serving
        if old is None or old.hash != digest:
            used = frozenset(t.provider for tier in spec.tiers.values() for t in tier.targets) | \
                frozenset(t.provider for e in spec.experiments for t in e.targets)
            resource.serving = ServingRoute(spec.name, resource.document, spec, used, digest)
    resource.verdict = _verdict(resource, problems, unresolved)


def document_of(body: Mapping[str, Any], kind: str) -> tuple[dict[str, Any], str]:
    """The resource as applied (apiVersion, kind, metadata.name, spec): what the sidecars receive."""
    metadata = body.get("metadata") or {}
    name = str(metadata.get("name", ""))
    document = {"apiVersion": body.get("apiVersion") or API_VERSION, "kind": body.get("kind") or kind,
                "metadata": {"name": name}, "spec": body.get("spec")}
    return orjson.loads(orjson.dumps(document)), name


def pending(kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> Verdict:
    """The verdict of a version not judged yet: who it is, nothing more."""
    metadata = body.get("metadata") or {}
    generation, uid = metadata.get("generation"), metadata.get("uid")
    return Verdict(kind, namespace, name, generation if isinstance(generation, int) else None,
                   uid=uid if isinstance(uid, str) else None)


def secret_ref(namespace: str, document: Mapping[str, Any]) -> Key | None:
    """The Secret a provider document's credentials.secretRef names, if any."""
    spec = document.get("spec")
    credentials = spec.get("credentials") if isinstance(spec, Mapping) else None
    ref = credentials.get("secretRef") if isinstance(credentials, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return (namespace, name) if isinstance(name, str) and name else None


def decode_secret(data: Mapping[str, str]) -> dict[str, str]:
    """base64 values → text, surrounding whitespace removed (a key file often ends in a newline)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
            continue
    return out


def content_hash(value: object, *more: str) -> str:
    digest = hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    for part in more:
        digest.update(part.encode())
    return digest.hexdigest()


def _verdict(resource: Resource, problems: Iterable[Problem], unresolved: Iterable[Problem]) -> Verdict:
    serving = resource.serving.hash if resource.serving is not None else None
    return replace(resource.verdict, problems=tuple(problems), unresolved=tuple(unresolved), serving=serving)


def _problem(error: SpecError) -> Problem:
    return Problem(error.path, error.message)
