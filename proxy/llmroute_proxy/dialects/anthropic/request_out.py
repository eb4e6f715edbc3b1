"""Canonical OpenAI chat request → Anthropic Messages body (providers.md §5.1–5.4).

A canonical OpenAI request is translated field by field, and a field whose loss would change
the answer (`n`, `seed`, penalties, JSON mode…) is refused with a 400 naming it rather than
silently dropped.

Thinking blocks an assistant message carries back (`thinking_blocks`, `dialects/thinking.py`) open
its turn, as Claude wants them; they keep thinking enabled in a tool loop, which Claude refuses
over a last tool turn without them, and are left out of a request that does not think. Consecutive
assistant messages become one turn, which keeps only the first message's blocks (`_append_turn`).
`service_tier` is mapped to Anthropic's nearest (`dialects/service_tiers.py`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from llmroute_proxy.dialects.anthropic.wire import arguments_object
from llmroute_proxy.dialects.base import ChatRequest, NativeDialect
from llmroute_proxy.dialects.service_tiers import anthropic_request_tier
from llmroute_proxy.dialects.thinking import FIELD as THINKING_BLOCKS
from llmroute_proxy.dialects.thinking import checked_blocks
from llmroute_proxy.errors import BadRequest

DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768, "max": 32768}
MIN_THINKING_BUDGET = 1024
THINKING_OUTPUT_CEILING = 32000
"""The most `max_tokens` the sidecar raises a request to when it adds a thinking budget: the least output limit
of the Claude models that think (Opus 4 and 4.1; the others allow 64,000). Claude refuses more with a 400."""
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

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


def native_messages(request: ChatRequest) -> JSON | None:
    """The client's own Messages body, when it came in on `/v1/messages`."""
    native = request.native
    return native.body if native is not None and native.dialect is NativeDialect.ANTHROPIC_MESSAGES else None


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
    if "thinking" not in out:
        _drop_thinking_blocks(turns)
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str):
        out["metadata"] = {"user_id": user}
    tier = anthropic_request_tier(body.get("service_tier"))
    if tier is not None:
        out["service_tier"] = tier
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
    if _unthinkable(out):
        return
    answer = out["max_tokens"]
    if answer <= budget:  # thinking counts against max_tokens: it is added, within every model's output limit
        room = THINKING_OUTPUT_CEILING - answer
        if room >= MIN_THINKING_BUDGET:
            budget = min(budget, room)
            out["max_tokens"] = answer + budget
        else:  # the answer alone nearly fills the ceiling: thinking takes half of it
            budget = answer // 2
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _unthinkable(out: JSON) -> bool:
    """Whether Claude would refuse thinking (a 400) beside what the request already sets: sampling other
    than its defaults, a forced tool call, or a last tool turn without its signed thinking block (the
    client did not send `thinking_blocks` back). `reasoning_effort` is the one hint among them, so it
    yields: the request goes without thinking, Anthropic's own advice."""
    choice = out.get("tool_choice") or {}
    top_p = out.get("top_p")
    return (out.get("temperature") not in (None, 1) or out.get("top_k") is not None
            or (isinstance(top_p, (int, float)) and top_p < 0.95) or choice.get("type") in ("any", "tool")
            or _ends_in_tool_turn(out["messages"]))


def _ends_in_tool_turn(turns: list[JSON]) -> bool:
    """Whether the last assistant turn called tools without opening with its thinking block."""
    last = next((turn for turn in reversed(turns) if turn["role"] == "assistant"), None)
    content = last["content"] if last is not None else None
    return (isinstance(content, list) and any(block.get("type") == "tool_use" for block in content)
            and content[0].get("type") not in _THINKING_TYPES)


_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})


def _drop_thinking_blocks(turns: list[JSON]) -> None:
    """Every assistant turn without its thinking blocks; a turn that held nothing else is left out, as
    Claude refuses an empty one, and the user turns around it become one."""
    kept: list[JSON] = []
    for turn in turns:
        content = turn["content"]
        if turn["role"] == "assistant" and isinstance(content, list):
            content = [block for block in content if block.get("type") not in _THINKING_TYPES]
        _append_turn(kept, turn["role"], content)
    turns[:] = kept


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
    """Anthropic wants user and assistant to alternate: a same-role neighbour is merged in, without
    its thinking blocks."""
    merged = bool(turns) and turns[-1]["role"] == role
    if merged and isinstance(content, list):
        # Claude takes a block back only where it wrote it: opening its answer, after the same messages.
        # A merged-in message's blocks would follow the turn's other blocks (a 400: "blocks in the latest
        # assistant message cannot be modified"), or, moved to the front, precede what was said before
        # them. Claude allows leaving them out, and the turn still opens with the first message's.
        content = [block for block in content if block.get("type") not in _THINKING_TYPES]
    if not content:
        return
    if merged:
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
        if part["text"].strip():  # Claude refuses a text block of whitespace (or nothing) with a 400
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
    blocks = [_user_block(part, f"{path}[{j}]") for j, part in enumerate(content)]
    return [block for block in blocks if block["type"] != "text" or block["text"].strip()]


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
    signed = message.get(THINKING_BLOCKS)
    if not tool_calls and not signed and isinstance(content, str):
        return content if content.strip() else ""  # models write "\n\n"; Claude refuses blank text
    blocks: list[JSON] = checked_blocks(signed, f"messages[{i}].{THINKING_BLOCKS}") if signed else []
    if isinstance(content, str):
        blocks += [{"type": "text", "text": content}] if content.strip() else []
    elif isinstance(content, list):
        parts = [part for part in content if isinstance(part, dict) and part.get("type") != "refusal"]
        blocks += _text_blocks(parts, f"messages[{i}].content")
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
    return {"type": "tool_use", "id": _tool_id(call["id"]), "name": function["name"],
            "input": _tool_input(function.get("arguments"), f"{path}.function.arguments")}


_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_NOT_IN_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(call_id: str) -> str:
    """A tool call's id as Claude accepts it (`^[a-zA-Z0-9_-]+$`, else a 400): other providers' ids
    (Kimi's `functions.name:0`, Responses ids with `|`) have the other characters replaced and a hash of
    the whole id appended, the same for the call and its result, and distinct for distinct ids."""
    if _TOOL_ID.fullmatch(call_id):
        return call_id
    digest = hashlib.blake2b(call_id.encode(), digest_size=5).hexdigest()
    return f"{_NOT_IN_TOOL_ID.sub('_', call_id)}_{digest}"


def _tool_input(arguments: Any, path: str) -> JSON:
    if arguments is None or arguments == "":
        return {}
    value = arguments_object(arguments) if isinstance(arguments, str) else None
    if value is None:
        raise BadRequest("Tool call arguments must be a JSON object encoded as a string.", param=path)
    return value


def _tool_result(message: JSON, i: int) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise BadRequest("A tool message needs `tool_call_id`.", param=f"messages[{i}].tool_call_id")
    result: JSON = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    elif content is not None:
        result["content"] = _text_blocks(content, f"messages[{i}].content")
    return result

