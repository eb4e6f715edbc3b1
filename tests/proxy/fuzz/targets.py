"""One target per provider type (Vertex AI: one per publisher), for driving each provider's translators directly."""

from __future__ import annotations

from llmroute_proxy.providers.base import Provider
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

URLS = {ProviderType.OPENAI: "https://api.openai.com/v1", ProviderType.OPENAI_COMPATIBLE: "http://127.0.0.1:9/v1",
        ProviderType.AZURE_OPENAI: "https://r.openai.azure.com", ProviderType.ANTHROPIC: "https://api.anthropic.com",
        ProviderType.GEMINI: "https://generativelanguage.googleapis.com",
        ProviderType.VERTEX: "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5",
        ProviderType.BEDROCK: "https://bedrock-runtime.us-east-1.amazonaws.com"}
MODELS = {ProviderType.BEDROCK: "anthropic.claude-sonnet-4-5-20250929-v1:0"}
"""A model each type's provider serves, where not any name does (Bedrock refuses all but Claude)."""


def target(provider_type: ProviderType, model: str = "m") -> Target:
    return Target(id=TargetId(f"{provider_type.value}/{model}@here"), provider=provider_type.value,
                  provider_type=provider_type, model=model, url=URLS[provider_type], region="here",
                  credential=Secret("sk-fuzz-key"))


PROVIDERS: list[tuple[Provider, Target]] = [(provider_for(kind), target(kind, MODELS.get(kind, "m")))
                                            for kind in ProviderType] + [
    (provider_for(ProviderType.VERTEX), target(ProviderType.VERTEX, "claude-m"))]
