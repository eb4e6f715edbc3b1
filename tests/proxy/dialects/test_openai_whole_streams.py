"""An OpenAI stream that arrived whole is judged by byte searches (`judge_whole`) and forwarded as the
upstream wrote it: it must say and write exactly what reading it event by event says and writes, or
decline and leave it to that reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute_proxy.dialects.base import ChatRequest, Usage, in_choice_order
from llmroute_proxy.dialects.openai.encoder import OpenAIEncoder
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.guarded import GuardedStream
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.table import ProviderType, Target, TargetId
from tests.proxy.fuzz.strategies import FUZZ

GOLDEN = Path(__file__).parents[1] / "providers" / "golden" / "openai"
TARGET = Target(id=TargetId("p/m@us"), provider="p", provider_type=ProviderType.OPENAI, model="m",
                url="https://api.openai.com/v1", region="us")
KINDS = [ProviderType.OPENAI, ProviderType.OPENAI_COMPATIBLE]
Read = tuple[bytes, Usage | None, str | None, tuple[str, ...]]
"""What a stream was written as, its usage, its last finish reason and every choice's, in choice order."""


def request(include_usage: bool) -> ChatRequest:
    body: dict[str, Any] = {"model": "m", "messages": [], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return ChatRequest(body)


def translator(kind: ProviderType, chat: ChatRequest) -> GuardedStream:
    made = provider_for(kind).chat_stream(chat, TARGET)
    assert isinstance(made, GuardedStream)
    return made


def event_by_event(kind: ProviderType, body: bytes, include_usage: bool = True) -> Read:
    chat = request(include_usage)
    reader, encoder = translator(kind, chat), OpenAIEncoder(chat)
    chunks = reader.feed(body) + reader.close()
    return (encoder.chunks(chunks) + encoder.end(reader.usage), reader.usage, reader.finish_reason,
            in_choice_order(reader.finish_reasons))


def whole(kind: ProviderType, body: bytes, include_usage: bool = True) -> Read | None:
    chat = request(include_usage)
    reader, encoder = translator(kind, chat), OpenAIEncoder(chat)
    judged = reader.judge_whole(body)
    if judged is None:
        return None
    return encoder.write_whole(judged), reader.usage, reader.finish_reason, in_choice_order(reader.finish_reasons)


def event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
USAGE_CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
               "usage": USAGE}
DONE = b"data: [DONE]\n\n"
PLAIN = event(chunk("Hel")) + event(chunk("lo")) + event(chunk(finish="stop")) + event(USAGE_CHUNK) + DONE


def stream(*chunks: dict[str, Any], done: bool = True) -> bytes:
    return b"".join(event(c) for c in chunks) + (DONE if done else b"")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("name", ["stream_text.sse", "stream_tools.sse", "plain"])
def test_a_common_whole_stream_is_vouched_for_and_written_as_event_by_event(kind: ProviderType, include_usage: bool,
                                                                            name: str) -> None:
    body = PLAIN if name == "plain" else (GOLDEN / name).read_bytes()
    judged = whole(kind, body, include_usage)
    assert judged is not None
    assert judged == event_by_event(kind, body, include_usage)


def test_the_upstreams_bytes_are_forwarded_as_they_are() -> None:
    judged = whole(ProviderType.OPENAI, PLAIN)
    assert judged == (PLAIN, Usage(input_tokens=7, output_tokens=3), "stop", ("stop",))


def test_a_client_that_did_not_ask_for_usage_gets_no_usage_chunk_but_the_usage_is_recorded() -> None:
    judged = whole(ProviderType.OPENAI, PLAIN, include_usage=False)
    assert judged is not None
    written, usage, *_ = judged
    assert written == PLAIN.replace(event(USAGE_CHUNK), b"")
    assert usage == Usage(input_tokens=7, output_tokens=3)


def test_a_stream_whose_usage_sits_on_a_choice_chunk_is_read_event_by_event_which_moves_it() -> None:
    body = stream(chunk("Hi"), chunk(finish="length", usage=USAGE))
    assert whole(ProviderType.OPENAI_COMPATIBLE, body) is None
    written, usage, finish, _ = event_by_event(ProviderType.OPENAI_COMPATIBLE, body)
    assert written.endswith(event(USAGE_CHUNK | {"id": "chatcmpl-1"}) + DONE)
    assert (usage, finish) == (Usage(input_tokens=7, output_tokens=3), "length")


