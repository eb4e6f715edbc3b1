"""A simulated OpenAI Responses API: `POST /v1/responses` (streamed and not), and `GET`/`DELETE
/v1/responses/{id}` for what it stored.

The Response object carries every top-level member of the SDK's `Response` type (the optional
ones null) and the members the real API adds beyond it (`billing`, `store`); `output_text` is
not among them, the SDK computes it. Answers follow the chat simulator's rules (the text, tool
calls and JSON from the request alone), and what the real API does besides: a reasoning model
puts a `reasoning` item first (summary `[]` unless one is asked for, `encrypted_content` when
included, and its tokens count against `max_output_tokens`, so a small limit can leave only the
reasoning item); an offered web search tool puts a `web_search_call` before the message, whose
text then cites a page with `utm_source=openai` and an `url_citation` annotation. With `quirks` a
reasoning model's messages carry their `phase`, and its tool calls follow a `commentary` message
announcing them (a preamble), as newer models answer.

Responses made with `store` (the default) are kept in a small store of this app, for
`previous_response_id`, item references and reasoning items passed back by id. The handlers
serve the Azure simulator too: with `CONTENT_FILTERS` set an answer carries Azure's
`content_filters` and its output filter ends a refused answer as `incomplete`.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from llmroute_proxy.sim.answers import (
    count_tokens,
    fit_tokens,
    reply_text,
    structured_reply,
    tool_arguments,
    tool_reply_text,
)
from llmroute_proxy.sim.faults import FaultKind
from llmroute_proxy.sim.openai import (
    CONTENT_FILTERS,
    FILTERED_RESULTS,
    REFUSAL_TEXT,
    SAFE_FILTER_RESULTS,
    ContentFilters,
    served_tier,
)
from llmroute_proxy.sim.responses_input import Refused, Turn, read_turn, text_of
from llmroute_proxy.sim.responses_stream import stream_response
from llmroute_proxy.sim.runtime import SIM_CALL, SimCall, SimState

JSON = dict[str, Any]

EFFORT_TOKENS = {"none": 0, "minimal": 0, "low": 64, "medium": 192, "high": 448, "xhigh": 896}
"""The reasoning tokens a reasoning model spends at each effort."""
STORE_CAPACITY = 1000
CITED_URL = "https://sim.example/weather?utm_source=openai"


# --- the store ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Stored:
    response: JSON
    conversation: tuple[JSON, ...]
    """Input and output items: what a turn with this `previous_response_id` continues."""
    inputs: tuple[JSON, ...] = ()
    """The request's own input items as `input_items` lists them (each with its id), oldest first."""


class ResponseStore:
    """The responses this simulator made with `store`, oldest dropped past `capacity`."""

    def __init__(self, capacity: int = STORE_CAPACITY) -> None:
        self._capacity = capacity
        self._responses: OrderedDict[str, Stored] = OrderedDict()
        self._items: dict[str, str] = {}
        """Output item id → the response holding it."""

    def put(self, stored: Stored) -> None:
        response_id = stored.response["id"]
        self._responses[response_id] = stored
        for item in stored.response["output"]:
            self._items[item["id"]] = response_id
        while len(self._responses) > self._capacity:
            self.delete(next(iter(self._responses)))

    def get(self, response_id: str) -> Stored | None:
        return self._responses.get(response_id)

    def delete(self, response_id: str) -> bool:
        stored = self._responses.pop(response_id, None)
        if stored is None:
            return False
        for item in stored.response["output"]:
            self._items.pop(item["id"], None)
        return True

    def knows_item(self, item_id: str) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._responses)


RESPONSE_STORE = web.AppKey("llmroute_sim_response_store", ResponseStore)


# --- the answer --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Answer:
    """What the model does for one turn, before ids are given out."""

    reasoning_tokens: int | None
    """None: no reasoning item."""
    summary: str | None
    search: str | None
    """The web search query, when the model searches first."""
    text: str | None
    refusal: str | None
    calls: tuple[tuple[str, str], ...]
    incomplete: str | None
    """Why the answer stopped short (`max_output_tokens`, `content_filter`), None when it did not."""
    input_tokens: int
    output_tokens: int
    phases: bool = False
    """Messages carry their `phase`, and tool calls follow a `commentary` message (a preamble)."""


def _chosen_functions(turn: Turn, quirks: bool) -> list[JSON]:
    choice = turn.body.get("tool_choice")
    functions = list(turn.functions)
    if not functions or choice == "none" or (isinstance(choice, dict) and choice.get("type") != "function"):
        return []
    if isinstance(choice, dict):
        forced = [f for f in functions if f["name"] == choice.get("name")]
        if not forced:
            raise Refused(f"Tool choice 'function' with name '{choice.get('name')}' not found in 'tools' parameter.",
                          "tool_choice", "invalid_value")
        return forced
    return functions if quirks and turn.body.get("parallel_tool_calls") is not False else functions[:1]


