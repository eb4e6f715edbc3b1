"""Canonical answers → Responses objects: the `response` a client gets, and the conversation
the store keeps for the next turn.

Output items come in the order OpenAI's own answers use: reasoning (when the provider showed
it), the message, then the function calls. Ids are made by the caller's `NewId` (`resp_…`,
`msg_…`, `fc_…`, `rs_…`); the tool call's upstream id is kept as `call_id`, which is what the
client sends back in `function_call_output`. Claude's signed thinking blocks become the reasoning
item's `encrypted_content` (`dialects/thinking.py`): always in the items the store keeps, in the
answer only when the request's `include` asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.dialects.responses.request_in import ResponsesTurn
from llmroute_proxy.dialects.thinking import FIELD as THINKING_BLOCKS
from llmroute_proxy.dialects.thinking import token

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


class ResponseFrame:
    """The Response object's JSON around the members that change while it is answered: `status`,
    `error`, `incomplete_details`, `output` and `usage`. The rest, what the request asked for, is
    encoded once per response and echoed by every event that carries the whole response.

    `json()` writes the same bytes as `orjson.dumps` of the whole object would (orjson writes an
    object's members in insertion order, compactly), without building that object: a stream's
    `response.created`, `in_progress` and `completed` events and the stored entry all come from it.
    """

    __slots__ = ("_end", "_head", "_middle", "_tail")

    def __init__(self, head: bytes, middle: bytes, tail: bytes, end: bytes) -> None:
        self._head = head  # '{"id":…,"object":"response","created_at":…,"status":'
        self._middle = middle  # ',"instructions":…,"model":…,"output":'
        self._tail = tail  # ',"parallel_tool_calls":…,"truncation":"disabled","usage":'
        self._end = end  # ',"user":…}'

    def json(self, status: bytes, output: bytes = b"[]", usage: bytes = b"null", error: bytes = b"null",
             incomplete_details: bytes = b"null") -> bytes:
        """The Response with these members, each given as its JSON (`status` as `b'"completed"'`)."""
        return b"".join((self._head, status, b',"background":false,"error":', error, b',"incomplete_details":',
                         incomplete_details, self._middle, output, self._tail, usage, self._end))


IN_PROGRESS = b'"in_progress"'
_TAIL_FIELDS = frozenset({"parallel_tool_calls", "previous_response_id", "reasoning", "safety_identifier", "store",
                          "temperature", "text", "tool_choice", "tools", "top_p", "user"})
"""The request fields the frame's tail echoes: a request with none of them has the default tail."""


def _tail(body: JSON, store: bool) -> tuple[bytes, bytes]:
    reasoning = body.get("reasoning") or {}
    text = body.get("text") or {}
    members = orjson.dumps({
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"), "service_tier": "default",
        "store": store, "temperature": body.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [{**tool, "strict": tool.get("strict", True), "parameters": tool.get("parameters")}
                  for tool in body.get("tools") or ()],
        "top_p": body.get("top_p", 1.0), "truncation": "disabled"})
    return b"," + members[1:-1] + b',"usage":', b',"user":' + orjson.dumps(body.get("user")) + b"}"


_DEFAULT_TAIL = _tail({}, store=True)


def response_frame(turn: ResponsesTurn, response_id: str, created_at: int, model: str) -> ResponseFrame:
    """The frame of the Response to `turn`: what every answer to it echoes of the request."""
    body = turn.body
    head = b'{"id":%b,"object":"response","created_at":%d,"status":' % (orjson.dumps(response_id), created_at)
    middle = orjson.dumps({"instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
                           "metadata": body.get("metadata") or {}, "model": model})
    tail, end = _DEFAULT_TAIL if body.keys().isdisjoint(_TAIL_FIELDS) else _tail(body, turn.store)
    return ResponseFrame(head, b"," + middle[1:-1] + b',"output":', tail, end)


def response_from_canonical(result: JSON, usage: Usage, turn: ResponsesTurn, response_id: str, created_at: int,
                            new_id: NewId, provider: str = "") -> tuple[bytes, list[JSON]]:
    """The Response for a canonical `chat.completion` from `provider`, as JSON, and its output items as
    the store keeps them."""
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    incomplete = incomplete_reason(choice.get("finish_reason"))
    model = result.get("model")
    model = model if isinstance(model, str) and model else str(turn.canonical["model"])
    output = output_items(message, new_id, "incomplete" if incomplete else "completed", provider)
    shown = orjson.dumps(output if turn.shows_encrypted_reasoning else [_unencrypted(item) for item in output])
    frame = response_frame(turn, response_id, created_at, model)
    if incomplete:
        return frame.json(b'"incomplete"', shown, orjson.dumps(response_usage(usage)),
                          incomplete_details=orjson.dumps({"reason": incomplete})), output
    return frame.json(b'"completed"', shown, orjson.dumps(response_usage(usage))), output


def _unencrypted(item: JSON) -> JSON:
    if "encrypted_content" not in item:
        return item
    return {name: value for name, value in item.items() if name != "encrypted_content"}


def output_items(message: JSON, new_id: NewId, status: str = "completed", provider: str = "") -> list[JSON]:
    items: list[JSON] = []
    reasoning = message.get("reasoning_content")
    signed = message.get(THINKING_BLOCKS)
    if (isinstance(reasoning, str) and reasoning) or signed:
        items.append(reasoning_item(new_id("rs"), reasoning if isinstance(reasoning, str) else ""))
        if signed:
            items[-1]["encrypted_content"] = token(provider, signed)
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
    """A reasoning item showing `text` as its summary (none when there is no text: redacted thinking)."""
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}] if text else []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> JSON:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""
