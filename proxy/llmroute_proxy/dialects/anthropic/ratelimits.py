"""Anthropic's rate-limit headers (providers.md §2.6): `anthropic-ratelimit-{requests,tokens}-{limit,
remaining,reset}`, the resets as RFC 3339 times, and `retry-after`. `tokens-*` is the most restrictive
of the token limits, which is what a combined tokens-per-minute figure compares with; the separate
`input-tokens-*` and `output-tokens-*` windows are not read. Parsed only when the sidecar makes a usage
report, from the last answer's headers (not per request).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from llmroute_proxy.dialects.base import Quota, RateLimits
from llmroute_proxy.dialects.common import header_number, retry_after_seconds


def reset_seconds(text: str | None, seen_wall: float) -> float | None:
    """`2026-12-03T10:00:30Z` → seconds after `seen_wall` (never negative); None when not a time."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return max(at.timestamp() - seen_wall, 0.0)


def _quota(headers: Mapping[str, str], kind: str, seen_wall: float) -> Quota | None:
    prefix = f"anthropic-ratelimit-{kind}-"
    quota = Quota(header_number(headers.get(prefix + "limit")), header_number(headers.get(prefix + "remaining")),
                  reset_seconds(headers.get(prefix + "reset"), seen_wall))
    return None if quota == Quota() else quota


def rate_limits(headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
    """What the answer's headers say (`seen_wall`: epoch seconds it was received); None: nothing."""
    limits = RateLimits(_quota(headers, "requests", seen_wall), _quota(headers, "tokens", seen_wall),
                        retry_after_seconds(headers, seen_wall))
    return None if limits == RateLimits() else limits
