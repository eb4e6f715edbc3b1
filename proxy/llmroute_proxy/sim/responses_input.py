"""What the simulated Responses API reads from a request: OpenAI's validation, with its messages,
`param` and `code`, and the conversation the model answers (pure).

The checks are the ones a gateway is most likely to trip over, each as OpenAI words it: an
unknown top-level field, a wrong JSON type, a missing model or input, `max_output_tokens` below
16, `temperature` or `top_p` out of range, more than 16 `metadata` keys or a value over 512
characters, an unknown `tool_choice`, `reasoning` on a model that does not reason, `input_text` in an assistant message, a
`function_call_output` whose call is not in the conversation, JSON mode without the word "json",
and a reasoning item that is neither stored here nor carries its `encrypted_content`.

Nothing here may import `llmroute_proxy.server`: the simulators stand in for the outside world.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

KNOWN_PARAMETERS = frozenset({
    "access_programs", "background", "background_options", "context_management", "conversation", "image",
    "include", "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream",
    "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
})
"""The top-level fields of `responses.create` (the SDK's `ResponseCreateParams`); others are refused."""
INCLUDABLE = ("file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
              "message.input_image.image_url", "computer_call_output.output.image_url",
              "code_interpreter_call.outputs", "reasoning.encrypted_content", "message.output_text.logprobs")
BUILT_IN_TOOLS = frozenset({
    "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11", "file_search",
    "code_interpreter", "computer_use_preview", "computer", "image_generation", "mcp", "local_shell", "shell",
    "apply_patch", "custom",
})
"""Accepted and echoed; of these only web search changes the answer (a `web_search_call` item)."""
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
MIN_OUTPUT_TOKENS = 16
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)(?!.*-chat)")
_ASSISTANT_PARTS = ("output_text", "refusal")
_USER_PARTS = ("input_text", "input_image", "input_file", "input_audio")


def reasoning_model(model: str) -> bool:
    """Whether `model` looks like one that reasons (o-series, gpt-5 but not its -chat variants)."""
    return _REASONING_MODEL.match(model) is not None


class Refused(Exception):
    """A request OpenAI refuses: the status, message, `param` and `code` of its error body."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


@dataclass(frozen=True, slots=True)
class Turn:
    """One validated request and the whole conversation its answer continues."""

    body: JSON
    model: str
    conversation: tuple[JSON, ...]
    """Earlier turns' items (from `previous_response_id`) and this request's input, as items."""
    functions: tuple[JSON, ...]
    web_search: bool
    effort: str | None
    """The reasoning effort when the model reasons (its default `medium` when not asked), else None."""
    inputs: tuple[JSON, ...] = ()
    """This request's own input items (the end of `conversation`), as given."""

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def store(self) -> bool:
        return self.body.get("store") is not False

    @property
    def include(self) -> frozenset[str]:
        return frozenset(self.body.get("include") or ())

    @property
    def limit(self) -> int | None:
        limit = self.body.get("max_output_tokens")
        return limit if isinstance(limit, int) else None

    @property
    def summary(self) -> bool:
        reasoning = self.body.get("reasoning") or {}
        return reasoning.get("summary") in ("auto", "concise", "detailed")


History = Callable[[str], Sequence[JSON] | None]
"""The conversation of a stored response by id (its input and output items), None when unknown."""
KnownItem = Callable[[str], bool]
"""Whether an output item with this id is stored (`store: true`) and so may be passed back by id."""


