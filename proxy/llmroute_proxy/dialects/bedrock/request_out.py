"""Canonical OpenAI chat request → Amazon Bedrock Converse request body (providers.md, Bedrock).

Converse is one request shape for every chat model Bedrock serves: `messages` of content blocks,
`system`, `inferenceConfig`, `toolConfig`, and `additionalModelRequestFields` for what only some model
families take. A field whose loss would change the answer and that Converse cannot say (`n`, `seed`,
`logprobs`, penalties, JSON mode…) is refused with `BadRequest` naming it, so the target is passed over;
fields that only tune delivery (`parallel_tool_calls`, `user`, `stream_options`, `strict`, an image's
`detail`) are dropped.

Choices documented here because neither API forces them:

- Model families without a system prompt or without tool use (Bedrock's own table of Converse features:
  Mistral 7B and Mixtral, Titan Text, Cohere Command (text), Llama 3.0 and 2, DeepSeek-R1 for tools) have
  a request that needs them refused here, naming the field, rather than sent to a sure
  `ValidationException` (a 400 the client would get instead of the next target).
- `tool_choice: none` sends no tools (Converse cannot offer tools and forbid calling them; a model
  cannot call what it was not offered). Converse refuses tool calls or results in the messages without
  `toolConfig`, so there `none` is refused, and so is a request that holds them without `tools` (rather
  than declaring a stand-in tool the model might call, as some gateways do). A named function (`toolChoice.tool`) only Nova takes among the models
  served through Converse (Claude goes through InvokeModel), so other families refuse it.
- Tool results go back as `{"text": …}`, the content the client wrote, with no `status` (OpenAI has no
  error flag, and only Nova and Claude take it).
- `response_format: json_schema` becomes `outputConfig.textFormat` (Bedrock's structured outputs; the
  schema as JSON text) for the families that have them (`STRUCTURED_OUTPUTS`) and is refused for the
  others (Nova, Llama, DeepSeek-R1, older Mistral…), which Bedrock would answer with a
  `ValidationException`. `json_object` (JSON mode without a schema) has no Converse equivalent (the
  output format's only type is `json_schema`) and is refused for every model.
- A model that is not a chat model (an embedding, rerank, image, video or speech model) has no Converse;
  a chat request to one is refused naming `model`, as an embeddings request to a chat model is.
- `reasoning_effort` goes where the family has a control: OpenAI's gpt-oss (`reasoning_effort` in
  `additionalModelRequestFields`) and Nova 2 (`reasoningConfig`); other families have none (DeepSeek-R1
  always reasons, Llama and Mistral never), and the hint is dropped, as Bedrock would ignore it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from llmroute_proxy.dialects.base import ChatRequest
from llmroute_proxy.errors import BadRequest

JSON = dict[str, Any]

IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}
_REGION_PREFIX = re.compile(r"^(?:us|eu|apac|global|us-gov|jp|au|ca)\.")
NO_SYSTEM_PROMPT = ("mistral.mistral-7b-instruct", "mistral.mixtral-8x7b-instruct", "amazon.titan-text-",
                    "cohere.command-text", "cohere.command-light-text", "ai21.j2-")
"""Model families Converse takes no `system` from (Bedrock's table of Converse features)."""
NO_TOOL_USE = (*NO_SYSTEM_PROMPT, "meta.llama2-", "meta.llama3-8b-instruct", "meta.llama3-70b-instruct",
               "deepseek.r1")
"""Model families without tool use through Converse."""
STRUCTURED_OUTPUTS = ("openai.gpt-oss", "qwen.qwen3", "deepseek.v3", "google.gemma-3-12b", "google.gemma-3-27b",
                      "mistral.mistral-large-3", "mistral.ministral-3", "mistral.magistral", "mistral.devstral-2",
                      "mistral.voxtral", "moonshot.kimi", "moonshotai.kimi", "nvidia.nemotron", "minimax.", "zai.glm")
"""The families besides Claude with structured outputs (`outputConfig.textFormat`): the models AWS's model
cards mark so (as of 2026-05), and the open-weight families its announcement names (MiniMax among them)."""
NOT_CHAT = ("amazon.titan-embed-", "cohere.embed-", "amazon.nova-2-multimodal-embeddings", "twelvelabs.marengo-embed",
            "amazon.rerank-", "cohere.rerank-", "amazon.titan-image-generator", "amazon.nova-canvas",
            "amazon.nova-reel", "amazon.nova-sonic", "amazon.nova-2-sonic", "stability.")
"""Models Converse does not serve (embeddings, rerank, image, video, speech-to-speech)."""
NAMED_TOOL_CHOICE = ("amazon.nova",)
"""The families besides Claude that take `toolChoice.tool` (botocore's service model: "Only supported by
Anthropic Claude 3 and Amazon Nova models")."""

_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
"""OpenAI's efforts → the three gpt-oss and Nova 2 know."""

_UNSUPPORTED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("n", lambda v: v != 1, "Converse returns a single choice; `n` must be 1."),
    ("logprobs", bool, "Converse does not return log probabilities."),
    ("top_logprobs", lambda v: True, "Converse does not return log probabilities."),
    ("logit_bias", bool, "Converse has no token biasing."),
    ("seed", lambda v: True, "Converse has no `seed`."),
    ("presence_penalty", bool, "Converse has no `presence_penalty`."),
    ("frequency_penalty", bool, "Converse has no `frequency_penalty`."),
    ("top_k", lambda v: True, "Converse's inferenceConfig has no `top_k` (each family names it its own way)."),
    ("audio", lambda v: True, "Converse targets do not produce audio here."),
    ("modalities", lambda v: v != ["text"], "Converse targets produce text only here."),
    ("prediction", lambda v: True, "Converse has no predicted outputs."),
    ("web_search_options", lambda v: True, "`web_search_options` cannot be translated for Converse."),
    ("functions", lambda v: True, "Use `tools`: the deprecated `functions` is not translated for Converse."),
    ("function_call", lambda v: True, "Use `tool_choice`: the deprecated `function_call` is not translated."),
)


