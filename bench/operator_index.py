"""What the operator's cluster index costs to answer every pod's table, with and without its compile cache.

Run: `.venv/bin/python bench/operator_index.py [--pods 1000] [--routes 20] [--regions 3]`. One namespace,
`--routes` LLMRoutes (each with two tiers over two providers, a rule and a budget) each selecting the
pods labelled `app=app-N`; pods spread round-robin over the routes and over nodes in `--regions`
regions, so there are routes × regions distinct tables. Three rounds, each asking `table_for` of every
pod, as the hub does after a change: cold (everything compiled), one route changed, and the same two
rounds with the cache disabled. In process; nothing is started.
"""

from __future__ import annotations

import argparse
import base64
import time
from typing import Any

from llmroute_operator.contracts import PodRef
from llmroute_operator.index import ClusterIndex

API = "llmroute.dev/v1alpha1"


def provider(name: str, regions: list[str]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "LLMProvider", "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"type": "openai", "endpoints": [{"region": r, "url": f"https://{r}.llm.example/v1"} for r in regions],
                     "credentials": {"secretRef": {"name": "keys", "key": "openai"}},
                     "limits": {"requestsPerMinute": 600, "maxConcurrency": 8}}}


def node(name: str, region: str) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "labels": {"topology.kubernetes.io/region": region}}}


def pod(name: str, app: str, node_name: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "team-a", "uid": name, "labels": {"app": app}},
            "spec": {"nodeName": node_name}}


def build(pods: int, routes: int, regions: int, cache_size: int) -> ClusterIndex:
    names = [f"region-{r}" for r in range(regions)]
    index = ClusterIndex(cache_size=cache_size)
    for r, region in enumerate(names):
        index.put(node(f"node-{r}", region))
    index.put(provider("openai-main", names))
    index.put(provider("backup", names))
    index.put({"kind": "Secret", "metadata": {"name": "keys", "namespace": "team-a"},
               "data": {"openai": base64.b64encode(b"sk-bench").decode()}})
    for i in range(routes):
        index.put(_route(i, 1))
    for p in range(pods):
        index.put(pod(f"pod-{p}", f"app-{p % routes}", f"node-{p % regions}"))
    return index


def _route(i: int, generation: int, model: str = "gpt-4o-mini") -> dict[str, Any]:
    spec = {"podSelector": {"matchLabels": {"app": f"app-{i}"}}, "defaultTier": "fast",
            "budget": {"limitUSD": 100.0 + i, "period": "day"},
            "tiers": {"fast": {"targets": [{"provider": "openai-main", "model": model},
                                           {"provider": "backup", "model": "gpt-4o-mini", "priority": 1}]},
                      "large": {"targets": [{"provider": "openai-main", "model": "gpt-4o"}]}},
            "rules": [{"name": "long", "when": {"minPromptTokens": 8000}, "tier": "large"}]}
    return {"apiVersion": API, "kind": "LLMRoute",
            "metadata": {"name": f"route-{i}", "namespace": "team-a", "generation": generation}, "spec": spec}


def sweep(index: ClusterIndex, pods: int) -> tuple[float, int, int]:
    """Seconds to answer every pod, and the compilations and cache hits it took."""
    compiled, hits = index.compilations, index.cache_hits
    start = time.perf_counter()
    for p in range(pods):
        assert index.table_for(PodRef("team-a", f"pod-{p}")) is not None
    return time.perf_counter() - start, index.compilations - compiled, index.cache_hits - hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--routes", type=int, default=20)
    parser.add_argument("--regions", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.pods} pods, {args.routes} routes, {args.regions} regions "
          f"→ {args.routes * args.regions} distinct tables\n")
    print(f"{'round':<28}{'seconds':>10}{'compilations':>14}{'hit ratio':>11}{'µs/pod':>10}")
    for label, cache_size in (("cache", 4096), ("no cache", 0)):
        index = build(args.pods, args.routes, args.regions, cache_size)
        for round_name, change in (("cold", None), ("one route changed", 0)):
            if change is not None:
                index.put(_route(change, 2, model="gpt-4.1-mini"))
            seconds, compiled, hits = sweep(index, args.pods)
            ratio = hits / max(hits + compiled, 1)
            per_pod = seconds * 1e6 / args.pods
            print(f"{label + ', ' + round_name:<28}{seconds:>10.3f}{compiled:>14}{ratio:>11.1%}{per_pod:>10.0f}")


if __name__ == "__main__":
    main()
