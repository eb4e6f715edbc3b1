"""OpenAI Chat Completions on the wire: the request sent on, the answer and stream read back.

OpenAI in → OpenAI out is the sidecar's common case, so this module stays a near pass-through:
a request is the client's body with `model` swapped (one shallow copy, one `orjson.dumps`), a
response is parsed once and forwarded as the upstream's own bytes, and a stream chunk costs one
`orjson.loads` and a few dict lookups. OpenAI, Azure OpenAI and the compatible servers all speak
it; their providers differ only in addressing (`providers/openai.py`, `providers/azure_openai.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    StreamChunk,
    Usage,
    WholeStream,
    choice_index,
    reported_tier,
)
from llmroute_proxy.dialects.common import body_excerpt
from llmroute_proxy.dialects.openai.encoder import DONE as DONE_EVENT
from llmroute_proxy.dialects.openai.errors import in_band_error
from llmroute_proxy.dialects.sse import SSEParser
from llmroute_proxy.errors import FailureKind, UpstreamError

# --- requests -------------------------------------------------------------------------------------


def chat_body(request: ChatRequest, model: str, stream_usage: bool = True) -> bytes:
    """The client's body aimed at `model`.

    A stream always asks for usage: billing and budgets need it, and the server hides the
    usage chunk from a client that did not ask for it. An upstream that rejects
    `stream_options` (`stream_usage=False`) gets none, and its streams go unmetered.
    """
    body = {**request.body, "model": model}
    if request.stream and not stream_usage:
        body.pop("stream_options", None)
    elif request.stream:
        options = body.get("stream_options")
        body["stream_options"] = (
            {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        )
    return orjson.dumps(body)


def embeddings_body(body: Mapping[str, Any], model: str) -> bytes:
    return orjson.dumps({**body, "model": model})


# --- responses ------------------------------------------------------------------------------------


def parse_chat_completion(body: bytes) -> ChatResult:
    """Keep the upstream's bytes as `raw` so the server forwards them without re-encoding."""
    data = _loads_or_none(body)
    if isinstance(data, dict):
        if isinstance(data.get("choices"), list):
            return ChatResult(data, Usage.from_openai(_usage_object(data.get("usage")), data.get("service_tier")),
                              raw=body)
        if data.get("error") is not None:
            raise in_band_error(data["error"])
    raise _not_a("chat completion", body)


def parse_embeddings(body: bytes) -> tuple[dict[str, Any], Usage]:
    data = _loads_or_none(body)
    if isinstance(data, dict):
        if isinstance(data.get("data"), list):
            return data, Usage.from_openai(_usage_object(data.get("usage")))
        if data.get("error") is not None:
            raise in_band_error(data["error"])
    raise _not_a("list of embeddings", body)


def _loads_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _usage_object(usage: Any) -> Mapping[str, Any] | None:
    return usage if isinstance(usage, dict) else None


def _not_a(what: str, body: bytes) -> UpstreamError:
    excerpt = body_excerpt(body) if body else "an empty body"
    return UpstreamError(FailureKind.SERVER_ERROR,
                         f"The upstream answered 200 with something that is not a {what}: {excerpt}",
                         status=200)


# --- streams --------------------------------------------------------------------------------------

_DONE = b"[DONE]"
_USAGE_CHUNK_FIELDS = ("id", "object", "created", "model", "system_fingerprint", "service_tier")


