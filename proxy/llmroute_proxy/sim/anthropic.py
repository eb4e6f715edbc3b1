"""A simulated Anthropic Messages API: `/v1/messages` (streamed and not), `/v1/messages/count_tokens`
and `/v1/models`.

Follows providers.md §2: `max_tokens` and `anthropic-version` are required, auth is
`x-api-key` or `Authorization: Bearer` (the 2.14 SDK sends the latter), streams are named
SSE events, and a fault can end a 200 stream with `event: error`.

With `quirks`, as Claude really answers: a `ping` right after `message_start` too, a short text
block before the tool calls, every tool called at once when several may be (parallel tool use),
`message_delta` usage that repeats the input count and carries `null` cache counts and
`server_tool_use`, and error bodies with a `request_id`.

Always, as Claude does: a request that enables thinking is answered with a thinking block first
(thinking deltas, then its signature; a `redacted_thinking` block, whole in its start, when the last
message holds Anthropic's documented test string `REDACT`), tool calls included, and is refused
with a 400 when it also sets what thinking does not go with: a `temperature` other than 1, `top_k`, a `top_p` below 0.95, a
`tool_choice` that forces tool use, or (manual thinking, `thinking.type: enabled`) a last assistant
turn that called tools without starting with the thinking block it was answered with (the error
real clients hit when a gateway drops the block). Thinking is signed as Claude signs it, so that only
the account that wrote a block takes it back: the signature (and a redacted block's `data`) is an HMAC
keyed by the simulator's name, and a thinking block sent back without a signature, or with one another
simulator made (a failover to another account), is refused with Claude's own 400. So is a block in the latest
assistant turn (consecutive assistant messages are one turn, as the API combines them) that is not where Claude
wrote it, opening its answer: after another block of the turn, as when two answers are merged into one ("blocks
in the latest assistant message cannot be modified"). Tool ids in a conversation (`tool_use.id`,
`tool_result.tool_use_id`) must match `^[a-zA-Z0-9_-]+$`, as Claude checks them: other providers'
ids (Kimi's `functions.name:0`) are refused with a 400; so is a text block (or a message's string
content, but for a final assistant prefill) that is empty or only whitespace. `cache_control` blocks
are Claude's prompt cache (`prompt_cache`): a long enough prefix is written on first use and read
while it lives, and the usage says so (`cache_creation_input_tokens` with its 5-minute and 1-hour
parts, `cache_read_input_tokens`); more than four breakpoints are refused with Claude's 400.

`/v1/messages/count_tokens` counts a Messages request's input as the API does, without answering
it: with the same checks but for `max_tokens` and the other generation parameters, which it refuses
as extra inputs; its count is the `input_tokens` a message with the same prompt is billed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Unpack

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
from llmroute_proxy.sim.faults import Fault, FaultKind
from llmroute_proxy.sim.prompt_cache import (
    NOTHING_CACHED,
    Cached,
    PromptCache,
    blocks_text,
    too_many_breakpoints,
)
from llmroute_proxy.sim.runtime import (
    SIM_CALL,
    Dialect,
    SimCall,
    SimConfig,
    SimOptions,
    SimState,
    sim_app,
    sim_state,
)
from llmroute_proxy.sim.streaming import SimStream, sse_event

DEFAULT_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")
_PROMPT_CACHE = web.AppKey("llmroute_sim_prompt_cache", PromptCache)
MODEL_CREATED_AT = "2025-09-29T00:00:00Z"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit.",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
    "authentication_error": "invalid x-api-key",
}


class AnthropicDialect(Dialect):
    overloaded_status = 529
    request_id_header = "request-id"
    static_headers: ClassVar[dict[str, str]] = {
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": "2025-01-01T00:00:00Z",
    }

    def authorized(self, request: web.Request, api_key: str) -> bool:
        expected = api_key.encode()
        if hmac.compare_digest(request.headers.get("x-api-key", "").encode(), expected):
            return True
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), b"Bearer " + expected)

    def unauthorized(self, request: web.Request) -> web.Response:
        return request[SIM_CALL].state.error(401)

    def error_body(self, status: int, code: str | None, message: str | None,
                   fault: Fault | None) -> dict[str, Any]:
        kind = code or _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return _error(kind, message or _ERROR_MESSAGES.get(kind, f"Error {status}"))

    def in_band_error(self, body: dict[str, Any]) -> bytes:
        return sse_event("error", body)

    def error_payload(self, body: dict[str, Any], path: str, quirks: bool) -> Any:
        return {**body, "request_id": "req_sim011CSHoEeqs5C35K2UUqR7Fy"} if quirks else body

    async def prompt_blocked(self, request: web.Request) -> web.StreamResponse:
        return request[SIM_CALL].state.error(400, code="invalid_request_error",
                                             message="Output blocked by content filtering policy", path=request.path)


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _bad_request(call: SimCall, message: str) -> web.Response:
    return call.state.json(_error("invalid_request_error", message), 400)


# --- messages ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Answer:
    text: str | None
    calls: tuple[tuple[str, dict[str, Any]], ...]
    """The tool calls: (tool name, input) each."""
    stop_reason: str
    input_tokens: int
    output_tokens: int
    thinking: str | None = None
    """The thinking block's text, when the request enabled thinking."""
    redacted: bool = False
    """The thinking came back as a `redacted_thinking` block (its text is not shown)."""
    cached: Cached = NOTHING_CACHED
    """What the prompt read from Claude's prompt cache and wrote to it (`input_tokens` is the rest)."""
    searched: str | None = None
    """The query of the web search Claude ran before answering (its server tool), if it ran one."""
    service_tier: str = "standard"
    """The tier that served it: `priority` for `auto` while the organisation has Priority Tier capacity."""


