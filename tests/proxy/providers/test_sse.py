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


def line_parsed(chunk: bytes) -> list[tuple[str | None, bytes]]:
    """What the line parser alone makes of `chunk`: fed a byte at a time, no piece is whole events."""
    return parse([chunk[i:i + 1] for i in range(len(chunk))])


@pytest.mark.parametrize("chunk", [
    b'event: a\ndata: {"x":1}\n\nevent: b\ndata: {"y":2}\n\n',  # the shortcut's own case
    b'event: a\ndata: {"x":1}\n\n',
    b'event: a\ndata: {"x":1}\n\ndata: {"y":2}\n\n',  # an unnamed event among them
    b'event: a\ndata: one\ndata: two\n\n',  # two data lines
    b'event: a\nid: 7\ndata: {}\n\n',  # another field
    b'event: a\n\ndata: {}\n\n',  # a name alone, then a data event
    b'event: a\ndata: {}\n\n: comment\n\n',
    b'event: a\ndata: {}\r\n\r\n',
    b'event: a\ndata:{}\n\n',  # no space after data:
    b'event: a\ndata: {"text":"event: b\\ndata: x"}\n\n',  # what looks like framing, escaped in JSON
])
def test_whole_named_events_read_at_once_are_what_the_line_parser_reads(chunk: bytes) -> None:
    parser = SSEParser()
    assert parser.feed(chunk) + parser.close() == line_parsed(chunk)
