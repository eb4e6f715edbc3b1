"""The OpenAI Responses dialect of the front door: `POST /v1/responses` in, canonical chat out.

A Responses request becomes the canonical chat-completions request, so routing, tiers,
failover, budgets, limits, experiments and telemetry are exactly those of chat completions.
Providers that speak the Responses API themselves (OpenAI, Azure OpenAI) are sent the client's
own request instead (`native_body`), so nothing is lost on them; the others are sent the
canonical translation.

What the canonical form cannot carry but OpenAI serves (built-in tools such as web search,
stored prompts, conversations, log probabilities, fields this module does not know) raises
`ResponsesOnly`: such a request goes natively to OpenAI and Azure targets only, or is refused
with a 400 naming the field when its tier has none — never silently dropped. What no target
can serve through the sidecar (background runs, which would need it to keep polling) and what
is malformed is a plain `BadRequest`.

The conversation of earlier turns (`previous_response_id`) is kept by the sidecar as Responses
items: replayed as they are to a native target (reasoning items only with their encrypted
content, ids left out), translated leniently to canonical messages for the others (what has no
canonical form there, such as reasoning and built-in tool calls, is left out of the history).
Reasoning items in the client's own input are accepted; in a canonical request, the one slot chat
completions has for them is Claude's signed thinking (`dialects/thinking.py`): a reasoning item whose
`encrypted_content` the sidecar made gives its blocks back to the assistant message that follows it
(one of its own: a function call after it starts another answer than the text before it), and any
other reasoning item is left out.

The answer side lives in `answer_out` and `stream_out`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmroute_proxy.dialects.base import ANSWERED_BY
from llmroute_proxy.dialects.thinking import FIELD as THINKING_BLOCKS
from llmroute_proxy.dialects.thinking import read_token
from llmroute_proxy.errors import BadRequest, RequestError
from llmroute_proxy.validation import boolean, integer, number, optional_object, string, validate_chat

JSON = dict[str, Any]

BUILT_IN_TOOLS = frozenset({
    "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11",
    "file_search", "code_interpreter", "computer", "computer_use_preview", "computer_use",
    "image_generation", "mcp", "local_shell", "shell", "apply_patch", "custom", "tool_search",
})
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_KNOWN = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning",
    "max_output_tokens", "temperature", "top_p", "metadata", "user", "safety_identifier", "store", "stream",
    "stream_options", "previous_response_id", "include", "truncation", "prompt_cache_key", "service_tier",
    "background",
})
_REFUSED = {
    "conversation": "conversations live on OpenAI's servers; use previous_response_id",
    "prompt": "stored prompt templates live on OpenAI's servers",
    "max_tool_calls": "built-in tool calls do not run here",
    "top_logprobs": "log probabilities are not carried through the canonical chat form",
    "context_management": "server-side compaction is OpenAI's own",
    "prompt_cache_retention": "cache retention is OpenAI's own",
}
_INCLUDABLE = frozenset({"reasoning.encrypted_content", "message.output_text.logprobs"})
_INCLUDE_NOTHING = frozenset({"reasoning.encrypted_content"})
_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_IGNORED_ITEM_FIELDS = frozenset({"id", "status"})
_NATIVE_HISTORY_DROPS = ("id",)
"""Item members left out when earlier turns are replayed to a native target: ids we or another
provider made mean nothing to it (and a stored id it does not hold is refused there)."""


class ResponsesOnly(BadRequest):
    """A valid Responses request using what only OpenAI's own Responses API serves: it can go to
    OpenAI and Azure OpenAI targets only, natively."""

    def __init__(self, message: str, param: str | None = None, code: str | None = "unsupported_parameter") -> None:
        super().__init__(message, param, code)


@dataclass(slots=True)
class ResponsesTurn:
    """One Responses request, validated, and what the sidecar derived from it.

    `canonical` is the chat request sent on to providers that do not speak Responses: the
    translation of `history` (the earlier turns' items, without their instructions, which a later
    turn does not inherit) and of this request. When `only` is set the request has no canonical
    form (`only` names the field): `canonical` is then a summary to route by, never sent.
    Never changed once made; not frozen only because a frozen dataclass costs several times as much
    to build (each field set through `object.__setattr__`), and one is built for every request.
    """

    body: JSON
    canonical: JSON
    history: tuple[JSON, ...] = ()
    only: ResponsesOnly | None = None
    unheld: RequestError | None = None
    """The 404 of a `previous_response_id` whose conversation the sidecar does not hold (and did not
    see deleted): such a turn goes as it is, that id included, to the tier's native targets only, as
    one of them may hold it (OpenAI keeps the responses it made), and is this 404 when the tier has
    none. Its answer is kept marked as the provider's conversation (`remote`): the next turn goes
    back to that provider."""

    def checked(self) -> JSON:
        """`canonical`, checked as any chat completion request is (`validate_chat`): a plain first turn
        (`_plain`) is what this module's own checks made of fields they checked as strictly, so it is
        not checked twice."""
        if self.only is None and not self.history and _plain(self.canonical):
            return self.canonical
        return validate_chat(self.canonical)

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def store(self) -> bool:
        return self.body.get("store") is not False

    @property
    def shows_encrypted_reasoning(self) -> bool:
        """Whether the client asked to see reasoning items' `encrypted_content` (the store keeps it anyway)."""
        include = self.body.get("include")
        return isinstance(include, list) and "reasoning.encrypted_content" in include

    def native_body(self) -> JSON:
        """What a provider speaking the Responses API is sent (it sets `model`): the client's own
        request, with the earlier turns the sidecar holds in place of `previous_response_id`. Built for
        every Responses request, whatever its target: a first turn is the body itself, not a copy."""
        if self.unheld is not None or (not self.history and "previous_response_id" not in self.body):
            return self.body
        body = {name: value for name, value in self.body.items() if name != "previous_response_id"}
        if self.history:
            body["input"] = [*native_history(self.history), *_input_as_items(self.body.get("input"))]
        return body


