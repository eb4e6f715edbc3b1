"""A chat stream that arrived whole and was judged by its bytes is written to a Responses client by
`ResponsesEncoder.write_whole`: its text answers read by byte searches (`whole_in`), anything else
parsed event by event. Either way every byte the client gets, and what the store keeps, must be what
reading the stream event by event (`feed`, `chunks`, `end`) writes and keeps."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute_proxy.dialects.base import ChatRequest, WholeStream
from llmroute_proxy.dialects.responses import encoder as encoder_module
from llmroute_proxy.dialects.responses.encoder import ResponsesEncoder
from llmroute_proxy.dialects.responses.request_in import request_to_canonical
from llmroute_proxy.dialects.responses.stream_out import ResponsesStreamEncoder
from llmroute_proxy.dialects.responses.whole_in import read_texts
from llmroute_proxy.errors import UpstreamError
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.table import ProviderType, Target, TargetId
from tests.proxy.fuzz.strategies import FUZZ

GOLDEN = Path(__file__).parents[1] / "providers" / "golden" / "openai"
TARGET = Target(id=TargetId("p/m@us"), provider="p", provider_type=ProviderType.OPENAI, model="m",
                url="https://api.openai.com/v1", region="us")
REQUEST = {"model": "m", "input": "Say hello", "instructions": "Be brief", "stream": True}
DONE = b"data: [DONE]\n\n"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
         "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 1}}
MEMBERS = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1735000000, "model": "gpt-4.1-mini",
           "service_tier": "default", "system_fingerprint": "fp_1"}
Written = tuple[bytes, bytes | None, list[tuple[Any, ...]]]


class Kept:
    """The store: what `put` was given."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []

    def put(self, response_id: str, response: bytes, conversation: Sequence[dict[str, Any]], now: float,
            input_span: tuple[int, int] = (0, 0), held_by: str = "", remote: bool = False) -> bool:
        self.entries.append((response_id, response, list(conversation), now, input_span, held_by))
        return True


@pytest.fixture(autouse=True)
def counted_ids() -> Iterator[None]:
    """Ids from a counter, fresh for each encoder, so that both paths name everything alike."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder_module, "new_id", _counter())
        yield


def _counter() -> Any:
    count = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(count)}"


def _encoder(request: dict[str, Any]) -> tuple[ResponsesEncoder, Kept, Any]:
    encoder_module.new_id = _counter()  # type: ignore[assignment]  # the fixture puts the real one back
    kept = Kept()
    turn = request_to_canonical(request)
    encoder = ResponsesEncoder(turn, 1700000000, kept, lambda: 5.0)
    return encoder, kept, provider_for(ProviderType.OPENAI).chat_stream(ChatRequest(turn.canonical), TARGET)


def event_by_event(body: bytes, request: dict[str, Any] = REQUEST) -> Written:
    encoder, kept, reader = _encoder(request)
    chunks = reader.feed(body) + reader.close()
    written = encoder.chunks(chunks) + encoder.end(reader.usage)
    return written, encoder.response_json, kept.entries


def whole(body: bytes, request: dict[str, Any] = REQUEST) -> Written | None:
    encoder, kept, reader = _encoder(request)
    judged = reader.judge_whole(body)
    if judged is None:
        return None
    return encoder.write_whole(judged), encoder.response_json, kept.entries


def by_searches(body: bytes) -> bool:
    """Whether the text lane reads the stream (rather than parsing each event)."""
    judged = provider_for(ProviderType.OPENAI).chat_stream(ChatRequest(request_to_canonical(REQUEST).canonical),
                                                           TARGET).judge_whole(body)
    return judged is not None and read_texts(judged) is not None


def event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, **members: Any) -> dict[str, Any]:
    return {**MEMBERS, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **members}


USAGE_CHUNK = {**MEMBERS, "choices": [], "usage": USAGE}
USAGE_CHUNK_BYTES = event(USAGE_CHUNK)


def stream(*chunks: dict[str, Any], usage: bool = True) -> bytes:
    return b"".join(event(c) for c in chunks) + (USAGE_CHUNK_BYTES if usage else b"") + DONE


def texts(*pieces: str, first: dict[str, Any] | None = None, finish: str = "stop", last: str | None = None,
          with_usage: bool = True, **members: Any) -> bytes:
    """OpenAI's text answer: the role (with an empty text) first, a delta per piece, the finish last."""
    head = [chunk(first if first is not None else {"role": "assistant", "content": "", "refusal": None}, **members)]
    middle = [chunk({"content": piece}, **members) for piece in pieces]
    tail = [chunk({} if last is None else {"content": last}, finish, **members)]
    return stream(*head, *middle, *tail, usage=with_usage)


