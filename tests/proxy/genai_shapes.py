"""Whether google-genai reads a Gemini answer: strictly, every member known to its types."""

from __future__ import annotations

from typing import Any

from google.genai import types

NEWER_THAN_THE_SDK = frozenset({"serviceTier"})
"""`usageMetadata` members the API sends that google-genai 3.6 does not model: it drops them (its
`_from_response` keeps only what its types know) and reads the tier from `x-gemini-service-tier`."""


def assert_genai_reads(response: dict[str, Any]) -> None:
    usage = response.get("usageMetadata")
    if isinstance(usage, dict):
        response = {**response, "usageMetadata": {k: v for k, v in usage.items() if k not in NEWER_THAN_THE_SDK}}
    types.GenerateContentResponse.model_validate(response)