_PLAIN_FIELDS = frozenset({"model", "messages", "max_completion_tokens", "temperature", "top_p", "user",
                           "safety_identifier", "prompt_cache_key", "service_tier", "stream", "stream_options"})
"""The canonical fields `request_to_canonical` writes only after checking them as `validate_chat` would
(or more strictly: `max_output_tokens` ≥ 16): a non-empty model, numbers in range, strings, a stream flag."""


def _plain(canonical: JSON) -> bool:
    """Whether a canonical request has only `_PLAIN_FIELDS`, and messages of a role and a string each
    (the roles of message items, all chat roles too): tools, formats, parts, tool results and refusals
    are left to `validate_chat`."""
    return canonical.keys() <= _PLAIN_FIELDS and all(
        len(message) == 2 and type(message["content"]) is str for message in canonical["messages"])


def native_history(items: Sequence[JSON]) -> list[JSON]:
    """Earlier turns' items as a native target is sent them: no ids, and reasoning only when it
    carries its encrypted content (otherwise it refers to a stored item the target may not hold),
    still marked with the provider that made it (`ANSWERED_BY`): the OpenAI dialect sends it to
    that provider only, and never the mark."""
    out: list[JSON] = []
    for item in items:
        if item.get("type") == "reasoning":
            if item.get("encrypted_content") and item.get(ANSWERED_BY):
                out.append(item)
            continue
        out.append({name: value for name, value in item.items() if name not in _NATIVE_HISTORY_DROPS})
    return out


