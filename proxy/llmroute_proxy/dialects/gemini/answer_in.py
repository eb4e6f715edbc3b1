"""Gemini `GenerateContentResponse`s (whole or streamed) and embeddings answers → OpenAI shapes.

Choices documented here because they are not forced by either API:

- Tool-call IDs: Gemini's own `functionCall.id` is passed through unchanged; when it gives none,
  the ID is `call_` + a hash of the response id, candidate and position, so it is stable for one
  response without server state.
- Thought signatures ride on tool calls as `extra_content.google.thought_signature`, the field
  Google's own OpenAI-compatible endpoint uses, so clients can replay them.
- A blocked prompt (`promptFeedback.blockReason`, no candidates) becomes an Azure-like 400
  `content_filter` error rather than an empty 200, so clients cannot mistake it for an answer.
- The malformed-function-call family of finish reasons is an upstream failure (fails over) while
  nothing was shown to the client; once a stream has shown output it ends as `stop`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from llmroute_proxy.dialects.base import BilledFailure, ChatResult, StreamChunk, Usage, choice_index
from llmroute_proxy.dialects.common import body_excerpt
from llmroute_proxy.dialects.embeddings import embeddings_list
from llmroute_proxy.dialects.gemini.errors import _in_band_error
from llmroute_proxy.dialects.service_tiers import gemini_reported_tier, vertex_reported_tier
from llmroute_proxy.dialects.sse import SSEParser
from llmroute_proxy.errors import FailureKind, UpstreamError

CREATED_UNKNOWN = 0  # Gemini sends no timestamp and providers read no clock; the encoder stamps it

_CONTENT_FILTER_REASONS = frozenset({
    "SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
    "RECITATION", "IMAGE_RECITATION", "MODEL_ARMOR",
})
MALFORMED_CALL_REASONS = frozenset({
    "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
    "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE",
})


def finish_reason_for(gemini_reason: str, has_tool_calls: bool) -> str:
    """§5.5; anything unknown is a plain `stop` (enums grow; never fail on a new value)."""
    if gemini_reason == "MAX_TOKENS":
        return "length"
    if gemini_reason in _CONTENT_FILTER_REASONS:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def usage_from(metadata: Mapping[str, Any] | None) -> Usage:
    """§5.6: tool-use prompt tokens count as input and thoughts as output, so totals add up; the
    service tier that served the request, when it says (the Gemini API's `serviceTier`, Vertex AI's
    `trafficType`)."""
    if not metadata:
        return Usage()
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(metadata.get("promptTokenCount") or 0) + int(metadata.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(metadata.get("candidatesTokenCount") or 0) + thoughts,
        cached_input_tokens=int(metadata.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
        service_tier=gemini_reported_tier(metadata.get("serviceTier")) or vertex_reported_tier(metadata.get("trafficType")),
    )


def synthesised_tool_id(seed: str, candidate: int, position: int) -> str:
    digest = hashlib.blake2b(f"{seed}:{candidate}:{position}".encode(), digest_size=12).hexdigest()
    return "call_" + digest


def _decode(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, dict) else None


def prompt_blocked(response: Mapping[str, Any]) -> UpstreamError | None:
    feedback = response.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if not reason or response.get("candidates"):
        return None
    detail = feedback.get("blockReasonMessage") if isinstance(feedback, dict) else None
    message = f"Gemini blocked the prompt ({reason})" + (f": {detail}" if detail else ".")
    return UpstreamError(kind=FailureKind.CONTENT_FILTER, message=message, status=400,
                         error_type="invalid_request_error", code="content_filter")


def malformed_call(reason: str, finish_message: Any, billed: Usage | None) -> BilledFailure:
    """`billed`: the answer's usage, when it came with one (Gemini charges for the prompt and thoughts)."""
    detail = f": {finish_message}" if isinstance(finish_message, str) and finish_message else ""
    return BilledFailure(kind=FailureKind.SERVER_ERROR, message=f"Gemini finished with {reason}{detail}", status=502,
                         billed=billed)


