"""Claude's prompt caching, as the simulated Anthropic API bills it.

A block that carries `cache_control` (in `system` or in a message's content) is a breakpoint: the
prompt up to and including it is a prefix Claude may cache. At most four per request (more is a
400). A prefix shorter than the model's minimum is not cached, silently. Of the eligible
breakpoints, the longest prefix still cached is read (`cache_read_input_tokens`, and its lifetime
starts again); the prompt from there up to the last breakpoint is written
(`cache_creation_input_tokens`), each stretch with the lifetime of the breakpoint that ends it: 5
minutes, or an hour for `"ttl": "1h"` (`cache_creation.ephemeral_5m_input_tokens` and
`ephemeral_1h_input_tokens`). The rest of the prompt is `input_tokens`. Anthropic bills writes above
the input price (1.25x for 5 minutes, 2x for an hour) and reads at a tenth of it.

Tokens are counted as the simulator counts a prompt (the text of the system prompt and the messages),
so reads and writes are parts of that count. Time comes from the simulator's clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from llmroute_proxy.sim.answers import count_tokens

MAX_BREAKPOINTS = 4
_TTL_S = {"5m": 300.0, "1h": 3600.0}


@dataclass(frozen=True, slots=True)
class Cached:
    """What one request read from the cache and wrote to it, in tokens."""

    read: int = 0
    written_5m: int = 0
    written_1h: int = 0

    @property
    def written(self) -> int:
        return self.written_5m + self.written_1h


NOTHING_CACHED = Cached()

@dataclass(frozen=True, slots=True)
class _Breakpoint:
    key: str
    tokens: int
    ttl_s: float


def minimum_tokens(model: str) -> int:
    """The shortest prefix a model caches (Anthropic's documented minimums)."""
    if "opus-4-5" in model or "haiku-4-5" in model:
        return 4096
    return 2048 if "haiku" in model else 1024


def too_many_breakpoints(body: dict[str, Any]) -> str | None:
    """Claude's 400 for a request with more than four `cache_control` blocks, or None."""
    found = sum(1 for part in _parts(body) if isinstance(part, dict) and isinstance(part.get("cache_control"), dict))
    found += sum(1 for tool in body.get("tools") or () if isinstance(tool, dict) and "cache_control" in tool)
    if found <= MAX_BREAKPOINTS:
        return None
    return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."


class PromptCache:
    """The prefixes an account has cached, each until it expires."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._expires: dict[str, float] = {}

    def use(self, body: dict[str, Any]) -> Cached:
        """Read and write what this request's breakpoints cache (see the module's docstring)."""
        now = self._clock()
        eligible = [point for point in _breakpoints(body) if point.tokens >= minimum_tokens(str(body["model"]))]
        if not eligible:
            return NOTHING_CACHED
        hit = next((i for i in range(len(eligible) - 1, -1, -1)
                    if self._expires.get(eligible[i].key, 0.0) > now), -1)
        read = eligible[hit].tokens if hit >= 0 else 0
        if hit >= 0:
            self._expires[eligible[hit].key] = now + eligible[hit].ttl_s
        written = {300.0: 0, 3600.0: 0}
        before = read
        for point in eligible[hit + 1:]:
            written[point.ttl_s] += max(point.tokens - before, 0)
            before = max(before, point.tokens)
            self._expires[point.key] = now + point.ttl_s
        return Cached(read, written[300.0], written[3600.0])


def _parts(body: dict[str, Any]) -> list[Any]:
    """The prompt in order, as Claude reads it: the system prompt's blocks (or string), then each
    message's blocks (or string content)."""
    system = body.get("system")
    parts: list[Any] = [system] if isinstance(system, str) else list(system) if isinstance(system, list) else []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        parts.extend(content if isinstance(content, list) else [content])
    return parts


def _breakpoints(body: dict[str, Any]) -> list[_Breakpoint]:
    """Each `cache_control` block's prefix: its key (the model, the tools and everything up to the
    block, but `cache_control` itself), its tokens, its lifetime."""
    digest = hashlib.sha256(orjson.dumps([body.get("model"), body.get("tools")]))
    texts: list[str] = []
    points: list[_Breakpoint] = []
    for part in _parts(body):
        block = {k: v for k, v in part.items() if k != "cache_control"} if isinstance(part, dict) else part
        digest.update(orjson.dumps(block, option=orjson.OPT_SORT_KEYS))
        texts.append(blocks_text(block if isinstance(block, str) else [block]))
        control = part.get("cache_control") if isinstance(part, dict) else None
        if isinstance(control, dict):
            ttl = _TTL_S.get(str(control.get("ttl", "5m")), 300.0)
            points.append(_Breakpoint(digest.copy().hexdigest(), count_tokens(" ".join(texts)), ttl))
    return points


def blocks_text(content: Any) -> str:
    """The text of a content string or block list, tool results included: what the simulator counts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_result":
            texts.append(blocks_text(block.get("content")))
    return " ".join(texts)
