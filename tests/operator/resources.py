"""Kubernetes objects as the API server serves them: LLMProviders, LLMRoutes, pods, nodes, Secrets."""

from __future__ import annotations

import base64
from typing import Any

API_VERSION = "llmroute.dev/v1alpha1"
KEY = "sk-index-test-key-0123456789"
PRICED_MODELS = [{"name": "gpt-4o-mini", "pricing": {"inputPerMTok": 0.15, "outputPerMTok": 0.6}},
                 {"name": "gpt-4o", "pricing": {"inputPerMTok": 2.5, "outputPerMTok": 10.0}},
                 {"name": "m", "pricing": {"inputPerMTok": 1.0, "outputPerMTok": 2.0}}]
"""The models a provider lists unless a test gives its own: priced, as a real LLMProvider's are."""


def provider(name: str = "openai-main", namespace: str = "team-a", *, secret: str | None = "keys",
             regions: tuple[str, ...] = ("us-east-1", "eu-west-1"), rpm: float | None = 600,
             generation: int = 1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "openai",
        "endpoints": [{"region": r, "url": f"https://{r}.llm.example/v1"} for r in regions],
        **({"credentials": {"secretRef": {"name": secret, "key": "openai"}}} if secret else {}),
        **({"limits": {"requestsPerMinute": rpm, "maxConcurrency": 8}} if rpm is not None else {}),
        "models": PRICED_MODELS,
    }
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "LLMProvider",
            "metadata": {"name": name, "namespace": namespace, "generation": generation, "uid": f"uid-{name}"},
            "spec": body}


def route(name: str = "chat", namespace: str = "team-a", *, selector: dict[str, Any] | None = None,
          provider_name: str = "openai-main", model: str = "gpt-4o-mini", budget_usd: float | None = None,
          generation: int = 1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "podSelector": {"matchLabels": {"app": "chat"}} if selector is None else selector,
        "tiers": {"fast": {"targets": [{"provider": provider_name, "model": model}]}},
        "defaultTier": "fast",
    }
    if budget_usd is not None:
        body["budget"] = {"limitUSD": budget_usd, "period": "day"}
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "LLMRoute",
            "metadata": {"name": name, "namespace": namespace, "generation": generation, "uid": f"uid-{name}"},
            "spec": body}


def secret_data(**values: str) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def secret(name: str = "keys", namespace: str = "team-a", key: str = KEY) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "data": secret_data(openai=key + "\n")}


def pod(name: str = "chat-0", namespace: str = "team-a", *, labels: dict[str, str] | None = None,
        node: str | None = "node-eu") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "labels": {"app": "chat"} if labels is None else labels},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]}}


def node(name: str = "node-eu", region: str = "eu-west-1", zone: str = "eu-west-1a") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/region": region,
                                                  "topology.kubernetes.io/zone": zone}}}