def base_model(model: str) -> str:
    """The foundation model of an id or a cross-region inference profile (`us.amazon.nova-pro-v1:0` →
    `amazon.nova-pro-v1:0`)."""
    return _REGION_PREFIX.sub("", model)


def converse_body(request: ChatRequest, model: str, tier: str | None = None) -> JSON:
    """The Converse request body (the model is in the path) for a canonical OpenAI request, asking for the
    service tier `tier` (`dialects/service_tiers.bedrock_request_tier`)."""
    body = request.body
    family = base_model(model)
    if family.startswith(NOT_CHAT):
        raise BadRequest(f"Bedrock model '{model}' is not a chat model: Converse does not serve it; route chat "
                         "completions to a chat model.", param="model", code="unsupported_operation")
    for name, changes_meaning, reason in _UNSUPPORTED:
        value = body.get(name)
        if value is not None and changes_meaning(value):
            raise BadRequest(reason, param=name, code="unsupported_parameter")
    system, messages = _messages(body.get("messages"))
    out: JSON = {"messages": messages}
    if system:
        if family.startswith(NO_SYSTEM_PROMPT):
            raise BadRequest(f"Bedrock model '{model}' takes no system prompt through Converse.",
                             param="messages", code="unsupported_parameter")
        out["system"] = system
    config = _inference_config(body, request.max_output_tokens)
    if config:
        out["inferenceConfig"] = config
    tool_config = _tool_config(body, messages, family, model)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    output_config = _output_config(body.get("response_format"), family, model)
    if output_config is not None:
        out["outputConfig"] = output_config
    extra = _reasoning_fields(body.get("reasoning_effort"), family)
    if extra:
        out["additionalModelRequestFields"] = extra
    if tier is not None:
        out["serviceTier"] = {"type": tier}
    return out


# ---- messages ----------------------------------------------------------------------------


def _messages(messages: Any) -> tuple[list[JSON], list[JSON]]:
    """OpenAI `messages` → (Converse `system`, `messages`), same-role neighbours merged: Converse wants
    user and assistant to alternate, and tool results are the user's turn."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty array.", param="messages")
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest("Each message must be an object.", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), f"{where}.content"))
        elif role == "user":
            _append(turns, "user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)])
        else:
            raise BadRequest(f"Role {role!r} cannot be sent to Bedrock Converse.", param=f"{where}.role")
    if not turns:
        raise BadRequest("Converse needs at least one user or assistant message besides system ones.",
                         param="messages")
    return system, turns


def _append(turns: list[JSON], role: str, blocks: list[JSON]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _text_blocks(content: Any, where: str) -> list[JSON]:
    """Text parts as `{"text": …}` blocks; blank ones left out (Converse refuses a blank text block)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    if not isinstance(content, list):
        raise BadRequest("Content must be a string or an array of text parts.", param=where)
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"].strip():
                blocks.append({"text": part["text"]})
        elif kind != "refusal":
            raise BadRequest("Only text parts are allowed here.", param=f"{where}[{j}]")
    return blocks


