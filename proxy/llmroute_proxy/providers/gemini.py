"""Google Gemini (Developer API, `generativelanguage`) behind the OpenAI-shaped interface.

Requests are translated field by field (providers.md §3, §5); a field whose loss would change
what the model does (`logit_bias`, `logprobs`, output `audio`, image URLs we would have to fetch)
is refused with `BadRequest` naming it, never silently dropped. Fields that only tune delivery
(`parallel_tool_calls`, `user`, `image_url.detail`, `strict`) are dropped.

Choices documented here because they are not forced by either API:

- Tool schemas go out as `parametersJsonSchema` and structured outputs as `responseJsonSchema`:
  OpenAI clients send JSON Schema, and Gemini's older `parameters`/`responseSchema` take only an
  OpenAPI-3.0 subset that rejects `$ref`, `$defs`, `oneOf` and `additionalProperties`, so a schema
  that works against OpenAI would fail here for reasons the client cannot see.
- Tool-call IDs: Gemini's own `functionCall.id` is passed through unchanged; when it gives none,
  the ID is `call_` + a hash of the response id, candidate and position, so it is stable for one
  response without server state. On the way back, the function name of a `tool` message is
  recovered from the assistant `tool_calls` earlier in the same request, and the ID is sent back as
  `functionResponse.id` only when Gemini produced it (IDs with another producer's prefix are
  withheld: some API versions reject `id` they did not issue).
- Thought signatures ride on tool calls as `extra_content.google.thought_signature`, the field
  Google's own OpenAI-compatible endpoint uses; a replayed call without one gets Google's
  documented placeholder so Gemini 3 accepts histories from clients or providers that drop it.
- A blocked prompt (`promptFeedback.blockReason`, no candidates) becomes an Azure-like 400
  `content_filter` error rather than an empty 200, so clients cannot mistake it for an answer.
- The malformed-function-call family of finish reasons is an upstream failure (fails over) while
  nothing was shown to the client; once a stream has shown output it ends as `stop`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import orjson

from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError
from llmroute_proxy.providers.base import ChatRequest, ChatResult, StreamChunk, UpstreamRequest, Usage
from llmroute_proxy.providers.common import body_excerpt, retry_after_seconds
from llmroute_proxy.providers.sse import SSEParser
from llmroute_proxy.table import Target

DEFAULT_API_VERSION = "v1beta"
MAX_STOP_SEQUENCES = 5
THOUGHT_SIGNATURE_PLACEHOLDER = "skip_thought_signature_validator"
CREATED_UNKNOWN = 0  # Gemini sends no timestamp and providers read no clock; the server may stamp it
FOREIGN_TOOL_ID_PREFIXES = ("call_", "toolu_", "srvtoolu_", "tooluse_")

# low/medium/high as Google's own OpenAI-compatible endpoint maps them; 24576 is the largest
# budget every 2.5 model accepts, so the efforts above `high` stop there.
REASONING_BUDGETS: Mapping[str, int] = {
    "none": 0, "minimal": 128, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576, "max": 24576,
}

_CONTENT_FILTER_REASONS = frozenset({
    "SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
    "RECITATION", "IMAGE_RECITATION", "MODEL_ARMOR",
})
MALFORMED_CALL_REASONS = frozenset({
    "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
    "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE",
})


def finish_reason_for(gemini_reason: str, has_tool_calls: bool) -> str:
    """§5.5; anything unknown is a plain `stop` (enums grow; never fail on a new value)."""
    if gemini_reason == "MAX_TOKENS":
        return "length"
    if gemini_reason in _CONTENT_FILTER_REASONS:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def usage_from(metadata: Mapping[str, Any] | None) -> Usage:
    """§5.6: tool-use prompt tokens count as input and thoughts as output, so totals add up."""
    if not metadata:
        return Usage()
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(metadata.get("promptTokenCount") or 0) + int(metadata.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(metadata.get("candidatesTokenCount") or 0) + thoughts,
        cached_input_tokens=int(metadata.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def synthesised_tool_id(seed: str, candidate: int, position: int) -> str:
    digest = hashlib.blake2b(f"{seed}:{candidate}:{position}".encode(), digest_size=12).hexdigest()
    return "call_" + digest


# ---------------------------------------------------------------- request: OpenAI → Gemini


class _Contents:
    """Gemini contents built in order, adjacent same-role turns merged (Gemini wants alternation)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.items and self.items[-1]["role"] == role:
            self.items[-1]["parts"].extend(parts)
        else:
            self.items.append({"role": role, "parts": parts})


