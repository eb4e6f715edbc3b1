"""The operator's view of the cluster, and every pod's table compiled from it. Pure: no kopf, no I/O.

The kopf handlers put and delete what they watch (LLMProviders, LLMRoutes, pods, nodes, and the Secrets
that providers name); the hub asks `table_for(pod)`. Each resource is judged on its own when it or what
it refers to changes. A version that does not parse, names a provider that does not serve, or names a
Secret key that is not there gets a verdict with every problem's field path and serves nothing: the last
good version of that resource keeps serving, so one bad apply changes no running table.

A pod's table is the serving routes of its namespace whose podSelector selects it, plus the providers
they name (endpoints of the pod's region first, credentials resolved), for its node's region. The
sidecar's own `compile_payload` checks it, so the operator never pushes a table a sidecar would NACK.
Compilations are cached by the content hashes of exactly those inputs: a thousand pods with the same
labels and region cost one compilation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from llmroute_operator.contracts import DesiredTable, Generation, GlobalLimits, PodRef
from llmroute_operator.selectors import selects
from llmroute_proxy.spec import (
    API_VERSION,
    PROVIDER_KIND,
    ROUTE_KIND,
    EnvCredential,
    FileCredential,
    ProviderSpec,
    RouteSpec,
    SecretKeyRef,
    SpecError,
    parse_provider,
    parse_route,
)
from llmroute_proxy.sync.protocol import TableRejected, compile_payload, payload_version, table_payload
from llmroute_proxy.table import Limits

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
CACHE_SIZE = 4096

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
class PodInfo:
    uid: str
    labels: Mapping[str, str]
    node: str | None


@dataclass(frozen=True, slots=True)
class Topology:
    region: str = ""
    zone: str = ""


@dataclass(frozen=True, slots=True)
class _ServingProvider:
    name: str
    document: Mapping[str, Any]
    spec: ProviderSpec
    credential: str | None
    hash: str  # of the document and the credential


@dataclass(frozen=True, slots=True)
class _ServingRoute:
    name: str
    document: Mapping[str, Any]
    spec: RouteSpec
    providers: frozenset[str]
    hash: str


@dataclass(slots=True)
class _Resource:
    document: Mapping[str, Any]
    verdict: Verdict
    serving: Any = None  # _ServingProvider | _ServingRoute | None


@dataclass(slots=True)
class _Compiled:
    table: DesiredTable | None
    problem: str | None = None


@dataclass(slots=True)
class _Namespace:
    providers: dict[str, _Resource] = field(default_factory=dict)
    routes: dict[str, _Resource] = field(default_factory=dict)


class ClusterIndex:
    """Implements `TableSource`. Every mutator returns whether some pod's table may have changed."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._namespaces: dict[str, _Namespace] = {}
        self._pods: dict[PodRef, PodInfo] = {}
        self._nodes: dict[str, Topology] = {}
        self._secrets: dict[Key, dict[str, str]] = {}
        self._generation = Generation()
        self._cache: OrderedDict[tuple[Any, ...], _Compiled] = OrderedDict()
        self._cache_size = cache_size
        self._memo: dict[PodRef, DesiredTable | None] = {}
        self._serving_memo: dict[str, tuple[dict[str, _ServingProvider], list[_ServingRoute]]] = {}
        self._selection_memo: dict[tuple[str, frozenset[tuple[str, str]]], list[_ServingRoute]] = {}
        self._last: dict[PodRef, DesiredTable] = {}
        self.compilations = 0
        self.cache_hits = 0
        self.listeners: list[Callable[[], None]] = []  # called after any change (tables or verdicts)

    # ---- TableSource -------------------------------------------------------------------------------

    def generation(self) -> int:
        return self._generation.value

    async def changed(self, since: int) -> int:
        return await self._generation.changed(since)

    def table_for(self, pod: PodRef) -> DesiredTable | None:
        if pod in self._memo:
            return self._memo[pod]
        table = self._table_for(pod)
        self._memo[pod] = table
        if table is not None:
            self._last[pod] = table
        return table

    # ---- whole objects, as watched ---------------------------------------------------------------

    def put(self, body: Mapping[str, Any], kind: str | None = None) -> bool:
        """Any watched object (LLMProvider, LLMRoute, Pod, Node, Secret) as the API serves it. `kind`
        is for list items, which the API serves without one."""
        kind, metadata = kind or body.get("kind"), body.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        match kind:
            case "LLMProvider":
                return self.put_provider(namespace, {**body, "kind": kind})
            case "LLMRoute":
                return self.put_route(namespace, {**body, "kind": kind})
            case "Pod":
                return self.put_pod(namespace, name, str(metadata.get("uid") or ""), metadata.get("labels"),
                                    (body.get("spec") or {}).get("nodeName"))
            case "Node":
                return self.put_node(name, metadata.get("labels"))
            case "Secret":
                return self.put_secret(namespace, name, body.get("data"))
        raise ValueError(f"not a watched kind: {kind!r}")

    def delete(self, body: Mapping[str, Any], kind: str | None = None) -> bool:
        kind, metadata = kind or body.get("kind"), body.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        match kind:
            case "LLMProvider":
                return self.delete_provider(namespace, name)
            case "LLMRoute":
                return self.delete_route(namespace, name)
            case "Pod":
                return self.delete_pod(namespace, name)
            case "Node":
                return self.delete_node(name)
            case "Secret":
                return self.delete_secret(namespace, name)
        raise ValueError(f"not a watched kind: {kind!r}")

    # ---- resources -------------------------------------------------------------------------------

    def put_provider(self, namespace: str, body: Mapping[str, Any]) -> bool:
        document, name = _document(body, PROVIDER_KIND)
        ns = self._namespaces.setdefault(namespace, _Namespace())
        ns.providers[name] = _Resource(document, _pending(PROVIDER_KIND, namespace, name, body),
                                       ns.providers[name].serving if name in ns.providers else None)
        changed = self._judge_namespace(namespace)
        named = self.named_secrets()
        self._secrets = {k: v for k, v in self._secrets.items() if k in named}
        return changed

    def delete_provider(self, namespace: str, name: str) -> bool:
        ns = self._namespaces.get(namespace)
        if ns is None or ns.providers.pop(name, None) is None:
            return False
        named = self.named_secrets()
        self._secrets = {k: v for k, v in self._secrets.items() if k in named}
        self._judge_namespace(namespace)
        return self._changed(True)

    def put_route(self, namespace: str, body: Mapping[str, Any]) -> bool:
        document, name = _document(body, ROUTE_KIND)
        ns = self._namespaces.setdefault(namespace, _Namespace())
        old = ns.routes.get(name)
        resource = _Resource(document, _pending(ROUTE_KIND, namespace, name, body), old.serving if old else None)
        ns.routes[name] = resource
        before = resource.serving
        self._judge_route(namespace, resource)
        return self._changed(before is not resource.serving)

    def delete_route(self, namespace: str, name: str) -> bool:
        ns = self._namespaces.get(namespace)
        if ns is None or ns.routes.pop(name, None) is None:
            return False
        return self._changed(True)

    def put_secret(self, namespace: str, name: str, data: Mapping[str, str] | None) -> bool:
        """A Secret's `data` (base64 values, as the API serves them); kept only when a provider names it."""
        key = (namespace, name)
        if not self._referenced(key):
            self._secrets.pop(key, None)
            return False
        decoded = _decode(data or {})
        if self._secrets.get(key) == decoded:
            return False
        self._secrets[key] = decoded
        return self._judge_namespace(namespace)

    def delete_secret(self, namespace: str, name: str) -> bool:
        if self._secrets.pop((namespace, name), None) is None:
            return False
        return self._judge_namespace(namespace)

    def named_secrets(self) -> set[Key]:
        """Secrets named by a provider's current version, or by the older version that still serves."""
        return {key for ns_name, ns in self._namespaces.items() for r in ns.providers.values()
                for document in (r.document, r.serving.document if r.serving is not None else None)
                if document is not None and (key := _secret_ref(ns_name, document)) is not None}

    def missing_secrets(self) -> set[Key]:
        """Named Secrets the index does not hold: the operator reads these at once."""
        return self.named_secrets() - self._secrets.keys()

    # ---- pods and nodes ------------------------------------------------------------------------------

    def put_pod(self, namespace: str, name: str, uid: str, labels: Mapping[str, str] | None,
                node: str | None) -> bool:
        pod, info = PodRef(namespace, name), PodInfo(uid, dict(labels or {}), node or None)
        if self._pods.get(pod) == info:
            return False
        self._pods[pod] = info
        return self._changed(True)

    def delete_pod(self, namespace: str, name: str) -> bool:
        pod = PodRef(namespace, name)
        self._last.pop(pod, None)
        return self._changed(self._pods.pop(pod, None) is not None)

    def put_node(self, name: str, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        topology = Topology(labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, ""))
        if self._nodes.get(name) == topology:
            return False
        self._nodes[name] = topology
        return self._changed(any(info.node == name for info in self._pods.values()))

    def delete_node(self, name: str) -> bool:
        if self._nodes.pop(name, None) is None:
            return False
        return self._changed(any(info.node == name for info in self._pods.values()))

    # ---- what the status writer reads ------------------------------------------------------------------

    def verdicts(self) -> list[Verdict]:
        return [r.verdict for ns in self._namespaces.values()
                for r in (*ns.providers.values(), *ns.routes.values())]

    def verdict(self, kind: str, namespace: str, name: str) -> Verdict | None:
        ns = self._namespaces.get(namespace)
        resources = None if ns is None else ns.providers if kind == PROVIDER_KIND else ns.routes
        resource = None if resources is None else resources.get(name)
        return None if resource is None else resource.verdict

    def pods(self) -> list[PodRef]:
        return list(self._pods)

    def pod(self, pod: PodRef) -> PodInfo | None:
        return self._pods.get(pod)

    def topology(self, pod: PodRef) -> Topology:
        info = self._pods.get(pod)
        return self._nodes.get(info.node, Topology()) if info is not None and info.node else Topology()

    def selected_pods(self, namespace: str, route: str) -> list[PodRef]:
        """Pods that the serving version of the route selects."""
        serving = self._serving_route(namespace, route)
        if serving is None:
            return []
        return sorted(pod for pod, info in self._pods.items()
                      if pod.namespace == namespace and selects(serving.spec.pod_selector, info.labels))

    def route_spec(self, namespace: str, route: str) -> RouteSpec | None:
        serving = self._serving_route(namespace, route)
        return None if serving is None else serving.spec

    def routes_using(self, namespace: str, provider: str) -> list[str]:
        ns = self._namespaces.get(namespace)
        return [] if ns is None else sorted(name for name, r in ns.routes.items()
                                            if r.serving is not None and provider in r.serving.providers)

    def provider_regions(self, namespace: str, provider: str) -> list[str]:
        """The regions of the provider's endpoints as applied, in order, each once."""
        ns = self._namespaces.get(namespace)
        resource = None if ns is None else ns.providers.get(provider)
        spec = resource.document.get("spec") if resource is not None else None
        endpoints = spec.get("endpoints") if isinstance(spec, Mapping) else None
        regions = [e.get("region") for e in endpoints or [] if isinstance(e, Mapping)]
        return list(dict.fromkeys(r for r in regions if isinstance(r, str) and r))

    def compile_problems(self) -> list[str]:
        """Tables the sidecar's compiler refused (the pods kept their previous table)."""
        return [c.problem for c in self._cache.values() if c.problem is not None]

    # ---- judging ---------------------------------------------------------------------------------

    def _judge_namespace(self, namespace: str) -> bool:
        """Providers first (a route is judged against the providers that serve), then every route."""
        ns = self._namespaces.get(namespace, _Namespace())
        before = [r.serving for r in (*ns.providers.values(), *ns.routes.values())]
        for resource in ns.providers.values():
            self._judge_provider(namespace, resource)
        for resource in ns.routes.values():
            self._judge_route(namespace, resource)
        after = [r.serving for r in (*ns.providers.values(), *ns.routes.values())]
        return self._changed(any(a is not b for a, b in zip(before, after, strict=True)))

    def _judge_provider(self, namespace: str, resource: _Resource) -> None:
        spec, errors = parse_provider(resource.document)
        problems, unresolved = [_problem(e) for e in errors], []
        credential: str | None = None
        if spec is not None:
            match spec.credentials:
                case SecretKeyRef(name=secret, key=key):
                    data = self._secrets.get((namespace, secret))
                    if data is None:
                        unresolved.append(Problem("spec.credentials.secretRef.name",
                                                  f"Secret '{secret}' not found in namespace '{namespace}'"))
                    elif not data.get(key):
                        unresolved.append(Problem("spec.credentials.secretRef.key",
                                                  f"Secret '{secret}' has no non-empty text key '{key}'"))
                    else:
                        credential = data[key]
                case EnvCredential() | FileCredential():
                    problems.append(Problem("spec.credentials", "in a cluster only secretRef credentials "
                                            "reach the sidecars; env and file work in standalone mode"))
        if spec is not None and not problems and not unresolved:
            digest = _hash(resource.document, _hash(credential))
            old = resource.serving
            if old is None or old.hash != digest:
                resource.serving = _ServingProvider(spec.name, resource.document, spec, credential, digest)
        resource.verdict = _verdict(resource, problems, unresolved)

    def _judge_route(self, namespace: str, resource: _Resource) -> None:
        ns = self._namespaces[namespace]
        scope = {name: (p.serving.spec if p.serving is not None else None) for name, p in ns.providers.items()}
        spec, errors = parse_route(resource.document, scope)
        problems = [_problem(e) for e in errors if not e.path.endswith(".provider")]
        unresolved = [_problem(e) for e in errors if e.path.endswith(".provider")]
        if spec is not None and not errors:
            digest = _hash(resource.document)
            old = resource.serving
            if old is None or old.hash != digest:
                used = frozenset(t.provider for tier in spec.tiers.values() for t in tier.targets) | \
                    frozenset(t.provider for e in spec.experiments for t in e.targets)
                resource.serving = _ServingRoute(spec.name, resource.document, spec, used, digest)
        resource.verdict = _verdict(resource, problems, unresolved)

    def _changed(self, tables: bool) -> bool:
        if tables:
            self._memo.clear()
            self._serving_memo.clear()
            self._selection_memo.clear()
            self._generation.advance()
        for listener in self.listeners:
            listener()
        return tables

    # ---- compiling -------------------------------------------------------------------------------

    def _table_for(self, pod: PodRef) -> DesiredTable | None:
        info = self._pods.get(pod)
        ns = self._namespaces.get(pod.namespace)
        if info is None or ns is None:
            return None
        providers, candidates = self._serving(pod.namespace, ns)
        labels = (pod.namespace, frozenset(info.labels.items()))
        routes = self._selection_memo.get(labels)
        if routes is None:  # pods of one Deployment share labels: select once for all of them
            routes = self._selection_memo[labels] = [r for r in candidates if selects(r.spec.pod_selector, info.labels)]
        if not routes:
            return None
        used = [providers[name] for name in sorted(set().union(*(r.providers for r in routes)))]
        region = self.topology(pod).region
        key = (pod.namespace, region, tuple(r.hash for r in routes), tuple(p.hash for p in used))
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._cache[key] = self._compile(pod.namespace, region, routes, used)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self.cache_hits += 1
            self._cache.move_to_end(key)
        return compiled.table if compiled.table is not None else self._last.get(pod)

    def _serving(self, namespace: str, ns: _Namespace) -> tuple[dict[str, _ServingProvider], list[_ServingRoute]]:
        """The namespace's serving providers, and its serving routes whose providers all serve (by name)."""
        found = self._serving_memo.get(namespace)
        if found is None:
            providers = {name: r.serving for name, r in ns.providers.items() if r.serving is not None}
            routes = [r.serving for _, r in sorted(ns.routes.items())
                      if r.serving is not None and r.serving.providers <= providers.keys()]
            found = self._serving_memo[namespace] = (providers, routes)
        return found

    def _compile(self, namespace: str, region: str, routes: list[_ServingRoute],
                 providers: list[_ServingProvider]) -> _Compiled:
        self.compilations += 1
        documents: list[Mapping[str, Any]] = [_regional(p.document, region) for p in providers]
        documents += [r.document for r in routes]
        credentials = {p.name: p.credential for p in providers if p.credential is not None}
        payload = table_payload(region, documents, credentials)
        try:
            compile_payload(payload)
        except TableRejected as rejected:
            return _Compiled(None, f"{namespace} (region {region or 'none'}): {rejected}")
        limits = {f"{namespace}/{p.name}": GlobalLimits(p.spec.limits.requests_per_minute,
                                                         p.spec.limits.tokens_per_minute,
                                                         p.spec.limits.max_concurrency)
                  for p in providers if p.spec.limits != Limits()}
        budgets = {f"{namespace}/{r.name}": r.spec.budget.limit_usd for r in routes if r.spec.budget is not None}
        return _Compiled(DesiredTable(payload_version(payload), payload, limits, budgets))

    def _serving_route(self, namespace: str, route: str) -> _ServingRoute | None:
        ns = self._namespaces.get(namespace)
        resource = None if ns is None else ns.routes.get(route)
        return None if resource is None else resource.serving  # type: ignore[no-any-return]

    def _referenced(self, key: Key) -> bool:
        return key in self.named_secrets()