def _input_as_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def previous_response_id(body: Any) -> str | None:
    """The id a request continues from, checked before its conversation is looked up."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    value = body.get("previous_response_id")
    if value is not None and (not isinstance(value, str) or not value):
        raise BadRequest("'previous_response_id' must be a non-empty string.", param="previous_response_id")
    return value


def read_turn(body: Any, history: Sequence[JSON] = (), unheld: RequestError | None = None) -> ResponsesTurn:
    """A Responses request continuing `history` (the items of the earlier turns): translated, or,
    when only OpenAI's Responses API can serve it, with a routing summary and `only` set.
    `BadRequest` names what is wrong. `unheld` is the store's 404 for a `previous_response_id` it
    does not hold: the request is checked as any, then goes natively (`ResponsesTurn.unheld`)."""
    try:
        turn = request_to_canonical(body, history)
    except ResponsesOnly as only:
        turn = ResponsesTurn(body, routing_summary(body, history), tuple(history), only)
    if unheld is None:
        return turn
    elsewhere = ResponsesOnly(f"'previous_response_id' {body['previous_response_id']!r} is not held by this "
                              "sidecar: only a provider that keeps its responses can continue it.",
                              param="previous_response_id")
    return ResponsesTurn(body, routing_summary(body), (), elsewhere, unheld)


def routing_summary(body: JSON, history: Sequence[JSON] = ()) -> JSON:
    """The least canonical request the router needs (model, the text of each turn, tools or not,
    the output cap, streamed or not) for a request only OpenAI can serve; never sent anywhere."""
    messages = _instructions(body.get("instructions"))
    for item in [*history, *_input_as_items(body.get("input"))]:
        if isinstance(item, dict) and item.get("type", "message") == "message" and item.get("role") in _MESSAGE_ROLES:
            messages.append({"role": item["role"], "content": _plain_text(item.get("content"))})
    summary: JSON = {"model": body["model"], "messages": messages or [{"role": "user", "content": ""}]}
    if isinstance(body.get("max_output_tokens"), int) and body["max_output_tokens"] >= 1:
        summary["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("stream") is True:
        summary["stream"] = True
    if body.get("tools"):
        summary["tools"] = [{"type": "function", "function": {"name": "openai_tool"}}]
    return summary


def _plain_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def request_to_canonical(body: Any, history: Sequence[JSON] = ()) -> ResponsesTurn:
    """The canonical chat request for a Responses request continuing `history` (the items of
    the earlier turns); `ResponsesOnly` names what only OpenAI can serve, `BadRequest` what is wrong."""
    previous_response_id(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string.", param="model")
    _top_level(body)
    turn = _input(body.get("input"))
    if not turn:
        raise BadRequest("'input' is required: a string or a non-empty array of items.", param="input")
    conversation = [*_input(list(history), lenient=True), *turn] if history else turn
    out: JSON = {"model": model, "messages": _instructions(body.get("instructions")) + conversation}
    # each group is read only when the request has one of its fields: absent, it adds and refuses nothing
    if "tools" in body or "tool_choice" in body or "parallel_tool_calls" in body:
        _tooling(body, out)
    if "text" in body:
        _text(body["text"], out)
    if "reasoning" in body:
        _reasoning(body["reasoning"], out)
    _scalars(body, out)
    if boolean(body.get("stream"), "stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    elif body.get("stream_options") is not None:
        raise BadRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    return ResponsesTurn(body, out, tuple(history))


def _top_level(body: JSON) -> None:
    for name, value in body.items():
        if name in _REFUSED and value is not None:
            raise ResponsesOnly(f"'{name}' cannot be translated for other providers: {_REFUSED[name]}.", param=name)
        if name not in _KNOWN and name not in _REFUSED:
            raise ResponsesOnly(f"'{name}' is not a Responses API field llmroute can translate for other providers.",
                                param=name, code="unknown_parameter")
    if "background" in body and body["background"] not in (None, False):
        raise BadRequest("'background' responses are not supported: the sidecar answers in the request.",
                         param="background", code="unsupported_parameter")
    if body.get("truncation") not in (None, "disabled"):
        raise ResponsesOnly("'truncation' other than disabled is OpenAI's own: other providers are sent every "
                            "input item.", param="truncation")
    if "service_tier" in body:
        string(body["service_tier"], "service_tier")
    for i, item in enumerate(_array(body.get("include"), "include") if "include" in body else ()):
        if not isinstance(item, str):
            raise BadRequest(f"include[{i}] must be a string.", param=f"include[{i}]")
        if item not in _INCLUDABLE:
            raise ResponsesOnly(f"include[{i}] {item!r} cannot be produced by other providers; only "
                                f"{', '.join(sorted(_INCLUDABLE))} are accepted for them.", param=f"include[{i}]")
        if item not in _INCLUDE_NOTHING:
            raise ResponsesOnly(f"include[{i}] {item!r}: log probabilities are not carried through the "
                                "canonical chat form.", param=f"include[{i}]")
    options = optional_object(body.get("stream_options"), "stream_options") if "stream_options" in body else None
    for name in options or ():
        if name != "include_obfuscation":
            raise ResponsesOnly(f"'stream_options.{name}' is OpenAI's own.", param=f"stream_options.{name}")


def _array(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"'{path}' must be an array.", param=path)
    return value


# ---- input --------------------------------------------------------------------------------


def _instructions(instructions: Any) -> list[JSON]:
    if string(instructions, "instructions"):
        return [{"role": "system", "content": instructions}]
    return []


def _input(value: Any, lenient: bool = False) -> list[JSON]:
    """Canonical messages for input items; `lenient` (for the earlier turns' items, checked when
    they came) leaves out what has no canonical form instead of raising `ResponsesOnly`."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("'input' must be a string or an array of items.", param="input")
    out: list[JSON] = []
    thinking: list[JSON] = []  # the signed blocks of the reasoning just read, for the assistant message next
    for i, item in enumerate(value):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{path} must be an object.", param=path)
        kind = item.get("type", "message")
        if kind == "reasoning":
            thinking += _signed_thinking(item, path, lenient)
            continue
        _item(item, kind, path, out, lenient, joins=not thinking)
        if thinking and out and out[-1]["role"] == "assistant":
            out[-1][THINKING_BLOCKS] = thinking
        thinking = []
    return out


