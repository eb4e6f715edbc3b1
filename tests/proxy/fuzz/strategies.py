"""Hypothesis strategies and settings shared by the fuzz tests.

Inputs are built near the valid shapes (a valid request with some fields replaced by anything
JSON can hold), because wholly random JSON is refused at the first field and reaches nothing
deeper. `FUZZ` is deterministic and database-free so a CI run is the same every time; set
`LLMROUTE_FUZZ_EXAMPLES` to search longer locally.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("LLMROUTE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# Names that the code under test looks up, so that random objects hit real branches.
FIELD_NAMES = (
    "model", "messages", "role", "content", "type", "text", "image_url", "url", "tool_calls", "id", "function",
    "name", "arguments", "tool_call_id", "tools", "tool_choice", "parameters", "stream", "stream_options",
    "include_usage", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "n", "seed",
    "response_format", "json_schema", "schema", "logit_bias", "user", "input", "system", "source", "data",
    "media_type", "tool_use_id", "input_schema", "thinking", "budget_tokens", "metadata", "user_id",
    "stop_sequences", "choices", "message", "delta", "index", "finish_reason", "usage", "prompt_tokens",
    "completion_tokens", "total_tokens", "prompt_tokens_details", "cached_tokens", "completion_tokens_details",
    "reasoning_tokens", "error", "code", "param", "status", "details", "retryDelay", "@type", "candidates",
    "parts", "functionCall", "args", "finishReason", "usageMetadata", "promptTokenCount",
    "candidatesTokenCount", "promptFeedback", "blockReason", "stop_reason", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens", "content_block", "partial_json", "embedding",
    "embeddings", "values", "object", "refusal", "reasoning_effort", "file", "file_data", "input_audio",
)

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "user", "assistant", "system", "tool", "text", "function", "stop", "length",
                     "tool_use", "end_turn", "image_url", "auto", "required", "none", "STOP", "SAFETY"]),
)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(KEYS, inner, max_size=5)),
                        max_leaves=max_leaves)


ANY_JSON = json_values()


@st.composite
def mutated(draw: st.DrawFn, base: Any, depth: int = 0, values: st.SearchStrategy[Any] = ANY_JSON,
            keys: st.SearchStrategy[Any] = KEYS) -> Any:
    """`base` with some of its values, at any depth, replaced by anything (`values`), dropped, or kept;
    sometimes a key (`keys`) added."""
    if depth > 6:
        return base
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(values)
    if isinstance(base, dict):
        out = {}
        for key, value in base.items():
            if draw(st.integers(0, 11)) == 0:
                continue  # dropped
            out[key] = draw(mutated(value, depth + 1, values, keys))
        if draw(st.integers(0, 5)) == 0:
            out[draw(keys)] = draw(values)
        return out
    if isinstance(base, list):
        items = [draw(mutated(item, depth + 1, values, keys)) for item in base]
        if draw(st.integers(0, 5)) == 0:
            items.append(draw(values))
        return items
    return base


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
CHAT_BASE = {
    "model": "m", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["x"], "n": 1, "seed": 3,
    "stream": True, "stream_options": {"include_usage": True}, "user": "u",
    "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}},
    "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                                                "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": "and?"},
    ],
}
MESSAGES_BASE = {
    "model": "m", "max_tokens": 50, "temperature": 0.5, "top_k": 4, "stop_sequences": ["x"], "stream": True,
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "metadata": {"user_id": "u"}, "thinking": {"type": "enabled", "budget_tokens": 2000},
    "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "AAAA"}},
                                     {"type": "document", "source": {"type": "text", "data": "doc"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                          {"type": "text", "text": "calling"},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "42"}]}]},
    ],
}
RESPONSES_BASE: dict[str, Any] = {
    "model": "m", "instructions": "be brief", "max_output_tokens": 50, "temperature": 0.5, "top_p": 0.9,
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                           {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
              {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
              {"type": "function_call_output", "call_id": "c1", "output": "42"}],
    "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}],
    "tool_choice": "auto", "text": {"format": {"type": "text"}}, "reasoning": {"effort": "low"},
    "stream": True, "store": False, "metadata": {"k": "v"}, "user": "u",
}
EMBED_BASE = {"model": "m", "input": ["a", "b"], "encoding_format": "float", "dimensions": 8}

chat_requests = st.one_of(mutated(CHAT_BASE), ANY_JSON)
messages_requests = st.one_of(mutated(MESSAGES_BASE), ANY_JSON)
embedding_requests = st.one_of(mutated(EMBED_BASE), ANY_JSON)
responses_requests = st.one_of(mutated(RESPONSES_BASE), ANY_JSON)


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at arbitrary byte boundaries (mid-line, mid-character included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces
