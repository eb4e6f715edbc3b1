"""The simulated Bedrock runtime's Converse API: `/model/{modelId}/converse` and `/converse-stream`, for any
chat model (the shapes of botocore's `bedrock-runtime` service model).

What Bedrock checks it checks too, with its `ValidationException`s: alternating roles that start with the
user, no blank text block, `toolConfig` present when the messages hold tool calls or results, no `system`
for the model families without a system prompt (Mistral 7B, Mixtral, Titan Text, Cohere Command text), no
`toolConfig` for those without tool use (those, Llama 2 and 3.0, DeepSeek-R1), `toolChoice.tool` and a tool
result's `status` for Claude and Nova only, `outputConfig.textFormat` for the families with structured
outputs only (`STRUCTURED_OUTPUTS`), no model that is not a text or chat model (embeddings, rerank,
image, video, speech: `NOT_CONVERSE`), and only the members its shapes have. The refusal fault is a
guardrail that intervened: its blocked message, `stopReason: guardrail_intervened`.

Answers as Converse gives them: `output.message.content` blocks, `stopReason`, `usage` (with
`totalTokens`, and `cacheReadInputTokens` when the simulator reports a cached prefix) and `metrics`; a
tool call's `toolUseId` is `tooluse_…`; DeepSeek-R1 answers with a `reasoningContent` block before its text.
A stream is event-stream frames whose `:event-type` names the event and whose payload is its JSON with
AWS's `p` padding member: `messageStart`, `contentBlockStart` only for a tool call, `contentBlockDelta`s
(text pieces; a tool call's input as fragments of JSON text, an empty one for a tool without parameters),
`contentBlockStop`, `messageStop`, then `metadata` with the usage. Faults apply as for InvokeModel (an
in-band error is an exception frame). A request's `serviceTier` (`{"type": …}`, one of Bedrock's four) is
reported back on the answer and on the `metadata` event; anything else is a ValidationException.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from llmroute_proxy.sim.answers import (
    count_tokens,
    fit_tokens,
    reply_text,
    split_even,
    split_words,
    structured_reply,
    tool_arguments,
    tool_reply_text,
)
from llmroute_proxy.sim.faults import FaultKind
from llmroute_proxy.sim.runtime import SIM_CALL, SimCall
from llmroute_proxy.sim.streaming import SimStream

EVENT_STREAM = "application/vnd.amazon.eventstream"
_REGION = re.compile(r"^(?:us|eu|apac|global|us-gov|jp|au|ca)\.")
NO_SYSTEM = ("mistral.mistral-7b-instruct", "mistral.mixtral-8x7b-instruct", "amazon.titan-text-",
             "cohere.command-text", "cohere.command-light-text", "ai21.j2-")
NO_TOOLS = (*NO_SYSTEM, "meta.llama2-", "meta.llama3-8b-instruct", "meta.llama3-70b-instruct", "deepseek.r1")
NAMED_TOOL = ("anthropic.claude", "amazon.nova")
REASONS_ALWAYS = ("deepseek.r1",)
STRUCTURED_OUTPUTS = ("anthropic.claude-sonnet-4-5", "anthropic.claude-haiku-4-5", "anthropic.claude-opus-4-5",
                      "anthropic.claude-opus-4-6", "anthropic.claude-sonnet-4-6", "openai.gpt-oss", "qwen.qwen3",
                      "deepseek.v3", "google.gemma-3-12b", "google.gemma-3-27b", "mistral.mistral-large-3",
                      "mistral.ministral-3", "mistral.magistral", "mistral.devstral-2", "mistral.voxtral",
                      "moonshot.kimi", "moonshotai.kimi", "nvidia.nemotron", "minimax.", "zai.glm")
"""The families with structured outputs (`outputConfig.textFormat`), as AWS's model cards and announcement
list them: not Nova, Llama, DeepSeek-R1 or the Mistral models before Mistral Large 3."""
NOT_CONVERSE = ("amazon.titan-embed-", "cohere.embed-", "amazon.nova-2-multimodal-embeddings",
                "twelvelabs.marengo-embed", "amazon.rerank-", "cohere.rerank-", "amazon.titan-image-generator",
                "amazon.nova-canvas", "amazon.nova-reel", "amazon.nova-sonic", "amazon.nova-2-sonic", "stability.")
"""Models that are not text or chat models: Converse refuses them whatever the body."""
NOT_CONVERSE_ERROR = ("This action doesn't support the model that you provided. Try again with a supported text or "
                      "chat model.")
GUARDRAIL_TEXT = "Sorry, the model cannot answer this question."
"""What a guardrail that intervened answers instead (Bedrock's default blocked message)."""
_MEMBERS = {
    "request": {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
                "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata", "performanceConfig",
                "serviceTier", "outputConfig"},
    "inferenceConfig": {"maxTokens", "temperature", "topP", "stopSequences"},
    "block": {"text", "image", "document", "video", "audio", "toolUse", "toolResult", "guardContent", "cachePoint",
              "reasoningContent", "citationsContent", "searchResult"},
}
_PADDING = string.ascii_letters + string.digits
FrameEncoder = Callable[[Mapping[str, str], bytes], bytes]
"""Headers and payload → one event-stream frame (`sim/bedrock.encode_frame`)."""
MODEL_ERROR = "The provided model identifier is invalid."


def _family(model: str) -> str:
    return _REGION.sub("", model)


def _invalid(call: SimCall, message: str) -> web.Response:
    return call.state.json({"message": message}, 400, {"x-amzn-ErrorType": "ValidationException"})


def problem(model: str, body: Any) -> str | None:
    """What Bedrock refuses in a Converse request body, as its ValidationException says it; None when fine."""
    if not isinstance(body, dict):
        return "Malformed input request, please reformat your input and try again."
    extra = sorted(set(body) - _MEMBERS["request"])
    if extra:
        return f"Malformed input request: extraneous key [{extra[0]}] is not permitted."
    extra = sorted(set(body.get("inferenceConfig") or {}) - _MEMBERS["inferenceConfig"])
    if extra:
        return f"Malformed input request: inferenceConfig: extraneous key [{extra[0]}] is not permitted."
    family = _family(model)
    if body.get("system") and family.startswith(NO_SYSTEM):
        return "This model doesn't support system messages. Try again without a system message."
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        if family.startswith(NO_TOOLS):
            return "This model doesn't support tool use."
        if not tool_config.get("tools"):
            return "The toolConfig field must include at least one tool."
        if "tool" in (tool_config.get("toolChoice") or {}) and not family.startswith(NAMED_TOOL):
            return ("This model doesn't support the toolConfig.toolChoice.tool field. Remove "
                    "toolConfig.toolChoice.tool and try again.")
    tier = body.get("serviceTier")
    if tier is not None and (not isinstance(tier, dict) or tier.get("type") not in SERVICE_TIERS):
        return ("1 validation error detected: Value at 'serviceTier.type' failed to satisfy constraint: Member must "
                f"satisfy enum value set: [{', '.join(SERVICE_TIERS)}]")
    if (body.get("outputConfig") or {}).get("textFormat") is not None and not family.startswith(STRUCTURED_OUTPUTS):
        return "This model doesn't support the outputConfig.textFormat field. Remove it and try again."
    return _messages_problem(body.get("messages"), tool_config is not None, family)


def _messages_problem(messages: Any, tools: bool, family: str) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "A conversation must start with a user message. Try again with a conversation that starts with a user message."
    previous = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if i == 0 and role != "user":
            return ("A conversation must start with a user message. Try again with a conversation that starts "
                    "with a user message.")
        if role not in ("user", "assistant") or role == previous:
            return ("A conversation must alternate between user and assistant roles. Make sure the conversation "
                    "alternates between user and assistant roles and try again.")
        previous = role
        content = message.get("content")
        if not isinstance(content, list) or not content:
            return f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
        for j, block in enumerate(content):
            if not isinstance(block, dict) or len(block) != 1 or not set(block) <= _MEMBERS["block"]:
                return f"Malformed input request: messages.{i}.content.{j}: a ContentBlock has exactly one member."
            if "text" in block and not str(block["text"]).strip():
                return (f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text "
                        "to the text field, and try again.")
            if ("toolUse" in block or "toolResult" in block) and not tools:
                return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
            if "status" in (block.get("toolResult") or {}) and not family.startswith(NAMED_TOOL):
                return "This model doesn't support the status field in a toolResult block."
    return None


@dataclass(frozen=True, slots=True)
class _Answer:
    text: str | None
    call: tuple[str, str, dict[str, Any]] | None
    """The tool call: (toolUseId, name, input)."""
    reasoning: str | None
    stop_reason: str
    input_tokens: int
    output_tokens: int


def _texts(blocks: Any) -> str:
    texts: list[str] = []
    for block in blocks or ():
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block, dict) and isinstance(block.get("toolResult"), dict):
            texts.append(_texts(block["toolResult"].get("content")))
    return " ".join(texts)