BENCH = b"".join(event(chunk({"role": "assistant", "content": f"tok{i} "} if i == 0 else {"content": f"tok{i} "},
                             "stop" if i == 19 else None)) for i in range(20)) + USAGE_CHUNK_BYTES + DONE
"""What bench/_upstream.py streams: 20 content chunks, the last with the finish, a usage chunk."""

TEXT_ANSWERS = {
    "bench": BENCH,
    "openai": texts("Hel", "lo", ", ", "world", "!"),
    "usage null members": texts("a", "b", "c", usage=None),
    "empty deltas": texts("a", "", "b", "", "", "c"),
    "unicode": texts("é", "日本語", "🙂 ok", "\u2028", "ü"),
    "escapes": texts('say "hi"', "a\\b", "line\nnext", "tab\t", "\b\f\r", "/path/", "}]\n\ndata: {"),
    "only the role first": texts("Hi", " there", first={"role": "assistant"}),
    "text first": texts("b", "c", first={"role": "assistant", "content": "a"}),
    "text last": texts("b", "c", last="d"),
    "length": texts("Once", " upon", " a", finish="length", last=" time"),
    "content filter": texts("Some", " text", finish="content_filter"),
    "one event": stream(chunk({"role": "assistant", "content": "Hi"}, "stop")),
    "two events": stream(chunk({"role": "assistant", "content": "Hi"}), chunk({}, "stop")),
    "three events": stream(chunk({"role": "assistant"}), chunk({"content": "Hi"}), chunk({}, "stop")),
    "no text at all": texts(),
    "null contents": texts("a", finish="stop", first={"role": "assistant", "content": None}),
    "no role, no model": stream(*({k: v for k, v in c.items() if k != "model"} for c in (
        chunk({"content": "a"}), chunk({"content": "b"}), chunk({"content": "c"}), chunk({}, "stop")))),
    "many": texts(*(f"w{i} " for i in range(300))),
    "4,200 pieces": texts(*(f"{i}" for i in range(4200))),
    "a nested member": texts("a", "b", "c", x_meta={"k": "v"}),
}

