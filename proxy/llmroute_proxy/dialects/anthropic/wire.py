"""The Anthropic Messages API's wire tables, read both ways: by the provider that sends requests
to Anthropic and reads its answers, and by the front door that takes Messages requests from
clients and writes Messages answers (providers.md §2, §5.5, §5.6)."""

from __future__ import annotations

from typing import Any

import orjson

from llmroute_proxy.dialects.base import Usage, reported_tier

JSON = dict[str, Any]

FINISH_REASONS = {  # Anthropic `stop_reason` → OpenAI `finish_reason`, for answers read from Anthropic
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
"""OpenAI `finish_reason` → Anthropic `stop_reason`, for answers written in Anthropic's shape."""
_FALLBACK_MESSAGE_ID = "msg_llmroute"


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from_anthropic(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    cache_read = usage.get("cache_read_input_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    written = usage.get("cache_creation")  # the writes' split by lifetime, which Anthropic bills apart
    server_tools = usage.get("server_tool_use")
    details = usage.get("output_tokens_details") or {}
    return Usage(input_tokens=(usage.get("input_tokens") or 0) + cache_read + cache_write,
                 output_tokens=usage.get("output_tokens") or 0,
                 cached_input_tokens=cache_read, cache_write_tokens=cache_write,
                 reasoning_tokens=details.get("thinking_tokens") or 0,
                 cache_write_1h_tokens=min((written.get("ephemeral_1h_input_tokens") or 0)
                                           if isinstance(written, dict) else 0, cache_write),
                 web_searches=(server_tools.get("web_search_requests") or 0) if isinstance(server_tools, dict) else 0,
                 service_tier=reported_tier(usage.get("service_tier")))


def message_id(upstream_id: Any) -> str:
    """An Anthropic-style `msg_` id: Anthropic's own as it is, another provider's made one (`chatcmpl-9` →
    `msg_chatcmpl9`), so clients that check the prefix, or log ids by it, see what Anthropic would send."""
    if not isinstance(upstream_id, str) or not upstream_id:
        return _FALLBACK_MESSAGE_ID
    if upstream_id.startswith("msg_"):
        return upstream_id
    return "msg_" + ("".join(c for c in upstream_id if c.isascii() and c.isalnum()) or "llmroute")


def stop_reason(finish_reason: Any, called: bool = False) -> str:
    """`called`: the answer calls tools. Claude ends every such answer with `tool_use`, and agent loops run
    the calls only then; OpenAI ends a call the request named with `stop` (vllm-project/vllm#25054)."""
    reason = STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    return "tool_use" if called and reason == "end_turn" else reason


def anthropic_usage(usage: Usage) -> JSON:
    """Anthropic counts cache reads and writes outside `input_tokens`; OpenAI counts them inside."""
    fresh = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
    return {"input_tokens": max(fresh, 0), "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_input_tokens}


def tool_call(call_id: str, name: str, tool_input: Any) -> JSON:
    """An Anthropic `tool_use` block's call in OpenAI's shape: `input` becomes the `arguments` string."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(tool_input).decode()}}


def arguments_object(arguments: str | bytes) -> JSON | None:
    """OpenAI `arguments` as the JSON object Anthropic's `input` must be; None when they are not one."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