def _signed_thinking(item: JSON, path: str, lenient: bool) -> list[JSON]:
    """The blocks a reasoning item's `encrypted_content` carries when the sidecar made it (Claude's
    thinking), else none; a malformed one of ours is refused, in the earlier turns left out."""
    try:
        return read_token(item.get("encrypted_content"), f"{path}.encrypted_content") or []
    except BadRequest:
        if lenient:
            return []
        raise


def _item(item: JSON, kind: Any, path: str, out: list[JSON], lenient: bool, joins: bool = True) -> None:
    """One input item other than reasoning, translated onto `out`; a function call `joins` the assistant
    message before it unless Claude's blocks came between: they open their own answer's message."""
    if kind == "message":
        _message(item, path, out, lenient)
    elif lenient and kind not in ("function_call", "function_call_output"):
        return
    elif kind == "function_call":
        _function_call(item, path, out, joins)
    elif kind == "function_call_output":
        out.append(_function_output(item, path, lenient))
    elif isinstance(kind, str):
        raise ResponsesOnly(f"{path}.type {kind!r} cannot be translated for other providers (built-in tool "
                            "calls and item references need OpenAI's servers).", param=f"{path}.type")
    else:
        raise BadRequest(f"{path}.type must be a string.", param=f"{path}.type")


def _message(item: JSON, path: str, out: list[JSON], lenient: bool = False) -> None:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise BadRequest(f"{path}.role must be one of {', '.join(_MESSAGE_ROLES)}.", param=f"{path}.role")
    content = item.get("content")
    if isinstance(content, str):
        message: JSON = {"role": role, "content": content}
    elif isinstance(content, list):
        parts = [_part(part, role, f"{path}.content[{k}]") for k, part in enumerate(content)
                 if not lenient or _translatable(part, role)]
        if not parts and lenient:
            return
        message = {"role": role, "content": _collapse(parts, role)}
        refusals = [p["refusal"] for p in parts if p["type"] == "refusal"]
        if refusals:
            message = {"role": role, "content": _collapse([p for p in parts if p["type"] != "refusal"], role)
                       or None, "refusal": "".join(refusals)}
    else:
        raise BadRequest(f"{path}.content must be a string or an array of parts.", param=f"{path}.content")
    for name in () if lenient else item:
        if name not in ("type", "role", "content", *_IGNORED_ITEM_FIELDS):
            raise ResponsesOnly(f"{path}.{name} cannot be translated for other providers.", param=f"{path}.{name}")
    out.append(message)


def _collapse(parts: list[JSON], role: str) -> str | list[JSON]:
    """Text-only content becomes a string: system and assistant messages take nothing else."""
    if all(p["type"] == "text" for p in parts) and (role != "user" or len(parts) == 1):
        return "".join(p["text"] for p in parts)
    return parts


def _translatable(part: Any, role: str) -> bool:
    try:
        _part(part, role, "")
    except ResponsesOnly:
        return False
    return True


