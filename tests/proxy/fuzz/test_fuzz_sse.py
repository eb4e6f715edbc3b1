"""Fuzz: the SSE parser gives the same events however the bytes are split, for any bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmroute_proxy.dialects.sse import SSEParser
from tests.proxy.fuzz.strategies import FUZZ, splits

sse_lines = st.lists(st.one_of(
    st.sampled_from([b"data: x", b"data:y", b"data: {\"a\":1}", b"event: e", b"event:", b": comment", b"id: 1",
                     b"retry: 5", b"", b"data", b"\xff\xfe", b"event: \xff"]),
    st.binary(max_size=10)), max_size=12)
line_ends = st.sampled_from([b"\n", b"\r\n", b"\r"])


@FUZZ
@given(st.data())
def test_sse_events_do_not_depend_on_how_the_bytes_are_split(data: st.DataObject) -> None:
    end = data.draw(line_ends)
    wire = b"".join(line + end for line in data.draw(sse_lines))
    pieces = data.draw(splits(wire))
    whole_parser, split_parser = SSEParser(), SSEParser()
    whole = whole_parser.feed(wire) + whole_parser.close()
    split = [event for piece in pieces for event in split_parser.feed(piece)] + split_parser.close()
    assert split == whole
    assert all(isinstance(name, str | None) and isinstance(payload, bytes) for name, payload in whole)


def test_an_event_name_that_is_not_utf8_is_kept_not_fatal() -> None:
    """Found by the fuzzer: `event: \\xff` raised UnicodeDecodeError out of the stream translators."""
    parser = SSEParser()
    assert parser.feed(b"event: \xff\ndata: x\n\n") == [("\ufffd", b"x")]