# ---- helpers ----------------------------------------------------------------------------------------

def _document(body: Mapping[str, Any], kind: str) -> tuple[dict[str, Any], str]:
    """The resource as applied (apiVersion, kind, metadata.name, spec): what the sidecars receive."""
    metadata = body.get("metadata") or {}
    name = str(metadata.get("name", ""))
    document = {"apiVersion": body.get("apiVersion") or API_VERSION, "kind": body.get("kind") or kind,
                "metadata": {"name": name}, "spec": body.get("spec")}
    return orjson.loads(orjson.dumps(document)), name


def _pending(kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> Verdict:
    metadata = body.get("metadata") or {}
    generation, uid = metadata.get("generation"), metadata.get("uid")
    return Verdict(kind, namespace, name, generation if isinstance(generation, int) else None,
                   uid=uid if isinstance(uid, str) else None)


def _verdict(resource: _Resource, problems: Iterable[Problem], unresolved: Iterable[Problem]) -> Verdict:
    serving = resource.serving.hash if resource.serving is not None else None
    return replace(resource.verdict, problems=tuple(problems), unresolved=tuple(unresolved), serving=serving)


def _problem(error: SpecError) -> Problem:
    return Problem(error.path, error.message)


def _secret_ref(namespace: str, document: Mapping[str, Any]) -> Key | None:
    spec = document.get("spec")
    credentials = spec.get("credentials") if isinstance(spec, Mapping) else None
    ref = credentials.get("secretRef") if isinstance(credentials, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return (namespace, name) if isinstance(name, str) and name else None


def _decode(data: Mapping[str, str]) -> dict[str, str]:
    """base64 values → text, surrounding whitespace removed (a key file often ends in a newline)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
            continue
    return out


def _regional(document: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The provider with the endpoints of `region` first (stable otherwise)."""
    spec = dict(document["spec"])
    endpoints = spec.get("endpoints")
    if isinstance(endpoints, list) and region:
        spec["endpoints"] = sorted(endpoints, key=lambda e: not (isinstance(e, Mapping) and e.get("region") == region))
    return {**document, "spec": spec}


def _hash(value: object, *more: str) -> str:
    digest = hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    for part in more:
        digest.update(part.encode())
    return digest.hexdigest()
