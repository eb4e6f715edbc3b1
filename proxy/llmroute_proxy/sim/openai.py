"""A simulated OpenAI API: chat completions (streamed and not), embeddings, models.

Field names, ids, chunk order and error bodies follow OpenAI's wire format (providers.md §1)
closely enough that the official `openai` SDK parses everything it sends, `n` choices and `logprobs`
included (a stream sends the choices' chunks in turn, one choice a chunk, and their finishes last).
The handlers here also serve the Azure OpenAI simulator (`sim/azure_openai.py`): an app with
`CONTENT_FILTERS` set adds Azure's content-filter results to what they answer.
"""

from __future__ import annotations

import base64
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Unpack

import orjson
from aiohttp import web

from llmroute_proxy.sim.answers import (
    choice_text,
    count_tokens,
    embedding_vector,
    fit_tokens,
    logprob_tokens,
    reply_text,
    split_even,
    split_words,
    structured_reply,
    token_logprob,
    tool_arguments,
    tool_reply_text,
    top_alternatives,
)
from llmroute_proxy.sim.faults import Fault, FaultKind
from llmroute_proxy.sim.runtime import (
    SIM_CALL,
    Dialect,
    SimCall,
    SimConfig,
    SimOptions,
    SimState,
    sim_app,
)
from llmroute_proxy.sim.streaming import SimStream, sse_data

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
MODEL_CREATED = 1715367049

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found",
          "The model does not exist or you do not have access to it."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded",
          "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}
_CODE_ERRORS: dict[str, tuple[str, str]] = {
    "insufficient_quota": ("insufficient_quota",
                           "You exceeded your current quota, please check your plan and billing details."),
    "context_length_exceeded": ("invalid_request_error",
                                "This model's maximum context length is 128000 tokens."),
    "invalid_prompt": ("invalid_request_error",
                       "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
                       "Please try again with a different prompt."),
}

SAFE_FILTER_RESULTS: dict[str, Any] = {
    category: {"filtered": False, "severity": "safe"} for category in ("hate", "self_harm", "sexual", "violence")}
FILTERED_RESULTS: dict[str, Any] = {**SAFE_FILTER_RESULTS, "violence": {"filtered": True, "severity": "high"}}
"""Azure's verdict on an answer its output filter stopped (`finish_reason: content_filter`)."""
PROMPT_FILTER_RESULTS: list[Any] = [{"prompt_index": 0, "content_filter_results": {
    **SAFE_FILTER_RESULTS, "jailbreak": {"filtered": False, "detected": False}}}]


@dataclass(frozen=True, slots=True)
class ContentFilters:
    """Azure's content filter on the answers of an app serving these handlers: results on every
    answer and chunk, a prompt-filter chunk first, and with `async_filter` (or quirks) the verdicts in
    annotation chunks after the finish instead of on the content chunks."""

    async_filter: bool


CONTENT_FILTERS = web.AppKey("llmroute_sim_content_filters", ContentFilters)


