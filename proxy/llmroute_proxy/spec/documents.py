"""Opening documents (apiVersion, kind, metadata) and parsing sets of them, cross-checked."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmroute_proxy.spec.fields import Fields, Opened, Sink, SpecError, describe, did_you_mean, quoted
from llmroute_proxy.spec.provider import ProviderSpec, provider_spec
from llmroute_proxy.spec.route import RouteSpec, route_spec

API_VERSION = "llmroute.dev/v1alpha1"
PROVIDER_KIND = "LLMProvider"
ROUTE_KIND = "LLMRoute"

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class Specs:
    """The valid documents of a set, and every error of the invalid ones."""

    providers: tuple[ProviderSpec, ...]
    routes: tuple[RouteSpec, ...]
    errors: tuple[SpecError, ...]


def parse_documents(documents: Iterable[object]) -> Specs:
    """Every document of a set, cross-checked: routes may only name valid providers of the same set.

    `providers` and `routes` hold the documents free of errors (so they compile), in document order.
    Empty documents (None, as a stray `---` gives) are skipped but keep their place in the numbering.
    """
    opened = [_open(index, document) for index, document in enumerate(documents) if document is not None]
    providers: dict[str, ProviderSpec | None] = {}
    for doc in opened:
        if doc.kind == PROVIDER_KIND:
            _register(doc, providers, provider_spec(doc) if doc.parse else None)
    routes: dict[str, RouteSpec | None] = {}
    for doc in opened:
        if doc.kind == ROUTE_KIND:
            _register(doc, routes, route_spec(doc, providers) if doc.parse else None)
    return Specs(
        providers=tuple(p for p in providers.values() if p is not None),
        routes=tuple(r for r in routes.values() if r is not None),
        errors=tuple(error for doc in opened for error in doc.sink.errors),
    )


def parse_provider(document: object) -> tuple[ProviderSpec | None, list[SpecError]]:
    doc = _open(0, document)
    spec = provider_spec(doc) if _expect(doc, PROVIDER_KIND) else None
    return (spec if not doc.sink.errors else None), doc.sink.errors


def parse_route(
    document: object, providers: Mapping[str, ProviderSpec | None]
) -> tuple[RouteSpec | None, list[SpecError]]:
    """`providers` holds every provider name in scope; None marks one that exists but is invalid."""
    doc = _open(0, document)
    spec = route_spec(doc, providers) if _expect(doc, ROUTE_KIND) else None
    return (spec if not doc.sink.errors else None), doc.sink.errors



def _open(index: int, document: object) -> Opened:
    placeholder = f"<document {index + 1}>"
    if not isinstance(document, Mapping):
        sink = Sink("", placeholder)
        sink.error("", f"expected a mapping with apiVersion, kind, metadata and spec, found {describe(document)}")
        return Opened(None, placeholder, sink, None, parse=False)
    kind = document.get("kind")
    metadata = document.get("metadata")
    raw_name = metadata.get("name") if isinstance(metadata, Mapping) else None
    name = raw_name if isinstance(raw_name, str) and raw_name else placeholder
    if kind not in (PROVIDER_KIND, ROUTE_KIND):
        sink = Sink("", name)
        sink.error("kind", _unknown_kind(kind))
        return Opened(None, name, sink, None, parse=False)
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
    return Opened(kind, name, sink, spec, parse=version_ok and isinstance(spec, Mapping))


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


def _register(doc: Opened, seen: dict[str, Any], spec: object) -> None:
    """Keep the first document of each name; an invalid one is kept as None, so it is still known."""
    if doc.name.startswith("<"):
        return
    if doc.name in seen:
        doc.sink.error("metadata.name", f"duplicate {doc.kind} name '{doc.name}'")
    else:
        seen[doc.name] = None if doc.sink.errors else spec


def _expect(doc: Opened, kind: str) -> bool:
    if doc.kind is not None and doc.kind != kind:
        doc.sink.error("kind", f"expected {kind}, found {doc.kind}")
    return doc.kind == kind and doc.parse