def _searches(turn: Turn) -> bool:
    choice = turn.body.get("tool_choice")
    if not turn.web_search or choice == "none":
        return False
    return not isinstance(choice, dict) or str(choice.get("type", "")).startswith("web_search")


def answer(state: SimState, turn: Turn, refuse: bool) -> Answer:
    name = state.config.name
    said = " ".join(text_of(item) for item in turn.conversation)
    instructions = turn.body.get("instructions")
    input_tokens = count_tokens(said + (" " + instructions if isinstance(instructions, str) else ""))
    input_tokens += state.config.cached_tokens
    reasoning = None if turn.effort is None else EFFORT_TOKENS[turn.effort]
    last = turn.conversation[-1] if turn.conversation else {}
    user_turn = last.get("type") == "message" and last.get("role") == "user"
    asked = next((text_of(item) for item in reversed(turn.conversation)
                  if item.get("type") == "message" and item.get("role") == "user"), "")
    summary = f"**Answering the question**\n\nThe user asked: {asked[:60]}" \
        if reasoning is not None and turn.summary else None
    limit = turn.limit
    if reasoning is not None and limit is not None and limit <= reasoning:  # thinking used the whole budget
        return Answer(limit, summary, None, None, None, (), "max_output_tokens", input_tokens, limit)
    spent = reasoning or 0
    if refuse:
        return Answer(reasoning, summary, None, None, REFUSAL_TEXT, (), None, input_tokens,
                      spent + count_tokens(REFUSAL_TEXT))
    search = asked[:60] if user_turn and _searches(turn) else None
    functions = _chosen_functions(turn, state.config.quirks) if user_turn else []
    phases = state.config.quirks and reasoning is not None
    if functions:
        calls = tuple((f["name"], orjson.dumps(tool_arguments(f.get("parameters"))).decode()) for f in functions)
        preamble = count_tokens(preamble_text(calls)) if phases else 0
        return Answer(reasoning, summary, search, None, None, calls, None, input_tokens,
                      spent + preamble + count_tokens(" ".join(f"{n} {a}" for n, a in calls)), phases)
    if last.get("type") == "function_call_output":
        text = tool_reply_text(name, turn.model, text_of(last))
    else:
        text = reply_text(name, turn.model, asked, state.config.answer_bytes)
    form = (turn.body.get("text") or {}).get("format") or {}
    if form.get("type") in ("json_schema", "json_object"):
        text = structured_reply(form.get("schema") if form.get("type") == "json_schema" else None, text)
    elif search is not None:
        text += f" ([sim.example]({CITED_URL}))"
    text, cut = fit_tokens(text, None if limit is None else limit - spent)
    return Answer(reasoning, summary, search, text, None, (), "max_output_tokens" if cut else None,
                  input_tokens, spent + count_tokens(text), phases)


def preamble_text(calls: Sequence[tuple[str, str]]) -> str:
    """What a model that announces its tool calls says first."""
    return "I'll call " + " and ".join(name for name, _ in calls) + "."


# --- output items and the Response -------------------------------------------------------------

def encrypted_content(item_id: str) -> str:
    """What stands for the model's hidden reasoning: opaque, Fernet-looking, stable per item."""
    return "gAAAAAB" + base64.urlsafe_b64encode(hashlib.sha256(item_id.encode()).digest() * 3).decode()


def citation(text: str) -> JSON | None:
    start = text.find(" ([sim.example](")
    if start < 0:
        return None
    return {"type": "url_citation", "start_index": start + 1, "end_index": len(text), "title": "Sim weather",
            "url": CITED_URL}


def output_items(state: SimState, turn: Turn, result: Answer) -> list[JSON]:
    """The Response's output items, as they are once answered (ids given out here)."""
    items: list[JSON] = []
    if result.reasoning_tokens is not None:
        reasoning: JSON = {"id": state.new_id("rs_"), "type": "reasoning",
                           "summary": [] if result.summary is None else [{"type": "summary_text",
                                                                          "text": result.summary}]}
        if "reasoning.encrypted_content" in turn.include:
            reasoning["encrypted_content"] = encrypted_content(reasoning["id"])
        items.append(reasoning)
    if result.search is not None:
        items.append({"id": state.new_id("ws_"), "type": "web_search_call", "status": "completed",
                      "action": {"type": "search", "query": result.search}})
    status = "incomplete" if result.incomplete else "completed"
    phase = "final_answer" if result.phases else None
    if result.text is not None:
        annotation = citation(result.text)
        items.append(_message(state, status, {"type": "output_text", "annotations": [annotation] if annotation else [],
                                              "logprobs": [], "text": result.text}, phase))
    elif result.refusal is not None:
        items.append(_message(state, status, {"type": "refusal", "refusal": result.refusal}, phase))
    elif result.calls and result.phases:
        items.append(_message(state, status, {"type": "output_text", "annotations": [], "logprobs": [],
                                              "text": preamble_text(result.calls)}, "commentary"))
    for name, arguments in result.calls:
        items.append({"id": state.new_id("fc_"), "type": "function_call", "status": "completed",
                      "arguments": arguments, "call_id": state.new_id("call_"), "name": name})
    return items