class OpenAIStreamTranslator:
    """OpenAI SSE in, the same chunks out, each with its original bytes when left unchanged.

    The only rewriting: `usage` that a compatible server puts on a chunk with choices moves to a
    separate usage chunk, so the output ends with exactly one usage chunk like OpenAI's own.
    `tolerant` (compatible servers) accepts a stream that stops without `[DONE]` right after a
    finish chunk; OpenAI itself always sends `[DONE]`, so without it the stream was cut. It also
    numbers tool calls as OpenAI does: Gemini's OpenAI endpoint sends each call whole without the
    `index` the SDKs file fragments under (openai/openai-python#2806) and finishes streamed calls with
    `stop` (googleapis/python-genai#2868), which OpenAI clients and translations read as "no calls".
    """

    __slots__ = ("_call_ids", "_done", "_ended", "_parser", "_pending_usage", "_tier_read", "_tolerant",
                 "finish_reason", "finish_reasons", "service_tier", "usage")

    drops_annotations: ClassVar[bool] = False
    """Whether to drop chunks whose choices carry neither a delta nor a finish (Azure filter notes)."""

    def __init__(self, tolerant: bool = False) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.finish_reasons: dict[int, str] = {}  # each choice's, by its index (several with `n` > 1)
        self._tolerant = tolerant
        self._parser = SSEParser()
        self._done = False
        self._ended = False
        self._pending_usage: StreamChunk | None = None
        self._call_ids: dict[int, list[str]] = {}  # tolerant: each choice's tool calls so far, their ids
        self.service_tier: str | None = None
        self._tier_read = False  # OpenAI puts the tier on every chunk: the first one's is read

    def feed(self, data: bytes) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        single = self._parser.single_data(data)
        events = [(None, single)] if single is not None else self._parser.feed(data)
        for event, payload in events:
            try:
                self._take(event, payload, out)
            except orjson.JSONDecodeError:
                raise UpstreamError(
                    FailureKind.SERVER_ERROR,
                    f"The upstream sent a stream event that is not JSON: {_excerpt(payload)}") from None
        return out

    def close(self) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        for event, payload in self._parser.close():
            try:
                self._take(event, payload, out)
            except orjson.JSONDecodeError:
                raise UpstreamError(FailureKind.STREAM_BROKEN,
                                    "The upstream stream ended in the middle of an event") from None
        if not self._done:
            if not (self._tolerant and self._ended):
                where = "after its finish chunk" if self._ended else "before its finish chunk"
                raise UpstreamError(FailureKind.STREAM_BROKEN,
                                    f"The upstream stream ended without [DONE], {where}")
            self._end(out)
        return out

    def judge_whole(self, body: bytes) -> WholeStream | None:
        """A stream that arrived whole, judged by byte searches instead of event by event, or None
        when they cannot vouch for it (then `feed` and `close` read it, as any other).

        Parsing each event costs more than the rest of the request's own work (orjson alone
        ~12,000 instructions per event); a search over the whole body ~2.5 per byte. The searches
        are sound because inside JSON a string's quotes are escaped: the bytes `"error"` occur
        only as a whole string token, and without `\\u` escapes no key spelled otherwise reads
        `error`. So a body of one-line `{...}` events ending in `[DONE]`, with no `"error"`, no
        `\\u` and no CR, whose last event is a usage chunk without choices (every other `usage`
        null), whose every other event has choices, and whose last string `finish_reason` is the
        last one, is what `feed` would pass through unchanged; only its last event and its finish
        events (one for each choice, with `n` > 1) are parsed. Anything else (an in-band error, usage on a choice chunk, no usage at all,
        Azure's annotations, a stream cut short, JSON written with spaces) takes the general path:
        a stream without usage is estimated from its chunks (`dispatch._streamed`), which a judge
        would not hand on. Not checked: that each event between is JSON.
        """
        if (self._done or self.drops_annotations or not self._parser.idle() or not body.startswith(b"data: {")
                or not body.endswith(_WHOLE_END) or body.find(b"\r") >= 0 or body.find(b'"error"') >= 0
                or (body.find(b"\\") >= 0 and body.find(b"\\u") >= 0)  # one byte is found ~9x faster than two
                or (self._tolerant and body.find(b'"tool_calls":[') >= 0 and not _calls_as_openai_sends_them(body))):
            return None
        # The joints between JSON events (one fewer than there are) are cut out: any LF left before the
        # end is a line that is not an event of its own (a comment, a name, a second data line).
        # One replace and one memchr cost ~2/3 of counting the joints and the LFs.
        unjointed = body.replace(_JOINT, b"")
        if unjointed.find(b"\n") != len(unjointed) - len(_WHOLE_END) + 1:
            return None
        joints = (len(body) - len(unjointed)) // len(_JOINT)
        done_at = len(body) - len(DONE_EVENT)
        last = body.rfind(_JOINT, 0, done_at) + 3  # where the last JSON event begins (2: the first)
        if last == 2:
            last = 0
        try:
            last_chunk = orjson.loads(body[last + 6:done_at - 2])
            usage = last_chunk.get("usage")
            if last_chunk.get("choices") or type(usage) is not dict:
                # usage on a chunk with choices (`feed` moves it to a chunk of its own), none at all (an
                # unmetered stream: its chunks are read to estimate it) or a chunk that shows nothing
                return None
            usages = body.count(b'"usage"', 0, last)
            if (usages and usages != body.count(b'"usage":null', 0, last)) or body.count(
                    b'"choices":[{', 0, last) != joints:
                return None  # usage elsewhere too, or a chunk without choices
            at = body.rfind(_FINISH, 0, last)
            if at < 0 or body.count(b'"finish_reason"', at, last) != 1:
                return None  # no finish, or a later one that is not a string written without spaces
            finish_at = _event_at(body, at)
            finish_chunk = orjson.loads(body[finish_at + 6:body.find(b"\n\n", at)])
            finishes: dict[int, str] = {}
            reason = _finishes(finish_chunk, finishes)
            if reason is None:
                return None
            _finishes_before(body, finish_at, finishes)
        except orjson.JSONDecodeError:
            return None  # `feed` says what is wrong
        self.usage = Usage.from_openai(usage, last_chunk.get("service_tier"))
        self.finish_reason = reason
        self.finish_reasons = finishes
        self._done = self._ended = True
        return WholeStream(body, last, self.usage, finish_chunk, finish_at)

    def _take(self, event: str | None, payload: bytes, out: list[StreamChunk]) -> None:
        # runs once per event of every OpenAI stream: one function, few lookups
        if self._done or not payload:
            return
        if payload == _DONE:
            self._end(out)
            return
        chunk = orjson.loads(payload)
        if type(chunk) is not dict:
            raise UpstreamError(FailureKind.SERVER_ERROR,
                                f"The upstream sent a stream event that is not an object: {_excerpt(payload)}")
        error = chunk.get("error")
        if error is not None:
            raise in_band_error(error)
        if event == "error":
            raise in_band_error(chunk)
        if not self._tier_read:
            self._tier_read = True
            self.service_tier = reported_tier(chunk.get("service_tier"))
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if not choices:
            if type(usage) is dict:
                self.usage = Usage.from_openai(usage, chunk.get("service_tier"))
                self._pending_usage = StreamChunk(chunk, payload)
            # else: an empty-choices chunk without usage (Azure's prompt filter results): nothing to show
            return
        raw: bytes | None = payload
        if usage is not None:
            del chunk["usage"]
            raw = None
            if type(usage) is dict:
                self.usage = Usage.from_openai(usage, chunk.get("service_tier"))
                self._pending_usage = StreamChunk(_usage_chunk_like(chunk, usage))
        if self.drops_annotations and not any(c.get("delta") or c.get("finish_reason") for c in choices):
            return
        # only a chunk with calls, or after them, needs numbering: its key found in the bytes (as every server seen writes it)
        if self._tolerant and (self._call_ids or payload.find(b'"tool_calls"') >= 0) and self._numbered(choices):
            raw = None
        ended = False
        for position, choice in enumerate(choices):
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = reason
                if type(reason) is str:
                    self.finish_reasons[choice_index(choice, position)] = reason
                ended = True
        self._ended = ended
        out.append(StreamChunk(chunk, raw))

    def _numbered(self, choices: list[Any]) -> bool:
        """A compatible server's tool calls numbered as OpenAI numbers them, and a choice that streamed
        calls finished with `tool_calls` rather than `stop`; whether anything was changed. A call without
        its `index` is a new one when its `id` is new, else the fragment of the call with that id (of the
        latest, without an id)."""
        changed = False
        for position, choice in enumerate(choices):
            if type(choice) is not dict:
                continue
            delta = choice.get("delta")
            calls = delta.get("tool_calls") if type(delta) is dict else None
            ids = self._call_ids.setdefault(choice_index(choice, position), [])
            for call in calls if type(calls) is list else ():
                if type(call) is not dict:
                    continue
                number, call_id = call.get("index"), call.get("id")
                if type(number) is not int:
                    number = ids.index(call_id) if call_id in ids else len(ids) if call_id or not ids else len(ids) - 1
                    call["index"] = number
                    changed = True
                ids.extend([""] * (number + 1 - len(ids)))
                if call_id:
                    ids[number] = call_id
            if ids and choice.get("finish_reason") == "stop":
                choice["finish_reason"] = "tool_calls"
                changed = True
        return changed

    def _end(self, out: list[StreamChunk]) -> None:
        self._done = True
        if self._pending_usage is not None:
            out.append(self._pending_usage)
            self._pending_usage = None