def _part(part: Any, role: str, path: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):
        raise BadRequest(f"{path}.type is required and must be a string.", param=f"{path}.type")
    if kind in ("input_text", "output_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{path}.text must be a string.", param=f"{path}.text")
        return {"type": "text", "text": text}
    if kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
        return {"type": "refusal", "refusal": part["refusal"]}
    if role == "user" and kind == "input_image":
        return _image(part, path)
    if role == "user" and kind == "input_file":
        return _file(part, path)
    raise ResponsesOnly(f"{path}.type {kind!r} in a {role} message cannot be translated for other providers.",
                        param=f"{path}.type")


def _image(part: JSON, path: str) -> JSON:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise ResponsesOnly(f"{path}.image_url is required for other providers (file_id refers to OpenAI's file "
                            "store, which they cannot read).", param=f"{path}.image_url")
    image: JSON = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file(part: JSON, path: str) -> JSON:
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        raise ResponsesOnly(f"{path}.file_data is required for other providers (file_id and file_url refer to "
                            "OpenAI's servers).", param=f"{path}.file_data")
    return {"type": "file", "file": {"filename": str(part.get("filename") or "document.pdf"), "file_data": data}}


def _function_call(item: JSON, path: str, out: list[JSON], joins: bool = True) -> None:
    """Consecutive calls (and the assistant text before them) make one assistant message."""
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            raise BadRequest(f"{path}.{name} must be a string.", param=f"{path}.{name}")
    call = {"id": item["call_id"], "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]}}
    last = out[-1] if out and joins else None
    if last is not None and last["role"] == "assistant" and isinstance(last.get("content"), str | None):
        last.setdefault("tool_calls", []).append(call)
        if last.get("content") == "":
            last["content"] = None
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_output(item: JSON, path: str, lenient: bool = False) -> JSON:
    if not isinstance(item.get("call_id"), str):
        raise BadRequest(f"{path}.call_id must be a string.", param=f"{path}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for k, part in enumerate(output):
            if lenient and not (isinstance(part, dict) and part.get("type") == "input_text"):
                continue
            if not isinstance(part, dict) or part.get("type") != "input_text" or not isinstance(part.get("text"), str):
                raise ResponsesOnly(f"{path}.output[{k}]: only input_text parts of a tool's output can be "
                                    "translated for other providers.", param=f"{path}.output[{k}]")
            texts.append(part["text"])
        output = "".join(texts)
    if not isinstance(output, str):
        raise BadRequest(f"{path}.output must be a string or an array of input_text parts.", param=f"{path}.output")
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


# ---- tools, formats, reasoning ---------------------------------------------------------------


def _tooling(body: JSON, out: JSON) -> None:
    tools = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(_array(body.get("tools"), "tools"))]
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if choice in ("none", "auto", "required"):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if isinstance(kind, str) and (kind in BUILT_IN_TOOLS or kind in ("allowed_tools", "mcp")):
            raise ResponsesOnly(f"tool_choice.type {kind!r} names what only OpenAI runs.", param="tool_choice.type")
        raise BadRequest("'tool_choice' must be none, auto, required or {type: function, name}.",
                         param="tool_choice")
    parallel = boolean(body.get("parallel_tool_calls"), "parallel_tool_calls")
    if parallel is False and tools:
        out["parallel_tool_calls"] = False


def _tool(tool: Any, path: str) -> JSON:
    if not isinstance(tool, dict):
        raise BadRequest(f"{path} must be an object.", param=path)
    kind = tool.get("type")
    if isinstance(kind, str) and kind in BUILT_IN_TOOLS:
        raise ResponsesOnly(f"{path}.type {kind!r} is a built-in tool that runs on OpenAI's servers.",
                            param=f"{path}.type")
    if not isinstance(kind, str):
        raise BadRequest(f"{path}.type is required and must be a string.", param=f"{path}.type")
    if kind != "function":
        raise ResponsesOnly(f"{path}.type {kind!r} is not a tool llmroute can translate for other providers.",
                            param=f"{path}.type")
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{path}.name is required and must be a non-empty string.", param=f"{path}.name")
    function: JSON = {"name": name}
    if string(tool.get("description"), f"{path}.description") is not None:
        function["description"] = tool["description"]
    if optional_object(tool.get("parameters"), f"{path}.parameters") is not None:
        function["parameters"] = tool["parameters"]
    if boolean(tool.get("strict"), f"{path}.strict") is not None:
        function["strict"] = tool["strict"]
    for field in tool:
        if field not in ("type", "name", "description", "parameters", "strict", "defer_loading"):
            raise ResponsesOnly(f"{path}.{field} cannot be translated for other providers.", param=f"{path}.{field}")
    return {"type": "function", "function": function}


def _text(text: Any, out: JSON) -> None:
    text = optional_object(text, "text") or {}
    for name in text:
        if name not in ("format", "verbosity"):
            raise ResponsesOnly(f"'text.{name}' cannot be translated for other providers.", param=f"text.{name}")
    if text.get("verbosity") not in (None, "medium"):
        raise ResponsesOnly("'text.verbosity' other than medium is OpenAI's own.", param="text.verbosity")
    fmt = optional_object(text.get("format"), "text.format")
    if fmt is None or fmt.get("type") == "text":
        return
    if fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
        return
    if fmt.get("type") != "json_schema":
        raise BadRequest("'text.format.type' must be text, json_object or json_schema.", param="text.format.type")
    name = fmt.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("'text.format.name' is required for json_schema.", param="text.format.name")
    schema = optional_object(fmt.get("schema"), "text.format.schema")
    if schema is None:
        raise BadRequest("'text.format.schema' is required for json_schema.", param="text.format.schema")
    spec: JSON = {"name": name, "schema": schema}
    if string(fmt.get("description"), "text.format.description") is not None:
        spec["description"] = fmt["description"]
    if boolean(fmt.get("strict"), "text.format.strict") is not None:
        spec["strict"] = fmt["strict"]
    out["response_format"] = {"type": "json_schema", "json_schema": spec}


def _reasoning(reasoning: Any, out: JSON) -> None:
    reasoning = optional_object(reasoning, "reasoning") or {}
    for name in reasoning:
        if name not in ("effort", "summary", "generate_summary"):
            raise ResponsesOnly(f"'reasoning.{name}' cannot be translated for other providers.",
                                param=f"reasoning.{name}")
    effort = reasoning.get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise BadRequest(f"'reasoning.effort' must be one of {', '.join(EFFORTS)}.", param="reasoning.effort")
        out["reasoning_effort"] = effort


def _scalars(body: JSON, out: JSON) -> None:
    if "max_output_tokens" in body and integer(body["max_output_tokens"], "max_output_tokens", minimum=16) is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if "temperature" in body and number(body["temperature"], "temperature", 0, 2) is not None:
        out["temperature"] = body["temperature"]
    if "top_p" in body and number(body["top_p"], "top_p", 0, 1) is not None:
        out["top_p"] = body["top_p"]
    for name in ("user", "safety_identifier", "prompt_cache_key"):
        if name in body and string(body[name], name) is not None:
            out[name] = body[name]
    if body.get("service_tier") not in (None, "auto"):  # as chat completions carry it: mapped for each provider
        out["service_tier"] = body["service_tier"]
    if "store" in body:
        boolean(body["store"], "store")
    metadata = (optional_object(body["metadata"], "metadata") if "metadata" in body else None) or {}
    if len(metadata) > 16:
        raise BadRequest("'metadata' has more than 16 keys.", param="metadata")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(value) > 512 or len(key) > 64:
            raise BadRequest(f"'metadata.{key}' must be a string of at most 512 characters (keys at most 64).",
                             param=f"metadata.{key}")


# ---- errors ---------------------------------------------------------------------------------

_CANONICAL_NAMES = (("response_format", "text.format"), ("reasoning_effort", "reasoning.effort"),
                    ("max_completion_tokens", "max_output_tokens"), ("max_tokens", "max_output_tokens"),
                    (".function.", "."))
_TOOLS_FUNCTION = re.compile(r"^tools\[(\d+)\]\.function")
_MESSAGES = re.compile(r"^messages\[\d+\]")


def responses_field(text: str) -> str:
    """A provider's refusal speaks of canonical fields; the client sent Responses fields."""
    text = _MESSAGES.sub("input", _TOOLS_FUNCTION.sub(r"tools[\1]", text))
    for canonical, own in _CANONICAL_NAMES:
        text = text.replace(canonical, own)
    return text