def _tool_result(content: Any) -> dict[str, Any] | None:
    if not isinstance(content, list):
        return None
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    return results[-1] if results else None


def _chosen_tools(body: dict[str, Any], quirks: bool) -> list[dict[str, Any]]:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)
             and t.get("type", "custom") == "custom"]  # a server tool (`web_search_20250305`…) runs on Claude's side
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else "auto"
    if not tools or kind == "none":
        return []
    if kind == "tool" and isinstance(choice, dict):
        return [t for t in tools if t["name"] == choice.get("name")][:1]
    parallel = quirks and not (isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True)
    return tools if parallel else tools[:1]


SEARCH_RESULT = {"type": "web_search_result", "url": "https://sim.example/weather", "title": "Simulated weather",
                 "encrypted_content": "RXF1aXZhbGVudCBvZiBhIHNlYXJjaCByZXN1bHQ=", "page_age": "1 day ago"}
SEARCH_RESULT_TOKENS = 400
"""What the search results add to the input tokens (Claude bills them as input)."""


def _search_query(body: dict[str, Any], last: dict[str, Any]) -> str | None:
    """The query of the one web search Claude runs for a user turn that offers its web search tool
    (unless `tool_choice` rules it out or `max_uses` is 0), else None."""
    tool = next((t for t in body.get("tools") or () if isinstance(t, dict)
                 and str(t.get("type", "")).startswith("web_search_")), None)
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else "auto"
    if (tool is None or last.get("role") != "user" or kind == "none" or tool.get("max_uses") == 0
            or (kind == "tool" and isinstance(choice, dict) and choice.get("name") != tool.get("name"))):
        return None
    return blocks_text(last.get("content"))[:60] or "search"


def _input_tokens(body: dict[str, Any]) -> int:
    """The prompt's tokens: its system prompt and every message's text (tool results included)."""
    texts = [blocks_text(body.get("system"))]
    texts += [blocks_text(m.get("content")) for m in body["messages"] if isinstance(m, dict)]
    return count_tokens(" ".join(texts))