def translate_messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI `messages` → (system parts, contents)."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", param="messages")
    system: list[dict[str, Any]] = []
    contents = _Contents()
    calls: dict[str, tuple[str, str | None]] = {}  # tool_call id → (function name, Gemini's own id)
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object.", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), where))
        elif role == "user":
            contents.add("user", _user_parts(message.get("content"), where))
        elif role == "assistant":
            contents.add("model", _assistant_parts(message, where, calls))
        elif role == "tool":
            contents.add("user", [_function_response(message, where, calls)])
        else:
            raise BadRequest(f"{where}.role '{role}' is not supported by Gemini targets.", param=f"{where}.role")
    if not contents.items:
        raise BadRequest("Gemini needs at least one user or assistant message besides system ones.",
                         param="messages")
    return system, contents.items


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or an array of parts.", param=f"{where}.content")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": part.get("text") or ""})
        elif kind != "refusal":
            raise BadRequest(f"{where}.content[{j}]: only text parts are allowed here.",
                             param=f"{where}.content[{j}]")
    return parts


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_parts(content, where)
    return [_user_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _user_part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"text": part.get("text") or ""}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return {"inlineData": _data_url(url, f"{where}.image_url.url", "image URLs")}
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        return {"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio.get("data") or ""}}
    if kind == "file":
        file = part.get("file") or {}
        if "file_data" not in file:
            raise BadRequest(f"{where}.file: Gemini targets take files inline only; send file_data as a "
                             "data: URL (file_id refers to OpenAI's storage).", param=f"{where}.file")
        return {"inlineData": _data_url(file["file_data"], f"{where}.file.file_data", "file URLs")}
    raise BadRequest(f"{where}: content part type '{kind}' is not supported by Gemini targets.", param=where)


def _data_url(url: Any, where: str, what: str) -> dict[str, str]:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise BadRequest(f"{where}: llmroute does not fetch {what} for Gemini targets; "
                         "send the bytes as a data: URL (data:<mime>;base64,...).", param=where)
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise BadRequest(f"{where}: the data: URL must be base64 (data:<mime>;base64,...).", param=where)
    return {"mimeType": header[5:-7] or "application/octet-stream", "data": data}


def _assistant_parts(message: dict[str, Any], where: str,
                     calls: dict[str, tuple[str, str | None]]) -> list[dict[str, Any]]:
    parts = _text_parts(message.get("content"), where)
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise BadRequest(f"{where}.tool_calls must be an array.", param=f"{where}.tool_calls")
    for k, call in enumerate(tool_calls):
        parts.append(_function_call(call, f"{where}.tool_calls[{k}]", calls, first=k == 0))
    return parts


def _function_call(call: Any, where: str, calls: dict[str, tuple[str, str | None]], first: bool) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest(f"{where}: a function tool call needs function.name.", param=where)
    name: str = function["name"]
    args = _parse_arguments(function.get("arguments"), f"{where}.function.arguments")
    body: dict[str, Any] = {"name": name, "args": args}
    call_id = call.get("id")
    own_id = call_id if isinstance(call_id, str) and not call_id.startswith(FOREIGN_TOOL_ID_PREFIXES) else None
    if own_id:
        body["id"] = own_id
    if isinstance(call_id, str):
        calls[call_id] = (name, own_id)
    part: dict[str, Any] = {"functionCall": body}
    signature = _thought_signature(call)
    if signature or first:
        part["thoughtSignature"] = signature or THOUGHT_SIGNATURE_PLACEHOLDER
    return part


def _parse_arguments(arguments: Any, where: str) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise BadRequest(f"{where} is not valid JSON; Gemini needs the arguments as an object.",
                         param=where) from None
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must encode a JSON object for Gemini targets.", param=where)
    return value


def _thought_signature(call: Mapping[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _function_response(message: dict[str, Any], where: str,
                       calls: Mapping[str, tuple[str, str | None]]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    known = calls.get(call_id) if isinstance(call_id, str) else None
    name = known[0] if known else message.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"{where}.tool_call_id '{call_id}' matches no tool call of an earlier assistant "
                         "message in this request; Gemini needs the function's name.", param=f"{where}.tool_call_id")
    body: dict[str, Any] = {"name": name, "response": _tool_result(message.get("content"), where)}
    if known and known[1]:
        body["id"] = known[1]
    return {"functionResponse": body}


def _tool_result(content: Any, where: str) -> dict[str, Any]:
    """Gemini wants an object: a JSON-object string stays one, anything else is `{"output": text}`."""
    text = content if isinstance(content, str) else "".join(p["text"] for p in _text_parts(content, where))
    if text[:1] == "{":
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"output": text}


def translate_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """`tools` + `tool_choice` → Gemini `tools` and `toolConfig` (empty when there are no tools)."""
    tools = body.get("tools")
    if not tools:
        return {}
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array.", param="tools")
    declarations = [_declaration(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    mode, allowed = _tool_mode(body.get("tool_choice"))
    if allowed is not None and mode == "AUTO":
        declarations = [d for d in declarations if d["name"] in allowed]
        allowed = None
    config: dict[str, Any] = {"mode": mode}
    if allowed is not None:
        config["allowedFunctionNames"] = allowed
    return {"tools": [{"functionDeclarations": declarations}], "toolConfig": {"functionCallingConfig": config}}


def _declaration(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise BadRequest(f"{where}.type '{kind}': Gemini targets support function tools only.", param=f"{where}.type")
    function = tool["function"]
    declaration: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters"):
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _tool_mode(choice: Any) -> tuple[str, list[str] | None]:
    if choice is None or choice == "auto":
        return "AUTO", None
    if choice == "none":
        return "NONE", None
    if choice == "required":
        return "ANY", None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str):
            return "ANY", [name]
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = [(t.get("function") or {}).get("name") for t in allowed.get("tools") or () if isinstance(t, dict)]
        return ("ANY" if allowed.get("mode") == "required" else "AUTO"), [n for n in names if isinstance(n, str)]
    raise BadRequest(f"tool_choice {orjson.dumps(choice).decode()} is not supported by Gemini targets.",
                     param="tool_choice")


_REFUSED_FIELDS: Mapping[str, str] = {
    "logit_bias": "Gemini has no token biasing",
    "logprobs": "llmroute does not translate Gemini log probabilities",
    "top_logprobs": "llmroute does not translate Gemini log probabilities",
    "audio": "Gemini targets do not produce audio output here",
}

_COPIED_PARAMS = (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("n", "candidateCount"),
                  ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                  ("frequency_penalty", "frequencyPenalty"))


def generation_config(request: ChatRequest) -> dict[str, Any]:
    body = request.body
    for name, why in _REFUSED_FIELDS.items():
        if body.get(name):
            raise BadRequest(f"'{name}' is not supported by Gemini targets: {why}.", param=name)
    config: dict[str, Any] = {gemini: body[openai] for openai, gemini in _COPIED_PARAMS if body.get(openai) is not None}
    if request.max_output_tokens is not None:
        config["maxOutputTokens"] = request.max_output_tokens
    stop = body.get("stop")
    if stop:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or len(stops) > MAX_STOP_SEQUENCES:
            raise BadRequest(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences on Gemini targets.", param="stop")
        config["stopSequences"] = stops
    config.update(_response_format(body.get("response_format")))
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_BUDGETS:
            raise BadRequest(f"reasoning_effort '{effort}' is not one of {', '.join(REASONING_BUDGETS)}.",
                             param="reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": REASONING_BUDGETS[effort]}
    return config


def _response_format(response_format: Any) -> dict[str, Any]:
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if kind is None or kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("response_format.json_schema.schema must be a JSON Schema object.",
                             param="response_format.json_schema.schema")
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    raise BadRequest(f"response_format type '{kind}' is not supported by Gemini targets.", param="response_format")


def build_generate_body(request: ChatRequest) -> dict[str, Any]:
    system, contents = translate_messages(request.body.get("messages"))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    out.update(translate_tools(request.body))
    config = generation_config(request)
    if config:
        out["generationConfig"] = config
    return out


def model_url(target: Target, method: str) -> str:
    version = target.options.get("api_version", DEFAULT_API_VERSION)
    model = target.model.removeprefix("models/")
    return f"{target.url.rstrip('/')}/{version}/models/{model}:{method}"


def request_headers(target: Target) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if target.credential:
        headers["x-goog-api-key"] = target.credential.reveal()
    return headers


# ---------------------------------------------------------------- response: Gemini → OpenAI


def _decode(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, dict) else None


def prompt_blocked(response: Mapping[str, Any]) -> UpstreamError | None:
    feedback = response.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if not reason or response.get("candidates"):
        return None
    detail = feedback.get("blockReasonMessage") if isinstance(feedback, dict) else None
    message = f"Gemini blocked the prompt ({reason})" + (f": {detail}" if detail else ".")
    return UpstreamError(kind=FailureKind.CONTENT_FILTER, message=message, status=400,
                         error_type="invalid_request_error", code="content_filter")


def malformed_call(reason: str, finish_message: Any) -> UpstreamError:
    detail = f": {finish_message}" if isinstance(finish_message, str) and finish_message else ""
    return UpstreamError(kind=FailureKind.SERVER_ERROR, message=f"Gemini finished with {reason}{detail}", status=502)


def _tool_call(part: Mapping[str, Any], seed: str, candidate: int, position: int) -> dict[str, Any]:
    call = part["functionCall"]
    call_id = call.get("id") or synthesised_tool_id(seed, candidate, position)
    out: dict[str, Any] = {"id": call_id, "type": "function",
                           "function": {"name": call.get("name") or "",
                                        "arguments": orjson.dumps(call.get("args") or {}).decode()}}
    if part.get("thoughtSignature"):
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def _split_parts(candidate: Mapping[str, Any]) -> tuple[list[str], list[Mapping[str, Any]]]:
    """Visible text and function-call parts; thoughts and other part kinds are not shown."""
    texts: list[str] = []
    calls: list[Mapping[str, Any]] = []
    content = candidate.get("content") or {}
    for part in content.get("parts") or ():
        if "functionCall" in part:
            calls.append(part)
        elif "text" in part and not part.get("thought"):
            texts.append(part["text"])
    return texts, calls


def _choice(candidate: Mapping[str, Any], position: int, seed: str) -> dict[str, Any]:
    index = candidate.get("index", position)
    reason = candidate.get("finishReason") or "STOP"
    if reason in MALFORMED_CALL_REASONS:
        raise malformed_call(reason, candidate.get("finishMessage"))
    texts, calls = _split_parts(candidate)
    tool_calls = [_tool_call(part, seed, index, k) for k, part in enumerate(calls)]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None,
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": None,
            "finish_reason": finish_reason_for(reason, bool(tool_calls))}


def _response_seed(response: Mapping[str, Any], body: bytes) -> str:
    return str(response.get("responseId") or hashlib.blake2b(body, digest_size=12).hexdigest())


def translate_response(body: bytes, model: str) -> ChatResult:
    response = _decode(body)
    if response is None:
        raise UpstreamError(kind=FailureKind.SERVER_ERROR, status=502,
                            message=f"Gemini answered with a body that is not a JSON object: {body_excerpt(body)}")
    if "error" in response and not response.get("candidates"):
        raise _in_band_error(response)
    blocked = prompt_blocked(response)
    if blocked:
        raise blocked
    seed = _response_seed(response, body)
    choices = [_choice(c, i, seed) for i, c in enumerate(response.get("candidates") or ())]
    usage = usage_from(response.get("usageMetadata"))
    data = {"id": "chatcmpl-" + seed, "object": "chat.completion", "created": CREATED_UNKNOWN,
            "model": response.get("modelVersion") or model, "choices": choices, "usage": usage.to_openai()}
    return ChatResult(data=data, usage=usage)


class GeminiStream:
    """SSE of partial `GenerateContentResponse`s → OpenAI chunks (providers.md §5.7).

    Gemini sends no `[DONE]`: the body's end is the end, so a stream that ends before every
    started candidate reported a `finishReason` is broken.
    """

    __slots__ = ("_id", "_model", "_open", "_parser", "_seed", "_shown", "_tools", "finish_reason", "usage")

    def __init__(self, model: str) -> None:
        self._parser = SSEParser()
        self._model = model
        self._id: str | None = None
        self._seed = ""
        self._open: set[int] = set()  # candidates that started and have not finished
        self._tools: dict[int, int] = {}  # candidate → tool calls streamed so far
        self._shown = False  # whether any content or tool call reached a chunk
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        for _event, payload in self._parser.feed(data):
            self._event(payload, out)
        return out

    def close(self) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        for _event, payload in self._parser.close():
            self._event(payload, out)
        if self.finish_reason is None or self._open:
            raise UpstreamError(kind=FailureKind.STREAM_BROKEN,
                                message="Gemini stream ended before a finishReason.")
        if self.usage is not None:
            out.append(StreamChunk({"id": self._id, "object": "chat.completion.chunk", "created": CREATED_UNKNOWN,
                                    "model": self._model, "choices": [], "usage": self.usage.to_openai()}))
        return out

    def _event(self, payload: bytes, out: list[StreamChunk]) -> None:
        response = _decode(payload)
        if response is None:
            raise UpstreamError(kind=FailureKind.STREAM_BROKEN,
                                message=f"Gemini sent a stream event that is not JSON: {body_excerpt(payload)}")
        if "error" in response:
            raise _in_band_error(response)
        blocked = prompt_blocked(response)
        if blocked:
            raise blocked
        if self._id is None:
            self._seed = _response_seed(response, payload)
            self._id = "chatcmpl-" + self._seed
            self._model = response.get("modelVersion") or self._model
        for position, candidate in enumerate(response.get("candidates") or ()):
            self._candidate(candidate, position, out)
        if response.get("usageMetadata"):
            self.usage = usage_from(response["usageMetadata"])

    def _candidate(self, candidate: Mapping[str, Any], position: int, out: list[StreamChunk]) -> None:
        index = candidate.get("index", position)
        if index not in self._tools:
            self._tools[index] = 0
            self._open.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        texts, calls = _split_parts(candidate)
        text = "".join(texts)
        if text:
            self._shown = True
            out.append(self._chunk(index, {"content": text}))
        for part in calls:
            position_in_message = self._tools[index]
            self._tools[index] = position_in_message + 1
            call = _tool_call(part, self._seed, index, position_in_message)
            call["index"] = position_in_message
            self._shown = True
            out.append(self._chunk(index, {"tool_calls": [call]}))
        reason = candidate.get("finishReason")
        if reason:
            self._finish(index, reason, candidate.get("finishMessage"), out)

    def _finish(self, index: int, reason: str, finish_message: Any, out: list[StreamChunk]) -> None:
        if reason in MALFORMED_CALL_REASONS and not self._shown:
            raise malformed_call(reason, finish_message)
        mapped = finish_reason_for(reason, self._tools[index] > 0)
        self._open.discard(index)
        self.finish_reason = mapped
        out.append(self._chunk(index, {}, mapped))

    def _chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> StreamChunk:
        return StreamChunk({"id": self._id, "object": "chat.completion.chunk", "created": CREATED_UNKNOWN,
                            "model": self._model,
                            "choices": [{"index": index, "delta": delta, "logprobs": None,
                                         "finish_reason": finish_reason}]})


# ---------------------------------------------------------------- errors (§3.5, §6)

_KIND_BY_STATUS: Mapping[int, FailureKind] = {
    401: FailureKind.AUTH, 403: FailureKind.AUTH, 404: FailureKind.TARGET_NOT_FOUND, 408: FailureKind.TIMEOUT,
    429: FailureKind.RATE_LIMITED, 503: FailureKind.OVERLOADED, 504: FailureKind.TIMEOUT,
}


def classify_payload(status: int, headers: Mapping[str, str], payload: Mapping[str, Any] | None,
                     raw: bytes = b"") -> UpstreamError:
    error = payload.get("error") if payload else None
    if not isinstance(error, dict):
        error = {}
    upstream_message, upstream_status = error.get("message"), error.get("status")
    message = upstream_message if isinstance(upstream_message, str) else body_excerpt(raw)
    rpc_status = upstream_status if isinstance(upstream_status, str) else ""
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    kind = _kind(status, rpc_status, message, details)
    retry_after = _retry_delay(details) if kind is FailureKind.RATE_LIMITED else None
    if retry_after is None and kind in (FailureKind.RATE_LIMITED, FailureKind.OVERLOADED):
        retry_after = retry_after_seconds(headers)
    client_facing = kind in (FailureKind.CLIENT_ERROR, FailureKind.CONTEXT_LENGTH)
    if not client_facing:
        message = f"Gemini {status} {rpc_status or 'error'}" + (f": {message}" if message else "")
    return UpstreamError(
        kind=kind, status=status, retry_after=retry_after, message=message,
        error_type="invalid_request_error" if client_facing else "api_error",
        code="context_length_exceeded" if kind is FailureKind.CONTEXT_LENGTH else (rpc_status.lower() or None),
    )


def _in_band_error(response: Mapping[str, Any]) -> UpstreamError:
    """An `{"error": {...}}` object inside a 200 body or stream: its `code` is the HTTP status."""
    error = response.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return classify_payload(code if isinstance(code, int) and code >= 400 else 500, {}, response)


def _kind(status: int, rpc_status: str, message: str, details: Sequence[Mapping[str, Any]]) -> FailureKind:
    if status == 400 or rpc_status in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
        return _kind_of_400(rpc_status, message, details)
    if status == 429 or rpc_status == "RESOURCE_EXHAUSTED":
        return FailureKind.QUOTA_EXHAUSTED if _per_day_quota(details) else FailureKind.RATE_LIMITED
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    return FailureKind.SERVER_ERROR if status >= 500 else FailureKind.CLIENT_ERROR


def _kind_of_400(rpc_status: str, message: str, details: Sequence[Mapping[str, Any]]) -> FailureKind:
    if rpc_status == "FAILED_PRECONDITION":
        return FailureKind.AUTH
    if "API key not valid" in message or any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return FailureKind.AUTH
    lowered = message.lower()
    if "exceeds the maximum number of tokens" in lowered or ("input token count" in lowered and "exceeds" in lowered):
        return FailureKind.CONTEXT_LENGTH
    return FailureKind.CLIENT_ERROR


def _per_day_quota(details: Iterable[Mapping[str, Any]]) -> bool:
    for detail in details:
        for violation in detail.get("violations") or ():
            if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId") or ""):
                return True
    return False


def _retry_delay(details: Iterable[Mapping[str, Any]]) -> float | None:
    """`RetryInfo.retryDelay` is a protobuf Duration in JSON: decimal seconds with an `s` suffix."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------- embeddings


def build_embeddings_body(body: Mapping[str, Any], target: Target) -> dict[str, Any]:
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest("'input' must be a string or an array of strings for Gemini targets "
                         "(token-id input is not supported).", param="input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    model = "models/" + target.model.removeprefix("models/")
    dimensions = body.get("dimensions")
    requests = []
    for text in texts:
        item: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            item["outputDimensionality"] = dimensions
        requests.append(item)
    return {"requests": requests}


def translate_embeddings(body: bytes, request_body: Mapping[str, Any], model: str) -> tuple[dict[str, Any], Usage]:
    response = _decode(body)
    embeddings = response.get("embeddings") if response else None
    if not isinstance(embeddings, list):
        raise UpstreamError(kind=FailureKind.SERVER_ERROR, status=502,
                            message=f"Gemini embeddings answer has no 'embeddings' list: {body_excerpt(body)}")
    as_base64 = request_body.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": i,
             "embedding": _base64_floats(e.get("values") or ()) if as_base64 else e.get("values") or []}
            for i, e in enumerate(embeddings)]
    metadata = (response or {}).get("usageMetadata") or {}
    prompt_tokens = int(metadata.get("promptTokenCount") or 0)
    usage = Usage(input_tokens=prompt_tokens)
    return ({"object": "list", "model": model, "data": data,
             "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}, usage)


def _base64_floats(values: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


# ---------------------------------------------------------------- the provider


class GeminiProvider:
    type: ClassVar[str] = "gemini"

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        body = orjson.dumps(build_generate_body(request))
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        return UpstreamRequest("POST", model_url(target, method), request_headers(target), body)

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        return translate_response(body, target.model)

    def chat_stream(self, request: ChatRequest, target: Target) -> GeminiStream:
        return GeminiStream(target.model)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        payload = orjson.dumps(build_embeddings_body(body, target))
        return UpstreamRequest("POST", model_url(target, "batchEmbedContents"), request_headers(target), payload)

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        return translate_embeddings(body, request_body, target.model)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return classify_payload(status, headers, _decode(body), body)
