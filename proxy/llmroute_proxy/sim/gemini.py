"""A simulated Gemini Developer API: generate (streamed and not), embed, count tokens, models.

Follows providers.md §3: both `v1` (the google-genai 3.x default) and `v1beta` are served;
auth is `x-goog-api-key` or `?key=`, and a bad key is a 400 `API_KEY_INVALID` as on the
real API; streams are CRLF-separated data-only SSE with a running `usageMetadata`;
function calls arrive whole; errors are Google RPC statuses with `RetryInfo` on 429.

With `quirks`, as Gemini really answers: candidate 0 without its `index` (proto3 JSON omits
defaults), running `usageMetadata` without `candidatesTokenCount` on the text chunks, the
`finishReason` on a chunk of its own with an empty text part, a last chunk holding only
`usageMetadata` (no candidates, as Gemini 3 sends), function calls with a `thoughtSignature` and
all at once when several tools may be called (a call without arguments has no `args`: the field is
optional; streamed, their `finishReason` follows in a chunk whose content has no parts), a text answer's `thoughtSignature` on its last part, `thoughtsTokenCount` in the final
usage (2.5 models think by default), a `maxOutputTokens` the thinking uses up answered by a
candidate whose `content` has no `parts` (`finishReason: MAX_TOKENS`), and a streaming request's
errors wrapped in a one-element JSON array.

Always, as Gemini checks it: a `thinkingBudget` outside the model's range is a 400 (2.5 Pro thinks
from 128 to 32768 and cannot stop, Flash from 0 to 24576, Flash-Lite 0 or 512 to 24576; -1 is
"dynamic" everywhere), and so is a part that holds no data: `{"text": ""}` reads as no text at
all (proto3 JSON drops default values), so it is refused like `{}`, and so is a `maxOutputTokens`
above the model's most (2.5 and later: 65,536; 2.0 and 1.5: 8,192), in the words that state its range.

`generationConfig.candidateCount` asks for that many candidates (1 to 8; more is refused in the words
that state the range): each after the first says which it is (`choice_text`), a stream's chunks hold
every candidate that has a part to send with its `index` (candidate 0's left out with quirks, as
always), `candidatesTokenCount` and `thoughtsTokenCount` count them all, and a fault strikes them alike.

`serviceTier` (`standard`, the default, `flex`, `priority`, or `unspecified`: the values google-genai
sends) picks the capacity, and anything else is refused as the API refuses a bad enum value. The tier
that served it is in every `usageMetadata` (`serviceTier`) and, on a whole answer, in the
`x-gemini-service-tier` header; a `priority` request is served at `standard` once Priority capacity ran
out (`SimConfig.priority_capacity`).

`:countTokens` takes either `contents` or a whole `generateContentRequest` (which names its
`models/` model; the two together are refused) and answers `totalTokens` with its
`promptTokensDetails`: the `promptTokenCount` generating from the same request reports, less any
cached prefix.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Unpack

import orjson
from aiohttp import web

from llmroute_proxy.sim.answers import (
    choice_text,
    count_tokens,
    embedding_vector,
    fit_tokens,
    reply_text,
    split_words,
    structured_reply,
    tool_arguments,
    tool_reply_text,
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

DEFAULT_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001")
CRLF2 = b"\r\n\r\n"

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    "RESOURCE_EXHAUSTED": "Resource has been exhausted (e.g. check quota).",
    "UNAVAILABLE": "The model is overloaded. Please try again later.",
    "INTERNAL": "An internal error has occurred. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting",
    "DEADLINE_EXCEEDED": "The request timed out. Please try again.",
}
_TYPE = "type.googleapis.com/google.rpc."


class GeminiDialect(Dialect):
    overloaded_status = 503

    def authorized(self, request: web.Request, api_key: str) -> bool:
        sent = request.headers.get("x-goog-api-key") or request.query.get("key", "")
        return hmac.compare_digest(sent.encode(), api_key.encode())

    def unauthorized(self, request: web.Request) -> web.Response:
        return request[SIM_CALL].state.json({"error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": _TYPE + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                         "metadata": {"service": "generativelanguage.googleapis.com"}}],
        }}, 400)

    def error_body(self, status: int, code: str | None, message: str | None,
                   fault: Fault | None) -> dict[str, Any]:
        rpc_status = code or _STATUSES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
        error: dict[str, Any] = {"code": status, "message": message or _MESSAGES.get(rpc_status, f"Error {status}"),
                                 "status": rpc_status}
        details = _details(status, fault)
        if details:
            error["details"] = details
        return {"error": error}

    def error_headers(self, fault: Fault) -> dict[str, str]:
        return {}

    def served(self, request: web.Request, body: dict[str, Any], config: SimConfig
               ) -> tuple[dict[str, Any], dict[str, str]]:
        """What an answer says of the capacity that served it: members of its `usageMetadata`, and the
        headers of a whole answer."""
        asked = service_tier(body.get("serviceTier"))
        tier = "standard" if asked is None or (asked == "priority" and not config.priority_capacity) else asked
        return {"serviceTier": tier}, {"x-gemini-service-tier": tier}

    def in_band_error(self, body: dict[str, Any]) -> bytes:
        return sse_data(body, CRLF2)

    def error_payload(self, body: dict[str, Any], path: str, quirks: bool) -> Any:
        return [body] if quirks and path.endswith(":streamGenerateContent") else body

    async def prompt_blocked(self, request: web.Request) -> web.StreamResponse:
        """200 and no candidates: the block is in `promptFeedback` (streamed as one chunk)."""
        call = request[SIM_CALL]
        model = request.match_info.get("target", "").rpartition(":")[0]
        body = call.body if isinstance(call.body, dict) else {}
        contents = body.get("contents")
        contents = contents if isinstance(contents, list) else []
        prompt = count_tokens(" ".join(_parts_text(c) for c in contents))
        blocked = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _BLOCKING_RATINGS},
                   "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                   "modelVersion": model, "responseId": call.state.new_id("resp")}
        if request.query.get("alt") == "sse":
            return await _sse_response(request, [sse_data(blocked, CRLF2)])
        return call.state.json([blocked] if request.path.endswith(":streamGenerateContent") else blocked)


_BLOCKING_RATINGS = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
                     {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]


def _details(status: int, fault: Fault | None) -> list[dict[str, Any]]:
    details: list[dict[str, Any]] = []
    if status == 429:
        quota_id = (fault.quota_id if fault else None) or "GenerateRequestsPerMinutePerProjectPerModel"
        details.append({"@type": _TYPE + "QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_model", "quotaId": quota_id}]})
    delay = _retry_delay(fault)
    if delay is not None:
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": delay})
    return details


def _retry_delay(fault: Fault | None) -> str | None:
    if fault is None:
        return None
    if fault.retry_after is not None:
        seconds = float(fault.retry_after)
    elif fault.retry_after_ms is not None:
        seconds = fault.retry_after_ms / 1000
    else:
        return None
    return f"{int(seconds)}s" if seconds.is_integer() else f"{seconds}s"


@cache
def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def field(message: Any, name: str) -> Any:
    """A field by its JSON (camelCase) or proto (snake_case) name: the API accepts both, and the SDK sends some
    fields, such as `parameters_json_schema`, in snake case."""
    if not isinstance(message, dict):
        return None
    value = message.get(name)
    return value if value is not None else message.get(_snake(name))


def _error(call: SimCall, status: int, message: str) -> web.Response:
    return call.state.json({"error": {"code": status, "message": message, "status": _STATUSES[status]}}, status)


# --- generate ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Answer:
    text: str | None
    calls: tuple[dict[str, Any], ...]
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    thought_out: bool = False
    """With quirks: the thinking used up `maxOutputTokens` (then `output_tokens` are all thoughts)."""


def _parts_text(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    texts: list[str] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(response := field(part, "functionResponse"), dict):
            texts.append(orjson.dumps(response.get("response")).decode())
    return " ".join(texts)


def _function_response(content: Any) -> dict[str, Any] | None:
    parts = content.get("parts") if isinstance(content, dict) else None
    responses = [r for p in parts or [] if isinstance(p, dict)
                 and isinstance(r := field(p, "functionResponse"), dict)]
    return responses[-1] if responses else None


def _chosen_functions(body: dict[str, Any], quirks: bool) -> list[dict[str, Any]]:
    declarations = [d for tool in body.get("tools") or [] if isinstance(tool, dict)
                    for d in field(tool, "functionDeclarations") or []
                    if isinstance(d, dict) and isinstance(d.get("name"), str)]
    config = field(field(body, "toolConfig") or {}, "functionCallingConfig") or {}
    if not declarations or config.get("mode") == "NONE":
        return []
    allowed = field(config, "allowedFunctionNames")
    if isinstance(allowed, list) and allowed:
        declarations = [d for d in declarations if d["name"] in allowed]
    return declarations if quirks else declarations[:1]


def _prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's tokens: its system instruction and every content's text (function responses included)."""
    contents = body.get("contents")
    texts = [_parts_text(field(body, "systemInstruction"))]
    texts += [_parts_text(c) for c in contents] if isinstance(contents, list) else []
    return count_tokens(" ".join(texts))


