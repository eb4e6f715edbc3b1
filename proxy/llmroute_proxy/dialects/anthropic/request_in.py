"""A client's Messages request (`POST /v1/messages`) → the canonical OpenAI request.

Routing, budgets and every non-Anthropic target work on the canonical OpenAI request this
module derives; Anthropic targets get the client's own body instead (the server keeps it as
`ChatRequest.native`), so what cannot be said in OpenAI's terms — thinking blocks,
`cache_control` — is dropped here without loss. A block or tool that would change the
answer if dropped (server tools, URL documents) is refused with a 400 naming its path.
The answers go back through `answer_out`.
"""

from __future__ import annotations

import re
from typing import Any

from llmroute_proxy.dialects.anthropic.wire import tool_call
from llmroute_proxy.dialects.service_tiers import openai_request_tier
from llmroute_proxy.errors import BadRequest
from llmroute_proxy.validation import validate_messages

JSON = dict[str, Any]

_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_BETAS = re.compile(r"[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*")
MAX_BETAS_LENGTH = 1024
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


# ---- request: Messages → canonical -------------------------------------------------------



class AnthropicOnly(BadRequest):
    """A valid Messages request using what only Anthropic serves (server tools, URL documents,
    block types without a canonical form): it can go to Anthropic targets only, natively."""


def beta_features(header: str | None) -> str:
    """The client's `anthropic-beta` header (the beta features it asks of Claude, comma-separated), to
    be sent on to Anthropic targets; "" when it sent none. `BadRequest` when it is not a list of names."""
    value = (header or "").strip()
    if value and (len(value) > MAX_BETAS_LENGTH or _BETAS.fullmatch(value) is None):
        raise BadRequest("The anthropic-beta header must be a comma-separated list of beta feature names.",
                         param="anthropic-beta")
    return value


def routing_summary(body: JSON) -> JSON:
    """The least canonical request the router needs (model, the text of each turn, tools or not)
    for a request that only Anthropic can serve; it is never sent to any provider."""
    messages: list[JSON] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") in ("user", "assistant"):
            messages.append({"role": message["role"], "content": _plain_text(message.get("content"))})
    summary: JSON = {"model": body.get("model"), "messages": messages or [{"role": "user", "content": ""}]}
    if isinstance(body.get("max_tokens"), int):
        summary["max_tokens"] = body["max_tokens"]
    if body.get("stream") is True:
        summary["stream"] = True
    if body.get("tools"):
        summary["tools"] = [{"type": "function", "function": {"name": "anthropic_tool"}}]
    return summary


def _plain_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b["text"] for b in content
                         if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
    return ""

def request_to_canonical(body: Any, *, counting: bool = False) -> JSON:
    """The canonical OpenAI request for a Messages request (`counting`: a count-tokens request, which
    has no `max_tokens`); `BadRequest` names what is wrong."""
    body = validate_messages(body, counting=counting)
    _anthropic_only_fields(body)
    out: JSON = {"model": body["model"], "messages": _system(body.get("system")) + _messages(body["messages"])}
    if body.get("max_tokens") is not None:
        out["max_completion_tokens"] = body["max_tokens"]
    _sampling(body, out)
    _tooling(body, out)
    _reasoning(body.get("thinking"), out)
    _output_format(body.get("output_config"), out)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    tier = openai_request_tier(body.get("service_tier"))
    if tier is not None:
        out["service_tier"] = tier
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


_ANTHROPIC_ONLY_FIELDS = {
    "mcp_servers": "Claude itself calls the MCP servers in `mcp_servers`",
    "container": "`container` names a code-execution container of Anthropic's",
}
"""Top-level fields whose loss would change the answer and that no other provider can take. (Others
are left out for them: `context_management` only trims what Claude reads of the conversation.)"""


def _anthropic_only_fields(body: JSON) -> None:
    for field, why in _ANTHROPIC_ONLY_FIELDS.items():
        if body.get(field):
            raise AnthropicOnly(f"{why}: it cannot be translated for this route.", param=field)


def _system(system: Any) -> list[JSON]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise BadRequest("`system` must be a string or an array of text blocks.", param="system")
    return [{"role": "system", "content": _system_content(system, "system")}] if system else []


def _system_content(content: str | list[Any], path: str) -> str | list[JSON]:
    """System text: a string, or text blocks (their `cache_control` kept)."""
    if isinstance(content, str):
        return content
    return _collapse([_text_part(block, f"{path}[{k}]") for k, block in enumerate(content)])


def _messages(messages: Any) -> list[JSON]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty array.", param="messages")
    out: list[JSON] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest("Each message must be an object.", param=path)
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant", "system"):
            raise BadRequest("`role` must be user, assistant or system.", param=f"{path}.role")
        if not isinstance(content, (str, list)):
            raise BadRequest("`content` must be a string or an array of blocks.", param=f"{path}.content")
        if role == "user":
            out.extend(_user_messages(content, f"{path}.content"))
        elif role == "system":  # mid-conversation, where it was said
            out.append({"role": "system", "content": _system_content(content, f"{path}.content")})
        else:
            out.append(_assistant_message(content, f"{path}.content"))
    return out


