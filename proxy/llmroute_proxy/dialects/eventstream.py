"""AWS event-stream framing (`application/vnd.amazon.eventstream`), both ways: Bedrock's streamed
answers arrive in it instead of SSE (providers.md §4.2).

A frame is a 12-byte prelude (total length, headers length, the prelude's CRC32, all big-endian),
its headers, its payload and the CRC32 of everything before it. A header is a name (1-byte length),
a value type and the value; Bedrock sends strings (type 7, 2-byte length). Frames arrive split at any
byte, so the decoder buffers until one is whole. A CRC that does not match, or a length no frame can
have, is a broken stream: nothing after it can be trusted to be where the lengths say.

The encoder is the simulator's (`sim/bedrock.py`): simulators know nothing of the sidecar.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from llmroute_proxy.errors import FailureKind, UpstreamError

_PRELUDE = struct.Struct(">III")
_PRELUDE_LEN = _PRELUDE.size
_CRC_LEN = 4
_MIN_FRAME = _PRELUDE_LEN + _CRC_LEN
MAX_FRAME = 16 * 1024 * 1024
"""The longest frame the format allows (AWS's own limit); a longer length is a corrupt prelude."""
_STRING = 7
_VALUE_LEN = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
"""Header value types of fixed length (bool true/false, byte, short, int, long, timestamp, uuid);
byte arrays (6) and strings (7) carry a 2-byte length."""


@dataclass(frozen=True, slots=True)
class Frame:
    headers: Mapping[str, str]
    """The string headers (`:message-type`, `:event-type`, `:exception-type`, `:content-type`)."""
    payload: bytes


def _broken(why: str) -> UpstreamError:
    return UpstreamError(FailureKind.STREAM_BROKEN, f"Bedrock sent a broken event stream: {why}.")


class EventStreamDecoder:
    """Bytes as they arrive → whole frames; `close` says whether the body ended mid-frame."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        while len(buffer) >= _PRELUDE_LEN:
            total, headers_len, prelude_crc = _PRELUDE.unpack_from(buffer)
            if zlib.crc32(buffer[:8]) != prelude_crc:
                raise _broken("a frame's prelude fails its CRC")
            if total < _MIN_FRAME + headers_len or total > MAX_FRAME:
                raise _broken(f"a frame says it is {total} bytes long with {headers_len} bytes of headers")
            if len(buffer) < total:
                break
            frame = bytes(buffer[:total])
            del buffer[:total]
            if zlib.crc32(frame[:-_CRC_LEN]) != int.from_bytes(frame[-_CRC_LEN:], "big"):
                raise _broken("a frame fails its message CRC")
            end = _PRELUDE_LEN + headers_len
            frames.append(Frame(_headers(frame[_PRELUDE_LEN:end]), frame[end:-_CRC_LEN]))
        return frames

    def close(self) -> None:
        if self._buffer:
            raise _broken(f"it ended inside a frame ({len(self._buffer)} bytes of it)")


def _headers(data: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    at = 0
    try:
        while at < len(data):
            name_len = data[at]
            name = data[at + 1:at + 1 + name_len].decode()
            at += 1 + name_len
            value_type = data[at]
            at += 1
            if value_type in (_STRING, 6):
                value_len = int.from_bytes(data[at:at + 2], "big")
                value = data[at + 2:at + 2 + value_len]
                at += 2 + value_len
                if value_type == _STRING:
                    headers[name] = value.decode()
            elif value_type in _VALUE_LEN:
                at += _VALUE_LEN[value_type]
            else:
                raise _broken(f"header {name!r} has unknown value type {value_type}")
    except (IndexError, UnicodeDecodeError):
        raise _broken("a frame's headers cannot be read") from None
    if at != len(data):
        raise _broken("a frame's headers overrun their length")
    return headers

