"""kopf handlers: every watched object goes into the cluster index, nothing else happens here.

Watch-event handlers (`kopf.on.event`) rather than kopf's change handlers: the index is rebuilt from
the watch streams after every restart, so the operator needs no finalizers and no annotations on the
resources, and no write access to them. Handlers are coroutines so that they run in the event loop
that the hub reads the index from (kopf runs plain functions in threads).

Secrets are not watched: `SecretReader` gets the ones that providers name.
"""

from __future__ import annotations

from typing import Any

import kopf

from llmroute_operator.index import ClusterIndex
from llmroute_operator.status import ObjectRef
from llmroute_operator.writer import SecretReader, StatusWriter

GROUP, VERSION = "llmroute.dev", "v1alpha1"


def register(registry: kopf.OperatorRegistry, index: ClusterIndex, writer: StatusWriter,
             secrets: SecretReader) -> None:
    @kopf.on.event(GROUP, VERSION, "llmproviders", registry=registry)
    async def provider_event(event: kopf.RawEvent, **_: Any) -> None:
        _resource(index, writer, event, "LLMProvider")
        secrets.poke()

    @kopf.on.event(GROUP, VERSION, "llmroutes", registry=registry)
    async def route_event(event: kopf.RawEvent, **_: Any) -> None:
        _resource(index, writer, event, "LLMRoute")

    @kopf.on.event("", "v1", "pods", registry=registry)
    async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
        _apply(index, event, "Pod")

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_event(event: kopf.RawEvent, **_: Any) -> None:
        _apply(index, event, "Node")


def _resource(index: ClusterIndex, writer: StatusWriter, event: kopf.RawEvent, kind: str) -> None:
    body = event["object"]
    metadata = body.get("metadata") or {}
    ref: ObjectRef = (kind, str(metadata.get("namespace", "")), str(metadata.get("name", "")))
    if event["type"] == "DELETED":
        writer.forget(ref)
    else:
        writer.seed(ref, body.get("status"))
    _apply(index, event, kind)
    writer.poke()


def _apply(index: ClusterIndex, event: kopf.RawEvent, kind: str) -> None:
    if event["type"] == "DELETED":
        index.delete(event["object"], kind)
    else:
        index.put(event["object"], kind)