EVENT_BY_EVENT = {
    "a refusal": stream(chunk({"role": "assistant", "content": None, "refusal": ""}), chunk({"refusal": "I"}),
                        chunk({"refusal": " cannot"}), chunk({}, "stop")),
    "tool calls": (GOLDEN / "stream_tools.sse").read_bytes(),
    "text then tool calls": stream(chunk({"role": "assistant", "content": "Let me look."}), chunk({"content": " Ok."}),
                                   chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {
                                       "name": "f", "arguments": ""}}]}),
                                   chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                                   chunk({}, "tool_calls")),
    "obfuscation": stream(chunk({"role": "assistant", "content": ""}), *(chunk({"content": t}, obfuscation=p) for t, p in (
        ("a", "xyz"), ("b", "q"), ("c", "wvu"))), chunk({}, "stop")),
    "a slash escaped": texts("a/b", "c/d", "e").replace(b"/", b"\\/"),
    "a slash escaped after the template": texts("a", "b/c", "d").replace(b"b/c", b"b\\/c"),
    "a text ending in a backslash": texts("a\\", "b\\", "c"),
    "logprobs": stream(chunk({"role": "assistant", "content": ""}), *(
        {**chunk({"content": t}), "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None,
                                               "logprobs": {"content": [{"token": t, "logprob": -0.1}]}}]}
        for t in ("a", "b", "c")), chunk({}, "stop")),
    "a second choice": stream(chunk({"role": "assistant", "content": ""}), chunk({"content": "a"}), {
        **chunk({"content": "b"}), "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": None},
                                               {"index": 1, "delta": {"content": "z"}, "finish_reason": None}]},
        chunk({"content": "c"}), chunk({}, "stop")),
    "a content member elsewhere": texts("a", "b", "c", x_meta={"content": "b"}),
    "written with spaces": texts("a", "b", "c").replace(b'{"content":', b'{"content": '),
    "one event of another shape": texts("a", "b").replace(b'"content":"b"}', b'"content":"b","refusal":null}'),
    "a reasoning delta between": stream(chunk({"role": "assistant", "content": ""}), chunk({"content": "a"}),
                                        chunk({"reasoning_content": "hmm"}), chunk({"content": "b"}),
                                        chunk({}, "stop")),
    "a refusal between": stream(chunk({"role": "assistant", "content": ""}), chunk({"content": "a"}),
                                chunk({"content": None, "refusal": "No"}), chunk({"content": "b"}),
                                chunk({}, "stop")),
    "a finish between": stream(chunk({"role": "assistant", "content": ""}), chunk({"content": "a"}, "length"),
                               chunk({"content": "b"}), chunk({}, "stop")),
}


def test_the_fixtures_are_what_they_say() -> None:
    encoder, _, reader = _encoder(REQUEST)
    a_chunk_at_a_time = b"".join(encoder.chunks([chunk]) for chunk in reader.feed(BENCH) + reader.close())
    assert a_chunk_at_a_time.count(b"event: response.output_text.delta\n") == 20
    assert b"refusal" in event_by_event(EVENT_BY_EVENT["a refusal"])[0]


@pytest.mark.parametrize("name", sorted(TEXT_ANSWERS))
def test_a_text_answer_is_read_by_searches_and_written_as_event_by_event(name: str) -> None:
    body = TEXT_ANSWERS[name]
    assert by_searches(body)
    written = whole(body)
    assert written is not None
    assert written == event_by_event(body)
    assert written[2] and written[2][0][1] == written[1]  # stored: the Response the last event carries


def judged(body: bytes) -> WholeStream:
    judged = provider_for(ProviderType.OPENAI).chat_stream(ChatRequest(request_to_canonical(REQUEST).canonical),
                                                           TARGET).judge_whole(body)
    assert judged is not None
    return judged


@pytest.mark.parametrize(("name", "role"), [("bench", "last"), ("one event", "first"), ("two events", "last")])
def test_the_finish_event_the_judge_parsed_is_not_parsed_again(name: str, role: str) -> None:
    whole_stream = judged(TEXT_ANSWERS[name])
    read = read_texts(whole_stream)
    assert read is not None and whole_stream.finish is not None
    assert getattr(read, role) is whole_stream.finish


def test_a_finish_before_the_last_event_is_read_from_the_last_event_itself() -> None:
    def unfinished(text: str) -> dict[str, Any]:  # no finish_reason member: the first event's finish stays the last
        return {**MEMBERS, "choices": [{"index": 0, "delta": {"content": text}}]}

    whole_stream = judged(stream(chunk({"role": "assistant", "content": "a"}, "stop"), *map(unfinished, "bcd")))
    read = read_texts(whole_stream)
    assert read is not None and read.first is whole_stream.finish
    assert read.last == unfinished("d") and read.last is not whole_stream.finish


