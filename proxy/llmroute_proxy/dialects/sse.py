"""Incremental Server-Sent Events parsing: bytes in any split → (event, data) pairs.

Accepts LF, CRLF and CR line ends (Gemini sends CRLF). Comment lines and `id`/`retry`
fields are ignored; multi-line `data` fields are joined with LF as the spec says.

Bytes are searched with `find`/`count`, never `b"x" in data`: `bytes.__contains__` first tries
its argument as an integer, and that failed attempt raises and clears a TypeError (~2,000
instructions) on every test.
"""

from __future__ import annotations


class SSEParser:
    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: bytes | None = None
        self._data: list[bytes] = []

    def idle(self) -> bool:
        """Whether nothing is buffered: no event has begun."""
        return not self._buffer and not self._data and self._event is None

    def single_data(self, chunk: bytes) -> bytes | None:
        """The payload when `chunk` is exactly one whole one-line `data:` event and nothing is
        buffered: a token's arrival in a live stream, the hottest case. None otherwise."""
        if (self._buffer or self._data or self._event is not None or not chunk.startswith(b"data:")
                or chunk.find(b"\n") != len(chunk) - 2 or not chunk.endswith(b"\n\n") or chunk.find(b"\r") >= 0):
            return None
        return chunk[6:-2] if chunk[5:6] == b" " else chunk[5:-2]

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Return every event completed by `chunk`: (event name or None, data bytes)."""
        if not self._buffer and not self._data and self._event is None and chunk.endswith(b"\n\n"):
            fast = _whole_named_events(chunk) if chunk.startswith(b"event: ") else _whole_data_events(chunk)
            if fast is not None:
                return fast
        buffer = self._buffer + chunk if self._buffer else chunk
        if buffer.find(b"\r") >= 0:
            # a lone CR at the end might be the first half of CRLF: keep it for the next chunk
            keep_cr = buffer.endswith(b"\r")
            if keep_cr:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buffer += b"\r"
        events: list[tuple[str | None, bytes]] = []
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._line(buffer[start:end], events)
            start = end + 1
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[tuple[str | None, bytes]]:
        """End of body: a last event not followed by a blank line still counts."""
        events: list[tuple[str | None, bytes]] = []
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r"), events)
            self._buffer = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[tuple[str | None, bytes]]) -> None:
        if not line:
            if self._data:
                # an upstream may send any bytes: a name that is not UTF-8 must not end the stream
                event = self._event.decode(errors="replace") if self._event is not None else None
                events.append((event, b"\n".join(self._data)))
            self._data = []
            self._event = None
            return
        if line[0] == 58:  # ":" comment
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value


def _whole_data_events(chunk: bytes) -> list[tuple[str | None, bytes]] | None:
    """The common case on the hot path: whole events of one `data: ` line each, LF-separated
    (a whole stream that arrived in one read, or a burst of tokens).

    Checked with three C-speed counts instead of a test per block. Returns None when the chunk
    is anything else (CR, comments, named or multi-line events, `data:` without its space), which
    the line parser then handles.
    """
    if chunk.find(b"\r") >= 0 or not chunk.startswith(b"data: "):
        return None
    blocks = chunk[:-2].split(b"\n\n")
    # every LF is one of the blocks' separators and every block starts with "data: "
    if chunk.count(b"\n") != 2 * len(blocks) or chunk.count(b"\n\ndata: ") != len(blocks) - 1:
        return None
    return [(None, block[6:]) for block in blocks]


def _whole_named_events(chunk: bytes) -> list[tuple[str | None, bytes]] | None:
    """The same for whole events of an `event: ` line and one `data: ` line each, as OpenAI's
    Responses API and Anthropic send them. None for anything else."""
    if chunk.find(b"\r") >= 0:
        return None
    blocks = chunk[:-2].split(b"\n\n")
    # each block has exactly one LF of its own, and it starts the data line
    if (chunk.count(b"\n") != 3 * len(blocks) or chunk.count(b"\n\nevent: ") != len(blocks) - 1
            or chunk.count(b"\ndata: ") != len(blocks)):
        return None
    events: list[tuple[str | None, bytes]] = []
    for block in blocks:
        end = block.find(b"\n")
        events.append((block[7:end].decode(errors="replace"), block[end + 7:]))
    return events


def event_bytes(name: str | None, data: bytes) -> bytes:
    """One event framed again as SSE (`event:` when it has a name), for a client of the upstream's own
    dialect: a relay re-frames what the parser split, byte for byte for the one-line events APIs send."""
    if data.find(b"\n") >= 0:
        data = data.replace(b"\n", b"\ndata: ")
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + data + b"\n\n"
