"""LLMProvider and LLMRoute documents for tests: built as dicts, written as the YAML a sidecar reads.

Every test that needs a routing configuration builds it here, so a document's shape is written once.
A provider's URL may name a simulator by placeholder, `"{oai}/v1"`: `resolved` (which `Stack` calls)
fills each in with that simulator's URL (`-` in a simulator's name is `_` in its placeholder).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from llmroute_proxy.spec import API_VERSION

Document = dict[str, Any]


QUICK_FALLBACK: dict[str, Any] = {"maxAttempts": 3, "perTryTimeout": "3s", "firstByteTimeout": "2s",
                                  "idleTimeout": "2s", "overallTimeout": "10s"}
"""A route's `fallback` for tests: deadlines short enough that a hanging simulator fails the attempt fast."""


def model(name: str, *, context_window: int | None = None, max_output_tokens: int | None = None,
          input_per_mtok: float | None = None, output_per_mtok: float | None = None,
          cached_input_per_mtok: float | None = None, cache_write_per_mtok: float | None = None,
          cache_write_1h_per_mtok: float | None = None) -> dict[str, Any]:
    """One entry of a provider's `models`, with its pricing when any price is given."""
    entry: dict[str, Any] = {"name": name}
    if context_window is not None:
        entry["contextWindow"] = context_window
    if max_output_tokens is not None:
        entry["maxOutputTokens"] = max_output_tokens
    prices = {"inputPerMTok": input_per_mtok, "outputPerMTok": output_per_mtok,
              "cachedInputPerMTok": cached_input_per_mtok, "cacheWritePerMTok": cache_write_per_mtok,
              "cacheWrite1hPerMTok": cache_write_1h_per_mtok}
    if any(price is not None for price in prices.values()):
        entry["pricing"] = {key: price for key, price in prices.items() if price is not None}
    return entry


def provider(name: str, kind: str, url: str | Sequence[tuple[str, str]], *, key_env: str | None = None,
             credentials: Mapping[str, Any] | None = None, region: str = "here",
             models: Iterable[dict[str, Any] | str] = (), **spec: Any) -> Document:
    """An LLMProvider: `url` is one endpoint in `region`, or (region, url) pairs; the key comes from
    `key_env` (or the `credentials` block as given); `spec` adds the rest (`azure`, `limits`, `tls`…)."""
    endpoints = [{"region": region, "url": url}] if isinstance(url, str) else \
        [{"region": where, "url": address} for where, address in url]
    body: dict[str, Any] = {"type": kind, "endpoints": endpoints}
    if key_env is not None:
        body["credentials"] = {"env": key_env}
    elif credentials is not None:
        body["credentials"] = dict(credentials)
    listed = [model(m) if isinstance(m, str) else m for m in models]
    if listed:
        body["models"] = listed
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "LLMProvider", "metadata": {"name": name}, "spec": body}


def target(provider_name: str, model_name: str, **fields: Any) -> dict[str, Any]:
    """One target of a tier (`priority`, `weight`… as keyword arguments)."""
    return {"provider": provider_name, "model": model_name, **fields}


def route(name: str, tiers: Mapping[str, Sequence[dict[str, Any]]], *, default_tier: str, **spec: Any) -> Document:
    """An LLMRoute: each tier's targets, its default tier, and the rest of its spec in camelCase keyword
    arguments (`rules`, `fallback`, `outlierDetection`, `budget`, `experiments`…)."""
    body: dict[str, Any] = {"tiers": {tier: {"targets": list(targets)} for tier, targets in tiers.items()}}
    body.update(spec)
    body["defaultTier"] = default_tier
    return {"apiVersion": API_VERSION, "kind": "LLMRoute", "metadata": {"name": name}, "spec": body}


def named(documents: Sequence[Document], name: str) -> Document:
    """The document called `name`."""
    return next(doc for doc in documents if doc["metadata"]["name"] == name)


def edited(documents: Sequence[Document], name: str, **spec: Any) -> list[Document]:
    """A copy of `documents` whose document `name` has these spec fields set (None removes one)."""
    out = copy.deepcopy(list(documents))
    body = named(out, name)["spec"]
    for key, value in spec.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return out


def with_tier(documents: Sequence[Document], route_name: str, tier: str,
              targets: Sequence[dict[str, Any]]) -> list[Document]:
    """A copy of `documents` whose route `route_name` has one more tier."""
    out = copy.deepcopy(list(documents))
    named(out, route_name)["spec"]["tiers"][tier] = {"targets": list(targets)}
    return out


def resolved(documents: Sequence[Document], urls: Mapping[str, str]) -> list[Document]:
    """A copy of `documents` with every `{name}` placeholder in a string filled in from `urls`."""
    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        if isinstance(node, str) and "{" in node:
            return node.format(**urls)
        return node
    return [fill(doc) for doc in documents]


def yaml_text(documents: Sequence[Document]) -> str:
    """The documents as one multi-document YAML file."""
    return yaml.safe_dump_all(list(documents), sort_keys=False)