@pytest.mark.parametrize("name", ["bench", "openai", "text first", "text last", "length", "one event", "unicode"])
def test_a_text_answer_of_text_chunks_only_is_written_without_reading_any_chunk(name: str) -> None:
    body = TEXT_ANSWERS[name]
    expected = event_by_event(body)

    def no_chunks(*_: Any) -> bytes:
        raise AssertionError("a chunk was read")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ResponsesStreamEncoder, "encode_chunks", no_chunks)
        assert whole(body) == expected


def test_a_text_answer_without_usage_is_parsed_event_by_event_for_its_chunks_to_estimate_it() -> None:
    body = texts("Hel", "lo", "!", with_usage=False)
    assert not by_searches(body)
    assert whole(body) is None
    written, response, _ = event_by_event(body)
    assert b'"delta":"Hello!"' in written and response is not None and orjson.loads(response)["status"] == "completed"


@pytest.mark.parametrize("name", sorted(EVENT_BY_EVENT))
def test_any_other_whole_stream_is_parsed_event_by_event_and_written_alike(name: str) -> None:
    body = EVENT_BY_EVENT[name]
    assert not by_searches(body)
    written = whole(body)
    assert written is not None
    assert written == event_by_event(body)


def test_what_the_client_reads_of_a_text_answer() -> None:
    written = whole(TEXT_ANSWERS["escapes"])
    assert written is not None
    events = [orjson.loads(block.split(b"\ndata: ")[1]) for block in written[0].split(b"\n\n")[:-1]]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == (
        'say "hi"a\\bline\nnexttab\t\b\f\r/path/}]\n\ndata: {')
    response = events[-1]["response"]
    assert (events[-1]["type"], response["usage"]["input_tokens"], response["usage"]["output_tokens"]) == (
        "response.completed", 7, 3)


