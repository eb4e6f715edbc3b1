"""The SSE parser: every split of the same bytes gives the same events; one-event reads take a shortcut."""

from __future__ import annotations

import pytest

from llmroute_proxy.dialects.sse import SSEParser

STREAM = (b"data: {\"a\":1}\n\n"
          b"event: message_start\ndata: {\"b\":2}\n\n"
          b": keep-alive comment\n\n"
          b"data: line one\ndata: line two\n\n"
          b"data:{\"c\":3}\r\n\r\n"
          b"data: [DONE]\n\n")
EXPECTED = [(None, b'{"a":1}'), ("message_start", b'{"b":2}'), (None, b"line one\nline two"),
            (None, b'{"c":3}'), (None, b"[DONE]")]


def parse(pieces: list[bytes]) -> list[tuple[str | None, bytes]]:
    parser = SSEParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.close()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, len(STREAM)])
def test_any_split_gives_the_same_events(size: int) -> None:
    assert parse([STREAM[i:i + size] for i in range(0, len(STREAM), size)]) == EXPECTED


@pytest.mark.parametrize(("chunk", "payload"), [
    (b'data: {"a":1}\n\n', b'{"a":1}'),
    (b'data:{"a":1}\n\n', b'{"a":1}'),
    (b"data: [DONE]\n\n", b"[DONE]"),
])
def test_one_whole_data_event_is_read_without_the_line_parser(chunk: bytes, payload: bytes) -> None:
    assert SSEParser().single_data(chunk) == payload


@pytest.mark.parametrize("chunk", [
    b'data: {"a":1}\n\ndata: {"b":2}\n\n',  # two events
    b"event: x\ndata: {}\n\n",  # a named event
    b'data: {"a":1}\r\n\r\n',  # CRLF
    b'data: {"a":1}\n',  # not finished
    b": comment\n\n",
])
def test_anything_else_is_left_to_the_line_parser(chunk: bytes) -> None:
    assert SSEParser().single_data(chunk) is None


def test_no_shortcut_while_an_event_is_half_read() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.single_data(b'data: {"b":2}\n\n') is None
