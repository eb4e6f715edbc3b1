"""Simulated OpenAI-, Azure OpenAI-, Anthropic-, Bedrock-, Gemini- and Vertex AI-style providers for the demo, the tests and the benchmarks.

Each factory returns an aiohttp `web.Application` that speaks its provider's wire format well
enough for the official SDKs (the OpenAI and Azure ones the Responses API too, `sim.responses`), answers deterministically from the request, and applies the
faults scripted in its `FaultPlan` (in process, or over HTTP at `/_sim/faults`).
`SimServer` runs one on a loopback port and can make that port refuse connections; with a
`Delivery` its answers arrive fragmented and delayed, and with an SSL context over HTTPS
(`sim.tls.LocalCA` makes the certificates; it needs the `test` extra's `cryptography`).
`sim.vertex.vertex_app` (Gemini and Claude behind Vertex AI's front end) is imported from its module.
"""

from llmroute_proxy.sim.anthropic import anthropic_app
from llmroute_proxy.sim.azure_openai import azure_openai_app
from llmroute_proxy.sim.bedrock import bedrock_app
from llmroute_proxy.sim.faults import Fault, FaultKind, FaultPlan
from llmroute_proxy.sim.gemini import gemini_app
from llmroute_proxy.sim.network import Delivery
from llmroute_proxy.sim.openai import openai_app
from llmroute_proxy.sim.runtime import RecordedRequest, SimState, SimStats, sim_state
from llmroute_proxy.sim.server import SimServer

__all__ = [
    "Delivery",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "RecordedRequest",
    "SimServer",
    "SimState",
    "SimStats",
    "anthropic_app",
    "azure_openai_app",
    "bedrock_app",
    "gemini_app",
    "openai_app",
    "sim_state",
]
