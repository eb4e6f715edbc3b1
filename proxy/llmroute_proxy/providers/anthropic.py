"""Anthropic Messages API behind the canonical OpenAI interface (providers.md §2, §5, §6).

Two ways in. A canonical OpenAI request is translated field by field, and a field whose
loss would change the answer (`n`, `seed`, penalties, JSON mode…) is refused with a 400
naming it rather than silently dropped. A request that arrived on `/v1/messages`
(`ChatRequest.anthropic_body`) is forwarded as the client sent it with only `model`
replaced, and the native answer rides along in `ChatResult.native` / `StreamChunk.native`
so the front door can relay it unchanged (thinking signatures, cache counts, everything).
Either way the canonical answer is filled in: usage, cost and finish reasons come from it.

`created` in canonical answers is 0: providers get no clock, and Anthropic sends no time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson

from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError
from llmroute_proxy.providers.base import ChatRequest, ChatResult, StreamChunk, UpstreamRequest, Usage
from llmroute_proxy.providers.common import body_excerpt, loads_object, retry_after_seconds
from llmroute_proxy.providers.sse import SSEParser
from llmroute_proxy.table import Target

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768, "max": 32768}
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}

JSON = dict[str, Any]

_UNSUPPORTED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("n", lambda v: v != 1, "Anthropic returns a single choice; `n` must be 1."),
    ("logprobs", bool, "Anthropic does not return log probabilities."),
    ("top_logprobs", lambda v: True, "Anthropic does not return log probabilities."),
    ("logit_bias", bool, "Anthropic does not support `logit_bias`."),
    ("seed", lambda v: True, "Anthropic does not support `seed`."),
    ("presence_penalty", bool, "Anthropic does not support `presence_penalty`."),
    ("frequency_penalty", bool, "Anthropic does not support `frequency_penalty`."),
    ("audio", lambda v: True, "Anthropic does not produce audio."),
    ("modalities", lambda v: v != ["text"], "Anthropic produces text only."),
    ("web_search_options", lambda v: True, "`web_search_options` cannot be translated for Anthropic."),
    ("functions", lambda v: True, "Use `tools`: the deprecated `functions` is not translated for Anthropic."),
    ("function_call", lambda v: True, "Use `tool_choice`: the deprecated `function_call` is not translated."),
)

_KIND_BY_STATUS = {
    401: FailureKind.AUTH, 402: FailureKind.QUOTA_EXHAUSTED, 403: FailureKind.AUTH,
    404: FailureKind.TARGET_NOT_FOUND, 408: FailureKind.TIMEOUT, 409: FailureKind.SERVER_ERROR,
    429: FailureKind.RATE_LIMITED, 500: FailureKind.SERVER_ERROR, 503: FailureKind.OVERLOADED,
    504: FailureKind.TIMEOUT, 529: FailureKind.OVERLOADED,
}
_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}
_CONTEXT_OVERFLOW_MARKERS = ("prompt is too long", "exceed context limit", "context window")
_RETURNED_AS_IS = frozenset({FailureKind.CLIENT_ERROR, FailureKind.CONTEXT_LENGTH})


class AnthropicProvider:
    type: ClassVar[str] = "anthropic"

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        if request.anthropic_body is not None:
            body = {**request.anthropic_body, "model": target.model}
        else:
            body = messages_body(request.body, target.model)
        return UpstreamRequest("POST", target.url.rstrip("/") + "/v1/messages", _headers(target),
                               orjson.dumps(body))

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        message = loads_object(body)
        if message is None or message.get("type") == "error":
            raise _unusable_answer(body, message)
        data, usage = completion_from_message(message, target.model)
        native = message if request.anthropic_body is not None else None
        return ChatResult(data=data, usage=usage, native=native)

    def chat_stream(self, request: ChatRequest, target: Target) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(target.model, native=request.anthropic_body is not None)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        raise _no_embeddings()

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        raise _no_embeddings()

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        parsed = loads_object(body)
        error = parsed.get("error") if parsed else None
        if isinstance(error, dict):
            error_type = str(error.get("type") or "api_error")
            message = str(error.get("message") or error_type)
        else:
            error_type, message = "api_error", body_excerpt(body) or f"HTTP {status}"
        return upstream_error(status, error_type, message, retry_after_seconds(headers))


def _headers(target: Target) -> dict[str, str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
    if target.credential:
        headers["x-api-key"] = target.credential.reveal()
    return headers


def _no_embeddings() -> BadRequest:
    return BadRequest("Anthropic has no embeddings API; route embeddings to an OpenAI, Azure OpenAI "
                      "or Gemini target.", param="model", code="unsupported_operation")


def _unusable_answer(body: bytes, message: JSON | None) -> UpstreamError:
    error = message.get("error") if message else None
    if isinstance(error, dict):
        error_type = str(error.get("type") or "api_error")
        return upstream_error(_STATUS_BY_ERROR_TYPE.get(error_type, 500), error_type,
                              str(error.get("message") or error_type), None)
    return UpstreamError(FailureKind.SERVER_ERROR, f"Anthropic sent an unreadable answer: {body_excerpt(body)}")


# ---- errors -------------------------------------------------------------------------------


def upstream_error(status: int, error_type: str, message: str, retry_after: float | None) -> UpstreamError:
    """One classification for HTTP errors and in-band stream `error` events (providers.md §6.2)."""
    kind = _failure_kind(status, error_type, message)
    if kind in _RETURNED_AS_IS:
        code = "context_length_exceeded" if kind is FailureKind.CONTEXT_LENGTH else None
        if status == 413:
            code = "request_too_large"
        return UpstreamError(kind, message, status=status, error_type="invalid_request_error", code=code)
    return UpstreamError(kind, f"Anthropic {status} {error_type}: {message}", status=status,
                         retry_after=retry_after, error_type=error_type)


def _failure_kind(status: int, error_type: str, message: str) -> FailureKind:
    if error_type == "billing_error":
        return FailureKind.QUOTA_EXHAUSTED
    if error_type == "overloaded_error":
        return FailureKind.OVERLOADED
    if status in (400, 413):
        lowered = message.lower()
        if any(marker in lowered for marker in _CONTEXT_OVERFLOW_MARKERS):
            return FailureKind.CONTEXT_LENGTH
        if "credit balance" in lowered:
            return FailureKind.QUOTA_EXHAUSTED
    kind = _KIND_BY_STATUS.get(status)
    if kind is not None:
        return kind
    return FailureKind.SERVER_ERROR if status >= 500 else FailureKind.CLIENT_ERROR


# ---- canonical request → Messages body ----------------------------------------------------


def messages_body(body: JSON, model: str) -> JSON:
    """The Anthropic Messages body for a canonical OpenAI request (providers.md §5.1–5.4)."""
    _refuse_unsupported(body)
    system, turns = _turns(body.get("messages"))
    out: JSON = {"model": model, "max_tokens": _max_tokens(body), "messages": turns}
    if system:
        out["system"] = system
    _sampling(body, out)
    _tooling(body, out)
    _output_format(body, out)
    _thinking(body, out)
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str):
        out["metadata"] = {"user_id": user}
    if body.get("stream") is True:
        out["stream"] = True
    return out


def _refuse_unsupported(body: JSON) -> None:
    for name, changes_meaning, reason in _UNSUPPORTED:
        value = body.get(name)
        if value is not None and changes_meaning(value):
            raise BadRequest(reason, param=name, code="unsupported_parameter")


def _max_tokens(body: JSON) -> int:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(name)
    if value is None:
        return DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"`{name}` must be a positive integer.", param=name)
    return value


def _sampling(body: JSON, out: JSON) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, (int, float)) and temperature > 1:
            raise BadRequest(f"Anthropic accepts a temperature from 0 to 1, not {temperature}.",
                             param="temperature", code="invalid_value")
        out["temperature"] = temperature
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop is not None:
        sequences = [stop] if isinstance(stop, str) else stop
        if not isinstance(sequences, list) or not all(isinstance(s, str) and s.strip() for s in sequences):
            raise BadRequest("Anthropic needs each stop sequence to be a string with a non-whitespace "
                             "character.", param="stop", code="invalid_value")
        if sequences:
            out["stop_sequences"] = sequences


def _tooling(body: JSON, out: JSON) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise BadRequest("`tools` must be an array.", param="tools")
    out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice


def _tool(tool: Any, i: int) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise BadRequest("Only function tools can be sent to Anthropic.", param=f"tools[{i}].type")
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest("A function tool needs `function.name`.", param=f"tools[{i}].function.name")
    entry: JSON = {"name": function["name"],
                   "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        entry["description"] = function["description"]
    if function.get("strict") is True:
        entry["strict"] = True
    if tool.get("cache_control") is not None:
        entry["cache_control"] = tool["cache_control"]
    return entry


def _tool_choice(choice: Any) -> JSON | None:
    if choice is None:
        return None
    simple = {"auto": "auto", "required": "any", "none": "none"}.get(choice) if isinstance(choice, str) else None
    if simple is not None:
        return {"type": simple}
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise BadRequest("Anthropic understands `tool_choice` auto, required, none or one named function.",
                     param="tool_choice")


def _output_format(body: JSON, out: JSON) -> None:
    response_format = body.get("response_format")
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        raise BadRequest("Anthropic has no JSON mode; use response_format json_schema with a schema instead.",
                         param="response_format", code="unsupported_parameter")
    spec = response_format.get("json_schema") if kind == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise BadRequest("`response_format` must be text or json_schema with a `json_schema.schema` object.",
                         param="response_format")
    out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}


def _thinking(body: JSON, out: JSON) -> None:
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise BadRequest(f"Unknown reasoning_effort {effort!r}.", param="reasoning_effort")
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if out["max_tokens"] <= budget:
        out["max_tokens"] += budget


# ---- messages ----------------------------------------------------------------------------


def _turns(messages: Any) -> tuple[str | list[JSON], list[JSON]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty array.", param="messages")
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest("Each message must be an object.", param=f"messages[{i}]")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), f"messages[{i}].content"))
        elif role == "user":
            _append_turn(turns, "user", _user_content(message.get("content"), f"messages[{i}].content"))
        elif role == "assistant":
            _append_turn(turns, "assistant", _assistant_content(message, i))
        elif role == "tool":
            _append_turn(turns, "user", [_tool_result(message, i)])
        else:
            raise BadRequest(f"Role {role!r} cannot be sent to Anthropic.", param=f"messages[{i}].role")
    return _system(system), turns


def _system(blocks: list[JSON]) -> str | list[JSON]:
    if any("cache_control" in block for block in blocks):
        return blocks
    return "\n\n".join(block["text"] for block in blocks)


def _append_turn(turns: list[JSON], role: str, content: str | list[JSON]) -> None:
    """Anthropic wants user and assistant to alternate: a same-role neighbour is merged in."""
    if not content:
        return
    if turns and turns[-1]["role"] == role:
        last = turns[-1]
        last["content"] = _as_blocks(last["content"]) + _as_blocks(content)
    else:
        turns.append({"role": role, "content": content})


def _as_blocks(content: str | list[JSON]) -> list[JSON]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _text_blocks(content: Any, path: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise BadRequest("Content must be a string or an array of text parts.", param=path)
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadRequest("Only text parts are allowed here.", param=f"{path}[{j}]")
        if part["text"]:
            blocks.append(_text_block(part))
    return blocks


def _text_block(part: JSON) -> JSON:
    block: JSON = {"type": "text", "text": part["text"]}
    if part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]
    return block


def _user_content(content: Any, path: str) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest("User content must be a string or an array of parts.", param=path)
    return [_user_block(part, f"{path}[{j}]") for j, part in enumerate(content)]


def _user_block(part: Any, path: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return _text_block(part)
    if kind == "image_url":
        return _image_block(part.get("image_url"), f"{path}.image_url.url")
    if kind == "file":
        return _document_block(part.get("file"), f"{path}.file")
    if kind == "input_audio":
        raise BadRequest("Anthropic does not accept audio input.", param=f"{path}.type",
                         code="unsupported_parameter")
    raise BadRequest(f"Content part type {kind!r} cannot be sent to Anthropic.", param=f"{path}.type")


def _image_block(image: Any, path: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise BadRequest("An image part needs `image_url.url`.", param=path)
    if url.startswith("data:"):
        media_type, data = _data_url(url, path)
        if media_type not in IMAGE_MEDIA_TYPES:
            raise BadRequest(f"Anthropic accepts JPEG, PNG, GIF and WebP images, not {media_type!r}.", param=path)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise BadRequest("An image URL must be https:// or a base64 data: URL.", param=path)


def _document_block(file: Any, path: str) -> JSON:
    file_data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(file_data, str) or not file_data.startswith("data:"):
        raise BadRequest("Anthropic takes files as `file_data` (a base64 PDF data: URL); a `file_id` "
                         "refers to OpenAI's file store.", param=path)
    media_type, data = _data_url(file_data, f"{path}.file_data")
    if media_type != "application/pdf":
        raise BadRequest(f"Anthropic accepts PDF documents, not {media_type!r}.", param=f"{path}.file_data")
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _data_url(url: str, path: str) -> tuple[str, str]:
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64":
        raise BadRequest("A data: URL must be base64-encoded (data:<type>;base64,<data>).", param=path)
    return media_type, data


def _assistant_content(message: JSON, i: int) -> str | list[JSON]:
    content = message.get("content")
    tool_calls = message.get("tool_calls")
    if not tool_calls and isinstance(content, str):
        return content
    blocks: list[JSON] = []
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content}] if content else []
    elif isinstance(content, list):
        parts = [part for part in content if isinstance(part, dict) and part.get("type") != "refusal"]
        blocks = _text_blocks(parts, f"messages[{i}].content")
    elif content is not None:
        raise BadRequest("Assistant content must be a string, an array of parts or null.",
                         param=f"messages[{i}].content")
    if tool_calls:
        if not isinstance(tool_calls, list):
            raise BadRequest("`tool_calls` must be an array.", param=f"messages[{i}].tool_calls")
        blocks.extend(_tool_use(call, f"messages[{i}].tool_calls[{j}]") for j, call in enumerate(tool_calls))
    return blocks


def _tool_use(call: Any, path: str) -> JSON:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest("A tool call needs `function.name`.", param=f"{path}.function.name")
    if not isinstance(call.get("id"), str):
        raise BadRequest("A tool call needs an `id`.", param=f"{path}.id")
    return {"type": "tool_use", "id": call["id"], "name": function["name"],
            "input": _tool_input(function.get("arguments"), f"{path}.function.arguments")}


def _tool_input(arguments: Any, path: str) -> JSON:
    if arguments is None or arguments == "":
        return {}
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise BadRequest("Tool call arguments must be a JSON object encoded as a string.", param=path)
    return value


def _tool_result(message: JSON, i: int) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise BadRequest("A tool message needs `tool_call_id`.", param=f"messages[{i}].tool_call_id")
    result: JSON = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    elif content is not None:
        result["content"] = _text_blocks(content, f"messages[{i}].content")
    return result


# ---- Messages response → chat.completion -------------------------------------------------


def completion_from_message(message: JSON, model: str) -> tuple[JSON, Usage]:
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[JSON] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block))
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
    reply: JSON = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None,
                   "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    usage = usage_from_anthropic(message.get("usage"))
    data = {"id": message.get("id") or "", "object": "chat.completion", "created": 0,
            "model": message.get("model") or model,
            "choices": [{"index": 0, "message": reply, "logprobs": None,
                         "finish_reason": finish_reason(message.get("stop_reason"))}],
            "usage": usage.to_openai()}
    return data, usage


def _tool_call(block: JSON) -> JSON:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {"id": block.get("id") or "", "type": "function",
            "function": {"name": block.get("name") or "", "arguments": arguments}}


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from_anthropic(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    cache_read = usage.get("cache_read_input_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    details = usage.get("output_tokens_details") or {}
    return Usage(input_tokens=(usage.get("input_tokens") or 0) + cache_read + cache_write,
                 output_tokens=usage.get("output_tokens") or 0,
                 cached_input_tokens=cache_read, cache_write_tokens=cache_write,
                 reasoning_tokens=details.get("thinking_tokens") or 0)


# ---- stream ------------------------------------------------------------------------------


class AnthropicStreamTranslator:
    """Anthropic's named SSE events → OpenAI chunks (providers.md §5.7).

    Anthropic numbers every content block; OpenAI numbers only tool calls, hence a separate
    tool counter. Usage in `message_delta` is cumulative, so it overwrites.

    With `native` set, every chunk has `native` bytes, so a relay never needs to re-encode:
    an Anthropic event's bytes ride on the first chunk it produced and later ones carry
    b""; an event producing none (ping, block stop, message_delta) gets a carrier chunk
    with `choices: []` and no usage, which shows no output and exists only to carry them.
    """

    def __init__(self, model: str, native: bool = False) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._parser = SSEParser()
        self._native = native
        self._id = ""
        self._model = model
        self._counts: JSON = {}
        self._stop_reason: str | None = None
        self._tool_for_block: dict[int, int] = {}
        self._finished = False

    def feed(self, data: bytes) -> list[StreamChunk]:
        return self._chunks(self._parser.feed(data))

    def close(self) -> list[StreamChunk]:
        chunks = self._chunks(self._parser.close())
        if not self._finished:
            raise UpstreamError(FailureKind.STREAM_BROKEN, "The Anthropic stream ended before message_stop.")
        return chunks

    def _chunks(self, events: list[tuple[str | None, bytes]]) -> list[StreamChunk]:
        chunks: list[StreamChunk] = []
        for name, data in events:
            if self._finished:
                break
            produced = self._translate(name, data)
            if not self._native:
                chunks.extend(StreamChunk(chunk) for chunk in produced)
                continue
            first = produced[0] if produced else self._chunk(None)
            chunks.append(StreamChunk(first, native=_event_bytes(name, data)))
            chunks.extend(StreamChunk(chunk, native=b"") for chunk in produced[1:])
        return chunks

    def _translate(self, name: str | None, data: bytes) -> list[JSON]:
        event = loads_object(data)
        if event is None:
            raise UpstreamError(FailureKind.STREAM_BROKEN,
                                f"Anthropic sent an unreadable stream event: {body_excerpt(data)}")
        handler = _EVENT_HANDLERS.get(event.get("type") or name or "")
        return handler(self, event) if handler is not None else []

    def _chunk(self, delta: JSON | None, finish: str | None = None) -> JSON:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {"id": self._id, "object": "chat.completion.chunk", "created": 0, "model": self._model,
                "choices": choices}

    def _absorb_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._counts.update((k, v) for k, v in usage.items() if v is not None)
            self.usage = usage_from_anthropic(self._counts)

    def _message_start(self, event: JSON) -> list[JSON]:
        message = event.get("message") or {}
        self._id = message.get("id") or self._id
        self._model = message.get("model") or self._model
        self._absorb_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, event: JSON) -> list[JSON]:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            tool_index = len(self._tool_for_block)
            self._tool_for_block[event.get("index", -1)] = tool_index
            call = {"index": tool_index, "id": block.get("id") or "", "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": ""}}
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": block["thinking"]})]
        return []

    def _block_delta(self, event: JSON) -> list[JSON]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            tool_index = self._tool_for_block.get(event.get("index", -1))
            if tool_index is not None:
                call = {"index": tool_index, "function": {"arguments": delta["partial_json"]}}
                return [self._chunk({"tool_calls": [call]})]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        return []

    def _message_delta(self, event: JSON) -> list[JSON]:
        stop_reason = (event.get("delta") or {}).get("stop_reason")
        if stop_reason is not None:
            self._stop_reason = stop_reason
        self._absorb_usage(event.get("usage"))
        return []

    def _message_stop(self, event: JSON) -> list[JSON]:
        self._finished = True
        self.finish_reason = finish_reason(self._stop_reason)
        usage = self.usage or Usage()
        usage_chunk = {**self._chunk(None), "usage": usage.to_openai()}
        return [self._chunk({}, self.finish_reason), usage_chunk]

    def _error(self, event: JSON) -> list[JSON]:
        error = event.get("error") or {}
        error_type = str(error.get("type") or "api_error")
        message = str(error.get("message") or error_type)
        raise upstream_error(_STATUS_BY_ERROR_TYPE.get(error_type, 500), error_type, message, None)


def _ignored(translator: AnthropicStreamTranslator, event: JSON) -> list[JSON]:
    return []


_EVENT_HANDLERS: dict[str, Callable[[AnthropicStreamTranslator, JSON], list[JSON]]] = {
    "message_start": AnthropicStreamTranslator._message_start,
    "content_block_start": AnthropicStreamTranslator._block_start,
    "content_block_delta": AnthropicStreamTranslator._block_delta,
    "content_block_stop": _ignored,
    "message_delta": AnthropicStreamTranslator._message_delta,
    "message_stop": AnthropicStreamTranslator._message_stop,
    "ping": _ignored,
    "error": AnthropicStreamTranslator._error,
}


def _event_bytes(name: str | None, data: bytes) -> bytes:
    if b"\n" in data:
        data = data.replace(b"\n", b"\ndata: ")
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + data + b"\n\n"