class OpenAIDialect(Dialect):
    overloaded_status = 503
    request_id_header = "x-request-id"
    static_headers: ClassVar[dict[str, str]] = {
        "openai-version": "2020-10-01",
        "openai-processing-ms": "1",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "10000000",
        "x-ratelimit-remaining-tokens": "9999000",
        "x-ratelimit-reset-tokens": "6ms",
    }

    def authorized(self, request: web.Request, api_key: str) -> bool:
        sent = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(sent, b"Bearer " + api_key.encode())

    def unauthorized(self, request: web.Request) -> web.Response:
        state = request[SIM_CALL].state
        if "Authorization" not in request.headers:
            return state.json(_error(
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error", None), 401)
        return state.error(401)

    def error_body(self, status: int, code: str | None, message: str | None,
                   fault: Fault | None) -> dict[str, Any]:
        kind, default_code, default_message = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}."))
        if code in _CODE_ERRORS:
            kind, default_message = _CODE_ERRORS[code]
        return _error(message or default_message, kind, code or default_code)

    def in_band_error(self, body: dict[str, Any]) -> bytes:
        return sse_data(body)

    async def prompt_blocked(self, request: web.Request) -> web.StreamResponse:
        return request[SIM_CALL].state.error(400, code=self.prompt_blocked_code)

    prompt_blocked_code: ClassVar[str] = "invalid_prompt"


def _error(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad_request(call: SimCall, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return call.state.json(_error(message, "invalid_request_error", code, param), 400)


# --- chat completions --------------------------------------------------------------------------

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."

@dataclass(frozen=True, slots=True)
class _Answer:
    text: str | None
    calls: tuple[tuple[str, str], ...]
    """The tool calls: (function name, arguments JSON) each."""
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    refusal: str | None = None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _chosen_tools(body: dict[str, Any], quirks: bool) -> list[dict[str, Any]] | str:
    """The functions to call (none: answer in text), or an error message. With `quirks` the model
    calls every tool at once when it may, as real models often do (parallel tool calls)."""
    tools = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict)]
    functions = [f for f in tools if isinstance(f, dict) and isinstance(f.get("name"), str)]
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return []
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        forced = next((f for f in functions if f["name"] == wanted), None)
        return [forced] if forced is not None else f"Invalid value for 'tool_choice': no function named {wanted!r}."
    return functions if quirks and body.get("parallel_tool_calls") is not False else functions[:1]


def _answers(state: SimState, body: dict[str, Any], refuse: bool = False) -> list[_Answer] | str:
    """The `n` choices asked for (one by default), or why the request is refused."""
    answers: list[_Answer] = []
    for index in range(_choice_count(body)):
        answer = _answer(state, body, index, refuse)
        if isinstance(answer, str):
            return answer
        answers.append(answer)
    return answers


def _choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _answer(state: SimState, body: dict[str, Any], index: int, refuse: bool = False) -> _Answer | str:
    messages: list[Any] = body["messages"]
    model = str(body["model"])
    name = state.config.name
    prompt = count_tokens(" ".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict)))
    prompt += state.config.cached_tokens
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    if refuse:
        return _Answer(None, (), "stop", prompt, count_tokens(REFUSAL_TEXT), refusal=REFUSAL_TEXT)
    tools = _chosen_tools(body, state.config.quirks) if last.get("role") == "user" else []
    if isinstance(tools, str):
        return tools
    if tools:
        calls = tuple((tool["name"], orjson.dumps(tool_arguments(tool.get("parameters"))).decode())
                      for tool in tools)
        # OpenAI finishes a call the request named (`tool_choice: {"type": "function", …}`) with `stop`,
        # streamed or not; `auto` and `required` calls with `tool_calls` (measured, vllm-project/vllm#25054)
        named = isinstance(body.get("tool_choice"), dict)
        return _Answer(None, calls, "stop" if named else "tool_calls", prompt,
                       count_tokens(" ".join(f"{name} {arguments}" for name, arguments in calls)))
    if last.get("role") == "tool":
        text = tool_reply_text(name, model, _content_text(last.get("content")))
    else:
        text = reply_text(name, model, _last_user_text(messages), state.config.answer_bytes)
    text = choice_text(text, index)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object"):
        spec = response_format.get("json_schema")
        text = structured_reply(spec.get("schema") if isinstance(spec, dict) else None, text)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    text, cut = fit_tokens(text, limit if isinstance(limit, int) else None)
    return _Answer(text, (), "length" if cut else "stop", prompt, count_tokens(text))


def _usage(answers: Sequence[_Answer], cached: int) -> dict[str, Any]:
    """The prompt once, the completion tokens of every choice."""
    prompt = answers[0].prompt_tokens
    completion = sum(answer.completion_tokens for answer in answers)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


OUTPUT_LIMITS = {"gpt-4o-mini": 16384, "gpt-4o": 16384}
"""The most completion tokens a model takes (OpenAI refuses more with a 400 that states it)."""

NON_REASONING_MODELS = ("gpt-4", "gpt-3.5", "chatgpt-4o")
"""Models (and, on Azure, deployments named after them) that refuse `reasoning_effort` with a 400: the
o-series, gpt-5 and gpt-oss reason; gpt-4o and gpt-4.1 do not."""


