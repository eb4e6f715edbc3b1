"""Helpers every provider module shares: back-off hints, error bodies, JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

RETRY_AFTER_CAP_S = 60.0


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The provider's back-off hint: `retry-after-ms`, `x-ms-retry-after-ms`, then `retry-after`.

    `retry-after` may be seconds or an HTTP date; a date needs `now` (epoch seconds).
    The result is capped at 60 s and never negative; None when there is no usable hint.
    """
    lowered = {k.lower(): v for k, v in headers.items()} if not _is_lower(headers) else headers
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = lowered.get(name)
        if value:
            try:
                return _clamp(float(value) / 1000.0)
            except ValueError:
                pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return _clamp(float(value))
    except ValueError:
        pass
    if now is None:
        return None
    try:
        return _clamp(parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def header_number(value: str | None) -> float | None:
    """A non-negative finite number from a header value; None when absent or not one."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0 <= number < math.inf else None


def _is_lower(headers: Mapping[str, str]) -> bool:
    # aiohttp's CIMultiDictProxy is case-insensitive already
    return type(headers).__name__.startswith("CIMultiDict")


def _clamp(seconds: float) -> float | None:
    if math.isnan(seconds):  # found by the fuzzer: `retry-after: nan` became a NaN cooldown
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def loads_object(body: bytes) -> dict[str, Any] | None:
    """Parse a JSON object body; None when it is not JSON or not an object."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def counted_field(body: bytes, name: str) -> int | None:
    """A count-tokens answer's count: the JSON object's `name`, when it is a positive integer (a proto3
    answer leaves out a 0, and a count of none is no count)."""
    counted = loads_object(body)
    tokens = counted.get(name) if counted is not None else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else None


def body_excerpt(body: bytes, limit: int = 300) -> str:
    """A short, printable excerpt of an unparseable body for error messages."""
    text = body[:limit].decode("utf-8", "replace").strip()
    return text + ("…" if len(body) > limit else "")