def _answer(call: SimCall, model: str, body: dict[str, Any]) -> _Answer:
    state, name = call.state, call.state.config.name
    messages = body["messages"]
    prompt = count_tokens(" ".join([_texts(body.get("system")), *(_texts(m["content"]) for m in messages)]))
    if call.fault is not None and call.fault.kind is FaultKind.REFUSAL:  # a guardrail blocked the prompt
        return _Answer(GUARDRAIL_TEXT, None, None, "guardrail_intervened", prompt, 0)
    last = messages[-1]["content"]
    result = next((b["toolResult"] for b in reversed(last) if "toolResult" in b), None)
    tools = [t["toolSpec"] for t in (body.get("toolConfig") or {}).get("tools") or () if "toolSpec" in t]
    choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
    named = (choice.get("tool") or {}).get("name")
    tool = next((t for t in tools if t.get("name") == named), None) if named else (tools[0] if tools else None)
    reasoning = "The user wrote to me; I will say back what they said." if _family(model).startswith(REASONS_ALWAYS) \
        else None
    if tool is not None and messages[-1]["role"] == "user" and result is None:
        arguments = tool_arguments((tool.get("inputSchema") or {}).get("json"))
        tool_use = (state.new_id("tooluse_"), str(tool.get("name")), arguments)
        return _Answer(None, tool_use, reasoning, "tool_use", prompt,
                       count_tokens(f"{tool_use[1]} {orjson.dumps(arguments).decode()}"))
    if result is not None:
        text = tool_reply_text(name, model, _texts(result.get("content")))
    else:
        said = next((_texts(m["content"]) for m in reversed(messages) if m["role"] == "user"), "")
        text = reply_text(name, model, said, state.config.answer_bytes)
    text_format = (body.get("outputConfig") or {}).get("textFormat") or {}
    schema = ((text_format.get("structure") or {}).get("jsonSchema") or {}).get("schema")
    if isinstance(schema, str):
        text = structured_reply(orjson.loads(schema), text)
    text, cut = fit_tokens(text, (body.get("inferenceConfig") or {}).get("maxTokens"))
    thought = count_tokens(reasoning) if reasoning else 0
    return _Answer(text, None, reasoning, "max_tokens" if cut else "end_turn", prompt, count_tokens(text) + thought)