def _user_blocks(content: Any, where: str) -> list[JSON]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks: list[JSON] = []
    for j, part in enumerate(content):
        path = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.extend([{"text": part["text"]}] if part["text"].strip() else [])
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{path}.image_url.url"))
        elif kind == "file":
            blocks.append(_document(part.get("file"), f"{path}.file", len(blocks)))
        else:
            raise BadRequest(f"Content part type {kind!r} cannot be sent to Bedrock Converse.",
                             param=f"{path}.type", code="unsupported_parameter")
    return blocks


def _data_url(url: Any, where: str, what: str) -> tuple[str, str]:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise BadRequest(f"llmroute does not fetch {what} for Bedrock Converse targets; send the bytes as "
                         "a data: URL (data:<type>;base64,...).", param=where)
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64":
        raise BadRequest("A data: URL must be base64-encoded (data:<type>;base64,<data>).", param=where)
    return media_type, data


def _image(image: Any, where: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else image
    media_type, data = _data_url(url, where, "image URLs")
    image_format = IMAGE_FORMATS.get(media_type)
    if image_format is None:
        raise BadRequest(f"Converse takes PNG, JPEG, GIF and WebP images, not {media_type!r}.", param=where)
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _document(file: Any, where: str, position: int) -> JSON:
    """A PDF as a `document` block; its `name` (required, and letters, digits, spaces, hyphens, brackets
    only) from the file's name, else `document-N`."""
    media_type, data = _data_url(file.get("file_data") if isinstance(file, dict) else None,
                                 f"{where}.file_data", "files")
    if media_type != "application/pdf":
        raise BadRequest(f"Converse targets take PDF documents here, not {media_type!r}.", param=f"{where}.file_data")
    filename = file.get("filename") if isinstance(file, dict) else None
    stem = re.sub(r"[^A-Za-z0-9\s\-()\[\]]", " ", filename.rsplit(".", 1)[0]).strip() if isinstance(filename, str) else ""
    name = re.sub(r"\s+", " ", stem)[:200] or f"document-{position + 1}"
    return {"document": {"format": "pdf", "name": name, "source": {"bytes": data}}}


def _assistant_blocks(message: JSON, where: str) -> list[JSON]:
    content = message.get("content")
    if isinstance(content, list):
        content = [part for part in content if isinstance(part, dict) and part.get("type") != "refusal"]
    elif content is not None and not isinstance(content, str):
        raise BadRequest("Assistant content must be a string, an array of parts or null.", param=f"{where}.content")
    blocks = _text_blocks(content, f"{where}.content")
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise BadRequest("`tool_calls` must be an array.", param=f"{where}.tool_calls")
    blocks.extend(_tool_use(call, f"{where}.tool_calls[{k}]") for k, call in enumerate(tool_calls))
    return blocks


def _tool_use(call: Any, where: str) -> JSON:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest("A tool call needs `function.name`.", param=f"{where}.function.name")
    if not isinstance(call.get("id"), str):
        raise BadRequest("A tool call needs an `id`.", param=f"{where}.id")
    return {"toolUse": {"toolUseId": tool_use_id(call["id"]), "name": function["name"],
                        "input": _arguments(function.get("arguments"), f"{where}.function.arguments")}}


def _arguments(arguments: Any, where: str) -> JSON:
    if arguments is None or arguments == "":
        return {}
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise BadRequest("Tool call arguments must be a JSON object encoded as a string.", param=where)
    return value


_TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
_NOT_IN_TOOL_USE_ID = re.compile(r"[^a-zA-Z0-9_.:-]")


def tool_use_id(call_id: str) -> str:
    """A tool call's id as Converse takes it (`[a-zA-Z0-9_.:-]+`, at most 64): another's id is made to fit,
    with a hash of the whole of it, the same for the call and its result and distinct for distinct ids."""
    if _TOOL_USE_ID.fullmatch(call_id):
        return call_id
    digest = hashlib.blake2b(call_id.encode(), digest_size=5).hexdigest()
    return f"{_NOT_IN_TOOL_USE_ID.sub('_', call_id)[:53]}_{digest}"


def _tool_result(message: JSON, where: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise BadRequest("A tool message needs `tool_call_id`.", param=f"{where}.tool_call_id")
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(block["text"] for block in _text_blocks(content, f"{where}.content"))
    elif isinstance(content, str) or content is None:
        text = content or ""
    else:
        raise BadRequest("Tool content must be a string or an array of text parts.", param=f"{where}.content")
    result: JSON = {"toolUseId": tool_use_id(call_id), "content": [{"text": text}] if text.strip() else []}
    return {"toolResult": result}


# ---- configuration -------------------------------------------------------------------------


def _inference_config(body: Mapping[str, Any], max_tokens: int | None) -> JSON:
    config: JSON = {}
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    for openai, converse in (("temperature", "temperature"), ("top_p", "topP")):
        value = body.get(openai)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise BadRequest(f"Converse takes `{openai}` from 0 to 1, not {value!r}.", param=openai,
                             code="invalid_value")
        config[converse] = value
    stop = body.get("stop")
    if stop is not None:
        sequences = [stop] if isinstance(stop, str) else stop
        if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
            raise BadRequest("`stop` must be a string or an array of strings.", param="stop")
        sequences = [s for s in sequences if s]  # Converse refuses an empty stop sequence
        if sequences:
            config["stopSequences"] = sequences
    return config


def _tool_config(body: Mapping[str, Any], messages: list[JSON], family: str, model: str) -> JSON | None:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise BadRequest("`tools` must be an array.", param="tools")
    choice = body.get("tool_choice")
    history = any("toolUse" in block or "toolResult" in block for m in messages for block in m["content"])
    if not tools and not history:
        return None
    if family.startswith(NO_TOOL_USE):
        raise BadRequest(f"Bedrock model '{model}' has no tool use through Converse.",
                         param="tools" if tools else "messages", code="unsupported_parameter")
    if not tools:
        raise BadRequest("Converse needs the tools declared (`tools`) in a request whose messages hold tool "
                         "calls or results.", param="tools")
    if choice == "none":
        if history:
            raise BadRequest("`tool_choice: none` cannot be sent to Bedrock Converse with tool calls in the "
                             "messages: Converse cannot offer tools and forbid calling them.", param="tool_choice",
                             code="unsupported_parameter")
        return None
    config: JSON = {"tools": [_tool_spec(tool, f"tools[{i}]") for i, tool in enumerate(tools)]}
    tool_choice = _tool_choice(choice, family, model)
    if tool_choice is not None:
        config["toolChoice"] = tool_choice
    return config


def _tool_spec(tool: Any, where: str) -> JSON:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise BadRequest(f"Bedrock Converse targets take function tools only, not {kind!r}.", param=f"{where}.type")
    parameters = function.get("parameters")
    spec: JSON = {"name": function["name"],
                  "inputSchema": {"json": parameters if isinstance(parameters, dict) and parameters
                                  else {"type": "object", "properties": {}}}}
    if isinstance(function.get("description"), str) and function["description"]:
        spec["description"] = function["description"]
    return {"toolSpec": spec}


def _tool_choice(choice: Any, family: str, model: str) -> JSON | None:
    if choice is None or choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(name, str):
        if not family.startswith(NAMED_TOOL_CHOICE):
            raise BadRequest(f"Bedrock model '{model}' cannot be made to call a named tool through Converse "
                             "(only Nova can).", param="tool_choice", code="unsupported_parameter")
        return {"tool": {"name": name}}
    raise BadRequest(f"tool_choice {orjson.dumps(choice).decode()} cannot be sent to Bedrock Converse.",
                     param="tool_choice")


def _output_config(response_format: Any, family: str, model: str) -> JSON | None:
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if kind is None or kind == "text":
        return None
    if kind == "json_schema":
        if not family.startswith(STRUCTURED_OUTPUTS):
            raise BadRequest(f"Bedrock model '{model}' has no structured outputs through Converse.",
                             param="response_format", code="unsupported_parameter")
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest("response_format.json_schema.schema must be a JSON Schema object.",
                             param="response_format.json_schema.schema")
        definition: JSON = {"schema": orjson.dumps(schema).decode()}
        assert isinstance(spec, dict)
        for name in ("name", "description"):
            if isinstance(spec.get(name), str) and spec[name]:
                definition[name] = spec[name]
        return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}
    raise BadRequest(f"response_format type {kind!r} cannot be sent to Bedrock Converse (it has structured "
                     "outputs, `json_schema`, but no JSON mode).", param="response_format",
                     code="unsupported_parameter")


def _reasoning_fields(effort: Any, family: str) -> JSON:
    if effort is None:
        return {}
    if effort != "none" and effort not in _EFFORTS:
        raise BadRequest(f"Unknown reasoning_effort {effort!r}.", param="reasoning_effort")
    if family.startswith("openai.gpt-oss"):
        return {} if effort == "none" else {"reasoning_effort": _EFFORTS[effort]}
    if family.startswith("amazon.nova-2"):
        if effort == "none":
            return {"reasoningConfig": {"type": "disabled"}}
        return {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": _EFFORTS[effort]}}
    return {}