def _answers(state: SimState, model: str, body: dict[str, Any]) -> list[_Answer]:
    """The `candidateCount` candidates asked for (one by default)."""
    count = field(field(body, "generationConfig") or {}, "candidateCount")
    count = count if isinstance(count, int) and not isinstance(count, bool) and count > 1 else 1
    return [_answer(state, model, body, index) for index in range(count)]


def _answer(state: SimState, model: str, body: dict[str, Any], index: int) -> _Answer:
    contents: list[Any] = body["contents"]
    name = state.config.name
    prompt = _prompt_tokens(body) + state.config.cached_tokens
    last = contents[-1]
    result = _function_response(last)
    is_user = isinstance(last, dict) and last.get("role", "user") == "user"
    functions = _chosen_functions(body, state.config.quirks) if is_user and result is None else []
    if functions:
        calls = tuple({"name": f["name"], "args": tool_arguments(f.get("parameters") or field(f, "parametersJsonSchema"))}
                      for f in functions)
        spoken = " ".join(f"{c['name']} {orjson.dumps(c['args']).decode()}" for c in calls)
        return _Answer(None, calls, "STOP", prompt, count_tokens(spoken))
    if result is not None:
        text = tool_reply_text(name, model, orjson.dumps(result.get("response")).decode())
    else:
        said = next((_parts_text(c) for c in reversed(contents)
                     if isinstance(c, dict) and c.get("role", "user") == "user"), "")
        text = reply_text(name, model, said, state.config.answer_bytes)
    text = choice_text(text, index)
    config = field(body, "generationConfig") or {}
    if field(config, "responseMimeType") == "application/json":
        text = structured_reply(field(config, "responseJsonSchema") or field(config, "responseSchema"), text)
    limit = field(config, "maxOutputTokens")
    limit = limit if isinstance(limit, int) else None
    if state.config.quirks and limit is not None and limit <= THOUGHTS_TOKENS:
        return _Answer(None, (), "MAX_TOKENS", prompt, limit, thought_out=True)
    text, cut = fit_tokens(text, limit)
    return _Answer(text, (), "MAX_TOKENS" if cut else "STOP", prompt, count_tokens(text))


