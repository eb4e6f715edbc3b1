"""`llmroute-proxy demo`: the sidecar and three simulated providers on loopback, one of them flaky.

Everything a newcomer needs to watch routing, failover and cost happen in five minutes,
with no key and no network: the simulators speak the real OpenAI, Anthropic and Gemini APIs.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

from llmroute_proxy.config import load_table
from llmroute_proxy.server.runner import Listen, build_sidecar, serve_until_stopped
from llmroute_proxy.server.state import Settings
from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, SimServer, anthropic_app, gemini_app, openai_app

SIM_PORT_BASE = 15410  # OpenAI-style on the base port, Anthropic-style on +1, Gemini-style on +2
DEMO_KEYS = {"DEMO_OPENAI_KEY": "sk-demo-openai", "DEMO_ANTHROPIC_KEY": "sk-ant-demo",
             "DEMO_GEMINI_KEY": "demo-gemini-key"}

DEMO_CONFIG_TEMPLATE = """\
# The demo's routing: three providers (simulated on loopback), one route with three tiers.
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: openai}
spec:
  type: openai
  endpoints: [{region: demo, url: "http://127.0.0.1:%(openai)d/v1"}]
  credentials: {env: DEMO_OPENAI_KEY}
  models:
    - {name: gpt-4o-mini, contextWindow: 128000, maxOutputTokens: 16384, pricing: {inputPerMTok: 0.15, outputPerMTok: 0.60, cachedInputPerMTok: 0.075}}
    - {name: gpt-4o, contextWindow: 128000, maxOutputTokens: 16384, pricing: {inputPerMTok: 2.50, outputPerMTok: 10.00, cachedInputPerMTok: 1.25}}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: anthropic}
spec:
  type: anthropic
  endpoints: [{region: demo, url: "http://127.0.0.1:%(anthropic)d"}]
  credentials: {env: DEMO_ANTHROPIC_KEY}
  models:
    - {name: claude-sonnet-4-5, contextWindow: 200000, maxOutputTokens: 64000,
       pricing: {inputPerMTok: 3.00, outputPerMTok: 15.00, cachedInputPerMTok: 0.30, cacheWritePerMTok: 3.75,
                 cacheWrite1hPerMTok: 6.00, webSearchPer1K: 10.00}}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: gemini}
spec:
  type: gemini
  endpoints: [{region: demo, url: "http://127.0.0.1:%(gemini)d"}]
  credentials: {env: DEMO_GEMINI_KEY}
  models:
    - {name: gemini-2.5-flash, contextWindow: 1000000, maxOutputTokens: 65536, pricing: {inputPerMTok: 0.30, outputPerMTok: 2.50}}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: demo}
spec:
  tiers:
    fast:                      # cheap and quick; OpenAI is the flaky one, Gemini takes over
      targets:
        - {provider: openai, model: gpt-4o-mini}
        - {provider: gemini, model: gemini-2.5-flash, priority: 1}
    smart:                     # Anthropic first; Gemini when Anthropic fails
      targets:
        - {provider: anthropic, model: claude-sonnet-4-5}
        - {provider: gemini, model: gemini-2.5-flash, priority: 1}
    code:
      targets:
        - {provider: anthropic, model: claude-sonnet-4-5}
        - {provider: openai, model: gpt-4o, priority: 1}
  rules:
    - {name: code, when: {containsCode: true}, tier: code}
    - {name: thinking-words, when: {keywords: [analyze, prove, "step by step"]}, tier: smart}
    - {name: short, when: {maxPromptTokens: 200}, tier: fast}
  defaultTier: smart
  fallback: {maxAttempts: 3, firstByteTimeout: 5s, overallTimeout: 30s}
  budget: {limitUSD: 5, period: day, alertAtPercent: 80, onExceeded: "downgrade:fast"}
"""


def sim_ports(base: int = SIM_PORT_BASE) -> dict[str, int]:
    return {"openai": base, "anthropic": base + 1, "gemini": base + 2}


def demo_config(ports: dict[str, int]) -> str:
    return DEMO_CONFIG_TEMPLATE % ports

CHEAT_SHEET = """
llmroute demo is up. The sidecar listens on http://127.0.0.1:{port}/v1
(three simulated providers run on ports {openai}, {anthropic}, {gemini}{flaky_note}).

  # a short prompt: the 'short' rule picks the fast tier (watch x-llmroute-* headers)
  curl -si localhost:{port}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model":"auto","messages":[{{"role":"user","content":"Hi there!"}}]}}'

  # code in the prompt goes to the code tier; a tier can also be named directly
  curl -si localhost:{port}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model":"auto","messages":[{{"role":"user","content":"Why does this fail?\\ndef f(x):\\n    return x +"}}]}}'

  # streaming, with usage at the end
  curl -sN localhost:{port}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model":"smart","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"Tell me a story"}}]}}'

  # break Anthropic (every call 529 overloaded), then ask the smart tier: it fails over to Gemini
  curl -s -X POST localhost:{anthropic}/_sim/faults -d '{{"mode":"always","fault":{{"kind":"status","status":529}}}}'
  curl -si localhost:{port}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model":"smart","messages":[{{"role":"user","content":"Analyze this"}}]}}'
  curl -s -X DELETE localhost:{anthropic}/_sim/faults     # heal it

  # the Anthropic Messages API works too, routed to any provider
  curl -s localhost:{port}/v1/messages -H 'content-type: application/json' \\
    -d '{{"model":"fast","max_tokens":100,"messages":[{{"role":"user","content":"Hello"}}]}}'

  # the OpenAI Responses API too; continue the conversation with "previous_response_id":"<its id>",
  # whichever provider answers the next turn
  curl -s localhost:{port}/v1/responses -H 'content-type: application/json' \\
    -d '{{"model":"smart","input":"My name is Ada."}}'

  # the status page, Prometheus metrics and the JSON status
  open http://127.0.0.1:{admin}/      curl localhost:{admin}/metrics      curl localhost:{admin}/status

  # or any OpenAI SDK:  OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="unused")

Ctrl-C stops everything.
"""


async def run_demo(listen: Listen, flaky: bool = True, settings: Settings | None = None,
                   sim_port_base: int = SIM_PORT_BASE) -> int:
    ports = sim_ports(sim_port_base)
    for name, value in DEMO_KEYS.items():
        os.environ.setdefault(name, value)
    openai_faults = FaultPlan(rng=random.Random(7))
    if flaky:
        openai_faults.probability(Fault(FaultKind.STATUS, status=503), 0.3)
    sims = [
        await SimServer.start(openai_app(DEMO_KEYS["DEMO_OPENAI_KEY"], faults=openai_faults),
                              port=ports["openai"]),
        await SimServer.start(anthropic_app(DEMO_KEYS["DEMO_ANTHROPIC_KEY"]), port=ports["anthropic"]),
        await SimServer.start(gemini_app(DEMO_KEYS["DEMO_GEMINI_KEY"]), port=ports["gemini"]),
    ]
    with tempfile.TemporaryDirectory(prefix="llmroute-demo-") as tmp:
        config = Path(tmp) / "demo.yaml"
        config.write_text(demo_config(ports))
        sidecar = build_sidecar(settings or Settings())
        sidecar.install(load_table(config, region="demo"))

        def ready() -> None:
            note = "; the OpenAI one fails ~30% of calls" if flaky else ""
            print(CHEAT_SHEET.format(port=listen.port, admin=listen.admin_port, flaky_note=note, **ports),
                  file=sys.stderr, flush=True)

        try:
            await serve_until_stopped(sidecar, listen, on_ready=ready)
        finally:
            for sim in sims:
                await sim.close()
    return 0