def _block_type(block: Any, path: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise BadRequest("Each content block needs a string `type`.", param=f"{path}.type")
    return kind


def _user_messages(content: str | list[Any], path: str) -> list[JSON]:
    """Tool results become `tool` messages first (OpenAI wants them right after the call)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(content):
        block_path = f"{path}[{j}]"
        kind = _block_type(block, block_path)
        if kind == "tool_result":
            tool_messages.append(_tool_message(block, block_path, parts))
        elif kind not in _DROPPED_BLOCKS:
            parts.append(_user_part(kind, block, block_path))
    if parts:
        tool_messages.append({"role": "user", "content": _collapse(parts)})
    return tool_messages


def _user_part(kind: str, block: JSON, path: str) -> JSON:
    if kind == "text":
        return _text_part(block, path)
    if kind == "image":
        return _image_part(block, path)
    if kind == "document":
        return _document_part(block, path)
    raise AnthropicOnly(f"Content block type {kind!r} cannot be translated for this route.", param=f"{path}.type")


def _text_part(block: Any, path: str) -> JSON:
    if _block_type(block, path) != "text":
        raise BadRequest("Only text blocks are allowed here.", param=f"{path}.type")
    if not isinstance(block.get("text"), str):
        raise BadRequest("A text block needs a string `text`.", param=f"{path}.text")
    return {"type": "text", "text": block["text"]}


def _collapse(parts: list[JSON]) -> str | list[JSON]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _source(block: JSON, path: str) -> JSON:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url", "text"):
        raise BadRequest("`source.type` must be base64 or url.", param=f"{path}.source.type")
    return source


def _image_part(block: JSON, path: str) -> JSON:
    source = _source(block, path)
    if source["type"] == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if source["type"] == "base64" and isinstance(source.get("media_type"), str) \
            and isinstance(source.get("data"), str):
        return {"type": "image_url", "image_url": {"url": f"data:{source['media_type']};base64,{source['data']}"}}
    raise BadRequest("An image needs a base64 source (media_type, data) or a url source.",
                     param=f"{path}.source")


def _document_part(block: JSON, path: str) -> JSON:
    source = _source(block, path)
    if source["type"] == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if source["type"] == "base64" and source.get("media_type") == "application/pdf" \
            and isinstance(source.get("data"), str):
        return {"type": "file", "file": {"filename": str(block.get("title") or "document.pdf"),
                                         "file_data": f"data:application/pdf;base64,{source['data']}"}}
    raise AnthropicOnly("Only base64 PDF and plain-text documents can be translated for this route.",
                        param=f"{path}.source")


def _tool_message(block: JSON, path: str, parts: list[JSON]) -> JSON:
    """Images inside a tool result join the user message after the tool messages."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise BadRequest("A tool_result block needs `tool_use_id`.", param=f"{path}.tool_use_id")
    content = block.get("content")
    if content is None or isinstance(content, str):
        return {"role": "tool", "tool_call_id": call_id, "content": content or ""}
    if not isinstance(content, list):
        raise BadRequest("`content` must be a string or an array of blocks.", param=f"{path}.content")
    texts: list[JSON] = []
    for k, inner in enumerate(content):
        inner_path = f"{path}.content[{k}]"
        if _block_type(inner, inner_path) == "image":
            parts.append(_image_part(inner, inner_path))
        else:
            texts.append(_text_part(inner, inner_path))
    return {"role": "tool", "tool_call_id": call_id, "content": _collapse(texts) if texts else ""}


def _assistant_message(content: str | list[Any], path: str) -> JSON:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(content):
        block_path = f"{path}[{j}]"
        kind = _block_type(block, block_path)
        if kind == "text":
            texts.append(_text_part(block, block_path)["text"])
        elif kind == "tool_use":
            calls.append(_tool_call(block, block_path))
        elif kind not in _DROPPED_BLOCKS:
            raise AnthropicOnly(f"Content block type {kind!r} cannot be translated for this route.",
                                param=f"{block_path}.type")
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(block: JSON, path: str) -> JSON:
    for name in ("id", "name"):
        if not isinstance(block.get(name), str):
            raise BadRequest(f"A tool_use block needs a string `{name}`.", param=f"{path}.{name}")
    tool_input = block.get("input")
    if not isinstance(tool_input, dict):
        raise BadRequest("A tool_use block needs an `input` object.", param=f"{path}.input")
    return tool_call(block["id"], block["name"], tool_input)


def _sampling(body: JSON, out: JSON) -> None:
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("`stop_sequences` must be an array of strings.", param="stop_sequences")
        if stop:
            out["stop"] = stop


def _tooling(body: JSON, out: JSON) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadRequest("`tools` must be an array.", param="tools")
        if tools:
            out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif isinstance(kind, str) and kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        raise BadRequest("`tool_choice.type` must be auto, any, tool (with a name) or none.",
                         param="tool_choice.type")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _tool(tool: Any, path: str) -> JSON:
    if not isinstance(tool, dict):
        raise BadRequest("Each tool must be an object.", param=path)
    if tool.get("type") not in (None, "custom"):
        raise AnthropicOnly(f"The server tool {tool.get('type')!r} runs only on Anthropic and cannot be "
                            "translated for this route.", param=f"{path}.type")
    if not isinstance(tool.get("name"), str):
        raise BadRequest("A tool needs a string `name`.", param=f"{path}.name")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise BadRequest("A tool needs an `input_schema` object.", param=f"{path}.input_schema")
    function: JSON = {"name": tool["name"], "parameters": schema}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if tool.get("strict") is True:
        function["strict"] = True
    return {"type": "function", "function": function}


def _reasoning(thinking: Any, out: JSON) -> None:
    """A rough mapping: OpenAI has effort levels where Anthropic has a token budget."""
    if not isinstance(thinking, dict):
        return
    if thinking.get("type") == "adaptive":
        out["reasoning_effort"] = "medium"
    elif thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        budget = budget if isinstance(budget, int) else 0
        out["reasoning_effort"] = "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def _output_format(config: Any, out: JSON) -> None:
    output_format = config.get("format") if isinstance(config, dict) else None
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema" \
            and isinstance(output_format.get("schema"), dict):
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": output_format["schema"]}}
