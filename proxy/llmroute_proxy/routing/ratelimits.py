"""The providers' rate-limit headers as this sidecar last saw them, for the operator's lease book.

Seeing costs one dict store per upstream answer: the answer's headers are kept as they came (a
reference), with the provider's parser and the monotonic time, and are parsed only when a usage report
is made — at most once per provider per report, never on the request path. The report carries what the
last answer of each provider since the previous report said, and how long ago it came, so the operator
needs no clock of ours. Pure: times are arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from llmroute_proxy.dialects.base import RateLimits

Parser = Callable[[Mapping[str, str], float], RateLimits | None]


class SeenRateLimits:
    __slots__ = ("_latest",)

    def __init__(self) -> None:
        self._latest: dict[str, tuple[Parser, Mapping[str, str], float]] = {}

    def seen(self, provider: str, parser: Parser, headers: Mapping[str, str], now: float) -> None:
        """An answer from `provider` came at `now` (monotonic) with `headers`."""
        self._latest[provider] = (parser, headers, now)

    def since(self, after: float, now: float, now_wall: float) -> dict[str, tuple[RateLimits, float]]:
        """Provider → (what its last answer after `after` said, seconds since it came); providers whose
        last answer said nothing are left out."""
        out: dict[str, tuple[RateLimits, float]] = {}
        for provider, (parser, headers, seen) in self._latest.items():
            if seen <= after:
                continue
            age = max(now - seen, 0.0)
            limits = parser(headers, now_wall - age)
            if limits is not None:
                out[provider] = (limits, age)
        return out
