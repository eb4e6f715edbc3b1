"""The operator's view of the cluster, and every pod's table compiled from it. Pure: no kopf, no I/O.

The kopf handlers put and delete what they watch (LLMProviders, LLMRoutes, pods, nodes, and the Secrets
that providers name); the hub asks `table_for(pod)`. Each resource is judged on its own (judging.py) when
it or what it refers to changes; the last good version of a resource keeps serving.

A pod's table is the serving routes of its namespace whose podSelector selects it, plus the providers
they name, for its node's region (tables.py compiles it). Compilations are cached by the content hashes
of exactly those inputs: a thousand pods with the same labels and region cost one compilation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmroute_operator.contracts import DesiredTable, Generation, PodRef
from llmroute_operator.judging import (
    Key,
    Resource,
    ServingProvider,
    ServingRoute,
    Verdict,
    decode_secret,
    document_of,
    judge_provider,
    judge_route,
    pending,
    secret_ref,
)
from llmroute_operator.selectors import selects
from llmroute_operator.tables import Compiled, compile_table
from llmroute_proxy.spec import PROVIDER_KIND, ROUTE_KIND, RouteSpec, unpriced_targets

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    labels: Mapping[str, str]
    node: str | None


@dataclass(frozen=True, slots=True)
class Topology:
    region: str = ""
    zone: str = ""


@dataclass(slots=True)
class _Namespace:
    providers: dict[str, Resource] = field(default_factory=dict)
    routes: dict[str, Resource] = field(default_factory=dict)


class ClusterIndex:
    """Implements `TableSource`. Every mutator returns whether some pod's table may have changed."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._namespaces: dict[str, _Namespace] = {}
        self._pods: dict[PodRef, PodInfo] = {}
        self._nodes: dict[str, Topology] = {}
        self._secrets: dict[Key, dict[str, str]] = {}
        self._generation = Generation()
        self._cache: OrderedDict[tuple[Any, ...], Compiled] = OrderedDict()
        self._cache_size = cache_size
        self._memo: dict[PodRef, DesiredTable | None] = {}
        self._problems: dict[PodRef, str] = {}  # pods whose table does not compile (they keep their last)
        self._serving_memo: dict[str, tuple[dict[str, ServingProvider], list[ServingRoute]]] = {}
        self._selection_memo: dict[tuple[str, frozenset[tuple[str, str]]], tuple[list[ServingRoute], bool]] = {}
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
        table, problem = self._table_for(pod)
        self._memo[pod] = table
        if problem is not None:
            self._problems[pod] = problem
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
        document, name = document_of(body, PROVIDER_KIND)
        ns = self._namespaces.setdefault(namespace, _Namespace())
        ns.providers[name] = Resource(document, pending(PROVIDER_KIND, namespace, name, body),
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
        document, name = document_of(body, ROUTE_KIND)
        ns = self._namespaces.setdefault(namespace, _Namespace())
        old = ns.routes.get(name)
        resource = Resource(document, pending(ROUTE_KIND, namespace, name, body), old.serving if old else None)
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
        decoded = decode_secret(data or {})
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
                if document is not None and (key := secret_ref(ns_name, document)) is not None}

    def credentials(self) -> frozenset[str]:
        """Every key the operator holds: in the Secrets providers name, and in the versions that serve."""
        held = {value for data in self._secrets.values() for value in data.values()}
        held |= {r.serving.credential for ns in self._namespaces.values() for r in ns.providers.values()
                 if r.serving is not None and r.serving.credential}
        return frozenset(held)

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

    def unpriced_targets(self, namespace: str, route: str) -> tuple[str, ...]:
        """`provider/model` of the serving route's targets whose model has no pricing (`spec.unpriced_targets`)."""
        ns = self._namespaces.get(namespace)
        serving = self._serving_route(namespace, route)
        if ns is None or serving is None:
            return ()
        providers = {name: provider.spec for name, provider in self._serving(namespace, ns)[0].items()}
        return unpriced_targets(serving.spec, providers)

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

    def _judge_provider(self, namespace: str, resource: Resource) -> None:
        judge_provider(namespace, resource, self._secrets)

    def _judge_route(self, namespace: str, resource: Resource) -> None:
        judge_route(resource, self._namespaces[namespace].providers)

    def _changed(self, tables: bool) -> bool:
        if tables:
            self._memo.clear()
            self._problems.clear()
            self._serving_memo.clear()
            self._selection_memo.clear()
            self._generation.advance()
        for listener in self.listeners:
            listener()
        return tables

    # ---- compiling -------------------------------------------------------------------------------

    def table_problem(self, pod: PodRef) -> str | None:
        """Why the table the pod's routes and providers make does not compile, if it does not: the pod is
        then kept on its last table (`table_for`), which lacks every change since."""
        self.table_for(pod)
        return self._problems.get(pod)

    def _table_for(self, pod: PodRef) -> tuple[DesiredTable | None, str | None]:
        info = self._pods.get(pod)
        if info is None:
            return None, None
        ns = self._namespaces.get(pod.namespace)
        if ns is None:  # nothing of llmroute's in its namespace (any more)
            return self._unselected(pod.namespace, self.topology(pod).region), None
        providers, candidates = self._serving(pod.namespace, ns)
        labels = (pod.namespace, frozenset(info.labels.items()))
        selection = self._selection_memo.get(labels)
        if selection is None:  # pods of one Deployment share labels: select once for all of them
            selection = self._selection_memo[labels] = self._select(ns, candidates, info.labels)
        routes, selected_at_all = selection
        if not routes:
            # A route that selects the pod but cannot serve (a provider of it is missing) leaves the pod on
            # its last table; none selecting it at all (deleted, or its selector moved) leaves it no route.
            return (None, None) if selected_at_all else (self._unselected(pod.namespace, self.topology(pod).region),
                                                         None)
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
        if compiled.table is None:
            return self._last.get(pod), compiled.problem
        return compiled.table, None

    @staticmethod
    def _select(ns: _Namespace, candidates: list[ServingRoute], labels: Mapping[str, str]) -> tuple[
            list[ServingRoute], bool]:
        """The serving routes that select pods of these labels, and whether any route, good or bad, does."""
        routes = [r for r in candidates if selects(r.spec.pod_selector, labels)]
        return routes, bool(routes) or any(_claims(r, labels) for r in ns.routes.values())

    def _unselected(self, namespace: str, region: str) -> DesiredTable:
        """The table of a pod no route selects: no documents, so the sidecar answers `no_route` (and holds
        no provider's key) instead of serving its last routes on."""
        compiled = compile_table(namespace, region, [], [])
        assert compiled.table is not None
        return compiled.table

    def _serving(self, namespace: str, ns: _Namespace) -> tuple[dict[str, ServingProvider], list[ServingRoute]]:
        """The namespace's serving providers, and its serving routes whose providers all serve (by name)."""
        found = self._serving_memo.get(namespace)
        if found is None:
            providers = {name: r.serving for name, r in ns.providers.items() if r.serving is not None}
            routes = [r.serving for _, r in sorted(ns.routes.items())
                      if r.serving is not None and r.serving.providers <= providers.keys()]
            found = self._serving_memo[namespace] = (providers, routes)
        return found

    def _compile(self, namespace: str, region: str, routes: list[ServingRoute],
                 providers: list[ServingProvider]) -> Compiled:
        self.compilations += 1
        return compile_table(namespace, region, routes, providers)

    def _serving_route(self, namespace: str, route: str) -> ServingRoute | None:
        ns = self._namespaces.get(namespace)
        resource = None if ns is None else ns.routes.get(route)
        return None if resource is None else resource.serving  # type: ignore[no-any-return]

    def _referenced(self, key: Key) -> bool:
        return key in self.named_secrets()


def _claims(route: Resource, labels: Mapping[str, str]) -> bool:
    """Whether the route may mean to select pods of these labels: by the selector it serves with, or by the
    one it was given, however bad the rest of it (a bad resource changes no pod's table, not even to none)."""
    if route.serving is not None and selects(route.serving.spec.pod_selector, labels):
        return True
    spec = route.document.get("spec")
    selector = spec.get("podSelector", {}) if isinstance(spec, Mapping) else None
    return not isinstance(selector, Mapping) or selects(selector, labels)
