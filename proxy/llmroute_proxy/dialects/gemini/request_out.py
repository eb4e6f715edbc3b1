"""OpenAI canonical request → Gemini (Developer API) request body, for chat and embeddings.

Requests are translated field by field (providers.md §3, §5); a field whose loss would change
what the model does (`logit_bias`, `logprobs`, output `audio`, image URLs we would have to fetch)
is refused with `BadRequest` naming it, never silently dropped. Fields that only tune delivery
(`parallel_tool_calls`, `user`, `image_url.detail`, `strict`) are dropped.

Choices documented here because they are not forced by either API:

- Tool schemas go out as `parametersJsonSchema` and structured outputs as `responseJsonSchema`:
  OpenAI clients send JSON Schema, and Gemini's older `parameters`/`responseSchema` take only an
  OpenAPI-3.0 subset that rejects `$ref`, `$defs`, `oneOf` and `additionalProperties`, so a schema
  that works against OpenAI would fail here for reasons the client cannot see.
- Tool-call IDs: the function name of a `tool` message is recovered from the assistant
  `tool_calls` earlier in the same request, and the ID is sent back as `functionResponse.id` only
  when Gemini produced it (IDs with another producer's prefix are withheld: some API versions
  reject `id` they did not issue).
- Thought signatures ride on tool calls as `extra_content.google.thought_signature`, the field
  Google's own OpenAI-compatible endpoint uses; a replayed call without one gets Google's
  documented placeholder so Gemini 3 accepts histories from clients or providers that drop it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from llmroute_proxy.dialects.base import ChatRequest
from llmroute_proxy.dialects.embeddings import embedding_texts
from llmroute_proxy.errors import BadRequest
from llmroute_proxy.table import Target

MAX_STOP_SEQUENCES = 5
THOUGHT_SIGNATURE_PLACEHOLDER = "skip_thought_signature_validator"
FOREIGN_TOOL_ID_PREFIXES = ("call_", "toolu_", "srvtoolu_", "tooluse_")

# low/medium/high as Google's own OpenAI-compatible endpoint maps them; 24576 is the largest
# budget every 2.5 model accepts, so the efforts above `high` stop there.
REASONING_BUDGETS: Mapping[str, int] = {
    "none": 0, "minimal": 128, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576, "max": 24576,
}
# The least budget a model family thinks with, where it is above 128: Gemini refuses less with a 400
# (2.5 Pro cannot stop thinking at all: "Budget 0 is invalid"; Flash-Lite may stop, with 0).
LEAST_BUDGETS: tuple[tuple[str, int, bool], ...] = (("gemini-2.5-pro", 128, False),
                                                     ("gemini-2.5-flash-lite", 512, True))


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


def generation_config(request: ChatRequest, model: str = "") -> dict[str, Any]:
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
        config["thinkingConfig"] = {"thinkingBudget": _thinking_budget(REASONING_BUDGETS[effort], model)}
    return config


def _thinking_budget(budget: int, model: str) -> int:
    """`budget` raised to the least the model thinks with (`LEAST_BUDGETS`), 0 kept where it may stop."""
    name = model.removeprefix("models/")
    for family, least, may_stop in LEAST_BUDGETS:
        if name.startswith(family):
            return budget if (budget == 0 and may_stop) else max(budget, least)
    return budget


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


def build_generate_body(request: ChatRequest, model: str = "") -> dict[str, Any]:
    system, contents = translate_messages(request.body.get("messages"))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    out.update(translate_tools(request.body))
    config = generation_config(request, model)
    if config:
        out["generationConfig"] = config
    return out


# ---------------------------------------------------------------- embeddings


def build_embeddings_body(body: Mapping[str, Any], target: Target) -> dict[str, Any]:
    texts = embedding_texts(body, "Gemini")
    model = "models/" + target.model.removeprefix("models/")
    dimensions = body.get("dimensions")
    requests = []
    for text in texts:
        item: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            item["outputDimensionality"] = dimensions
        requests.append(item)
    return {"requests": requests}

