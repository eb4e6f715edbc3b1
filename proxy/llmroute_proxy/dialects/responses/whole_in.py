"""A chat stream that arrived whole (`WholeStream`), read for what a Responses stream needs of it.

An OpenAI upstream's stream that came in one read has been judged by byte searches
(`judge_whole`): one `data: {…}` line per event, no LF or CR but between them, no `\\u`, `[DONE]`
at the end, the usage event (if any) last. A chat client gets those bytes as they are; a
Responses client needs each delta's text, and reading the events one by one costs one
`orjson.loads` each (~11k instructions: a regular expression over them costs more).

So the events are read as a text answer's are written: the first and the last are parsed, as
they often differ (the role, the finish reason); every event between is the second with only its
text changed, which the second shows. That second event is parsed and must carry one choice,
index 0, no finish reason, a delta whose one string is `content` (no tool call, refusal or
reasoning), a text written as orjson writes it, and otherwise members that are not objects or
arrays: then its bytes before the text (`P`) and after it (`S`) are a template. The events between
must be `P` + a text + `S` each (cut where the template's text is and joined back around it, they
give the same bytes), and their texts must be what one `orjson.loads` reads as that many strings
(a text with a quote, LF or broken UTF-8 of its own fails it; one ending in a backslash, or with
`\\/`, which orjson would write otherwise, is not taken). Their texts are then the upstream's bytes
exactly as the event-by-event path would write them, and the events are what `feed` would have
read. Anything else is read event by event.

The texts are kept joined (`WholeTexts.text`, `text_json`): they arrived in one read, so the client
gets them as one delta (`stream_out`), and joined JSON string contents are the joined text's.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import orjson

from llmroute_proxy.dialects.base import StreamChunk, Usage, WholeStream
from llmroute_proxy.dialects.common import body_excerpt
from llmroute_proxy.errors import FailureKind, UpstreamError

_DONE = b"data: [DONE]\n\n"
_CHOICE_KEYS = frozenset({"index", "delta", "logprobs", "finish_reason"})
_DELTA_KEYS = frozenset({"role", "content", "refusal"})


class WholeTexts:
    """A text answer's events: `first` and `last` parsed (`last` None when there is one event), and
    the text of the events between them, joined: decoded (`text`) and as JSON string contents
    (`text_json`, the upstream's bytes, orjson's too); the usage event's usage, if any (the judge's)."""

    __slots__ = ("first", "last", "text", "text_json", "usage")

    def __init__(self, first: dict[str, Any], last: dict[str, Any] | None, text: str, text_json: bytes,
                 usage: Usage | None) -> None:
        self.first = first
        self.last = last
        self.text = text
        self.text_json = text_json
        self.usage = usage


def read_texts(stream: WholeStream) -> WholeTexts | None:
    """A judged stream read as a text answer, or None when its events between the first and the last
    are not one template's texts (then `chunks` reads them all)."""
    body, usage_start = stream.body, stream.usage_start
    first_end = body.find(b"\n\n") + 2
    try:
        first = _event(stream, 0, first_end)
        if first_end == usage_start:
            return WholeTexts(first, None, "", b"", stream.usage)
        last_start = body.rfind(b"\n\n", 0, usage_start - 2) + 2
        last = _event(stream, last_start, usage_start)
    except orjson.JSONDecodeError:
        return None
    if last_start == first_end:
        return WholeTexts(first, last, "", b"", stream.usage)
    between = body[first_end + 6:last_start - 2]  # the events between, without `data: ` before and LFs after
    events = between.split(b"\n\ndata: ")
    template = events[0]
    cut = _template(template)
    if cut is None:
        return None
    head, tail = template[:cut[0]], template[cut[1]:]  # the template's event around its text
    pieces = list(map(itemgetter(slice(cut[0], -len(tail))), events))
    if (tail + b"\n\ndata: " + head).join(pieces) != between[cut[0]:-len(tail)] or not (
            between.startswith(head) and between.endswith(tail)):
        return None  # not all of them the template with another text
    joined = b'","'.join(pieces)
    if joined.find(b'\\","') >= 0 or joined.find(b"\\/") >= 0:
        return None  # a text ending in a backslash (as the template cuts it, maybe not the text), or `\/`
    try:
        texts = orjson.loads(b'["' + joined + b'"]')
    except orjson.JSONDecodeError:
        return None  # not an event of the template (or not JSON: `chunks` says so)
    if len(texts) != len(pieces):
        return None
    return WholeTexts(first, last, "".join(texts), b"".join(pieces), stream.usage)


def _event(stream: WholeStream, start: int, end: int) -> Any:
    """The event from `start` (its `data: `) to `end` (after its LFs), parsed: the judge's when it
    parsed that one (the finish event, most often the last before the usage)."""
    if start == stream.finish_at:
        return stream.finish
    return orjson.loads(stream.body[start + 6:end - 2])


def _template(event: bytes) -> tuple[int, int] | None:
    """Where the text of a plain text delta event (its JSON) begins and ends, or None when the event is
    not one (see the module's docstring). Written as orjson writes it (compact, keys as they are), the
    one `"content":"` in it is its delta's text."""
    try:
        chunk = orjson.loads(event)
        (choice,) = chunk["choices"]
        delta = choice["delta"]
        text = delta["content"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    start = event.find(b'"content":"') + 11
    if (type(text) is not str or start == 10 or event.count(b'"content":"', start) or orjson.dumps(chunk) != event
            or not choice.keys() <= _CHOICE_KEYS or not delta.keys() <= _DELTA_KEYS or choice.get("index", 0) != 0
            or choice.get("finish_reason") or choice.get("logprobs") is not None or delta.get("refusal") is not None):
        return None
    return start, start + len(orjson.dumps(text)) - 2


def chunks(body: bytes) -> list[StreamChunk]:
    """Every event before `[DONE]`, parsed, in order: the chunks `feed` gives for a judged stream
    (its usage event is last either way). An event that is not JSON fails the attempt as `feed` does,
    before anything of it was written."""
    out: list[StreamChunk] = []
    for event in body[6:len(body) - len(_DONE) - 2].split(b"\n\ndata: "):
        try:
            out.append(StreamChunk(orjson.loads(event)))
        except orjson.JSONDecodeError:
            raise UpstreamError(
                FailureKind.SERVER_ERROR,
                f"The upstream sent a stream event that is not JSON: {body_excerpt(event, 200)}") from None
    return out