def _answer(state: SimState, body: dict[str, Any], refuse: int | None = None) -> _Answer:
    """`refuse`: the safety classifier stops the answer after that many of its text's chunks (0: before it
    began). Claude 4's classifiers also stop an answer mid-stream, after part of it was sent (Anthropic's
    "handle streaming refusals" guide, zed-industries/zed#31217; anthropics/claude-code#61634)."""
    messages: list[Any] = body["messages"]
    prompt = _input_tokens(body)
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    result = _tool_result(last.get("content"))
    if refuse == 0:  # the safety classifier stopped the answer before it began
        return _Answer(None, (), "refusal", prompt, 1)
    if refuse is not None:
        said = "".join(split_words(_answered(state, body, prompt, last, result).text or "", state.config.chunks)[:refuse])
        return _Answer(said, (), "refusal", prompt, count_tokens(said))
    query = _search_query(body, last) if result is None else None
    if query is not None:
        return replace(_answered(state, body, prompt, last, result), searched=query,
                       input_tokens=prompt + SEARCH_RESULT_TOKENS)
    return _answered(state, body, prompt, last, result)


def _answered(state: SimState, body: dict[str, Any], prompt: int, last: dict[str, Any],
              result: dict[str, Any] | None) -> _Answer:
    messages: list[Any] = body["messages"]
    model, name = str(body["model"]), state.config.name
    tools = _chosen_tools(body, state.config.quirks) if last.get("role") == "user" and result is None else []
    if tools:
        calls = tuple((tool["name"], tool_arguments(tool.get("input_schema"))) for tool in tools)
        preface = f"I'll call {', '.join(name for name, _ in calls)}." if state.config.quirks else None
        spoken = " ".join(f"{name} {orjson.dumps(arguments).decode()}" for name, arguments in calls)
        return _thought(body, _Answer(preface, calls, "tool_use", prompt, count_tokens(f"{preface or ''} {spoken}")))
    if result is not None:
        text = tool_reply_text(name, model, blocks_text(result.get("content")))
    else:
        said = next((blocks_text(m.get("content")) for m in reversed(messages)
                     if isinstance(m, dict) and m.get("role") == "user"), "")
        text = reply_text(name, model, said, state.config.answer_bytes)
    output_format = (body.get("output_config") or {}).get("format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        text = structured_reply(output_format.get("schema"), text)
    text, cut = fit_tokens(text, body["max_tokens"])
    return _thought(body, _Answer(text, (), "max_tokens" if cut else "end_turn", prompt, count_tokens(text)))


THINKING = "The user wrote to me; I will answer by saying back what they said."

REDACT = "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253D5E2D82641AC0E52CC2876CB"
"""The prompt Anthropic documents for testing: the thinking comes back as a `redacted_thinking` block."""
_REDACTED = "redacted thinking"
"""What a redacted block's `data` stands for (its text is never shown)."""


def signature(sim_name: str, thinking: str) -> str:
    """The signature the simulator named `sim_name` gives a thinking block: only it accepts it back."""
    mac = hmac.new(sim_name.encode(), thinking.encode(), hashlib.sha256).digest()
    return "Eq" + base64.b64encode(mac).decode()


def redacted_data(sim_name: str) -> str:
    """The `data` of the simulator's redacted thinking block, signed as a signature is."""
    return signature(sim_name, _REDACTED)


def _thought(body: dict[str, Any], answer: _Answer) -> _Answer:
    """A request that enables thinking gets a thinking block first, as Claude answers it; redacted when
    the prompt holds Anthropic's test string for that."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return answer
    redacted = REDACT in blocks_text([m.get("content") for m in body["messages"] if isinstance(m, dict)][-1])
    return replace(answer, thinking=THINKING, redacted=redacted,
                   output_tokens=answer.output_tokens + count_tokens(THINKING))


def _usage(answer: _Answer, cached: int, output_tokens: int | None = None) -> dict[str, Any]:
    """`cached`: the configured read on top of the prompt (`SimConfig.cached_tokens`)."""
    return {
        "input_tokens": answer.input_tokens,
        "output_tokens": answer.output_tokens if output_tokens is None else output_tokens,
        "cache_creation_input_tokens": answer.cached.written,
        "cache_read_input_tokens": cached + answer.cached.read,
        "cache_creation": {"ephemeral_5m_input_tokens": answer.cached.written_5m,
                           "ephemeral_1h_input_tokens": answer.cached.written_1h},
        "service_tier": answer.service_tier,
        **({"server_tool_use": _SEARCHED} if answer.searched is not None else {}),
    }


_SEARCHED = {"web_search_requests": 1, "web_fetch_requests": 0}


def _validate(request: web.Request, body: Any) -> str | None:
    problem = _request_problem(request, body, ("model", "max_tokens", "messages"))
    if problem is not None:
        return problem
    if isinstance(body["max_tokens"], bool) or not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return "max_tokens: Input should be a valid integer greater than or equal to 1"
    if not isinstance(body["messages"], list) or not body["messages"]:
        return _NO_MESSAGES
    most = max_output_tokens(str(body["model"]))
    if body["max_tokens"] > most:
        return (f"max_tokens: {body['max_tokens']} > {most}, which is the maximum allowed number of output tokens "
                f"for {body['model']}")
    return _prompt_problem(body["messages"]) or _thinking_refusal(body)


_NO_MESSAGES = "messages: at least one message is required"
_GENERATION_ONLY = ("max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata",
                    "service_tier")
"""What a Messages request may set that a count request may not: it generates nothing."""


API_HEADERS = web.RequestKey("llmroute_sim_anthropic_headers", Mapping[str, str])
"""The Messages API's own headers (`anthropic-version`, `anthropic-beta`) as a front end that carries
them elsewhere hands them on (Vertex AI: in the body); the request's headers when not set."""


def api_headers(request: web.Request) -> Mapping[str, str]:
    headers: Mapping[str, str] = request.get(API_HEADERS, request.headers)
    return headers


def _request_problem(request: web.Request, body: Any, required: tuple[str, ...]) -> str | None:
    if not api_headers(request).get("anthropic-version"):
        return "anthropic-version: header is required"
    if not isinstance(body, dict):
        return "There was an error parsing the body of your request as JSON."
    missing = next((f"{field}: Field required" for field in required if body.get(field) is None), None)
    return missing or _beta_problem(request, body)


_BETA_FIELDS = {"context_management": frozenset({"context-management-2025-06-27", "compact-2026-01-12"}),
                "mcp_servers": frozenset({"mcp-client-2025-04-04", "mcp-client-2025-11-20"})}
"""Fields Claude takes only with one of their beta features in `anthropic-beta`; without, they are
unknown fields (Claude Code sends `context_management` with its beta)."""


_MID_CONVERSATION_SYSTEM = "mid-conversation-system-2026-04-07"
"""The beta under which a message may have the role `system` (Claude Code sends one in every request)."""


def _beta_problem(request: web.Request, body: dict[str, Any]) -> str | None:
    betas = {name.strip() for name in api_headers(request).get("anthropic-beta", "").split(",")}
    field = next((f"{field}: Extra inputs are not permitted" for field, features in _BETA_FIELDS.items()
                  if field in body and not betas & features), None)
    if field is not None or _MID_CONVERSATION_SYSTEM in betas:
        return field
    messages = body.get("messages")
    return next((f"messages.{i}.role: Input should be 'user' or 'assistant'"
                 for i, message in enumerate(messages if isinstance(messages, list) else ())
                 if isinstance(message, dict) and message.get("role") == "system"), None)


def _prompt_problem(messages: list[Any]) -> str | None:
    return _blank_text(messages) or _bad_tool_id(messages)


def _count_problem(request: web.Request, body: Any) -> str | None:
    problem = _request_problem(request, body, ("model", "messages"))
    if problem is not None:
        return problem
    extra = next((field for field in _GENERATION_ONLY if field in body), None)
    if extra is not None:
        return f"{extra}: Extra inputs are not permitted"
    if not isinstance(body["messages"], list) or not body["messages"]:
        return _NO_MESSAGES
    return _prompt_problem(body["messages"])


def _unsigned_thinking(messages: list[Any], sim_name: str) -> str | None:
    """Claude's refusal of a thinking block it did not sign: without a signature, or signed by another
    account (a conversation that failed over from one). Checked whether or not thinking is enabled."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) and message.get("role") == "assistant" else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "thinking" and not isinstance(block.get("signature"), str):
                return f"messages.{i}.content.{j}.thinking.signature: Field required"
            if kind == "thinking" and not hmac.compare_digest(
                    block["signature"], signature(sim_name, str(block.get("thinking")))):
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
            if kind == "redacted_thinking" and block.get("data") != redacted_data(sim_name):
                return f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
    return None


_MODIFIED = ("`thinking` or `redacted_thinking` blocks in the latest assistant message cannot be modified. "
             "These blocks must remain as they were in the original response.")


def _moved_thinking(messages: list[Any]) -> str | None:
    """Claude's refusal of a thinking block in the latest assistant turn that is not where it was written.
    Claude checks that turn's blocks against the answer that made them; an answer of the simulator opens
    with its one thinking block, so a block after any other block of the turn was moved or merged in.
    Checked whether or not thinking is enabled, as signatures are."""
    end = next((i + 1 for i in range(len(messages) - 1, -1, -1) if _is_assistant(messages[i])), 0)
    start = end
    while start and _is_assistant(messages[start - 1]):
        start -= 1
    opened = False
    for i in range(start, end):
        content = messages[i].get("content")
        for j, block in enumerate(content if isinstance(content, list) else [content] if content else ()):
            if opened and isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking"):
                return f"messages.{i}.content.{j}: {_MODIFIED}"
            opened = True
    return None


def _is_assistant(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "assistant"


def max_output_tokens(model: str) -> int:
    """A model's output limit as Anthropic's API enforces it: Opus 4 and 4.1 stop at 32,000, the other
    current models at 64,000 (Claude 3.5 Haiku at 8,192)."""
    if model.startswith(("claude-opus-4-0", "claude-opus-4-1", "claude-opus-4-2025")) or model == "claude-opus-4":
        return 32000
    if model.startswith("claude-3-5-haiku"):
        return 8192
    return 64000


def _blank_text(messages: list[Any]) -> str | None:
    """Claude's refusal of text with nothing in it (a final assistant prefill may be an empty string)."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        texts: list[Any]
        if isinstance(content, str):
            final_prefill = i == len(messages) - 1 and message.get("role") == "assistant"
            texts = [] if final_prefill else [content]
        else:
            texts = [b.get("text") for b in content or () if isinstance(b, dict) and b.get("type") == "text"]
        for text in texts:
            if text == "":
                return "messages: text content blocks must be non-empty"
            if isinstance(text, str) and not text.strip():
                return "messages: text content blocks must contain non-whitespace text"
    return None


_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")


def _bad_tool_id(messages: list[Any]) -> str | None:
    """Claude's refusal of a tool id it would not have written, as its request validation words it."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            kind = block.get("type") if isinstance(block, dict) else None
            field = {"tool_use": "id", "tool_result": "tool_use_id"}.get(kind or "")
            value = block.get(field) if field is not None else None
            if isinstance(value, str) and not _TOOL_ID.fullmatch(value):
                return f"messages.{i}.content.{j}.{kind}.{field}: String should match pattern '^[a-zA-Z0-9_-]+$'"
    return None


_THINKING_FIRST = ("When `thinking` is enabled, a final `assistant` message must start with a thinking block "
                   "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
                   "thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult "
                   "our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking")


_THINKING_DOCS = ("Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/"
                  "extended-thinking#important-considerations-when-using-extended-thinking")


def _thinking_refusal(body: dict[str, Any]) -> str | None:
    """Why Claude refuses a request that enables thinking alongside what thinking does not go with."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    if body.get("temperature") not in (None, 1):
        return f"`temperature` may only be set to 1 when thinking is enabled. {_THINKING_DOCS}"
    if body.get("top_k") is not None:
        return f"`top_k` must be unset when thinking is enabled. {_THINKING_DOCS}"
    top_p = body.get("top_p")
    if isinstance(top_p, (int, float)) and top_p < 0.95:
        return f"`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. {_THINKING_DOCS}"
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    return _unthought_tool_turn(body) if thinking["type"] == "enabled" else None


def _unthought_tool_turn(body: dict[str, Any]) -> str | None:
    """Claude's refusal of manual thinking over a last assistant tool turn that does not start with its
    thinking block (adaptive thinking does not ask for it)."""
    messages: list[Any] = body["messages"]
    at = next((i for i in range(len(messages) - 1, -1, -1)
               if isinstance(messages[i], dict) and messages[i].get("role") == "assistant"), None)
    content = messages[at].get("content") if at is not None else None
    if not isinstance(content, list) or not any(isinstance(b, dict) and b.get("type") == "tool_use" for b in content):
        return None
    first = content[0].get("type") if isinstance(content[0], dict) else None
    if first in ("thinking", "redacted_thinking"):
        return None
    return (f"messages.{at}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. "
            + _THINKING_FIRST)


async def messages(request: web.Request) -> web.StreamResponse:
    call = request[SIM_CALL]
    problem = _validate(request, call.body)
    if problem is None:
        problem = (_unsigned_thinking(call.body["messages"], call.state.config.name)
                   or _moved_thinking(call.body["messages"]) or too_many_breakpoints(call.body))
    if problem is not None:
        return _bad_request(call, problem)
    body: dict[str, Any] = call.body
    state = call.state
    refuse = call.fault.tokens if call.fault is not None and call.fault.kind is FaultKind.REFUSAL else None
    answer = _answer(state, body, refuse)
    cached = request.app[_PROMPT_CACHE].use(body)
    answer = replace(answer, cached=cached, input_tokens=answer.input_tokens - cached.read - cached.written,
                     service_tier=_served_tier(body, state.config))
    message_id = state.new_id("msg_")
    if body.get("stream") is True:
        return await _stream(request, call, answer, message_id, str(body["model"]))
    name = state.config.name
    content: list[dict[str, Any]] = [] if answer.thinking is None else [
        {"type": "redacted_thinking", "data": redacted_data(name)} if answer.redacted
        else {"type": "thinking", "thinking": answer.thinking, "signature": signature(name, answer.thinking)}]
    content += _search_blocks(state, answer.searched) if answer.searched is not None else []
    content += [{"type": "text", "text": answer.text}] if answer.text is not None else []
    content += [{"type": "tool_use", "id": state.new_id("toolu_"), "name": name, "input": tool_input}
                for name, tool_input in answer.calls]
    return state.json({
        "id": message_id, "type": "message", "role": "assistant", "model": body["model"],
        "content": content, "stop_reason": answer.stop_reason, "stop_sequence": None,
        "usage": _usage(answer, state.config.cached_tokens),
    })


def _served_tier(body: dict[str, Any], config: SimConfig) -> str:
    """`standard` for `standard_only`; for `auto` (or none) `priority` when the organisation has Priority
    Tier capacity (`SimConfig.service_tier`)."""
    return "standard" if body.get("service_tier") == "standard_only" else config.service_tier or "standard"


def _search_blocks(state: SimState, query: str) -> list[dict[str, Any]]:
    """The server tool's call and its result, as Claude puts them before what it answers from them."""
    call_id = state.new_id("srvtoolu_")
    return [{"type": "server_tool_use", "id": call_id, "name": "web_search", "input": {"query": query}},
            {"type": "web_search_tool_result", "tool_use_id": call_id, "content": [SEARCH_RESULT]}]


async def _stream(request: web.Request, call: SimCall, answer: _Answer, message_id: str,
                  model: str) -> web.StreamResponse:
    state = call.state
    cached = state.config.cached_tokens
    quirks = state.config.quirks
    stream = await SimStream.open(request)
    await stream.send(sse_event("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": _usage(answer, cached, output_tokens=1)}}))
    if quirks:
        await stream.send(_PING)
    index = 0
    if answer.redacted:  # the whole block in its start, no deltas
        await _block(stream, index, {"type": "redacted_thinking", "data": redacted_data(state.config.name)}, [])
        index += 1
    elif answer.thinking is not None:
        await _block(stream, index, {"type": "thinking", "thinking": "", "signature": ""},
                     [*({"type": "thinking_delta", "thinking": piece}
                        for piece in split_words(answer.thinking, state.config.chunks)),
                      {"type": "signature_delta", "signature": signature(state.config.name, answer.thinking)}])
        index += 1
    if answer.searched is not None:  # the call's input streamed as JSON, its result whole in its start
        search, result = _search_blocks(state, answer.searched)
        await _block(stream, index, {**search, "input": {}}, [
            {"type": "input_json_delta", "partial_json": fragment}
            for fragment in split_even(orjson.dumps(search["input"]).decode(), state.config.chunks) if fragment])
        await _block(stream, index + 1, result, [])
        index += 2
    if answer.text is not None:
        await _block(stream, index, {"type": "text", "text": ""},
                     [{"type": "text_delta", "text": piece} for piece in split_words(answer.text, state.config.chunks)])
        index += 1
    for name, tool_input in answer.calls:
        block = {"type": "tool_use", "id": state.new_id("toolu_"), "name": name, "input": {}}
        # Like Claude: the first input_json_delta is empty, and a call without parameters has no other.
        arguments = orjson.dumps(tool_input).decode() if tool_input else ""
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        deltas += [{"type": "input_json_delta", "partial_json": fragment}
                   for fragment in split_even(arguments, state.config.chunks) if fragment]
        await _block(stream, index, block, deltas)
        index += 1
    usage: dict[str, Any] = _usage(answer, cached)
    del usage["cache_creation"], usage["service_tier"]
    if quirks:  # as the API sends it: the input count again, and nulls for what it does not know
        usage.update(cache_creation_input_tokens=answer.cached.written or None,
                     cache_read_input_tokens=cached + answer.cached.read or None,
                     server_tool_use=_SEARCHED if answer.searched is not None else None)
    await stream.send(sse_event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": answer.stop_reason, "stop_sequence": None},
        "usage": usage}))
    await stream.send(sse_event("message_stop", {"type": "message_stop"}))
    return await stream.finish()