SERVICE_TIERS = ("priority", "default", "flex", "reserved")


def served(call: SimCall, body: dict[str, Any]) -> dict[str, Any]:
    """The `serviceTier` member of an answer to a request that named one: the tier asked for, but a
    `priority` one at `default` once Priority capacity ran out (`SimConfig.priority_capacity`)."""
    asked = (body.get("serviceTier") or {}).get("type")
    if asked is None:
        return {}
    tier = "default" if asked == "priority" and not call.state.config.priority_capacity else asked
    return {"serviceTier": {"type": tier}}


def _usage(call: SimCall, answer: _Answer) -> dict[str, Any]:
    cached = call.state.config.cached_tokens
    usage = {"inputTokens": answer.input_tokens, "outputTokens": answer.output_tokens,
             "totalTokens": answer.input_tokens + answer.output_tokens + cached}
    if cached:
        usage |= {"cacheReadInputTokens": cached, "cacheWriteInputTokens": 0}
    return usage


def _content(answer: _Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.reasoning:
        blocks.append({"reasoningContent": {"reasoningText": {"text": answer.reasoning}}})
    if answer.text is not None:
        blocks.append({"text": answer.text})
    if answer.call is not None:
        tool_use_id, name, arguments = answer.call
        blocks.append({"toolUse": {"toolUseId": tool_use_id, "name": name, "input": arguments}})
    return blocks


async def converse(request: web.Request, encode: FrameEncoder) -> web.StreamResponse:
    call = request[SIM_CALL]
    model = unquote(request.match_info["model"])
    if "." not in model:
        return _invalid(call, MODEL_ERROR)
    if _family(model).startswith(NOT_CONVERSE):
        return _invalid(call, NOT_CONVERSE_ERROR)
    refused = problem(model, call.body)
    if refused is not None:
        return _invalid(call, refused)
    answer = _answer(call, model, call.body)
    if request.match_info["operation"] == "converse-stream":
        return await _stream(request, call, answer, encode)
    return call.state.json({"output": {"message": {"role": "assistant", "content": _content(answer)}},
                            "stopReason": answer.stop_reason, "usage": _usage(call, answer),
                            "metrics": {"latencyMs": 321}, **served(call, call.body)})


def event_frame(name: str, event: dict[str, Any], encode: FrameEncoder) -> bytes:
    """One Converse stream event as its frame, padded as AWS pads them (`p`: letters whose length varies)."""
    padding = _PADDING[: 1 + len(orjson.dumps(event)) % len(_PADDING)]
    return encode({":event-type": name, ":content-type": "application/json", ":message-type": "event"},
                  orjson.dumps({**event, "p": padding}))


async def _stream(request: web.Request, call: SimCall, answer: _Answer, encode: FrameEncoder) -> web.StreamResponse:
    stream = await SimStream.open(request, EVENT_STREAM)

    async def send(name: str, event: dict[str, Any], content: bool = False) -> None:
        await stream.send(event_frame(name, event, encode), content=content)

    await send("messageStart", {"role": "assistant"})
    index = 0
    if answer.reasoning:
        await send("contentBlockDelta", {"contentBlockIndex": index,
                                         "delta": {"reasoningContent": {"text": answer.reasoning}}})
        await send("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    if answer.text is not None:
        for piece in split_words(answer.text, call.state.config.chunks):
            await send("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}, content=True)
        await send("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    if answer.call is not None:
        tool_use_id, name, arguments = answer.call
        await send("contentBlockStart", {"contentBlockIndex": index,
                                         "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}})
        encoded = orjson.dumps(arguments).decode() if arguments else ""
        for fragment in split_even(encoded, call.state.config.chunks):
            await send("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}},
                       content=True)
        await send("contentBlockStop", {"contentBlockIndex": index})
    await send("messageStop", {"stopReason": answer.stop_reason})
    await send("metadata", {"usage": _usage(call, answer), "metrics": {"latencyMs": 321}, **served(call, call.body)})
    return await stream.finish()
