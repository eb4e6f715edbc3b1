"""What the task-aware router costs per request, next to what parsing the request costs.

Run: `.venv/bin/python bench/router.py [--rounds N]`. For a short chat prompt, a ~2k-token
prompt and a ~16k-token prompt it times `choose_tier` (fresh `RequestFacts` each time, as
the server builds them per request) on a route with five rules (header, size, code,
keywords, tools), and `orjson.loads` of the same request body as the baseline. The prompts
are prose that matches no rule, so every condition is evaluated: the worst case.
"""

from __future__ import annotations

import argparse
import random

import orjson

from _timing import per_call_us
from llmroute_proxy.routing.experiments import choose_arm
from llmroute_proxy.routing.rules import RequestFacts, choose_tier
from llmroute_proxy.table import (
    Experiment,
    HeaderMatch,
    ProviderType,
    Route,
    Rule,
    RuleMatch,
    Target,
    TargetId,
    Tier,
)

SENTENCES = [
    "The committee met on Tuesday to review the budget for the coming year.",
    "Several residents asked why the repairs to the roof had taken so long.",
    "Mountains shape the weather around them, and the far side often lies in a rain shadow.",
    "Travellers crossing a range can see the landscape change within a few dozen kilometres.",
    "Please keep the answer short, friendly and suitable for a newsletter.",
]


def _target(provider: str, model: str) -> Target:
    return Target(id=TargetId(f"{provider}/{model}@eu"), provider=provider, provider_type=ProviderType.OPENAI,
                  model=model, url="https://api.example.com/v1", region="eu")


def realistic_route() -> Route:
    tiers = {
        "small": Tier("small", (_target("openai", "gpt-4o-mini"), _target("anthropic", "claude-haiku"))),
        "large": Tier("large", (_target("openai", "gpt-4o"), _target("anthropic", "claude-sonnet"))),
        "code": Tier("code", (_target("openai", "gpt-4.1"), _target("deepseek", "deepseek-coder"))),
        "long": Tier("long", (_target("gemini", "gemini-2.5-pro"),)),
    }
    rules = (
        Rule("premium", RuleMatch(header=HeaderMatch("x-llmroute-priority", "high")), "large"),
        Rule("long-context", RuleMatch(min_prompt_tokens=32_000), "long"),
        Rule("code", RuleMatch(contains_code=True), "code"),
        Rule("cheap-tasks", RuleMatch(keywords=("translate", "summarize", "summarise", "classify", "extract")),
             "small"),
        Rule("agents", RuleMatch(has_tools=True, max_prompt_tokens=8000), "large"),
    )
    experiments = (Experiment("haiku-vs-mini", "small", 10.0, (_target("anthropic", "claude-haiku"),), "user"),)
    return Route(name="default", tiers=tiers, rules=rules, default_tier="small", experiments=experiments)


def prose(approx_tokens: int, rng: random.Random) -> str:
    words: list[str] = []
    while len(words) < approx_tokens * 0.75:
        words.extend(rng.choice(SENTENCES).split())
    return " ".join(words)


def request_body(prompt: str) -> bytes:
    return orjson.dumps({
        "model": "auto",
        "user": "user-1234",
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": prompt}],
        "max_tokens": 512,
    })



def bench_case(name: str, prompt: str, route: Route, rounds: int) -> None:
    body = request_body(prompt)
    parsed = orjson.loads(body)
    messages = parsed["messages"]
    headers = {"content-type": "application/json"}

    def route_once() -> str:
        facts = RequestFacts("auto", messages, headers, False, parsed.get("user"))
        choice = choose_tier(route, facts)
        choose_arm(route, choice.tier, facts, 0.5)
        return choice.tier

    tier = route_once()
    estimate = RequestFacts("auto", messages, headers, False, None).prompt_tokens
    baseline = per_call_us(lambda: orjson.loads(body), rounds)
    router = per_call_us(route_once, rounds)
    print(f"{name:<8} {len(body):>8} B  ≈{estimate:>6} tok  tier={tier:<6} "
          f"router {router:8.1f} µs   orjson.loads {baseline:7.1f} µs   ratio {router / baseline:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000, help="calls per timed batch")
    args = parser.parse_args()
    rng = random.Random(1)
    route = realistic_route()
    print("choose_tier + choose_arm per request (5 rules, no rule matching: every condition evaluated)")
    bench_case("short", "Can you suggest a name for our new bakery in the old town?", route, args.rounds)
    bench_case("2k", prose(2000, rng), route, max(1, args.rounds // 4))
    bench_case("16k", prose(16_000, rng), route, max(1, args.rounds // 16))


if __name__ == "__main__":
    main()
