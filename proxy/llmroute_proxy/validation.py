"""Front-door checks: a request of the wrong shape is refused with the path of the field at fault.

Both front doors are checked here — OpenAI chat completions and embeddings, Anthropic Messages —
against what the real APIs accept (their SDKs' request types): wrong types, booleans where numbers
are due (`True` is an `int` in Python), non-finite numbers, values out of range, empty or oversized
arrays, unknown roles and content-part types. Each refusal is a `BadRequest` whose `param` and
message name the field (`messages[2].content[0].type`). Fields the checks do not know are let
through: providers add fields faster than this list grows. What one provider cannot honour is
refused by that provider's translator, not here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from llmroute_proxy.errors import BadRequest

JSON = dict[str, Any]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Content-part types each OpenAI role may send (openai SDK: ChatCompletion*MessageParam).
_PART_TYPES = {"user": ("text", "image_url", "input_audio", "file"), "assistant": ("text", "refusal"),
               "system": ("text",), "developer": ("text",), "tool": ("text",), "function": ("text",)}
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request


# ---- OpenAI chat completions ------------------------------------------------------------


def validate_chat(body: Any) -> JSON:
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_kind(body)}.")
    _required_string(body.get("model"), "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        _chat_message(message, f"messages[{i}]")
    # Only the fields present are checked (an absent field is as valid as a null one), in the
    # body's own order: a request carries a handful of the thirty fields known here.
    for name, value in body.items():
        check = _CHAT_FIELDS.get(name)
        if check is not None and value is not None:
            check(body, name, value)
    return body


_FieldCheck = Callable[[JSON, str, Any], object]
"""Checks one present field: (body, field name, its value); raises BadRequest."""


def _number_within(minimum: float | None, maximum: float | None) -> _FieldCheck:
    return lambda body, name, value: number(value, name, minimum, maximum)


def _integer_within(minimum: int | None = None, maximum: int | None = None) -> _FieldCheck:
    return lambda body, name, value: integer(value, name, minimum, maximum)


def _flag(body: JSON, name: str, value: Any) -> None:
    boolean(value, name)


def _text(body: JSON, name: str, value: Any) -> None:
    string(value, name)


_CHAT_FIELDS: dict[str, _FieldCheck] = {
    "stream": lambda body, name, value: _stream(body),
    "stream_options": lambda body, name, value: _stream(body),
    "temperature": _number_within(0, 2),
    "top_p": _number_within(0, 1),
    "presence_penalty": _number_within(-2, 2),
    "frequency_penalty": _number_within(-2, 2),
    "max_tokens": _integer_within(minimum=1),
    "max_completion_tokens": _integer_within(minimum=1),
    "n": _integer_within(minimum=1),
    "seed": _integer_within(),
    "top_logprobs": _integer_within(minimum=0, maximum=20),
    "stop": lambda body, name, value: _stop(value),
    "tools": lambda body, name, value: _tools(value),
    "tool_choice": lambda body, name, value: _tool_choice(value),
    "response_format": lambda body, name, value: _response_format(value),
    "logit_bias": lambda body, name, value: _logit_bias(value),
    "logprobs": _flag,
    "parallel_tool_calls": _flag,
    "store": _flag,
    "user": _text,
    "safety_identifier": _text,
    "prompt_cache_key": _text,
    "reasoning_effort": _text,
    "service_tier": _text,
    "metadata": lambda body, name, value: _string_map(value, name),
}
"""The optional fields of a chat completion request that are checked, and how."""


def _chat_message(message: Any, path: str) -> None:
    if not isinstance(message, dict):
        raise BadRequest(f"{path} must be an object, not {_kind(message)}.", param=path)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise BadRequest(f"{path}.role must be one of {', '.join(sorted(ROLES))}; got {_shown(role)}.",
                         param=f"{path}.role")
    content = message.get("content")
    if isinstance(content, list):
        _content_parts(content, _PART_TYPES[role], role != "assistant", f"{path}.content")
    elif content is not None and not isinstance(content, str):
        raise BadRequest(f"{path}.content must be a string or an array of parts, not {_kind(content)}.",
                         param=f"{path}.content")
    string(message.get("name"), f"{path}.name")
    if role == "tool":
        _required_string(message.get("tool_call_id"), f"{path}.tool_call_id")
    if role == "assistant":
        calls = array(message.get("tool_calls"), f"{path}.tool_calls")
        for j, call in enumerate(calls or ()):
            _tool_call(call, f"{path}.tool_calls[{j}]")


def _content_parts(parts: list[Any], allowed: tuple[str, ...], non_empty: bool, path: str) -> None:
    if non_empty and not parts:
        raise BadRequest(f"{path} must not be an empty array.", param=path)
    for k, part in enumerate(parts):
        part_path = f"{path}[{k}]"
        kind = part_type(part, part_path)
        if kind not in allowed:
            raise BadRequest(f"{part_path}.type {kind!r} is not allowed here; expected one of "
                             f"{', '.join(allowed)}.", param=f"{part_path}.type")
        field = {"text": "text", "refusal": "refusal"}.get(kind)
        if field is not None:
            _required_string(part.get(field), f"{part_path}.{field}")
        elif kind == "image_url":
            _required_string(_required_object(part.get("image_url"), f"{part_path}.image_url").get("url"),
                             f"{part_path}.image_url.url")
        else:
            _required_object(part.get(kind), f"{part_path}.{kind}")


def part_type(part: Any, path: str) -> str:
    """The `type` of a content part or block, which must be a string."""
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(part, dict):
        raise BadRequest(f"{path} must be an object, not {_kind(part)}.", param=path)
    if not isinstance(kind, str):
        raise BadRequest(f"{path}.type is required and must be a string.", param=f"{path}.type")
    return kind


def _tool_call(call: Any, path: str) -> None:
    call = _required_object(call, path)
    _required_string(call.get("id"), f"{path}.id")
    function = _required_object(call.get("function"), f"{path}.function")
    _required_string(function.get("name"), f"{path}.function.name")
    string(function.get("arguments"), f"{path}.function.arguments")


def _stream(body: JSON) -> None:
    stream = boolean(body.get("stream"), "stream")
    options = body.get("stream_options")
    if options is not None and stream is not True:
        raise BadRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    if options is not None:
        boolean(_required_object(options, "stream_options").get("include_usage"), "stream_options.include_usage")


def _stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list):
        raise BadRequest(f"'stop' must be a string or an array of strings, not {_kind(stop)}.", param="stop")
    strings(stop, "stop", max_items=MAX_STOP_SEQUENCES)


def _tools(tools: Any) -> None:
    for i, tool in enumerate(array(tools, "tools", min_items=1) or ()):
        path = f"tools[{i}]"
        tool = _required_object(tool, path)
        kind = tool.get("type", "function")
        if kind == "custom":
            _required_string(_required_object(tool.get("custom"), f"{path}.custom").get("name"),
                             f"{path}.custom.name")
            continue
        if kind != "function":
            raise BadRequest(f"{path}.type must be function or custom; got {_shown(kind)}.", param=f"{path}.type")
        function = _required_object(tool.get("function"), f"{path}.function")
        _required_string(function.get("name"), f"{path}.function.name")
        string(function.get("description"), f"{path}.function.description")
        optional_object(function.get("parameters"), f"{path}.function.parameters")
        boolean(function.get("strict"), f"{path}.function.strict")


def _tool_choice(choice: Any) -> None:
    if choice is None or (isinstance(choice, str) and choice in _TOOL_CHOICE_MODES):
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = _required_object(choice.get("function"), "tool_choice.function")
        _required_string(function.get("name"), "tool_choice.function.name")
        return
    if isinstance(choice, dict) and choice.get("type") in ("allowed_tools", "custom"):
        return
    raise BadRequest("'tool_choice' must be none, auto, required or an object naming a function; got "
                     f"{_shown(choice)}.", param="tool_choice")


def _response_format(response_format: Any) -> None:
    if response_format is None:
        return
    kind = _required_object(response_format, "response_format").get("type")
    if not isinstance(kind, str) or kind not in _RESPONSE_FORMATS:
        raise BadRequest(f"response_format.type must be one of {', '.join(_RESPONSE_FORMATS)}; got {_shown(kind)}.",
                         param="response_format.type")
    if kind == "json_schema":
        schema = _required_object(response_format.get("json_schema"), "response_format.json_schema")
        _required_string(schema.get("name"), "response_format.json_schema.name")
        optional_object(schema.get("schema"), "response_format.json_schema.schema")


def _logit_bias(bias: Any) -> None:
    for token, value in (optional_object(bias, "logit_bias") or {}).items():
        number(value, f"logit_bias.{token}", -100, 100)


def _string_map(value: Any, path: str) -> None:
    for key, item in (optional_object(value, path) or {}).items():
        string(item, f"{path}.{key}")


# ---- OpenAI embeddings ------------------------------------------------------------------


def validate_embeddings(body: Any) -> JSON:
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_kind(body)}.")
    _required_string(body.get("model"), "model")
    value = body.get("input")
    if isinstance(value, str):
        _embedding_text(value, "input")
    elif isinstance(value, list) and value:
        if len(value) > MAX_EMBEDDING_INPUTS:
            raise BadRequest(f"'input' has {len(value)} items; at most {MAX_EMBEDDING_INPUTS} are allowed.",
                             param="input")
        for i, item in enumerate(value):
            _embedding_item(item, f"input[{i}]")
    else:
        raise BadRequest("'input' is required: a string or a non-empty array.", param="input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise BadRequest(f"'encoding_format' must be float or base64; got {_shown(body['encoding_format'])}.",
                         param="encoding_format")
    integer(body.get("dimensions"), "dimensions", minimum=1)
    string(body.get("user"), "user")
    return body


def _embedding_item(item: Any, path: str) -> None:
    """A text, a token id, or an array of token ids (one tokenised text)."""
    if isinstance(item, str):
        _embedding_text(item, path)
    elif isinstance(item, list):
        if not item:
            raise BadRequest(f"{path} must not be an empty array of tokens.", param=path)
        for k, token in enumerate(item):
            integer(token, f"{path}[{k}]", minimum=0)
    else:
        integer(item, path, minimum=0)


def _embedding_text(text: str, path: str) -> None:
    if not text:
        raise BadRequest(f"'{path}' must not be an empty string.", param=path)


# ---- Anthropic Messages -----------------------------------------------------------------


def validate_messages(body: Any, *, counting: bool = False) -> JSON:
    """The shape of a Messages request, checked before any translation (so that a request only
    Anthropic can serve is checked as fully as any other); `counting`: a count-tokens request, which
    generates nothing and so need not set `max_tokens`."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    _required_string(body.get("model"), "model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None and not counting:
        raise BadRequest("'max_tokens' is required and must be an integer of at least 1.", param="max_tokens")
    integer(max_tokens, "max_tokens", minimum=1)
    boolean(body.get("stream"), "stream")
    number(body.get("temperature"), "temperature", 0, 1)
    number(body.get("top_p"), "top_p", 0, 1)
    integer(body.get("top_k"), "top_k", minimum=0)
    strings(array(body.get("stop_sequences"), "stop_sequences") or [], "stop_sequences")
    metadata = optional_object(body.get("metadata"), "metadata") or {}
    string(metadata.get("user_id"), "metadata.user_id")
    _anthropic_system(body.get("system"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        _anthropic_message(message, f"messages[{i}]", last=i == len(messages) - 1)
    _anthropic_tools(body.get("tools"))
    _anthropic_tool_choice(body.get("tool_choice"))
    _thinking(body.get("thinking"))
    return body


def _anthropic_system(system: Any) -> None:
    if isinstance(system, list):
        for k, block in enumerate(system):
            part_type(block, f"system[{k}]")
    elif system is not None and not isinstance(system, str):
        raise BadRequest(f"'system' must be a string or an array of text blocks, not {_kind(system)}.",
                         param="system")


_MESSAGES_ROLES = ("user", "assistant", "system")
"""A `system` message mid-conversation is Claude's beta `mid-conversation-system-2026-04-07` (Claude
Code sends one in every request): Claude takes it with that beta, and every other provider as the
system message it is."""


def _anthropic_message(message: Any, path: str, last: bool) -> None:
    message = _required_object(message, path)
    role = message.get("role")
    if not isinstance(role, str) or role not in _MESSAGES_ROLES:
        raise BadRequest(f"{path}.role must be user, assistant or system; got {_shown(role)}.", param=f"{path}.role")
    content = message.get("content")
    if content in ("", []) and not (last and role == "assistant"):
        raise BadRequest(f"{path}.content must not be empty (only a final assistant message may be).",
                         param=f"{path}.content")
    if isinstance(content, list):
        for j, block in enumerate(content):
            part_type(block, f"{path}.content[{j}]")
    elif not isinstance(content, str):
        raise BadRequest(f"{path}.content must be a string or an array of blocks, not {_kind(content)}.",
                         param=f"{path}.content")


def _anthropic_tools(tools: Any) -> None:
    for i, tool in enumerate(array(tools, "tools") or ()):
        tool = _required_object(tool, f"tools[{i}]")
        _required_string(tool.get("name"), f"tools[{i}].name")


def _anthropic_tool_choice(choice: Any) -> None:
    if choice is None:
        return
    kind = _required_object(choice, "tool_choice").get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise BadRequest(f"tool_choice.type must be auto, any, tool (with a name) or none; got {_shown(kind)}.",
                         param="tool_choice.type")
    if kind == "tool":
        _required_string(choice.get("name"), "tool_choice.name")
    boolean(choice.get("disable_parallel_tool_use"), "tool_choice.disable_parallel_tool_use")


def _thinking(thinking: Any) -> None:
    if thinking is None:
        return
    kind = _required_object(thinking, "thinking").get("type")
    if kind not in ("enabled", "disabled", "adaptive"):
        raise BadRequest(f"thinking.type must be enabled, disabled or adaptive; got {_shown(kind)}.",
                         param="thinking.type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if budget is None:
            raise BadRequest("thinking.budget_tokens is required when thinking is enabled.",
                             param="thinking.budget_tokens")
        integer(budget, "thinking.budget_tokens", minimum=1)


# ---- one field -------------------------------------------------------------------------
# Each takes a value that may be absent (None) and returns it when it has the right type.


def boolean(value: Any, path: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"'{path}' must be a boolean, not {_kind(value)}.", param=path)
    return value


def string(value: Any, path: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{path}' must be a string, not {_kind(value)}.", param=path)
    return value


def integer(value: Any, path: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{path}' must be an integer, not {_kind(value)}.", param=path)
    _in_range(value, path, minimum, maximum)
    return value


def number(value: Any, path: str, minimum: float | None = None, maximum: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{path}' must be a number, not {_kind(value)}.", param=path)
    if not math.isfinite(value):
        raise BadRequest(f"'{path}' must be a finite number.", param=path)
    _in_range(value, path, minimum, maximum)
    return value


def _in_range(value: float, path: str, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise BadRequest(f"'{path}' must be at least {minimum}; got {value}.", param=path)
    if maximum is not None and value > maximum:
        raise BadRequest(f"'{path}' must be at most {maximum}; got {value}.", param=path)


def array(value: Any, path: str, min_items: int = 0, max_items: int | None = None) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest(f"'{path}' must be an array, not {_kind(value)}.", param=path)
    if len(value) < min_items:
        raise BadRequest(f"'{path}' must have at least {min_items} item(s).", param=path)
    if max_items is not None and len(value) > max_items:
        raise BadRequest(f"'{path}' has {len(value)} items; at most {max_items} are allowed.", param=path)
    return value


def strings(values: list[Any], path: str, max_items: int | None = None) -> None:
    array(values, path, max_items=max_items)
    for k, value in enumerate(values):
        if not isinstance(value, str):
            raise BadRequest(f"'{path}' must be an array of strings; {path}[{k}] is {_kind(value)}.",
                             param=f"{path}[{k}]")


def optional_object(value: Any, path: str) -> JSON | None:
    return None if value is None else _required_object(value, path)


def _required_object(value: Any, path: str) -> JSON:
    if not isinstance(value, dict):
        raise BadRequest(f"'{path}' must be an object, not {_kind(value)}.", param=path)
    return value


def _required_string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{path}' is required and must be a non-empty string.", param=path)
    return value


def _shown(value: Any) -> str:
    """A value quoted in an error, cut short: the client may have sent anything."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
