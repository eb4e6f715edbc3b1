"""kopf handlers: every watched object goes into the cluster index, nothing else happens here.

Index handlers (`kopf.index`) put each object into the index as kopf lists and watches it, and return
nothing for kopf to keep. kopf runs no other handler until the initial listing of every indexed kind is
in, so the first call of any event handler (`kopf.on.event`) says the index holds the whole cluster:
`listed` (the operator then reads the Secrets and lets the hub serve). Deletions reach only the event
handlers. No change handlers: the index is rebuilt from the watch streams after every restart, so the
operator needs no finalizers and no annotations on the resources, and no write access to them. Handlers
are coroutines so that they run in the event loop that the hub reads the index from (kopf runs plain
functions in threads).

Secrets are not watched: `SecretReader` gets the ones that providers name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from llmroute_operator.index import ClusterIndex
from llmroute_operator.status import ObjectRef
from llmroute_operator.writer import SecretReader, StatusWriter

GROUP, VERSION = "llmroute.dev", "v1alpha1"


def register(registry: kopf.OperatorRegistry, index: ClusterIndex, writer: StatusWriter,
             secrets: SecretReader, listed: Callable[[], None] = lambda: None) -> None:
    @kopf.index(GROUP, VERSION, "llmproviders", registry=registry)
    async def provider_seen(body: kopf.Body, **_: Any) -> None:
        _put_resource(index, writer, _plain(body), "LLMProvider")
        secrets.poke()

    @kopf.on.event(GROUP, VERSION, "llmproviders", registry=registry)
    async def provider_event(event: kopf.RawEvent, **_: Any) -> None:
        listed()
        if event["type"] == "DELETED":
            _delete_resource(index, writer, event["object"], "LLMProvider")

    @kopf.index(GROUP, VERSION, "llmroutes", registry=registry)
    async def route_seen(body: kopf.Body, **_: Any) -> None:
        _put_resource(index, writer, _plain(body), "LLMRoute")

    @kopf.on.event(GROUP, VERSION, "llmroutes", registry=registry)
    async def route_event(event: kopf.RawEvent, **_: Any) -> None:
        listed()
        if event["type"] == "DELETED":
            _delete_resource(index, writer, event["object"], "LLMRoute")

    @kopf.index("", "v1", "pods", registry=registry)
    async def pod_seen(body: kopf.Body, **_: Any) -> None:
        index.put(_plain(body), "Pod")

    @kopf.on.event("", "v1", "pods", registry=registry)
    async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
        listed()
        if event["type"] == "DELETED":
            index.delete(event["object"], "Pod")

    @kopf.index("", "v1", "nodes", registry=registry)
    async def node_seen(body: kopf.Body, **_: Any) -> None:
        index.put(_plain(body), "Node")

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_event(event: kopf.RawEvent, **_: Any) -> None:
        listed()
        if event["type"] == "DELETED":
            index.delete(event["object"], "Node")


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """kopf's Body view as the object the API served (its fields are that object's own dicts)."""
    return {key: body[key] for key in body}


def _ref(body: Mapping[str, Any], kind: str) -> ObjectRef:
    metadata = body.get("metadata") or {}
    return kind, str(metadata.get("namespace", "")), str(metadata.get("name", ""))


def _put_resource(index: ClusterIndex, writer: StatusWriter, body: Mapping[str, Any], kind: str) -> None:
    writer.seed(_ref(body, kind), body.get("status"))
    index.put(body, kind)
    writer.poke()


def _delete_resource(index: ClusterIndex, writer: StatusWriter, body: Mapping[str, Any], kind: str) -> None:
    writer.forget(_ref(body, kind))
    index.delete(body, kind)
    writer.poke()
