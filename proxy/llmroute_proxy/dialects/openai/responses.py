"""OpenAI's own Responses API as OpenAI and Azure OpenAI speak it: requests sent natively, answers read back.

A Responses request sent natively gets a Response object or its event stream. The client gets
them as they came (the front door's encoder relays them); the sidecar reads from them what every
answer must give it, in canonical form: usage, cost and finish reason, the text and tool calls
that decide when a stream is committed (nothing reaches the client before its first output, so a
failure before it fails over invisibly), and the errors to fail over on. A `response.failed`
event or an in-band `error` event raises; a stream that ends before `response.completed` (or
`response.incomplete`) is broken. Each event's bytes ride on the first chunk it produced, or on
a carrier chunk (`choices: []`) when it produced none, so the relay never re-encodes; an event
whose name says there is nothing in it to read (a part opening, a `.done`…) is not even parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from llmroute_proxy.dialects.base import (
    ANSWERED_BY,
    ChatRequest,
    ChatResult,
    NativeDialect,
    OneChoiceFinish,
    StreamChunk,
    UpstreamRequest,
    Usage,
    WholeRelayedStream,
    relayed_chunks,
    reported_tier,
)
from llmroute_proxy.dialects.common import body_excerpt, loads_object
from llmroute_proxy.dialects.openai.chat import parse_chat_completion
from llmroute_proxy.dialects.openai.errors import in_band_error
from llmroute_proxy.dialects.sse import SSEParser, event_bytes
from llmroute_proxy.dialects.thinking import TOKEN_PREFIX
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.table import Target

JSON = dict[str, Any]

_FINISH_BY_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}
_ENDINGS = (b"event: response.completed\ndata: ", b"event: response.incomplete\ndata: ")
_OUTPUT_EVENTS = (b"\n\nevent: response.output_text.delta\n", b"\n\nevent: response.refusal.delta\n",
                  b"\n\nevent: response.function_call_arguments.delta\n")
_FAILURES = (b"\n\nevent: error\n", b"\n\nevent: response.failed\n")
_FIRST_FAILURES = (b"event: error\n", b"event: response.failed\n")


def responses_body(request: ChatRequest, target: Target) -> dict[str, Any] | None:
    """The client's own Responses request, when it came in on `/v1/responses` and this target
    speaks that API (OpenAI-compatible servers get the canonical chat request, unless configured
    with `openaiCompatible.responsesAPI`)."""
    native = request.native
    if native is None or native.dialect is not NativeDialect.OPENAI_RESPONSES or not native.spoken_by(target):
        return None
    return native.body


def responses_request(url: str, headers: dict[str, str], body: dict[str, Any], target: Target) -> UpstreamRequest:
    """The client's request as it sent it, to the target's model. Reasoning the sidecar kept from
    earlier turns (marked `ANSWERED_BY`) goes only to the provider that made it, unmarked; reasoning
    whose `encrypted_content` the sidecar made (Claude's thinking, `dialects/thinking.py`) goes to none."""
    sent = {**body, "model": target.model}
    items = body.get("input")
    if isinstance(items, list) and any(ANSWERED_BY in item or _claudes(item) for item in items
                                       if isinstance(item, dict)):
        sent["input"] = [_unmarked(item) for item in items if not isinstance(item, dict) or (
            item.get(ANSWERED_BY, target.provider) == target.provider and not _claudes(item))]
    return UpstreamRequest("POST", url, headers, orjson.dumps(sent))


def _claudes(item: dict[str, Any]) -> bool:
    content = item.get("encrypted_content")
    return item.get("type") == "reasoning" and isinstance(content, str) and content.startswith(TOKEN_PREFIX)


def _unmarked(item: Any) -> Any:
    if not isinstance(item, dict) or ANSWERED_BY not in item:
        return item
    return {name: value for name, value in item.items() if name != ANSWERED_BY}


def read_answer(body: bytes, request: ChatRequest, target: Target) -> ChatResult:
    """A non-streamed answer: a Response when the request went natively, else a chat completion."""
    if responses_body(request, target) is not None:
        return result_from_response(body, target.model)
    return parse_chat_completion(body)


def usage_from_response(response: JSON) -> Usage | None:
    """A Response's usage, with its web searches (OpenAI bills each `web_search_call` of its output) and
    the service tier it reports."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    inputs = usage.get("input_tokens_details") or {}
    outputs = usage.get("output_tokens_details") or {}
    searches = sum(1 for item in response.get("output") or () if isinstance(item, dict)
                   and item.get("type") == "web_search_call")
    return Usage(input_tokens=int(usage.get("input_tokens") or 0), output_tokens=int(usage.get("output_tokens") or 0),
                 cached_input_tokens=int(inputs.get("cached_tokens") or 0),
                 reasoning_tokens=int(outputs.get("reasoning_tokens") or 0), web_searches=searches,
                 service_tier=reported_tier(response.get("service_tier")))


def response_error(error: Any) -> UpstreamError:
    """A failed Response's `error` (or an `error` event), classified as the HTTP error it stands for.
    Responses codes name the problem (`invalid_image`, `image_too_large`…): those are the client's."""
    fields = dict(error) if isinstance(error, dict) else {"message": error}
    code = fields.get("code")
    if isinstance(code, str) and code.startswith(("invalid_", "image_", "empty_image", "unsupported_image")):
        fields.setdefault("type", "invalid_request_error")
    return in_band_error(fields)


def result_from_response(body: bytes, model: str) -> ChatResult:
    """A non-streamed Response: canonical for the books, the object itself for the relay."""
    response = loads_object(body)
    if response is None or response.get("object") != "response":
        if response is not None and response.get("error"):
            raise response_error(response["error"])
        raise UpstreamError(FailureKind.SERVER_ERROR, f"The upstream sent no Response object: {body_excerpt(body)}")
    if response.get("status") == "failed":
        raise response_error(response.get("error") or {"message": "the Response failed"})
    usage = usage_from_response(response) or Usage()
    message, finish = _canonical_message(response)
    created = response.get("created_at")
    data = {"id": response.get("id") or "", "object": "chat.completion",
            "created": created if type(created) is int else 0,
            "model": response.get("model") or model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage.to_openai()}
    return ChatResult(data=data, usage=usage, raw=body, native=response)


def _canonical_message(response: JSON) -> tuple[JSON, str]:
    texts: list[str] = []
    reasoning: list[str] = []
    refusals: list[str] = []
    calls: list[JSON] = []
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    texts.append(part.get("text") or "")
                elif part.get("type") == "refusal":
                    refusals.append(part.get("refusal") or "")
        elif kind == "function_call":
            calls.append({"id": item.get("call_id") or "", "type": "function",
                          "function": {"name": item.get("name") or "", "arguments": item.get("arguments") or "{}"}})
        elif kind == "reasoning":
            reasoning.extend(part.get("text") or "" for part in item.get("summary") or ())
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                     "refusal": "".join(refusals) or None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return message, _finish_reason(response, bool(calls))


def _finish_reason(response: JSON, called: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return _FINISH_BY_INCOMPLETE.get(reason, "length") if isinstance(reason, str) else "length"
    return "tool_calls" if called else "stop"


class ResponsesEventTranslator(OneChoiceFinish):
    """A Responses event stream → canonical chunks, each event's bytes riding along for the relay.

    Function calls are numbered as canonical tool calls in the order their items open
    (`output_index` → tool index); text, refusal and argument deltas become the canonical deltas
    that show output; reasoning summary deltas become `reasoning_content`, which does not commit the
    stream, and neither does a built-in tool's call (web search…): its events wait for the first
    text like the reasoning's, so a failure while it runs still fails over invisibly.
    """

    __slots__ = ("_called", "_finished", "_id", "_model", "_parser", "_tools", "finish_reason", "usage")

    def __init__(self, model: str) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._parser = SSEParser()
        self._model = model
        self._id = ""
        self._tools: dict[int, int] = {}
        self._called = False
        self._finished = False

    def feed(self, data: bytes) -> list[StreamChunk]:
        return self._chunks(self._parser.feed(data))

    def close(self) -> list[StreamChunk]:
        chunks = self._chunks(self._parser.close())
        if not self._finished:
            raise UpstreamError(FailureKind.STREAM_BROKEN, "The Responses stream ended before response.completed.")
        return chunks

    def _chunks(self, events: list[tuple[str | None, bytes]]) -> list[StreamChunk]:
        chunks: list[StreamChunk] = []
        for name, data in events:
            if self._finished:
                break
            if name is not None and name not in _HANDLERS:  # nothing to read in it: relayed unparsed
                chunks.append(StreamChunk(self._chunk(None), native=event_bytes(name, data)))
                continue
            event = loads_object(data)
            if event is None:
                raise UpstreamError(FailureKind.STREAM_BROKEN,
                                    f"The upstream sent an unreadable Responses event: {body_excerpt(data)}")
            kind = event.get("type") or name or ""
            handler = _HANDLERS.get(kind)
            produced = handler(self, event) if handler is not None else []
            chunks.extend(relayed_chunks(produced, self._chunk(None), event_bytes(kind, data)))
        return chunks

    def judge_whole(self, body: bytes) -> WholeRelayedStream | None:
        """A stream that arrived whole, vouched for by its bytes: simple framing (each event an
        `event:` and one `data:` line), no `error` or `response.failed` event, some output, and a
        last event that ends the Response with its usage, the only one parsed; it sets `usage` and `finish_reason`
        as `feed` and `close` would, and nothing else. None otherwise (then they read it event by
        event)."""
        events = body.count(b"\n\nevent: ") + 1
        if (not body.startswith(b"event: ") or body.startswith(_FIRST_FAILURES) or not body.endswith(b"\n\n")
                or body.find(b"\r") >= 0
                or body.count(b"\n") != 3 * events or body.count(b"\ndata: ") != events
                or any(body.find(failure) >= 0 for failure in _FAILURES)
                or not any(body.find(output) >= 0 for output in _OUTPUT_EVENTS)):
            return None
        last = body.rfind(b"\n\nevent: ") + 2
        ending = next((e for e in _ENDINGS if body.startswith(e, last)), None)
        if ending is None:
            return None
        event = loads_object(body[last + len(ending):-2])
        response = event.get("response") if event is not None else None
        if not isinstance(response, dict) or not response.get("output"):
            return None
        usage = usage_from_response(response)
        if usage is None:
            return None  # unmetered: its events are read, so that its chunks estimate it (`dispatch._streamed`)
        self.usage = usage
        self.finish_reason = _finish_reason(response, any(
            isinstance(item, dict) and item.get("type") == "function_call" for item in response["output"]))
        return WholeRelayedStream(body, response)  # `feed` may still read it: nothing else was changed

    def _chunk(self, delta: JSON | None, finish: str | None = None) -> JSON:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {"id": self._id, "object": "chat.completion.chunk", "created": 0, "model": self._model,
                "choices": choices}

    def _created(self, event: JSON) -> list[JSON]:
        response = event.get("response") or {}
        self._id = response.get("id") or self._id
        self._model = response.get("model") or self._model
        return []

    def _item_added(self, event: JSON) -> list[JSON]:
        item = event.get("item") or {}
        if item.get("type") == "function_call":
            index = self._tools[event.get("output_index", -1)] = len(self._tools)
            self._called = True
            call = {"index": index, "id": item.get("call_id") or "", "type": "function",
                    "function": {"name": item.get("name") or "", "arguments": item.get("arguments") or ""}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _text(self, event: JSON) -> list[JSON]:
        delta = event.get("delta")
        return [self._chunk({"content": delta})] if isinstance(delta, str) and delta else []

    def _refusal(self, event: JSON) -> list[JSON]:
        delta = event.get("delta")
        return [self._chunk({"refusal": delta})] if isinstance(delta, str) and delta else []

    def _reasoning(self, event: JSON) -> list[JSON]:
        delta = event.get("delta")
        return [self._chunk({"reasoning_content": delta})] if isinstance(delta, str) and delta else []

    def _arguments(self, event: JSON) -> list[JSON]:
        index = self._tools.get(event.get("output_index", -1))
        delta = event.get("delta")
        if index is None or not isinstance(delta, str) or not delta:
            return []
        return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": delta}}]})]

    def _done(self, event: JSON) -> list[JSON]:
        self._finished = True
        response = event.get("response") or {}
        self.usage = usage_from_response(response)
        self.finish_reason = _finish_reason(response, self._called)
        out = [self._chunk({}, self.finish_reason)]
        if self.usage is not None:
            out.append({**self._chunk(None), "usage": self.usage.to_openai()})
        return out

    def _failed(self, event: JSON) -> list[JSON]:
        response = event.get("response") or {}
        raise response_error(response.get("error") or {"message": "the upstream's Response failed"})

    def _error(self, event: JSON) -> list[JSON]:
        raise response_error(event.get("error") if isinstance(event.get("error"), dict) else event)


_HANDLERS: dict[str, Callable[[ResponsesEventTranslator, JSON], list[JSON]]] = {
    "response.created": ResponsesEventTranslator._created,
    "response.output_item.added": ResponsesEventTranslator._item_added,
    "response.output_text.delta": ResponsesEventTranslator._text,
    "response.refusal.delta": ResponsesEventTranslator._refusal,
    "response.reasoning_summary_text.delta": ResponsesEventTranslator._reasoning,
    "response.function_call_arguments.delta": ResponsesEventTranslator._arguments,
    "response.completed": ResponsesEventTranslator._done,
    "response.incomplete": ResponsesEventTranslator._done,
    "response.failed": ResponsesEventTranslator._failed,
    "error": ResponsesEventTranslator._error,
}