def read_turn(body: Any, history: History, known_item: KnownItem) -> Turn:
    """The turn `body` asks for; `Refused` says what OpenAI would answer instead."""
    if not isinstance(body, dict):
        raise Refused("We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                      "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
                      "valid JSON.)")
    for name in body:
        if name not in KNOWN_PARAMETERS:
            raise Refused(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    _types(body)
    model = body.get("model")
    if not model:
        raise Refused("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    previous = body.get("previous_response_id")
    earlier: Sequence[JSON] = ()
    if previous is not None:
        found = history(previous)
        if found is None:
            raise Refused(f"Previous response with id '{previous}' not found.", "previous_response_id",
                          "previous_response_not_found", 404)
        earlier = found
    if "input" not in body and previous is None:
        raise Refused("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    items = _input_items(body.get("input"), known_item)
    conversation = (*earlier, *items)
    _calls_answered(conversation)
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise Refused("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                      "stream_options", "invalid_value")
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and limit < MIN_OUTPUT_TOKENS:
        raise Refused(f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                      f"{MIN_OUTPUT_TOKENS}, but got {limit} instead.", "max_output_tokens", "integer_below_min_value")
    _ranges(body)
    for index, included in enumerate(body.get("include") or ()):
        if included not in INCLUDABLE:
            raise Refused(f"Invalid value: '{included}'. Supported values are: "
                          + ", ".join(f"'{value}'" for value in INCLUDABLE) + ".", f"include[{index}]", "invalid_value")
    functions, web_search = _tools(body.get("tools") or [])
    _text_format(body.get("text"), conversation, body.get("instructions"))
    return Turn(body, model, conversation, functions, web_search, _effort(model, body), tuple(items))


# --- types -------------------------------------------------------------------------------------

_EXPECTED: dict[str, tuple[str, tuple[type, ...]]] = {
    "model": ("a string", (str,)),
    "input": ("one of a string or array of input items", (str, list)),
    "instructions": ("a string", (str,)),
    "max_output_tokens": ("an integer", (int,)),
    "temperature": ("a decimal", (int, float)),
    "top_p": ("a decimal", (int, float)),
    "metadata": ("an object", (dict,)),
    "store": ("a boolean", (bool,)),
    "stream": ("a boolean", (bool,)),
    "parallel_tool_calls": ("a boolean", (bool,)),
    "tools": ("an array", (list,)),
    "tool_choice": ("one of a string or object", (str, dict)),
    "text": ("an object", (dict,)),
    "reasoning": ("an object", (dict,)),
    "include": ("an array", (list,)),
    "previous_response_id": ("a string", (str,)),
    "stream_options": ("an object", (dict,)),
    "user": ("a string", (str,)),
    "safety_identifier": ("a string", (str,)),
    "prompt_cache_key": ("a string", (str,)),
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else "null"


def _types(body: JSON) -> None:
    for name, (expected, types) in _EXPECTED.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) is not (bool in types) or not isinstance(value, types):
            raise Refused(f"Invalid type for '{name}': expected {expected}, but got {_kind(value)} instead.",
                          name, "invalid_type")


def _ranges(body: JSON) -> None:
    for name, top in (("temperature", 2), ("top_p", 1)):
        value = body.get(name)
        if isinstance(value, int | float) and not 0 <= value <= top:
            side, bound = ("above maximum", f"<= {top}") if value > top else ("below minimum", ">= 0")
            raise Refused(f"Invalid '{name}': decimal {side} value. Expected a value {bound}, but got {value} instead.",
                          name, f"decimal_{side.replace(' ', '_').replace('imum', '')}_value")
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        raise Refused(f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                      "tool_choice", "invalid_value")
    metadata = body.get("metadata") or {}
    if len(metadata) > 16:
        raise Refused(f"Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but "
                      f"got an object with {len(metadata)} properties instead.", "metadata", "object_above_max_properties")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise Refused(f"Invalid type for 'metadata.{key}': expected a string, but got {_kind(value)} instead.",
                          f"metadata.{key}", "invalid_type")
        if len(value) > 512:
            raise Refused(f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length 512, but "
                          f"got a string with length {len(value)} instead.", f"metadata.{key}", "string_above_max_length")


# --- input -------------------------------------------------------------------------------------

def _input_items(value: Any, known_item: KnownItem) -> list[JSON]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    items: list[JSON] = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise Refused(f"Invalid type for '{where}': expected an input item, but got {_kind(item)} instead.",
                          where, "invalid_type")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            _message(item, where)
        elif kind == "reasoning":
            item_id = item.get("id")
            if not item.get("encrypted_content") and not (isinstance(item_id, str) and known_item(item_id)):
                raise Refused(f"Item with id '{item_id}' not found. Items are not persisted when `store` is set to "
                              "false. Try again with `store` set to true, or remove this item from your input.",
                              "input", None, 404)
        elif kind == "item_reference":
            if not (isinstance(item.get("id"), str) and known_item(item["id"])):
                raise Refused(f"Item with id '{item.get('id')}' not found.", "input", None, 404)
        elif kind in ("function_call", "function_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise Refused(f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id",
                              "missing_required_parameter")
        elif not isinstance(kind, str):
            raise Refused(f"Missing required parameter: '{where}.type'.", f"{where}.type", "missing_required_parameter")
        items.append({"type": kind, **item})
    return items


def _message(item: JSON, where: str) -> None:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise Refused(f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', 'developer', and 'user'.",
                      f"{where}.role", "invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise Refused(f"Invalid type for '{where}.content': expected one of a string or array of input content, "
                      f"but got {_kind(content)} instead.", f"{where}.content", "invalid_type")
    allowed = _ASSISTANT_PARTS if role == "assistant" else _USER_PARTS
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise Refused(f"Invalid value: '{kind}'. Supported values are: "
                          + " and ".join(f"'{value}'" for value in allowed) + ".",
                          f"{where}.content[{index}]", "invalid_value")


def _calls_answered(conversation: Sequence[JSON]) -> None:
    called = {item.get("call_id") for item in conversation if item.get("type") == "function_call"}
    for item in conversation:
        if item.get("type") == "function_call_output" and item.get("call_id") not in called:
            raise Refused(f"No tool call found for function call output with call_id {item.get('call_id')}.", "input")


def text_of(item: Mapping[str, Any]) -> str:
    """The text an input or output item carries (message parts joined, a tool output as given)."""
    if item.get("type") == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else " ".join(
            part.get("text", "") for part in output or () if isinstance(part, dict) and isinstance(part.get("text"), str))
    if item.get("type") == "function_call":
        return f"{item.get('name', '')} {item.get('arguments', '')}"
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


# --- tools, text format, reasoning -------------------------------------------------------------

def _tools(tools: list[Any]) -> tuple[tuple[JSON, ...], bool]:
    functions: list[JSON] = []
    web_search = False
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            if not isinstance(tool.get("name"), str):
                raise Refused(f"Missing required parameter: 'tools[{index}].name'.", f"tools[{index}].name",
                              "missing_required_parameter")
            functions.append(tool)
        elif isinstance(kind, str) and kind in BUILT_IN_TOOLS:
            web_search = web_search or str(kind).startswith("web_search")
        else:
            raise Refused(f"Invalid value: '{kind}'. Supported values are: 'function', "
                          + ", ".join(f"'{value}'" for value in sorted(BUILT_IN_TOOLS)) + ".",
                          f"tools[{index}].type", "invalid_value")
    return tuple(functions), web_search


def _text_format(text: Any, conversation: Sequence[JSON], instructions: Any) -> None:
    form = (text or {}).get("format")
    if not isinstance(form, dict):
        return
    kind = form.get("type")
    if kind == "json_schema":
        for name in ("name", "schema"):
            if name not in form:
                raise Refused(f"Missing required parameter: 'text.format.{name}'.", f"text.format.{name}",
                              "missing_required_parameter")
    elif kind == "json_object":
        said = " ".join(text_of(item) for item in conversation) + (instructions if isinstance(instructions, str) else "")
        if "json" not in said.lower():
            raise Refused("Response input messages must contain the word 'json' in some form to use 'text.format' of "
                          "type 'json_object'.", "input")
    elif kind != "text":
        raise Refused(f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
                      "text.format.type", "invalid_value")


def _effort(model: str, body: JSON) -> str | None:
    reasoning = body.get("reasoning")
    asked = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if not reasoning_model(model):
        if asked is not None:
            raise Refused("Unsupported parameter: 'reasoning.effort' is not supported with this model.",
                          "reasoning.effort", "unsupported_parameter")
        return None
    if body.get("temperature") is not None and body.get("temperature") != 1:
        raise Refused("Unsupported parameter: 'temperature' is not supported with this model.", "temperature",
                      "unsupported_parameter")
    if asked is not None and asked not in EFFORTS:
        raise Refused(f"Invalid value: '{asked}'. Supported values are: "
                      + ", ".join(f"'{value}'" for value in EFFORTS) + ".", "reasoning.effort", "invalid_value")
    return asked if isinstance(asked, str) else "medium"