_WHOLE_END = b"}\n\n" + DONE_EVENT
_FINISH = b'"finish_reason":"'
_JOINT = b"}\n\ndata: {"


def _calls_as_openai_sends_them(body: bytes) -> bool:
    """Whether a whole stream's tool calls need no numbering (`_numbered`): every call fragment carries
    its `index` (each fragment has a `function` object and each choice a `delta`, and OpenAI writes
    an `index` in both, so the indexes are at least as many) and no choice finishes with `stop`."""
    return (body.find(b'"finish_reason":"stop"') < 0
            and body.count(b'"index":') >= body.count(b'"function":{') + body.count(b'"delta":'))


def _finishes(chunk: Any, into: dict[int, str]) -> str | None:
    """The last finish reason a chunk's choices give, when it is a string (as `feed` records it); each
    choice's string finish goes `into` the finishes by choice index, unless a later event's is there."""
    reason = None
    for position, choice in enumerate((chunk.get("choices") if type(chunk) is dict else None) or ()):
        found = choice.get("finish_reason") if type(choice) is dict else None
        if found:
            reason = found
            if type(found) is str:
                into.setdefault(choice_index(choice, position), found)
    return reason if type(reason) is str else None


def _finishes_before(body: bytes, end: int, into: dict[int, str]) -> None:
    """The finishes of the events of a whole stream before `end` (with `n` > 1, of the choices that
    finished before the last did) go `into` the finishes, read from the last back: a later finish of
    a choice stands, as `feed` records it."""
    at = body.rfind(_FINISH, 0, end)
    while at >= 0:
        start = _event_at(body, at)
        _finishes(orjson.loads(body[start + 6:body.find(b"\n\n", at)]), into)
        at = body.rfind(_FINISH, 0, start)


def _event_at(body: bytes, at: int) -> int:
    """Where the event of a whole stream that holds byte `at` begins."""
    start = body.rfind(b"\n\ndata: ", 0, at) + 2
    return 0 if start == 1 else start  # 1: it is the first event


def _usage_chunk_like(chunk: Mapping[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    out = {name: chunk[name] for name in _USAGE_CHUNK_FIELDS if name in chunk}
    out["choices"] = []
    out["usage"] = usage
    return out


def _excerpt(payload: bytes) -> str:
    return body_excerpt(payload, 200)