def _validate_chat(body: Any) -> tuple[str, str | None, str | None] | None:
    if not isinstance(body, dict):
        return ("We could not parse the JSON body of your request.", None, None)
    if not body.get("model"):
        return ("you must provide a model parameter", None, None)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return ("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        return ("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options", "invalid_value")
    if "reasoning_effort" in body and str(body["model"]).startswith(NON_REASONING_MODELS):
        return ("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                "reasoning_effort", "unsupported_parameter")
    return _choices_problem(body) or _output_limit_problem(body)


MOST_CHOICES = 128
"""The most choices (`n`) one request may ask for."""
MOST_TOP_LOGPROBS = 20


def _choices_problem(body: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    """OpenAI's refusal of `n` or `top_logprobs` out of range, or of `top_logprobs` without `logprobs`."""
    top = body.get("top_logprobs")
    if top is not None and body.get("logprobs") is not True:
        return ("The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled.", "top_logprobs", None)
    return _range_problem("n", body.get("n"), 1, MOST_CHOICES) or _range_problem(
        "top_logprobs", top, 0, MOST_TOP_LOGPROBS)


def _range_problem(param: str, value: Any, least: int, most: int) -> tuple[str, str | None, str | None] | None:
    """OpenAI's words for an integer parameter out of its range."""
    if not isinstance(value, int) or isinstance(value, bool) or least <= value <= most:
        return None
    if value < least:
        return (f"Invalid '{param}': integer below minimum value. Expected a value >= {least}, but got {value} "
                "instead.", param, "integer_below_min_value")
    return (f"Invalid '{param}': integer above maximum value. Expected a value <= {most}, but got {value} instead.",
            param, "integer_above_max_value")


def _output_limit_problem(body: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    most = OUTPUT_LIMITS.get(str(body["model"]))
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    asked = body.get(param)
    if most is None or not isinstance(asked, int) or asked <= most:
        return None
    return (f"{param} is too large: {asked}. This model supports at most {most} completion tokens, whereas you "
            f"provided {asked}.", param, "invalid_value")


@dataclass(frozen=True, slots=True)
class _Logprobs:
    """The log probabilities a request asked for (`logprobs: true`), `top` alternatives per token."""

    model: str
    top: int

    @classmethod
    def asked(cls, body: dict[str, Any]) -> _Logprobs | None:
        if body.get("logprobs") is not True:
            return None
        top = body.get("top_logprobs")
        return cls(str(body["model"]), top if isinstance(top, int) else 0)

    def tokens(self, text: str, start: int = 0) -> list[dict[str, Any]]:
        """`text`'s tokens with their log probabilities; `start`: the position of its first token in the answer."""
        return [self._said(token, token_logprob(self.model, token, position))
                for position, token in enumerate(logprob_tokens(text), start)]

    def _said(self, token: str, logprob: float) -> dict[str, Any]:
        top = [_logprob(t, p) for t, p in top_alternatives(token, logprob, self.top)]
        return {**_logprob(token, logprob), "top_logprobs": top}

    def of_answer(self, answer: _Answer) -> dict[str, Any]:
        """A whole choice's: its text's tokens, or its refusal's; a tool call's carry none."""
        if answer.refusal is not None:
            return {"content": None, "refusal": self.tokens(answer.refusal)}
        return {"content": None if answer.calls else self.tokens(answer.text or ""), "refusal": None}


SERVICE_TIERS = ("default", "flex", "priority", "scale")


def served_tier(body: dict[str, Any], config: SimConfig) -> str:
    """The tier OpenAI reports it served a request at: the one it names, else the project's default."""
    asked = body.get("service_tier")
    return asked if asked in SERVICE_TIERS else config.service_tier or "default"


def _logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Chat completions; with `n` the choices are told apart by a prefix on all but the first (`choice_text`).
    Faults strike the answer as a whole: a refusal is every choice's, a stream breaks after so many content
    chunks of any choice."""
    call = request[SIM_CALL]
    problem = _validate_chat(call.body)
    if problem is not None:
        return bad_request(call, *problem)
    body: dict[str, Any] = call.body
    answers = _answers(call.state, body, refuse=call.fault is not None and call.fault.kind is FaultKind.REFUSAL)
    if isinstance(answers, str):
        return bad_request(call, answers, "tool_choice", "invalid_value")
    state = call.state
    completion_id = state.new_id("chatcmpl-")
    created = int(state.config.clock())
    filters = request.app.get(CONTENT_FILTERS)
    if filters is not None:  # Azure's output filter stops a refusal instead
        answers = [_filtered(answer) for answer in answers]
    unmetered = call.fault is not None and call.fault.kind is FaultKind.NO_USAGE
    logprobs = _Logprobs.asked(body)
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True and not unmetered
        return await _stream_chat(request, call, answers, _Chunks(
            completion_id, created, str(body["model"]), include_usage, filters, state.config.quirks, logprobs,
            served_tier(body, state.config),
            state.config.compatible))
    completion: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "system_fingerprint": "fp_sim",
        "service_tier": served_tier(body, state.config),
        "choices": [_choice(state, index, answer, filters, logprobs) for index, answer in enumerate(answers)],
        "usage": _usage(answers, state.config.cached_tokens),
    }
    if filters is not None:
        completion["prompt_filter_results"] = PROMPT_FILTER_RESULTS
    if unmetered:
        del completion["usage"]
    return state.json(completion)


def _filtered(answer: _Answer) -> _Answer:
    """Azure's output filter: a refusal is stopped as `content_filter`, with nothing said."""
    if answer.refusal is None:
        return answer
    return replace(answer, text=None, refusal=None, finish_reason="content_filter", completion_tokens=0)


def _choice(state: SimState, index: int, answer: _Answer, filters: ContentFilters | None,
            logprobs: _Logprobs | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": answer.refusal,
                               "annotations": [], "tool_calls": None}
    if state.config.quirks:
        message.update(audio=None, function_call=None)
    if answer.calls:
        message["tool_calls"] = [{"id": state.new_id("call_"), "type": "function",
                                  "function": {"name": name, "arguments": arguments}}
                                 for name, arguments in answer.calls]
    choice: dict[str, Any] = {"index": index, "message": message,
                              "logprobs": None if logprobs is None else logprobs.of_answer(answer),
                              "finish_reason": answer.finish_reason}
    if filters is not None:
        filtered = answer.finish_reason == "content_filter"
        choice["content_filter_results"] = FILTERED_RESULTS if filtered else SAFE_FILTER_RESULTS
    return choice


@dataclass(frozen=True, slots=True)
class _Chunks:
    completion_id: str
    created: int
    model: str
    include_usage: bool
    filters: ContentFilters | None = None
    quirks: bool = False
    logprobs: _Logprobs | None = None
    service_tier: str = "default"
    compatible: str = ""

    def chunk(self, delta: dict[str, Any] | None, finish_reason: str | None = None,
              usage: dict[str, Any] | None = None, *, content: bool = False, index: int = 0,
              logprobs: dict[str, Any] | None = None) -> bytes:
        choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        if self.compatible == "openrouter":
            choice["native_finish_reason"] = finish_reason
        if self.filters is not None:
            synchronous = content and not self.filters.async_filter
            choice["content_filter_results"] = FILTERED_RESULTS if finish_reason == "content_filter" \
                else SAFE_FILTER_RESULTS if synchronous else {}
        return self._event([] if delta is None else [choice], usage)

    def filter_annotation(self, length: int, index: int = 0) -> bytes:
        """Azure's asynchronous filter: its verdict on the text so far, in a choice without a delta."""
        return self._event([{"index": index, "finish_reason": None, "content_filter_results": SAFE_FILTER_RESULTS,
                             "content_filter_offsets": {"check_offset": 0, "start_offset": 0,
                                                        "end_offset": length}}], None)

    def _event(self, choices: list[Any], usage: dict[str, Any] | None) -> bytes:
        payload: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_sim",
            "service_tier": self.service_tier,
            "choices": choices,
        }
        if self.compatible == "openrouter":
            payload["provider"] = "OpenAI"
        if self.include_usage:
            payload["usage"] = usage
        if self.quirks:  # `stream_options.include_obfuscation` is on unless the client turns it off
            payload["obfuscation"] = "sim" + "x" * (len(choices) * 7 % 11)
        return sse_data(payload)


_PROMPT_FILTER_CHUNK = sse_data({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                                 "prompt_filter_results": PROMPT_FILTER_RESULTS})


@dataclass(frozen=True, slots=True)
class _Delta:
    """One chunk of one choice before its finish: what it adds, and whether that is answer content."""

    delta: dict[str, Any]
    content: bool = False
    logprobs: dict[str, Any] | None = None


def _deltas(state: SimState, answer: _Answer, logprobs: _Logprobs | None) -> list[_Delta]:
    """A choice's chunks up to its finish; with `logprobs`, each carries those of its own tokens."""
    empty: dict[str, Any] | None = None if logprobs is None else {"content": [], "refusal": None}
    if answer.refusal is not None:
        pieces = split_words(answer.refusal, state.config.chunks)
        return [_Delta({"role": "assistant", "content": None, "refusal": ""}, logprobs=empty),
                *(_Delta({"refusal": piece}, True, _piece_logprobs(logprobs, pieces, k, "refusal"))
                  for k, piece in enumerate(pieces))]
    if answer.calls:
        return _call_deltas(state, answer, empty)
    pieces = split_words(answer.text or "", state.config.chunks)
    return [_Delta({"role": "assistant", "content": "", "refusal": None}, logprobs=empty),
            *(_Delta({"content": piece}, True, _piece_logprobs(logprobs, pieces, k, "content"))
              for k, piece in enumerate(pieces))]


def _piece_logprobs(logprobs: _Logprobs | None, pieces: list[str], k: int, field: str) -> dict[str, Any] | None:
    """The log probabilities of piece `k`'s tokens, counted from where it begins in the answer."""
    if logprobs is None:
        return None
    start = sum(len(logprob_tokens(piece)) for piece in pieces[:k])
    tokens = logprobs.tokens(pieces[k], start)
    return {"content": tokens, "refusal": None} if field == "content" else {"content": None, "refusal": tokens}


def _call_deltas(state: SimState, answer: _Answer, logprobs: dict[str, Any] | None) -> list[_Delta]:
    """The id, type and name come only in a call's first delta; later ones carry the index alone.
    Gemini's OpenAI endpoint sends each call whole in one delta, with the role and without the `index`
    OpenAI's stream contract requires (openai/openai-python#2806; a chunk measured from Google in
    THU-MAIC/OpenMAIC#1556)."""
    if state.config.compatible == "gemini":
        return [_Delta({"role": "assistant", "tool_calls": [{"id": state.new_id("call_"), "type": "function",
                                                             "function": {"name": name, "arguments": arguments}}]},
                       True, logprobs) for name, arguments in answer.calls]
    deltas: list[_Delta] = []
    for index, (name, arguments) in enumerate(answer.calls):
        head = {"tool_calls": [{"index": index, "id": state.new_id("call_"), "type": "function",
                                "function": {"name": name, "arguments": ""}}]}
        deltas.append(_Delta({"role": "assistant", "content": None, "refusal": None, **head} if index == 0 else head,
                             logprobs=logprobs))
        deltas.extend(_Delta({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}, True, logprobs)
                      for fragment in split_even(arguments, state.config.chunks))
    return deltas


def _interleaved(choices: list[list[_Delta]]) -> list[tuple[int, _Delta]]:
    """The choices' chunks taken in turn, one of each choice at a time, as OpenAI streams several choices."""
    return [(index, deltas[k]) for k in range(max(map(len, choices)))
            for index, deltas in enumerate(choices) if k < len(deltas)]


OPENROUTER_PROCESSING = b": OPENROUTER PROCESSING\n\n"
"""OpenRouter's keep-alive, an SSE comment sent while the model has not begun (openai/openai-go#227,
docker/docker-agent#2349, mnfst/llm-gateway#2053)."""


def _streamed_finish(answer: _Answer, compatible: str) -> str:
    """A choice's finish as its stream states it: Gemini's OpenAI endpoint ends streamed tool calls with
    `stop`, though its whole answer says `tool_calls` (googleapis/python-genai#2868)."""
    return "stop" if compatible == "gemini" and answer.calls else answer.finish_reason


async def _stream_chat(request: web.Request, call: SimCall, answers: list[_Answer],
                       chunks: _Chunks) -> web.StreamResponse:
    """Each choice's chunks in turn, then each choice's finish (OpenAI sends them last), the filter's
    annotations (Azure) and the usage. vLLM puts a choice's finish on its last delta instead of a chunk
    of its own (vllm-project/vllm#36944; Mistral too, jeremychone/rust-genai#164)."""
    state = call.state
    stream = await SimStream.open(request)
    if chunks.compatible == "openrouter":
        await stream.send(OPENROUTER_PROCESSING + OPENROUTER_PROCESSING)
    if chunks.filters is not None:
        await stream.send(_PROMPT_FILTER_CHUNK)
    per_choice = [_deltas(state, answer, chunks.logprobs) for answer in answers]
    finish_on_last = chunks.compatible == "vllm"
    for index, part in _interleaved(per_choice):
        finish = _streamed_finish(answers[index], chunks.compatible) \
            if finish_on_last and part is per_choice[index][-1] else None
        await stream.send(chunks.chunk(part.delta, finish, content=part.content, index=index,
                                       logprobs=part.logprobs), content=part.content)
    for index, answer in enumerate(answers):
        if not finish_on_last:
            await stream.send(chunks.chunk({}, _streamed_finish(answer, chunks.compatible), index=index))
    if chunks.filters is not None and (chunks.filters.async_filter or chunks.quirks):
        for index, answer in enumerate(answers):
            length = len(answer.text or "".join(a for _, a in answer.calls))
            await stream.send(chunks.filter_annotation(length, index))
    if chunks.include_usage:
        await stream.send(chunks.chunk(None, usage=_usage(answers, state.config.cached_tokens)))
    await stream.send(b"data: [DONE]\n\n")
    return await stream.finish()


# --- embeddings and models ---------------------------------------------------------------------

def _embedding_inputs(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(isinstance(item, int) for item in value):
        return [" ".join(map(str, value))]
    if all(isinstance(item, list) and all(isinstance(t, int) for t in item) for item in value):
        return [" ".join(map(str, item)) for item in value]
    return None


async def embeddings(request: web.Request) -> web.Response:
    call = request[SIM_CALL]
    body = call.body
    if not isinstance(body, dict) or not body.get("model"):
        return bad_request(call, "you must provide a model parameter")
    inputs = _embedding_inputs(body.get("input"))
    if inputs is None:
        return bad_request(call, "'input' must be a string, an array of strings or an array of token ids.",
                            "input", "invalid_value")
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and dims > 0 else call.state.config.embedding_dims
    model = str(body["model"])
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(model, text, dims)
        encoded: Any = (base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
                        if as_base64 else vector)
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    answer: dict[str, Any] = {"object": "list", "model": model, "data": data}
    if call.fault is None or call.fault.kind is not FaultKind.NO_USAGE:
        tokens = sum(count_tokens(text) for text in inputs)
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return call.state.json(answer)


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "system"}


async def list_models(request: web.Request) -> web.Response:
    state = request[SIM_CALL].state
    return state.json({"object": "list", "data": [_model(m) for m in state.config.models]})


async def get_model(request: web.Request) -> web.Response:
    call = request[SIM_CALL]
    model_id = request.match_info["model"]
    if model_id not in call.state.config.models:
        return call.state.json(_error(f"The model '{model_id}' does not exist", "invalid_request_error",
                                      "model_not_found", "model"), 404)
    return call.state.json(_model(model_id))


def openai_app(api_key: str | None = None, **options: Unpack[SimOptions]) -> web.Application:
    """An OpenAI-style provider; `api_key` None accepts any key. It serves chat completions,
    the Responses API (`sim/responses.py`), embeddings and models.

    `quirks`: stream chunks carry `obfuscation` (on by default on the real API), answers carry
    OpenAI's other null fields, and a model given several tools calls them all at once (parallel
    tool calls, each call's id and name only in its first delta); on the Responses API, a model given
    several tools calls them all, a reasoning model's messages carry their `phase` (its tool calls after a
    `commentary` preamble), and the in-band stream error is a `response.failed` event.

    `compatible` names an OpenAI-compatible server whose chat streams it answers in, always, as that
    server does: `gemini` (Google's `/v1beta/openai/` endpoint: each tool call whole in one delta without
    its `index`, and streamed calls finished with `stop`), `openrouter` (`: OPENROUTER PROCESSING`
    comments before the first chunk, `provider` and `native_finish_reason` fields) or `vllm` (a choice's
    finish on its last delta, not a chunk of its own).
    """
    from llmroute_proxy.sim.responses import add_routes as add_responses_routes

    app = sim_app(api_key, options, OpenAIDialect(), name="sim-openai", models=DEFAULT_MODELS)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    add_responses_routes(app, "/v1")
    return app
