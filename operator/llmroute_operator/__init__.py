"""The llmroute operator: LLMProvider/LLMRoute resources compiled per pod and pushed to the sidecars."""
