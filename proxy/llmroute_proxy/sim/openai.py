"""A simulated OpenAI API: chat completions (streamed and not), embeddings, models.

Field names, ids, chunk order and error bodies follow OpenAI's wire format (providers.md §1)
closely enough that the official `openai` SDK parses everything it sends.
"""

from __future__ import annotations

import base64
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from aiohttp import web

from llmroute_proxy.sim.faults import Fault, FaultPlan
from llmroute_proxy.sim.server import (
    SIM_CALL,
    Dialect,
    SimCall,
    SimConfig,
    SimState,
    SimStream,
    build_app,
    count_tokens,
    embedding_vector,
    fit_tokens,
    reply_text,
    split_even,
    split_words,
    sse_data,
    tool_arguments,
    tool_reply_text,
)

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
}


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


def _error(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _bad_request(call: SimCall, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return call.state.json(_error(message, "invalid_request_error", code, param), 400)


# --- chat completions --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Answer:
    text: str | None
    tool_name: str | None
    arguments: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


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


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | str | None:
    """The tool to call: a function dict, None for no call, or an error message."""
    tools = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict)]
    functions = [f for f in tools if isinstance(f, dict) and isinstance(f.get("name"), str)]
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        forced = next((f for f in functions if f["name"] == wanted), None)
        return forced if forced is not None else f"Invalid value for 'tool_choice': no function named {wanted!r}."
    return functions[0]


def _answer(state: SimState, body: dict[str, Any]) -> _Answer | str:
    messages: list[Any] = body["messages"]
    model = str(body["model"])
    name = state.config.name
    prompt = count_tokens(" ".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict)))
    prompt += state.config.cached_tokens
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    tool = _chosen_tool(body) if last.get("role") == "user" else None
    if isinstance(tool, str):
        return tool
    if tool is not None:
        arguments = orjson.dumps(tool_arguments(tool.get("parameters"))).decode()
        return _Answer(None, tool["name"], arguments, "tool_calls", prompt,
                       count_tokens(f"{tool['name']} {arguments}"))
    if last.get("role") == "tool":
        text = tool_reply_text(name, model, _content_text(last.get("content")))
    else:
        text = reply_text(name, model, _last_user_text(messages))
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    text, cut = fit_tokens(text, limit if isinstance(limit, int) else None)
    return _Answer(text, None, "", "length" if cut else "stop", prompt, count_tokens(text))


def _usage(answer: _Answer, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


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
    return None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    call = request[SIM_CALL]
    problem = _validate_chat(call.body)
    if problem is not None:
        return _bad_request(call, *problem)
    body: dict[str, Any] = call.body
    answer = _answer(call.state, body)
    if isinstance(answer, str):
        return _bad_request(call, answer, "tool_choice", "invalid_value")
    state = call.state
    completion_id = state.new_id("chatcmpl-")
    created = int(state.config.clock())
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return await _stream_chat(request, call, answer, _Chunks(completion_id, created, str(body["model"]),
                                                                 include_usage))
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None,
                               "annotations": [], "tool_calls": None}
    if answer.tool_name is not None:
        message["tool_calls"] = [{"id": state.new_id("call_"), "type": "function",
                                  "function": {"name": answer.tool_name, "arguments": answer.arguments}}]
    return state.json({
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "system_fingerprint": "fp_sim",
        "service_tier": "default",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}],
        "usage": _usage(answer, state.config.cached_tokens),
    })


@dataclass(frozen=True, slots=True)
class _Chunks:
    completion_id: str
    created: int
    model: str
    include_usage: bool

    def chunk(self, delta: dict[str, Any] | None, finish_reason: str | None = None,
              usage: dict[str, Any] | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_sim",
            "service_tier": "default",
            "choices": [] if delta is None else [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            payload["usage"] = usage
        return sse_data(payload)


async def _stream_chat(request: web.Request, call: SimCall, answer: _Answer, chunks: _Chunks) -> web.StreamResponse:
    state = call.state
    stream = await SimStream.open(request)
    if answer.tool_name is not None:
        await stream.send(chunks.chunk({"role": "assistant", "content": None, "refusal": None, "tool_calls": [{
            "index": 0, "id": state.new_id("call_"), "type": "function",
            "function": {"name": answer.tool_name, "arguments": ""}}]}))
        for fragment in split_even(answer.arguments, state.config.chunks):
            await stream.send(chunks.chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                              content=True)
    else:
        await stream.send(chunks.chunk({"role": "assistant", "content": "", "refusal": None}))
        for piece in split_words(answer.text or "", state.config.chunks):
            await stream.send(chunks.chunk({"content": piece}), content=True)
    await stream.send(chunks.chunk({}, answer.finish_reason))
    if chunks.include_usage:
        await stream.send(chunks.chunk(None, usage=_usage(answer, state.config.cached_tokens)))
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
        return _bad_request(call, "you must provide a model parameter")
    inputs = _embedding_inputs(body.get("input"))
    if inputs is None:
        return _bad_request(call, "'input' must be a string, an array of strings or an array of token ids.",
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
    tokens = sum(count_tokens(text) for text in inputs)
    return call.state.json({"object": "list", "model": model, "data": data,
                            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


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


def openai_app(
    api_key: str | None = None,
    *,
    name: str = "sim-openai",
    faults: FaultPlan | None = None,
    chunks: int = 8,
    cached_tokens: int = 0,
    models: Sequence[str] = DEFAULT_MODELS,
    embedding_dims: int = 16,
) -> web.Application:
    """An OpenAI-style provider; `api_key` None accepts any key."""
    config = SimConfig(name, api_key, chunks, cached_tokens, tuple(models), embedding_dims)
    app = build_app(config, faults, OpenAIDialect())
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    return app
