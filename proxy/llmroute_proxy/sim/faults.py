"""Scripted faults for the simulated providers: what goes wrong, and on which requests.

A `FaultPlan` decides, per incoming request, which `Fault` (if any) the simulator applies.
Tests script it in process; the demo and the benchmarks script it over HTTP through
`POST /_sim/faults`, whose JSON `Fault.from_json` and `FaultPlan.apply_json` read.

This module is pure: randomness comes from the `random.Random` the plan is given, so a
probabilistic plan replays identically for the same seed.
"""

from __future__ import annotations

import base64
import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import quote


class FaultKind(StrEnum):
    STATUS = "status"
    """Answer with an HTTP error in the provider's native error shape."""
    LATENCY = "latency"
    """Wait `seconds` before answering normally."""
    HANG = "hang"
    """Accept the request and never answer, until the client gives up or the app shuts down."""
    RESET = "reset"
    """Close the TCP connection abruptly (RST) without any response."""
    BREAK_BEFORE_FIRST_TOKEN = "break_before_first_token"
    """200 and headers, then the connection is cut before any body."""
    BREAK_AFTER_TOKENS = "break_after_tokens"
    """`tokens` content chunks, then the connection is cut."""
    STALL_AFTER_TOKENS = "stall_after_tokens"
    """`tokens` content chunks, then nothing more until the client hangs up or the app shuts down:
    an answer still being generated when its reader leaves (a chat UI's stop button)."""
    ANTHROPIC_ERROR_EVENT = "anthropic_error_event"
    """200, then the provider's in-band stream error (Anthropic: `event: error`) before content
    chunk `tokens + 1`; every simulator sends its own API's in-band error shape."""
    SLOW_STREAM = "slow_stream"
    """A gap of `seconds` before every stream event after the first."""
    REFUSAL = "refusal"
    """200, and the model declines, in its API's own shape: OpenAI a `refusal` instead of `content`
    (streamed as `delta.refusal`), Azure's output filter `finish_reason: content_filter` with no
    content and its filter results marked `filtered`, Anthropic `stop_reason: refusal`, Gemini a candidate that ends
    with `finishReason: SAFETY` and no content. Anthropic's and Gemini's answers are stopped after `tokens` chunks
    of their text (default 0: before any), as Claude 4's streaming classifiers and Gemini's safety filter stop an
    answer mid-way (Gemini's last chunk carries its text and the SAFETY finish)."""
    ERROR_AS_200 = "error_as_200"
    """HTTP 200 whose body is the error the `status` fault would send (the provider's native shape,
    as JSON, even when the request asked for a stream; Gemini's wrapped in a list on
    `streamGenerateContent` with quirks), as providers and the proxies in front of them sometimes answer."""
    IGNORE_STREAM = "ignore_stream"
    """A stream request (`stream: true` in its body: OpenAI, Azure, Anthropic) is answered with the whole
    answer as one JSON document, as some OpenAI-compatible servers and buffering proxies do."""
    MALFORMED_CALL = "malformed_call"
    """Gemini answers 200 with a candidate that ends `finishReason: MALFORMED_FUNCTION_CALL`, no content and
    a `finishMessage` quoting the code the model wrote instead of a call (streamed as one such chunk), as
    2.5 models do now and then when given tools; the other APIs have no such answer and answer normally."""
    EMPTY_ANSWER = "empty_answer"
    """Gemini answers 200 with a candidate that ends `finishReason: STOP` and a content with no parts (only
    its role), as 2.5 and later models do now and then (streamed as one such chunk); the other APIs have no
    such answer and answer normally."""
    NO_USAGE = "no_usage"
    """200, and the answer carries no usage, as some OpenAI-compatible servers answer: OpenAI's and Azure's
    chat completions send no usage chunk even when `stream_options.include_usage` asks for it, and no
    `usage` object in an answer that is not streamed, nor in embeddings; the other APIs answer normally."""
    PROMPT_BLOCKED = "prompt_blocked"
    """The provider's safety filter refuses the prompt itself: Gemini answers 200 with
    `promptFeedback.blockReason` and no candidates (streamed as one such chunk); OpenAI answers
    400 `invalid_prompt`, Azure 400 `content_filter` with its filter results, Anthropic 400
    `invalid_request_error`."""


STREAM_KINDS = frozenset({
    FaultKind.BREAK_BEFORE_FIRST_TOKEN,
    FaultKind.BREAK_AFTER_TOKENS,
    FaultKind.STALL_AFTER_TOKENS,
    FaultKind.ANTHROPIC_ERROR_EVENT,
    FaultKind.SLOW_STREAM,
})