def empty_answer(billed: Usage | None) -> BilledFailure:
    """Gemini 2.5 and later now and then end an answer with STOP and nothing in it (no text, no call;
    at most thoughts), and answer when asked again: a failure of the provider, not an answer. It is
    billed all the same (`billed`: the answer's usage, when it came with one)."""
    return BilledFailure(kind=FailureKind.SERVER_ERROR, status=502, billed=billed,
                         message="Gemini finished with STOP and an empty answer (no text and no function call)")


def _empty(choice: Mapping[str, Any]) -> bool:
    message = choice["message"]
    return choice["finish_reason"] == "stop" and not message["content"] and not message.get("tool_calls")


def _tool_call(part: Mapping[str, Any], seed: str, candidate: int, position: int) -> dict[str, Any]:
    call = part["functionCall"]
    call_id = call.get("id") or synthesised_tool_id(seed, candidate, position)
    out: dict[str, Any] = {"id": call_id, "type": "function",
                           "function": {"name": call.get("name") or "",
                                        "arguments": orjson.dumps(call.get("args") or {}).decode()}}
    if part.get("thoughtSignature"):
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def _split_parts(candidate: Mapping[str, Any]) -> tuple[list[str], list[Mapping[str, Any]]]:
    """Visible text and function-call parts; thoughts and other part kinds are not shown."""
    texts: list[str] = []
    calls: list[Mapping[str, Any]] = []
    content = candidate.get("content") or {}
    for part in content.get("parts") or ():
        if "functionCall" in part:
            calls.append(part)
        elif "text" in part and not part.get("thought"):
            texts.append(part["text"])
    return texts, calls


def _choice(candidate: Mapping[str, Any], position: int, seed: str, usage: Usage | None) -> dict[str, Any]:
    index = candidate.get("index", position)
    reason = candidate.get("finishReason") or "STOP"
    if reason in MALFORMED_CALL_REASONS:
        raise malformed_call(reason, candidate.get("finishMessage"), usage)
    texts, calls = _split_parts(candidate)
    tool_calls = [_tool_call(part, seed, index, k) for k, part in enumerate(calls)]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None,
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": None,
            "finish_reason": finish_reason_for(reason, bool(tool_calls))}


def _response_seed(response: Mapping[str, Any], body: bytes) -> str:
    return str(response.get("responseId") or hashlib.blake2b(body, digest_size=12).hexdigest())


def translate_response(body: bytes, model: str) -> ChatResult:
    response = _decode(body)
    if response is None:
        raise UpstreamError(kind=FailureKind.SERVER_ERROR, status=502,
                            message=f"Gemini answered with a body that is not a JSON object: {body_excerpt(body)}")
    if "error" in response and not response.get("candidates"):
        raise _in_band_error(response)
    blocked = prompt_blocked(response)
    if blocked:
        raise blocked
    seed = _response_seed(response, body)
    metadata = response.get("usageMetadata")
    usage = usage_from(metadata)
    billed = usage if metadata else None
    choices = [_choice(c, i, seed, billed) for i, c in enumerate(response.get("candidates") or ())]
    if all(map(_empty, choices)):  # none at all, too: clients read `choices[0]`
        raise empty_answer(billed)
    data = {"id": "chatcmpl-" + seed, "object": "chat.completion", "created": CREATED_UNKNOWN,
            "model": response.get("modelVersion") or model, "choices": choices, "usage": usage.to_openai()}
    return ChatResult(data=data, usage=usage)