def _message(state: SimState, status: str, part: JSON, phase: str | None) -> JSON:
    message = {"id": state.new_id("msg_"), "type": "message", "status": status, "content": [part], "role": "assistant"}
    if phase is not None:
        message["phase"] = phase
    return message


def usage(result: Answer, cached: int) -> JSON:
    return {"input_tokens": result.input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": result.output_tokens,
            "output_tokens_details": {"reasoning_tokens": result.reasoning_tokens or 0},
            "total_tokens": result.input_tokens + result.output_tokens}


def _echo_tool(tool: JSON) -> JSON:
    if tool.get("type") != "function":
        return tool
    return {"type": "function", "description": tool.get("description"), "name": tool["name"],
            "parameters": tool.get("parameters"), "strict": tool.get("strict", True)}


@dataclass(frozen=True, slots=True)
class Frame:
    """What every form of one Response has in common: its id, its times and the request it echoes."""

    response_id: str
    created_at: int
    turn: Turn
    filters: ContentFilters | None
    service_tier: str = "default"

    def response(self, status: str, output: Sequence[JSON] = (), answered: JSON | None = None,
                 incomplete: str | None = None, error: JSON | None = None, completed_at: int | None = None) -> JSON:
        body = self.turn.body
        reasoning = body.get("reasoning") or {}
        text = body.get("text") or {}
        response: JSON = {
            "id": self.response_id, "object": "response", "created_at": self.created_at, "status": status,
            "background": False, "billing": {"payer": "developer"}, "completed_at": completed_at, "error": error,
            "incomplete_details": None if incomplete is None else {"reason": incomplete},
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"), "model": self.turn.model, "output": list(output),
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": body.get("previous_response_id"), "prompt_cache_key": body.get("prompt_cache_key"),
            "prompt_cache_retention": None,
            "reasoning": {"effort": self.turn.effort, "summary": reasoning.get("summary")},
            "safety_identifier": body.get("safety_identifier"), "service_tier": self.service_tier, "store": self.turn.store,
            "temperature": float(_given(body, "temperature", 1.0)),
            "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"},
            "tool_choice": _given(body, "tool_choice", "auto"), "tools": [_echo_tool(t) for t in body.get("tools") or ()],
            "top_logprobs": _given(body, "top_logprobs", 0), "top_p": float(_given(body, "top_p", 1.0)),
            "truncation": _given(body, "truncation", "disabled"), "usage": answered, "user": body.get("user"),
            "metadata": body.get("metadata") or {},
            # the SDK type's other members, which this API answers with null
            "access_programs": None, "conversation": None, "image": None, "input_transformations": None,
            "moderation": None, "prompt": None, "prompt_cache_diagnostics": None, "prompt_cache_options": None,
            "tool_usage": None,
        }
        if self.filters is not None:
            filtered = incomplete == "content_filter"
            response["content_filters"] = [
                {"blocked": False, "source_type": "prompt", "content_filter_results": SAFE_FILTER_RESULTS},
                {"blocked": filtered, "source_type": "completion",
                 "content_filter_results": FILTERED_RESULTS if filtered else SAFE_FILTER_RESULTS}]
        return response

    def final(self, state: SimState, output: Sequence[JSON], result: Answer) -> JSON:
        """The answered Response: completed, or incomplete with the reason."""
        answered = usage(result, state.config.cached_tokens)
        if result.incomplete is not None:
            return self.response("incomplete", output, answered, result.incomplete)
        return self.response("completed", output, answered, completed_at=int(state.config.clock()))


def _given(body: JSON, name: str, default: Any) -> Any:
    """The request's value, or the default OpenAI applies when it is absent or null."""
    value = body.get(name)
    return default if value is None else value


def keep(request: web.Request, turn: Turn, response: JSON) -> None:
    """Store an answered Response when its request allows."""
    if turn.store:
        inputs = tuple(listed_item(item, request[SIM_CALL].state.new_id) for item in turn.inputs)
        request.app[RESPONSE_STORE].put(Stored(response, (*turn.conversation, *response["output"]), inputs))


