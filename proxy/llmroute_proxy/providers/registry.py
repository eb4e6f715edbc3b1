"""Provider type → the module that speaks its API. A new provider is one line here."""

from __future__ import annotations

from llmroute_proxy.providers.anthropic import AnthropicProvider
from llmroute_proxy.providers.azure_openai import AzureOpenAIProvider
from llmroute_proxy.providers.base import Provider, TokenCounter
from llmroute_proxy.providers.bedrock import BedrockProvider
from llmroute_proxy.providers.gemini import GeminiProvider
from llmroute_proxy.providers.guarded import GuardedProvider
from llmroute_proxy.providers.openai import OpenAICompatibleProvider, OpenAIProvider
from llmroute_proxy.providers.vertex import VertexProvider
from llmroute_proxy.table import ProviderType

PROVIDERS: dict[ProviderType, Provider] = {
    ProviderType.OPENAI: OpenAIProvider(),
    ProviderType.OPENAI_COMPATIBLE: OpenAICompatibleProvider(),
    ProviderType.AZURE_OPENAI: AzureOpenAIProvider(),
    ProviderType.ANTHROPIC: AnthropicProvider(),
    ProviderType.GEMINI: GeminiProvider(),
    ProviderType.VERTEX: VertexProvider(google=GeminiProvider(), anthropic=AnthropicProvider()),
    ProviderType.BEDROCK: BedrockProvider(),
}


GUARDED: dict[ProviderType, Provider] = {kind: GuardedProvider(provider) for kind, provider in PROVIDERS.items()}


def provider_for(provider_type: ProviderType) -> Provider:
    """The provider, its parsers guarded: an unreadable answer is the target's failure."""
    return GUARDED[provider_type]


def token_counter_for(provider_type: ProviderType) -> TokenCounter | None:
    """The provider's token counting, when its API has an endpoint for it (None: the sidecar estimates)."""
    provider = PROVIDERS[provider_type]
    return provider if isinstance(provider, TokenCounter) else None