@dataclass(frozen=True, slots=True)
class Fault:
    """One thing that goes wrong with one request; fields a kind does not use are ignored."""

    kind: FaultKind
    status: int | None = None
    """HTTP status for `status` and `error_as_200` (required) and `anthropic_error_event` (default:
    the provider's overloaded status)."""
    retry_after: float | None = None
    """Seconds: the `retry-after` header (Gemini: `RetryInfo.retryDelay` in the body)."""
    retry_after_ms: int | None = None
    """Milliseconds: the `retry-after-ms` header."""
    code: str | None = None
    """The provider's own error code or type, e.g. `insufficient_quota`, `overloaded_error`,
    `UNAVAILABLE`; default: the one the provider uses for `status`."""
    message: str | None = None
    quota_id: str | None = None
    """Gemini 429 only: the `QuotaFailure` quotaId (a `PerDay` id means daily quota)."""
    seconds: float = 0.0
    """`latency`: the delay; `slow_stream`: the gap between events."""
    tokens: int = 0
    """`break_after_tokens` / `stall_after_tokens` / `anthropic_error_event` / `refusal` (Anthropic, Gemini):
    content chunks sent before the fault."""
    path: str | None = None
    """Only requests whose path contains this string are affected (None: every request)."""
    echo_key: bool = False
    """Echo the key the request presented, as real providers sometimes do: in `message` and
    `code`, `{key}` becomes the key, `{key_url}` its URL encoding, `{key_b64}` the base64 of
    `user:key` (HTTP Basic credentials), `{key_start}`/`{key_end}` its first/last 8 characters and
    `{key_masked}` the key masked as OpenAI prints it (first 8, asterisks, last 4)."""

    def __post_init__(self) -> None:
        if self.kind in (FaultKind.STATUS, FaultKind.ERROR_AS_200) and self.status is None:
            raise ValueError(f"a {self.kind.value} fault needs a status")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")
        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError("seconds must be a finite number ≥ 0")
        if self.tokens < 0:
            raise ValueError("tokens must be ≥ 0")
        for name in ("retry_after", "retry_after_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be ≥ 0")

    def matches(self, path: str) -> bool:
        return self.path is None or self.path in path

    def echoing(self, key: str) -> Fault:
        """This fault with `echo_key`'s placeholders filled in from `key`."""
        forms = {"{key}": key, "{key_url}": quote(key, safe=""),
                 "{key_b64}": base64.b64encode(f"user:{key}".encode()).decode(),
                 "{key_start}": key[:8], "{key_end}": key[-8:], "{key_masked}": key[:8] + "*" * 20 + key[-4:]}

        def fill(text: str | None) -> str | None:
            if text is None:
                return None
            for placeholder, value in forms.items():
                text = text.replace(placeholder, value)
            return text

        return replace(self, message=fill(self.message), code=fill(self.code))

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """Read the control API's `fault` object; ValueError says what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("fault must be an object")
        unknown = set(data) - _FIELD_TYPES.keys()
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        try:
            kind = FaultKind(str(data.get("kind")))
        except ValueError:
            raise ValueError(f"fault.kind must be one of: {', '.join(k.value for k in FaultKind)}") from None
        values: dict[str, Any] = {}
        for name, types in _FIELD_TYPES.items():
            value = data.get(name)
            if name == "kind" or value is None:
                continue
            if isinstance(value, bool) is not (bool in types) or not isinstance(value, types):
                raise ValueError(f"fault.{name} has the wrong type")
            values[name] = value
        return cls(kind, **values)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "status": (int,),
    "retry_after": (int, float),
    "retry_after_ms": (int,),
    "code": (str,),
    "message": (str,),
    "quota_id": (str,),
    "seconds": (int, float),
    "tokens": (int,),
    "path": (str,),
    "echo_key": (bool,),
}


@dataclass
class FaultPlan:
    """One-shot faults for the next matching requests, over an optional standing fault.

    Queued one-shot faults are used first, in order; a request that matches none of them
    gets the standing fault (every time, or with probability `p` drawn from `rng`).
    """

    rng: random.Random = field(default_factory=lambda: random.Random(0))
    _queue: deque[Fault] = field(default_factory=deque, init=False)
    _standing: Fault | None = field(default=None, init=False)
    _probability: float = field(default=1.0, init=False)

    def next(self, fault: Fault, count: int = 1) -> None:
        """Apply `fault` to the next `count` matching requests (after those already queued)."""
        if count < 1:
            raise ValueError("count must be ≥ 1")
        self._queue.extend([fault] * count)

    def always(self, fault: Fault) -> None:
        self._standing, self._probability = fault, 1.0

    def probability(self, fault: Fault, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be between 0 and 1")
        self._standing, self._probability = fault, p

    def clear(self) -> None:
        self._queue.clear()
        self._standing, self._probability = None, 1.0

    @property
    def pending(self) -> int:
        """One-shot faults not used yet."""
        return len(self._queue)

    def take(self, path: str) -> Fault | None:
        """The fault for one request to `path`, consuming a one-shot fault if one matches."""
        for index, fault in enumerate(self._queue):
            if fault.matches(path):
                del self._queue[index]
                return fault
        standing = self._standing
        if standing is None or not standing.matches(path):
            return None
        if self._probability >= 1.0 or self.rng.random() < self._probability:
            return standing
        return None

    def apply_json(self, data: Any) -> None:
        """Apply a control API request: `{"mode": "always"|"next"|"probability", "count"?, "p"?, "fault"}`."""
        if not isinstance(data, Mapping):
            raise ValueError("body must be a JSON object")
        fault = Fault.from_json(data.get("fault"))
        mode = data.get("mode", "always")
        if mode == "always":
            self.always(fault)
        elif mode == "next":
            count = data.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int):
                raise ValueError("count must be an integer")
            self.next(fault, count)
        elif mode == "probability":
            p = data.get("p")
            if isinstance(p, bool) or not isinstance(p, int | float):
                raise ValueError("probability mode needs a number p")
            self.probability(fault, float(p))
        else:
            raise ValueError("mode must be always, next or probability")

    def describe(self) -> dict[str, Any]:
        """What is scripted, for `GET /_sim/stats`."""
        standing = self._standing
        return {
            "pending": [fault.kind.value for fault in self._queue],
            "standing": None if standing is None else standing.kind.value,
            "p": self._probability,
        }
