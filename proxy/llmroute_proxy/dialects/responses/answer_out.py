"""Canonical answers → Responses objects: the `response` a client gets, and the conversation
the store keeps for the next turn.

Output items come in the order OpenAI's own answers use: reasoning (when the provider showed
it), the message, then the function calls. Ids are made by the caller's `NewId` (`resp_…`,
`msg_…`, `fc_…`, `rs_…`); the tool call's upstream id is kept as `call_id`, which is what the
client sends back in `function_call_output`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.dialects.responses.request_in import ResponsesTurn

JSON = dict[str, Any]
NewId = Callable[[str], str]
"""`new_id("msg")` → a fresh id with that prefix (`msg_…`)."""

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_usage(usage: Usage | None) -> JSON | None:
    if usage is None:
        return None
    return {"input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens}


def incomplete_reason(finish_reason: Any) -> str | None:
    return _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None


def response_shell(turn: ResponsesTurn, response_id: str, created_at: int, model: str) -> JSON:
    """The Response object without output, as `response.created` shows it and every answer echoes it."""
    body = turn.body
    reasoning = body.get("reasoning") or {}
    text = body.get("text") or {}
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": "in_progress",
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {}, "model": model, "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"), "service_tier": "default",
        "store": turn.store, "temperature": body.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [{**tool, "strict": tool.get("strict", True), "parameters": tool.get("parameters")}
                  for tool in body.get("tools") or ()],
        "top_p": body.get("top_p", 1.0), "truncation": "disabled", "usage": None, "user": body.get("user"),
    }


def response_from_canonical(result: JSON, usage: Usage, turn: ResponsesTurn, response_id: str, created_at: int,
                            new_id: NewId) -> JSON:
    """The Response for a canonical `chat.completion`."""
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    incomplete = incomplete_reason(choice.get("finish_reason"))
    model = result.get("model")
    model = model if isinstance(model, str) and model else str(turn.canonical["model"])
    response = response_shell(turn, response_id, created_at, model)
    response["output"] = output_items(message, new_id, "incomplete" if incomplete else "completed")
    response["status"] = "incomplete" if incomplete else "completed"
    response["incomplete_details"] = {"reason": incomplete} if incomplete else None
    response["usage"] = response_usage(usage)
    return response


def output_items(message: JSON, new_id: NewId, status: str = "completed") -> list[JSON]:
    items: list[JSON] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        items.append(reasoning_item(new_id("rs"), reasoning))
    text = _text(message.get("content"))
    refusal = message.get("refusal")
    if text or (isinstance(refusal, str) and refusal):
        content: list[JSON] = []
        if text:
            content.append(output_text(text))
        if isinstance(refusal, str) and refusal:
            content.append({"type": "refusal", "refusal": refusal})
        items.append({"type": "message", "id": new_id("msg"), "status": status, "role": "assistant",
                      "content": content})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(function_call_item(new_id("fc"), call.get("id") or new_id("call"),
                                        function.get("name") or "", function.get("arguments") or "{}"))
    return items


def output_text(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, text: str) -> JSON:
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}]}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> JSON:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def assistant_message(output: list[JSON]) -> JSON | None:
    """The canonical assistant message for a Response's output: what the next turn continues."""
    texts: list[str] = []
    calls: list[JSON] = []
    for item in output:
        if item["type"] == "message":
            texts.extend(part["text"] for part in item["content"] if part["type"] == "output_text")
        elif item["type"] == "function_call":
            calls.append({"id": item["call_id"], "type": "function",
                          "function": {"name": item["name"], "arguments": item["arguments"]}})
    if not texts and not calls:
        return None
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""
