"""llmroute sidecar: one OpenAI-compatible API in, every provider's native API out."""

__version__ = "0.1.0"