# --- handlers ----------------------------------------------------------------------------------

def refused(call: SimCall, problem: Refused) -> web.Response:
    return call.state.json({"error": {"message": problem.message, "type": "invalid_request_error",
                                      "param": problem.param, "code": problem.code}}, problem.status)


async def create_response(request: web.Request) -> web.StreamResponse:
    call = request[SIM_CALL]
    state = call.state
    store = request.app[RESPONSE_STORE]

    def history(response_id: str) -> Sequence[JSON] | None:
        stored = store.get(response_id)
        return None if stored is None else stored.conversation

    try:
        turn = read_turn(call.body, history, store.knows_item)
        result = answer(state, turn, refuse=call.fault is not None and call.fault.kind is FaultKind.REFUSAL)
    except Refused as problem:
        return refused(call, problem)
    filters = request.app.get(CONTENT_FILTERS)
    if filters is not None and result.refusal is not None:  # Azure's output filter stops the answer instead
        result = Answer(result.reasoning_tokens, None, None, None, None, (), "content_filter",
                        result.input_tokens, result.reasoning_tokens or 0, result.phases)
    frame = Frame(state.new_id("resp_"), int(state.config.clock()), turn, filters, served_tier(turn.body, state.config))
    output = output_items(state, turn, result)
    if turn.stream:
        return await stream_response(request, frame, output, result, lambda done: keep(request, turn, done))
    response = frame.final(state, output, result)
    keep(request, turn, response)
    return state.json(response)


async def get_response(request: web.Request) -> web.Response:
    call = request[SIM_CALL]
    response_id = request.match_info["response_id"]
    stored = request.app[RESPONSE_STORE].get(response_id)
    if stored is None:
        return bad_request_404(call, f"Response with id '{response_id}' not found.")
    return call.state.json(stored.response)


async def list_input_items(request: web.Request) -> web.Response:
    """`GET /responses/{id}/input_items`: the request's own items, newest first unless `order=asc`, `limit`
    (1-100, 20) at a time after the item `after`, as OpenAI pages them."""
    call = request[SIM_CALL]
    response_id = request.match_info["response_id"]
    stored = request.app[RESPONSE_STORE].get(response_id)
    if stored is None:
        return bad_request_404(call, f"Response with id '{response_id}' not found.")
    order, limit = request.query.get("order", "desc"), request.query.get("limit", "20")
    if order not in ("asc", "desc"):
        return refused(call, Refused(f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.", "order",
                                     "invalid_value"))
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        return refused(call, Refused(f"Invalid 'limit': integer below minimum value or above maximum value. Expected "
                                     f"a value between 1 and 100, but got {limit} instead.", "limit", "invalid_value"))
    items = list(stored.inputs if order == "asc" else stored.inputs[::-1])
    after = request.query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:int(limit)]
    return call.state.json({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page)})


def listed_item(item: JSON, new_id: Callable[[str], str]) -> JSON:
    """An input item as OpenAI lists it: with an id and a status, a message's text as parts."""
    listed = dict(item)
    if listed.get("type") == "message" and isinstance(listed.get("content"), str):
        part = "output_text" if listed.get("role") == "assistant" else "input_text"
        listed["content"] = [{"type": part, "text": listed["content"]}]
    if not isinstance(listed.get("id"), str):
        listed["id"] = new_id(_LISTED_ID_PREFIXES.get(str(listed.get("type")), "item") + "_")
    listed.setdefault("status", "completed")
    return listed


_LISTED_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


async def delete_response(request: web.Request) -> web.Response:
    call = request[SIM_CALL]
    response_id = request.match_info["response_id"]
    if not request.app[RESPONSE_STORE].delete(response_id):
        return bad_request_404(call, f"Response with id '{response_id}' not found.")
    return call.state.json({"id": response_id, "object": "response.deleted", "deleted": True})


def bad_request_404(call: SimCall, message: str) -> web.Response:
    return refused(call, Refused(message, None, None, 404))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, prefix: str, wrap: Callable[[Handler], Handler] = lambda handler: handler) -> None:
    """Serve the Responses API under `prefix` (`/v1`, Azure's `/openai/v1`…), each handler behind
    `wrap` (Azure's addressing), with one store per app."""
    if RESPONSE_STORE not in app:
        app[RESPONSE_STORE] = ResponseStore()
    app.router.add_post(prefix + "/responses", wrap(create_response))
    app.router.add_get(prefix + "/responses/{response_id}", wrap(get_response))
    app.router.add_get(prefix + "/responses/{response_id}/input_items", wrap(list_input_items))
    app.router.add_delete(prefix + "/responses/{response_id}", wrap(delete_response))