_PING = sse_event("ping", {"type": "ping"})


async def _block(stream: SimStream, index: int, block: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
    """One content block: its start, a ping (Claude sends one early), its deltas and its stop. An
    empty delta carries no content (no fault strikes before it)."""
    await stream.send(sse_event("content_block_start",
                                {"type": "content_block_start", "index": index, "content_block": block}))
    if index == 0:
        await stream.send(_PING)
    for delta in deltas:
        await stream.send(_delta(index, delta),
                          content=bool(delta.get("text") or delta.get("partial_json") or delta.get("thinking")))
    await stream.send(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


async def count_message_tokens(request: web.Request) -> web.Response:
    call = request[SIM_CALL]
    problem = _count_problem(request, call.body)
    if problem is not None:
        return _bad_request(call, problem)
    return call.state.json({"input_tokens": _input_tokens(call.body)})


# --- models ------------------------------------------------------------------------------------

async def list_models(request: web.Request) -> web.Response:
    state = request[SIM_CALL].state
    models = state.config.models
    return state.json({
        "data": [{"type": "model", "id": m, "display_name": m, "created_at": MODEL_CREATED_AT} for m in models],
        "has_more": False,
        "first_id": models[0] if models else None,
        "last_id": models[-1] if models else None,
    })


def with_prompt_cache(app: web.Application) -> web.Application:
    """`app` with the prompt cache the Messages handlers (`messages`) read: any app that serves them."""
    app[_PROMPT_CACHE] = PromptCache(sim_state(app).config.clock)
    return app


def anthropic_app(api_key: str | None = None, **options: Unpack[SimOptions]) -> web.Application:
    """An Anthropic-style provider; `api_key` None accepts any key; `quirks`: see the module's docstring."""
    app = with_prompt_cache(sim_app(api_key, options, AnthropicDialect(), name="sim-anthropic", models=DEFAULT_MODELS))
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_message_tokens)
    app.router.add_get("/v1/models", list_models)
    return app