ONE_TEXT_ANSWER = ["response.created", "response.in_progress", "response.output_item.added",
                   "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                   "response.content_part.done", "response.output_item.done", "response.completed"]


@pytest.mark.parametrize("name", ["bench", "openai", "text first", "text last", "many", "unicode"])
def test_the_text_of_an_answer_that_arrived_whole_is_one_delta(name: str) -> None:
    """Its texts reach the client in one write: one delta carries them, as the final text."""
    written = whole(TEXT_ANSWERS[name])
    assert written is not None
    events = [orjson.loads(block.split(b"\ndata: ")[1]) for block in written[0].split(b"\n\n")[:-1]]
    assert [e["type"] for e in events] == ONE_TEXT_ANSWER
    assert [e["sequence_number"] for e in events] == list(range(len(ONE_TEXT_ANSWER)))
    text = events[-1]["response"]["output"][0]["content"][0]["text"]
    assert events[4]["delta"] == events[5]["text"] == events[6]["part"]["text"] == text
    assert written[2][0][2][-1]["content"][0]["text"] == text  # stored as sent


def test_a_length_finish_ends_the_response_incomplete() -> None:
    written = whole(TEXT_ANSWERS["length"])
    assert written is not None and written[1] is not None
    response = orjson.loads(written[1])
    assert (response["status"], response["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert response["output"][0]["content"][0]["text"] == "Once upon a time"


@pytest.mark.parametrize("broken", [b'data: {"id":"chatcmpl-1",,"choices":[{"index":0,"delta":{"content":"x"},'
                                    b'"finish_reason":null}]}\n\n',
                                    b'data: {"choices":[{"index":0,"delta":{"content":"\xff"},'
                                    b'"finish_reason":null}]}\n\n'], ids=["bad JSON", "bad UTF-8"])
def test_an_event_between_that_is_not_json_fails_the_attempt_before_anything_is_written(broken: bytes) -> None:
    good = texts("a", "b", "c")
    at = good.rfind(b"\n\ndata: ", 0, good.index(b'"content":"b"')) + 2
    body = good[:at] + broken + good[at:]
    encoder, kept, reader = _encoder(REQUEST)
    judged = reader.judge_whole(body)
    assert judged is not None  # the judge does not parse the events between
    with pytest.raises(UpstreamError):
        encoder.write_whole(judged)
    with pytest.raises(UpstreamError):
        event_by_event(body)
    assert encoder.response_json is None and not kept.entries
    # the next attempt's stream is written on a clean slate
    encoder_module.new_id = _counter()  # type: ignore[assignment]
    again = provider_for(ProviderType.OPENAI).chat_stream(ChatRequest(request_to_canonical(REQUEST).canonical),
                                                           TARGET).judge_whole(good)
    assert again is not None
    first_event = encoder.write_whole(again).split(b"\n\n")[0]
    assert b'"sequence_number":0,' in first_event


def test_two_broken_events_that_read_as_two_strings_together_still_fail_the_attempt() -> None:
    """A text ending in a lone backslash escapes the quote that should end it; a next text starting with
    `,"` opens a string again: joined, the two read as two strings, yet neither event is JSON."""
    body = texts("a", "b", "c", "d")
    body = body.replace(b'"content":"b"', b'"content":"b\\"').replace(b'"content":"c"', b'"content":","c"')
    assert b'"content":"b\\"}' in body and b'"content":","c"}' in body
    encoder, _, reader = _encoder(REQUEST)
    judged = reader.judge_whole(body)
    assert judged is not None
    with pytest.raises(UpstreamError):
        encoder.write_whole(judged)
    with pytest.raises(UpstreamError):
        event_by_event(body)


def test_a_stream_with_unicode_escapes_is_not_judged_whole() -> None:
    assert whole(texts("\u00e9").replace("é".encode(), b"\\u00e9")) is None


# --- any text answer near the common shape ---------------------------------------------------------

pieces = st.one_of(st.sampled_from(["", "\\", '"', "/", "\n", "é", "🙂", '"},"logprobs":null', "}\n\ndata: {",
                                    "\u2028", "\x7f", "\x01"]), st.text(max_size=6))
oddities = st.sampled_from([None, None, None, {"role": "assistant"}, {"content": None}, {"refusal": None},
                            {"x": 1}, {"reasoning_content": "r"}, {"refusal": "no"}])


@FUZZ
@given(st.lists(pieces, max_size=8), st.sampled_from([None, {"role": "assistant", "content": ""},
                                                       {"role": "assistant"}, {"role": "assistant", "content": "A"}]),
       st.one_of(st.none(), pieces), st.sampled_from(["stop", "length", "content_filter"]), st.booleans(),
       st.sampled_from([{}, {"usage": None}, {"service_tier": "default", "system_fingerprint": None}]),
       st.tuples(st.integers(0, 8), oddities), st.sampled_from(["orjson", "json"]))
def test_whatever_is_written_whole_is_what_reading_event_by_event_writes(
        middle: list[str], first: dict[str, Any] | None, last: str | None, finish: str, usage: bool,
        members: dict[str, Any], oddity: tuple[int, dict[str, Any] | None], writer: str) -> None:
    chunks = ([chunk(first, **members)] if first is not None else []) + [
        chunk({"content": piece}, **members) for piece in middle]
    at, odd = oddity
    if odd is not None:
        chunks.insert(at % (len(chunks) + 1), chunk(odd, **members))
    chunks.append(chunk({} if last is None else {"content": last}, finish, **members))
    encode = orjson.dumps if writer == "orjson" else lambda c: json.dumps(c, ensure_ascii=False,
                                                                          separators=(",", ":")).encode()
    body = b"".join(b"data: " + encode(c) + b"\n\n" for c in chunks) + (USAGE_CHUNK_BYTES if usage else b"") + DONE
    written = whole(body)
    if written is None:
        return  # not judged whole (`\u` escapes, a text that is a key's name): the judge's tests say why
    assert written == event_by_event(body)
    plain = all(piece.isprintable() and "\\" not in piece and "/" not in piece for piece in middle)
    if odd is None and plain and len(chunks) > 2 and first is not None:
        assert by_searches(body)