@pytest.mark.parametrize("body", [
    stream(chunk("Hi"), {"error": {"message": "overloaded", "type": "server_error"}}, chunk(finish="stop")),
    stream(chunk("Hi"), chunk(finish="stop")).replace(b"data: [DONE]", b'event: error\ndata: {"message":"x"}\n\n'
                                                                        b"data: [DONE]"),
], ids=["error object", "error event"])
def test_an_in_band_error_in_a_whole_stream_is_never_vouched_for(body: bytes) -> None:
    assert whole(ProviderType.OPENAI, body) is None
    with pytest.raises(UpstreamError):
        event_by_event(ProviderType.OPENAI, body)


@pytest.mark.parametrize("kind", KINDS)
def test_a_whole_stream_without_done_is_never_vouched_for(kind: ProviderType) -> None:
    body = stream(chunk("Hi"), chunk(finish="stop"), USAGE_CHUNK, done=False)
    assert whole(kind, body) is None


def test_a_stream_without_done_stays_broken_for_openai() -> None:
    with pytest.raises(UpstreamError) as raised:
        event_by_event(ProviderType.OPENAI, stream(chunk("Hi"), chunk(finish="stop"), done=False))
    assert raised.value.kind is FailureKind.STREAM_BROKEN


@pytest.mark.parametrize("content", ['he said "error": nothing', '{"error": {"message": "x"}}', 'error":', "\\"])
def test_content_that_looks_like_an_error_key_is_content(content: str) -> None:
    body = stream(chunk(content), chunk(finish="stop"), USAGE_CHUNK)
    judged = whole(ProviderType.OPENAI, body)
    assert judged is not None
    assert judged == event_by_event(ProviderType.OPENAI, body)
    assert judged[0] == body


def test_content_that_is_the_word_error_alone_is_read_event_by_event_as_content() -> None:
    body = stream(chunk("error"), chunk(finish="stop"), USAGE_CHUNK)
    assert whole(ProviderType.OPENAI, body) is None
    assert event_by_event(ProviderType.OPENAI, body)[0] == body


@pytest.mark.parametrize("body", [
    stream(chunk("Hi", error=None), chunk(finish="stop"), USAGE_CHUNK).replace(b'"error":null',
                                                                                b'"\\u0065rror":{"message":"x"}'),
    stream({"choices": [], "prompt_filter_results": []}, chunk("Hi"), chunk(finish="stop"), USAGE_CHUNK),
    stream(chunk("Hi"), chunk(finish="stop"), USAGE_CHUNK).replace(b"\n", b"\r\n"),
    stream(chunk("Hi"), chunk(finish="stop")).replace(b"data: [DONE]", b": ping\n\ndata: [DONE]"),
    stream(chunk("Hi"), chunk(finish="stop"), {**USAGE_CHUNK, "usage": None}),
    stream(chunk("Hi"), chunk(finish="stop"), USAGE_CHUNK, {**USAGE_CHUNK, "usage": {"prompt_tokens": 1}}),
    stream(chunk("Hi", usage=USAGE), chunk(finish="stop"), USAGE_CHUNK),
    stream(chunk("Hi")),
    stream(chunk("Hi"), chunk(finish="stop")).replace(b"data: [DONE]\n\n", b"data: [DONE]\n\n" + event(chunk("x"))),
    json.dumps(chunk("Hi", finish="stop")).encode(),
    stream(chunk("Hi"), chunk(finish="stop"), {"choices": [{"index": 0, "delta": {}, "finish_reason": 5}]},
           USAGE_CHUNK),
    stream(chunk("Hi"), chunk(finish="stop")).replace(b"data: [DONE]", b'data: {"choices":[{"index":0,"delta":{},'
                                                                        b'"finish_reason": "length"}]}\n\ndata: [DONE]'),
    stream(chunk("Hi"), {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
                         "error": {"message": "overloaded"}}, chunk(finish="stop"), USAGE_CHUNK),
    event(chunk("Hi")) + b'event: error\ndata: {"message":"x"}\n\n' + stream(chunk(finish="stop"), USAGE_CHUNK),
    event(chunk("Hi"))[:-2] + b"\revent: error\rdata: {}\n\n" + stream(chunk(finish="stop"), USAGE_CHUNK),
], ids=["an error key written with an escape", "empty choices", "crlf", "comment", "null usage last", "two usage chunks",
        "usage on a choice chunk", "no finish", "after done", "json document", "a later finish that is no string",
        "a later finish with a space", "an error beside choices", "a named error event", "a named event after a CR"])
