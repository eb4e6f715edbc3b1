"""OpenAI's rate-limit headers (providers.md §1.6), sent by OpenAI on every answer and, in part, by Azure
OpenAI and the compatible servers: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the resets
as Go durations (`12ms`, `1s`, `6m0s`; a bare number is taken as seconds), and `retry-after(-ms)`.
Parsed only when the sidecar makes a usage report, from the last answer's headers (not per request).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from llmroute_proxy.dialects.base import Quota, RateLimits
from llmroute_proxy.dialects.common import header_number, retry_after_seconds

_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)(h|ms|m|s))")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_seconds(text: str | None) -> float | None:
    """`6m0s` → 360.0; None when it is not a duration."""
    if not text:
        return None
    plain = header_number(text)
    if plain is not None:
        return plain
    parts = _DURATION.findall(text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _quota(headers: Mapping[str, str], kind: str) -> Quota | None:
    quota = Quota(header_number(headers.get(f"x-ratelimit-limit-{kind}")),
                  header_number(headers.get(f"x-ratelimit-remaining-{kind}")),
                  duration_seconds(headers.get(f"x-ratelimit-reset-{kind}")))
    return None if quota == Quota() else quota


def rate_limits(headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
    """What the answer's headers say (`seen_wall`: epoch seconds it was received); None: nothing."""
    limits = RateLimits(_quota(headers, "requests"), _quota(headers, "tokens"),
                        retry_after_seconds(headers, seen_wall))
    return None if limits == RateLimits() else limits