class GeminiStream:
    """SSE of partial `GenerateContentResponse`s → OpenAI chunks (providers.md §5.7).

    Gemini sends no `[DONE]`: the body's end is the end, so a stream that ends before every
    started candidate reported a `finishReason` is broken.
    """

    __slots__ = ("_id", "_model", "_open", "_parser", "_seed", "_shown", "_tools", "finish_reason", "finish_reasons",
                 "usage")

    service_tier: str | None = None  # a chunk's tier is in its usageMetadata, read with the usage

    def __init__(self, model: str) -> None:
        self._parser = SSEParser()
        self._model = model
        self._id: str | None = None
        self._seed = ""
        self._open: set[int] = set()  # candidates that started and have not finished
        self._tools: dict[int, int] = {}  # candidate → tool calls streamed so far
        self._shown = False  # whether any content or tool call reached a chunk
        self.finish_reason: str | None = None
        self.finish_reasons: dict[int, str] = {}  # each candidate's, by its index (several with `candidateCount`)
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        for _event, payload in self._parser.feed(data):
            self._event(payload, out)
        return out

    def close(self) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        for _event, payload in self._parser.close():
            self._event(payload, out)
        if self.finish_reason is None or self._open:
            raise UpstreamError(kind=FailureKind.STREAM_BROKEN,
                                message="Gemini stream ended before a finishReason.")
        if self.usage is not None:
            out.append(StreamChunk({"id": self._id, "object": "chat.completion.chunk", "created": CREATED_UNKNOWN,
                                    "model": self._model, "choices": [], "usage": self.usage.to_openai()}))
        return out

    def _event(self, payload: bytes, out: list[StreamChunk]) -> None:
        response = _decode(payload)
        if response is None:
            raise UpstreamError(kind=FailureKind.STREAM_BROKEN,
                                message=f"Gemini sent a stream event that is not JSON: {body_excerpt(payload)}")
        if "error" in response:
            raise _in_band_error(response)
        blocked = prompt_blocked(response)
        if blocked:
            raise blocked
        if self._id is None:
            self._seed = _response_seed(response, payload)
            self._id = "chatcmpl-" + self._seed
            self._model = response.get("modelVersion") or self._model
        if response.get("usageMetadata"):  # first: an empty answer's last chunk carries what it was billed
            self.usage = usage_from(response["usageMetadata"])
        for position, candidate in enumerate(response.get("candidates") or ()):
            self._candidate(candidate, position, out)

    def _candidate(self, candidate: Mapping[str, Any], position: int, out: list[StreamChunk]) -> None:
        index = candidate.get("index", position)
        if index not in self._tools:
            self._tools[index] = 0
            self._open.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        texts, calls = _split_parts(candidate)
        text = "".join(texts)
        if text:
            self._shown = True
            out.append(self._chunk(index, {"content": text}))
        for part in calls:
            position_in_message = self._tools[index]
            self._tools[index] = position_in_message + 1
            call = _tool_call(part, self._seed, index, position_in_message)
            call["index"] = position_in_message
            self._shown = True
            out.append(self._chunk(index, {"tool_calls": [call]}))
        reason = candidate.get("finishReason")
        if reason:
            self._finish(index, choice_index(candidate, position), reason, candidate.get("finishMessage"), out)

    def _finish(self, index: int, choice: int, reason: str, finish_message: Any, out: list[StreamChunk]) -> None:
        """Candidate `index` finished (`choice`: its index as a number, by which its finish is kept)."""
        if reason in MALFORMED_CALL_REASONS and not self._shown:
            raise malformed_call(reason, finish_message, self.usage)
        mapped = finish_reason_for(reason, self._tools[index] > 0)
        if mapped == "stop" and not self._shown:
            raise empty_answer(self.usage)
        self._open.discard(index)
        self.finish_reason = self.finish_reasons[choice] = mapped
        out.append(self._chunk(index, {}, mapped))

    def _chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> StreamChunk:
        return StreamChunk({"id": self._id, "object": "chat.completion.chunk", "created": CREATED_UNKNOWN,
                            "model": self._model,
                            "choices": [{"index": index, "delta": delta, "logprobs": None,
                                         "finish_reason": finish_reason}]})


# ---------------------------------------------------------------- embeddings


def translate_embeddings(body: bytes, request_body: Mapping[str, Any], model: str) -> tuple[dict[str, Any], Usage]:
    response = _decode(body)
    embeddings = response.get("embeddings") if response else None
    if response is not None and "error" in response and embeddings is None:
        raise _in_band_error(response)
    if not isinstance(embeddings, list):
        raise UpstreamError(kind=FailureKind.SERVER_ERROR, status=502,
                            message=f"Gemini embeddings answer has no 'embeddings' list: {body_excerpt(body)}")
    metadata = (response or {}).get("usageMetadata") or {}
    prompt_tokens = int(metadata.get("promptTokenCount") or 0)
    vectors = [e.get("values") or [] for e in embeddings]
    return embeddings_list(vectors, request_body, model, prompt_tokens), Usage(input_tokens=prompt_tokens)