def test_what_the_searches_cannot_vouch_for_is_read_event_by_event(body: bytes) -> None:
    assert whole(ProviderType.OPENAI_COMPATIBLE, body) is None


def test_of_two_finish_reasons_the_last_is_recorded_as_event_by_event() -> None:
    body = stream(chunk("Hi", finish="stop"), chunk(finish="length"), USAGE_CHUNK)
    judged = whole(ProviderType.OPENAI, body)
    assert judged is not None and judged[2] == "length"
    assert judged == event_by_event(ProviderType.OPENAI, body)


def choice(index: int, content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    """A chunk of a stream of several choices (`n`): one choice's content or finish."""
    made = chunk(content, finish)
    made["choices"][0]["index"] = index
    return made


BOTH_FINISH = {**chunk(), "choices": [*choice(0, finish="stop")["choices"], *choice(1, finish="length")["choices"]]}


@pytest.mark.parametrize("finishes", [
    [choice(0, finish="stop"), choice(1, finish="length")],
    [choice(1, finish="length"), choice(0, finish="stop")],
    [BOTH_FINISH],
], ids=["in order", "the second first", "in one chunk"])
def test_every_choices_finish_is_recorded_in_choice_order_as_event_by_event(finishes: list[dict[str, Any]]) -> None:
    body = stream(choice(0, "Hi"), choice(1, "Hello"), *finishes, USAGE_CHUNK)
    judged = whole(ProviderType.OPENAI, body)
    assert judged is not None and judged[3] == ("stop", "length")
    assert judged == event_by_event(ProviderType.OPENAI, body)


def test_a_translator_that_has_begun_reading_vouches_for_nothing() -> None:
    reader = translator(ProviderType.OPENAI, request(True))
    reader.feed(event(chunk("Hi")))
    assert reader.judge_whole(PLAIN) is None


def test_azure_streams_are_read_event_by_event_which_drops_their_annotations() -> None:
    reader = provider_for(ProviderType.AZURE_OPENAI).chat_stream(request(True), TARGET)
    assert reader.judge_whole(PLAIN) is None


def test_a_compatible_servers_tool_calls_are_read_event_by_event_which_numbers_them() -> None:
    """Gemini's OpenAI endpoint sends each call whole without its `index` and finishes with `stop`: forwarded
    as they came, the calls would reach the client unnumbered (openai/openai-python#2806)."""
    calls = [{"role": "assistant", "tool_calls": [{"id": f"call_{name}", "type": "function",
                                                   "function": {"name": name, "arguments": "{}"}}]}
             for name in ("a", "b")]
    body = stream(*({**chunk(), "choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in calls),
                  chunk(finish="stop"), USAGE_CHUNK)
    assert whole(ProviderType.OPENAI_COMPATIBLE, body) is None
    written, _, finish, _ = event_by_event(ProviderType.OPENAI_COMPATIBLE, body)
    events = [json.loads(line[6:]) for line in written.split(b"\n\n") if line.startswith(b"data: {")]
    numbered = [(call["index"], call["id"]) for e in events for choice in e["choices"]
                for call in choice["delta"].get("tool_calls") or ()]
    assert numbered == [(0, "call_a"), (1, "call_b")] and finish == "tool_calls"


# --- any stream near the common shape -------------------------------------------------------------

texts = st.one_of(st.sampled_from(["", "error", '"error":', "usage", '"usage":{', "finish_reason", "é", "\\",
                                   "choices", "\n", "[DONE]", '"choices":[{']), st.text(max_size=8))
odd_chunks = st.sampled_from([USAGE_CHUNK, {"error": {"message": "x"}}, chunk("x", error={"message": "x"}),
                              chunk("x", error=None), {"choices": []},
                              {"choices": None}, {**USAGE_CHUNK, "usage": None}, chunk(finish="stop"),
                              {"choices": [{"index": 0, "finish_reason": 5}]}, chunk("x", usage=USAGE),
                              chunk("x", usage=None), [1], {"choices": [1]}])
odd_lines = st.sampled_from([b": ping\n\n", b'event: error\ndata: {"message":"x"}\n\n', b"event: error\n",
                             b"data: [DONE]\n\n", b"\n", b"data: {}\n", b'data: {"choices":[{"index":0}]}\n\n',
                             b"data: {\n\n", b"\r\n"])


KEYS = {"error", "usage", "choices", "finish_reason"}
"""Content that is exactly one of the keys searched for is a string token like the key: not vouched for."""


def write(chunks: list[Any], writer: str) -> list[bytes]:
    if writer == "orjson":
        return [event(c) for c in chunks]
    return [b"data: " + json.dumps(c, ensure_ascii=writer == "ascii",
                                   separators=None if writer == "spaced" else (",", ":")).encode() + b"\n\n"
            for c in chunks]


@FUZZ
@given(st.lists(texts, max_size=5), st.sampled_from(["stop", "length", "tool_calls"]), st.booleans(),
       st.lists(st.tuples(st.integers(0, 8), st.one_of(odd_chunks, odd_lines)), max_size=2),
       st.sampled_from(["orjson", "orjson", "spaced", "ascii"]), st.booleans(), st.booleans(), st.sampled_from(KINDS))
def test_whatever_is_vouched_for_is_what_reading_event_by_event_gives(
        contents: list[str], finish: str, with_usage: bool, oddities: list[tuple[int, Any]], writer: str,
        done: bool, include_usage: bool, kind: ProviderType) -> None:
    chunks: list[Any] = [chunk(text, usage=None) if i % 2 else chunk(text) for i, text in enumerate(contents)]
    chunks += [chunk(finish=finish)] + ([USAGE_CHUNK] if with_usage else [])
    events = write(chunks, writer)
    for at, oddity in oddities:
        events.insert(at % (len(events) + 1), oddity if isinstance(oddity, bytes) else write([oddity], writer)[0])
    body = b"".join(events) + (DONE if done else b"")
    judged = whole(kind, body, include_usage)
    if not oddities and done and writer == "orjson" and body.find(b"\\u") < 0 and not KEYS.intersection(contents):
        assert judged is not None  # the common shape is vouched for
    if judged is not None:
        assert judged == event_by_event(kind, body, include_usage)


def test_a_judged_stream_carries_the_usage_its_translator_read() -> None:
    reader = translator(ProviderType.OPENAI, request(True))
    judged = reader.judge_whole(PLAIN)
    assert judged is not None
    assert judged.usage == reader.usage == Usage(input_tokens=7, output_tokens=3)


def test_a_stream_without_usage_is_read_event_by_event_for_its_chunks_to_estimate_it() -> None:
    """A server that sends no usage chunk: the sidecar estimates the answer from the chunks `feed` gives,
    which a judged stream would not hand on."""
    body = stream(chunk("Hi"), chunk(finish="stop"))
    reader = translator(ProviderType.OPENAI, request(True))
    assert reader.judge_whole(body) is None
    assert reader.usage is None and reader.finish_reason is None
    chunks = reader.feed(body) + reader.close()
    assert [c.data["choices"][0]["delta"].get("content") for c in chunks] == ["Hi", None]
    assert (reader.usage, reader.finish_reason) == (None, "stop")


@pytest.mark.parametrize("kind", KINDS)
def test_a_whole_stream_reports_the_tier_its_usage_chunk_names_as_event_by_event_reading_does(
        kind: ProviderType) -> None:
    body = (event(chunk("Hi", service_tier="flex")) + event(chunk(finish="stop", service_tier="flex"))
            + event({**USAGE_CHUNK, "service_tier": "flex"}) + DONE)
    judged = whole(kind, body)
    assert judged is not None
    assert judged[1] == event_by_event(kind, body)[1] == Usage(input_tokens=7, output_tokens=3, service_tier="flex")