THOUGHTS_TOKENS = 12
"""With quirks, the thinking a 2.5 model does by default, counted apart from the candidates."""
SIGNATURE = "c2ltLXRob3VnaHQtc2lnbmF0dXJl"
"""With quirks, the `thoughtSignature` on function calls and on a text answer's last part."""


def _usage(prompt: int, output: int, cached: int, thoughts: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": output,
                             "totalTokenCount": prompt + output + thoughts,
                             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _candidate(parts: list[dict[str, Any]] | None, finish: str | None, quirks: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {} if parts is None else {"content": {"role": "model", "parts": parts}}
    if parts == []:
        del candidate["content"]["parts"]
    if finish is not None:
        candidate["finishReason"] = finish
    if finish == "SAFETY":
        candidate["safetyRatings"] = _BLOCKING_RATINGS
    if not quirks:  # the real API leaves out candidate 0's index (a proto3 default)
        candidate["index"] = 0
    return candidate


MALFORMED_MESSAGE = "Malformed function call: print(default_api.get_weather(city='Paris'))"
"""The `finishMessage` of a `MALFORMED_FUNCTION_CALL` (`FaultKind.MALFORMED_CALL`): the code the model wrote."""


def _chunks(answer: _Answer, stream: bool, fault: FaultKind | None, quirks: bool, cached: int, chunks: int,
            tail: dict[str, Any]) -> list[dict[str, Any]]:
    """The GenerateContentResponses of one answer: one whole, or the stream's chunks."""
    full = _usage(answer.prompt_tokens, answer.output_tokens, cached, THOUGHTS_TOKENS if quirks else 0)
    if fault is FaultKind.REFUSAL:  # the candidate is stopped by the safety filter before any content
        return [{"candidates": [_candidate(None, "SAFETY", quirks)],
                 "usageMetadata": _usage(answer.prompt_tokens, 0, cached), **tail}]
    if fault is FaultKind.MALFORMED_CALL:  # the model wrote code, not a call: no content at all
        candidate = {**_candidate(None, "MALFORMED_FUNCTION_CALL", quirks), "finishMessage": MALFORMED_MESSAGE}
        return [{"candidates": [candidate], "usageMetadata": _usage(answer.prompt_tokens, 0, cached), **tail}]
    if fault is FaultKind.EMPTY_ANSWER:  # it thought, and said nothing (proto3 JSON drops the 0 candidates)
        usage = _usage(answer.prompt_tokens, 0, cached, THOUGHTS_TOKENS if quirks else 0)
        del usage["candidatesTokenCount"]
        return [{"candidates": [_candidate([], "STOP", quirks)], "usageMetadata": usage, **tail}]
    if answer.thought_out:  # the thinking used up maxOutputTokens: a content without parts
        usage = _usage(answer.prompt_tokens, 0, cached, answer.output_tokens)
        del usage["candidatesTokenCount"]
        return [{"candidates": [_candidate([], answer.finish_reason, quirks)], "usageMetadata": usage, **tail}]
    if answer.calls:
        signature = {"thoughtSignature": SIGNATURE} if quirks else {}
        parts = [{"functionCall": _call(call, quirks), **signature} for call in answer.calls]
        if quirks and stream:  # the finish comes after the calls, in a content without parts
            return [{"candidates": [_candidate(parts, None, quirks)], "usageMetadata": full, **tail},
                    {"candidates": [_candidate([], answer.finish_reason, quirks)], "usageMetadata": full, **tail}]
        return [{"candidates": [_candidate(parts, answer.finish_reason, quirks)], "usageMetadata": full, **tail}]
    text = answer.text or ""
    pieces = split_words(text, chunks) if stream else [text]
    out = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        if quirks and stream:  # a running count without candidatesTokenCount; the finish comes apart
            usage = {key: full[key] for key in ("promptTokenCount", "promptTokensDetails")}
            usage["totalTokenCount"] = full["promptTokenCount"]
            out.append({"candidates": [_candidate([{"text": piece}], None, quirks)], "usageMetadata": usage, **tail})
        else:
            usage = full if last else _usage(answer.prompt_tokens, count_tokens("".join(pieces[: i + 1])), cached)
            finish = answer.finish_reason if last else None
            out.append({"candidates": [_candidate([{"text": piece}], finish, quirks)], "usageMetadata": usage,
                        **tail})
    if quirks and stream:
        out.append({"candidates": [_candidate([{"text": "", "thoughtSignature": SIGNATURE}], answer.finish_reason,
                                              quirks)], "usageMetadata": full, **tail})
        out.append({"usageMetadata": full, **tail})
    elif quirks:
        out[-1]["candidates"][0]["content"]["parts"][-1]["thoughtSignature"] = SIGNATURE
    return out


def _all_chunks(answers: list[_Answer], stream: bool, fault: FaultKind | None, quirks: bool, cached: int,
                chunks: int, tail: dict[str, Any]) -> list[dict[str, Any]]:
    """The GenerateContentResponses of every candidate: one whole, or the stream's chunks, each holding the
    candidates that have a part to send at that point. A fault strikes every candidate alike."""
    per_candidate = [_indexed(_chunks(answer, stream, fault, quirks, cached, chunks, tail), index)
                     for index, answer in enumerate(answers)]
    return per_candidate[0] if len(per_candidate) == 1 else _merged(per_candidate, tail)


def _indexed(responses: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    """Candidate `index`'s responses, each candidate marked with it (always but for 0: proto3 JSON omits 0)."""
    if index:
        for response in responses:
            for candidate in response.get("candidates") or ():
                candidate["index"] = index
    return responses


def _merged(per_candidate: list[list[dict[str, Any]]], tail: dict[str, Any]) -> list[dict[str, Any]]:
    """Several candidates' responses as one stream: the k-th response of each in response k, with the usage of
    all so far (a candidate that has finished counts its last); a last usage-only response (quirks) stays last."""
    usage_only = [responses.pop() for responses in per_candidate if "candidates" not in responses[-1]]
    out: list[dict[str, Any]] = []
    for k in range(max(map(len, per_candidate))):
        at_k = [responses[k] for responses in per_candidate if k < len(responses)]
        latest = [responses[min(k, len(responses) - 1)]["usageMetadata"] for responses in per_candidate]
        out.append({"candidates": [c for response in at_k for c in response["candidates"]],
                    "usageMetadata": _summed_usage(latest), **tail})
    if usage_only:
        out.append({"usageMetadata": _summed_usage([response["usageMetadata"] for response in usage_only]), **tail})
    return out


def _summed_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidates' usage together: the prompt once, the output and thoughts of each."""
    summed = dict(usages[0])
    for key in ("candidatesTokenCount", "thoughtsTokenCount"):
        counts = [usage[key] for usage in usages if key in usage]
        if counts:
            summed[key] = sum(counts)
    summed["totalTokenCount"] = (summed["promptTokenCount"] + summed.get("candidatesTokenCount", 0)
                                 + summed.get("thoughtsTokenCount", 0))
    return summed


def _call(call: dict[str, Any], quirks: bool) -> dict[str, Any]:
    """A function call as sent: with quirks, one without arguments leaves out `args`, as Gemini may."""
    return {"name": call["name"]} if quirks and not call["args"] else call


def _generate_problem(model: str, body: Any) -> str | None:
    """Why Gemini refuses a GenerateContentRequest, as its request validation words it; None when it does not."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    if not isinstance(body.get("contents"), list) or not body["contents"]:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    config = field(body, "generationConfig") or {}
    budget = field(field(config, "thinkingConfig") or {}, "thinkingBudget")
    return (_empty_part(body) or (_budget_problem(model, budget) if isinstance(budget, int) else None)
            or _output_limit_problem(model, field(config, "maxOutputTokens"))
            or _candidate_count_problem(field(config, "candidateCount"))
            or _service_tier_problem(field(body, "serviceTier")))


SERVICE_TIERS = ("standard", "flex", "priority")


def service_tier(value: Any) -> str | None:
    """A request's `serviceTier`; None for none or `unspecified`."""
    return value if value in SERVICE_TIERS else None


def _service_tier_problem(value: Any) -> str | None:
    if value is None or value == "unspecified" or service_tier(value) is not None:
        return None
    return ("Invalid value at 'service_tier' (type.googleapis.com/google.ai.generativelanguage.v1beta.ServiceTier), "
            f"{orjson.dumps(value).decode()}")


MOST_CANDIDATES = 8
"""The most candidates (`candidateCount`) one request may ask for."""


def _candidate_count_problem(asked: Any) -> str | None:
    """Gemini's refusal of a `candidateCount` out of its range, in the words that state it."""
    if not isinstance(asked, int) or 1 <= asked <= MOST_CANDIDATES:
        return None
    return (f"Unable to submit request because it has a candidateCount value of {asked} but the supported range "
            f"is from 1 (inclusive) to {MOST_CANDIDATES + 1} (exclusive). Update the value and try again.")


def max_output_tokens(model: str) -> int:
    """The most output tokens a model gives (ai.google.dev's model pages)."""
    return 8192 if model.startswith(("gemini-2.0", "gemini-1.5")) else 65536


def _output_limit_problem(model: str, asked: Any) -> str | None:
    """Gemini's refusal of more output tokens than the model gives, which states the range it takes."""
    most = max_output_tokens(model)
    if not isinstance(asked, int) or asked <= most:
        return None
    return (f"Unable to submit request because it has a maxOutputTokens value of {asked} but the supported range "
            f"is from 1 (inclusive) to {most + 1} (exclusive). Update the value and try again.")


async def _generate(request: web.Request, call: SimCall, model: str, stream: bool) -> web.StreamResponse:
    body = call.body
    problem = _generate_problem(model, body)
    if problem is not None:
        return _error(call, 400, problem)
    state = call.state
    answers = _answers(state, model, body)
    fault = call.fault.kind if call.fault is not None else None
    if fault is FaultKind.REFUSAL and call.fault is not None and call.fault.tokens:
        answers = [_stopped_by_safety(answer, call.fault.tokens, state.config.chunks) for answer in answers]
        fault = None
    tail = {"modelVersion": model, "responseId": state.new_id("resp")}
    chunks = _all_chunks(answers, stream, fault, state.config.quirks, state.config.cached_tokens,
                         state.config.chunks, tail)
    dialect = state.dialect
    assert isinstance(dialect, GeminiDialect)  # Gemini's and Vertex AI's
    usage_members, headers = dialect.served(request, body, state.config)
    for chunk in chunks:
        if "usageMetadata" in chunk:
            chunk["usageMetadata"] = {**chunk["usageMetadata"], **usage_members}
    if not stream:
        return state.json(chunks[0], headers=headers)
    if request.query.get("alt") != "sse":
        return state.json(chunks)
    sse = await SimStream.open(request)
    for chunk in chunks:
        content = any(part.get("text") or "functionCall" in part for candidate in chunk.get("candidates") or ()
                      for part in (candidate.get("content") or {}).get("parts") or ())
        await sse.send(sse_data(chunk, CRLF2), content=content)
    return await sse.finish()


def _stopped_by_safety(answer: _Answer, tokens: int, chunks: int) -> _Answer:
    """The answer stopped by Gemini's safety filter after `tokens` chunks of its text: the last of them comes
    with `finishReason: SAFETY` (topcheer/ggcode#232: text parts in the chunk that finishes SAFETY or
    RECITATION; BerriAI/litellm#3468: a SAFETY finish after text chunks)."""
    said = "".join(split_words(answer.text or "", chunks)[:tokens]).rstrip()  # no empty last piece
    return replace(answer, text=said, calls=(), finish_reason="SAFETY", output_tokens=count_tokens(said))


_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
              "codeExecutionResult")


def _empty_part(body: dict[str, Any]) -> str | None:
    """Gemini's refusal of a part with no data in it, as its request validation words it."""
    system = field(body, "systemInstruction")
    where = [("system_instruction", system)] if isinstance(system, dict) else []
    where += [(f"contents[{i}]", content) for i, content in enumerate(body["contents"])]
    for name, content in where:
        parts = content.get("parts") if isinstance(content, dict) else None
        for j, part in enumerate(parts if isinstance(parts, list) else ()):
            if isinstance(part, dict) and not part.get("thoughtSignature") and not any(
                    field(part, data) for data in _PART_DATA):
                return (f"* GenerateContentRequest.{name}.parts[{j}].data: required oneof field 'data' must have "
                        "one initialized field\n")
    return None


_BUDGETS = (("gemini-2.5-flash-lite", 512, 24576, True), ("gemini-2.5-flash", 1, 24576, True),
            ("gemini-2.5-pro", 128, 32768, False))
"""Per model family: the least and most thinking budget, and whether 0 (no thinking) is allowed."""


def _budget_problem(model: str, budget: int) -> str | None:
    """Gemini's refusal of a thinking budget the model does not take (ai.google.dev thinking guide)."""
    family = next((f for f in _BUDGETS if model.startswith(f[0])), None)
    if family is None or budget == -1:
        return None
    _, least, most, may_stop = family
    if budget == 0:
        return None if may_stop else "Budget 0 is invalid. This model only works in thinking mode."
    return None if least <= budget <= most else f"The thinking budget ({budget}) is invalid."


async def _sse_response(request: web.Request, events: list[bytes]) -> web.StreamResponse:
    sse = await SimStream.open(request)
    for event in events:
        await sse.send(event)
    return await sse.finish()


# --- embeddings, tokens, models ----------------------------------------------------------------

def _embedding(model: str, request: Any, dims: int) -> dict[str, Any] | None:
    if not isinstance(request, dict) or not isinstance(request.get("content"), dict):
        return None
    size = field(request, "outputDimensionality")
    size = size if isinstance(size, int) and size > 0 else dims
    return {"values": embedding_vector(model, _parts_text(request["content"]), size)}


async def _embed(call: SimCall, model: str, batch: bool) -> web.Response:
    body, dims = call.body, call.state.config.embedding_dims
    if not isinstance(body, dict):
        return _error(call, 400, "Invalid JSON payload received.")
    if not batch:
        embedding = _embedding(model, body, dims)
        if embedding is None:
            return _error(call, 400, "* EmbedContentRequest.content: content is not specified\n")
        return call.state.json({"embedding": embedding})
    requests = body.get("requests")
    embeddings = [_embedding(model, r, dims) for r in requests] if isinstance(requests, list) and requests else []
    if not embeddings or any(e is None for e in embeddings):
        return _error(call, 400, "* BatchEmbedContentsRequest.requests: content is not specified\n")
    return call.state.json({"embeddings": embeddings})


async def model_action(request: web.Request) -> web.StreamResponse:
    call = request[SIM_CALL]
    model, _, action = request.match_info["target"].rpartition(":")
    if action in ("generateContent", "streamGenerateContent"):
        return await _generate(request, call, model, action == "streamGenerateContent")
    if action in ("embedContent", "batchEmbedContents"):
        return await _embed(call, model, action == "batchEmbedContents")
    if action == "countTokens":
        return _count_tokens(call, model)
    return _error(call, 404, f"Method not found: {action or request.match_info['target']}.")


def _count_tokens(call: SimCall, model: str) -> web.Response:
    body = call.body
    if not isinstance(body, dict):
        return _error(call, 400, "Invalid JSON payload received.")
    whole = field(body, "generateContentRequest")
    if whole is not None and body.get("contents") is not None:
        return _error(call, 400, "* CountTokensRequest: contents and generate_content_request are mutually "
                                 "exclusive; set only one\n")
    if whole is None:
        whole = {"contents": body.get("contents")}
    elif not isinstance(named := field(whole, "model"), str) or not named.startswith("models/"):
        return _error(call, 400, "* GenerateContentRequest.model: unexpected model name format\n")
    problem = _generate_problem(model, whole)
    if problem is not None:
        return _error(call, 400, problem)
    tokens = _prompt_tokens(whole)
    return call.state.json({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]})


def _model(model: str) -> dict[str, Any]:
    embedding = "embedding" in model
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model,
        "description": f"Simulated {model}",
        "inputTokenLimit": 2048 if embedding else 1048576,
        "outputTokenLimit": 1 if embedding else 65536,
        "supportedGenerationMethods": ["embedContent"] if embedding
        else ["generateContent", "countTokens"],
    }


async def list_models(request: web.Request) -> web.Response:
    state = request[SIM_CALL].state
    return state.json({"models": [_model(m) for m in state.config.models]})


async def get_model(request: web.Request) -> web.Response:
    call = request[SIM_CALL]
    model = request.match_info["target"]
    if model not in call.state.config.models:
        return _error(call, 404, f"models/{model} is not found for API version {request.match_info['version']}.")
    return call.state.json(_model(model))


def gemini_app(api_key: str | None = None, **options: Unpack[SimOptions]) -> web.Application:
    """A Gemini-style provider on `/v1` and `/v1beta`; `api_key` None accepts any key; `quirks`: see the
    module's docstring."""
    app = sim_app(api_key, options, GeminiDialect(), name="sim-gemini", models=DEFAULT_MODELS)
    app.router.add_get("/{version:v1|v1beta}/models", list_models)
    app.router.add_get("/{version:v1|v1beta}/models/{target}", get_model)
    app.router.add_post("/{version:v1|v1beta}/models/{target}", model_action)
    return app
