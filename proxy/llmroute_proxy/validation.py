"""Front-door checks of an OpenAI request: wrong types are refused with the field's path.

Only what every provider relies on is checked here (shape, roles, types of the common
parameters); what one provider cannot honour is refused by that provider's translator.
"""

from __future__ import annotations

from typing import Any

from llmroute_proxy.errors import BadRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGERS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")


def validate_chat(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_kind(body)}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object, not {_kind(message)}.", param=f"messages[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}; got {role!r}.",
                             param=f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(f"messages[{i}].content must be a string or an array of parts, not {_kind(content)}.",
                             param=f"messages[{i}].content")
    _check_common(body)
    return body


def validate_embeddings(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_kind(body)}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string.", param="model")
    value = body.get("input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise BadRequest("'input' is required: a string or a non-empty array.", param="input")
    return body


def _check_common(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be a boolean, not {_kind(stream)}.", param="stream")
    if body.get("stream_options") is not None and stream is not True:
        raise BadRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    for name in _NUMBERS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(f"'{name}' must be a number, not {_kind(value)}.", param=name)
    for name in _INTEGERS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"'{name}' must be an integer, not {_kind(value)}.", param=name)
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if isinstance(value, int) and value < 1:
            raise BadRequest(f"'{name}' must be at least 1.", param=name)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str | list):
        raise BadRequest(f"'stop' must be a string or an array of strings, not {_kind(stop)}.", param="stop")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest(f"'tools' must be an array, not {_kind(tools)}.", param="tools")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
