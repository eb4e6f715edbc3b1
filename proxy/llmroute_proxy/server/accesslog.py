"""One JSON line per request on the `llmroute.access` logger, for people grepping and log pipelines.

The line says where the request went and what it cost: route, tier, rule, target, every
attempt with its outcome, status, latency, tokens, cost and the trace id that joins it to
its spans. A token count's line says so (`token_count`) and holds no tokens and no cost:
counting is charged nothing. A request refused before it was routed says why (`refused`: the
error code it was answered, never the message, which may quote the request); a routed one that failed
says so as well (`error`: the code it was answered, in its status or, for a stream already begun, in
its stream). Its latency is the whole request's, from the handler's start, as the duration metric's.
It never holds prompt
or completion text, header values or credentials: attempt reasons are failure kinds, not upstream
messages (which may quote what the client sent).

Whether a line is written is the logger's decision (its level, `LLMROUTE_LOG_LEVEL`): when
`llmroute.access` is not enabled for INFO nothing is built. How it is written depends on the
server. By default, one `logging` call per request. A served sidecar calls `buffer_access_log()`
instead: a `logging` call, its record and formatter, then a synchronous write and flush to
stderr cost 12–20 µs alone and 55–70 µs of throughput under load (one syscall per request on
the event loop). `BufferedAccessLog` formats the same `time INFO llmroute.access {json}` line
itself, keeps it in memory and writes everything at once, every 100 ms or 64 KiB, and at
shutdown. The price: access lines may come up to 100 ms after the other loggers' lines that
followed them (each line keeps its own time), and a process killed with SIGKILL loses the
last 100 ms of lines. Handlers and filters attached to `llmroute.access` are not consulted
while the buffer is installed; its level still is.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

import orjson

from llmroute_proxy.dialects.service_tiers import STANDARD_TIERS
from llmroute_proxy.server.outcome import Outcome

log = logging.getLogger("llmroute.access")


def access_entry(outcome: Outcome) -> dict[str, Any]:
    target = outcome.target
    usage = outcome.usage
    entry: dict[str, Any] = {
        "route": outcome.route,
        "model": outcome.model,
        "tier": outcome.tier,
        "rule": outcome.rule,
        "experiment": outcome.experiment,
        "target": target.id if target is not None else None,
        "provider": target.provider if target is not None else None,
        "upstream_model": target.model if target is not None else None,
        "stream": outcome.stream,
        "attempts": len(outcome.attempts),
        "tried": [{"target": a.target, "status": a.status, "outcome": a.kind.value if a.kind else "ok",
                   "ms": round(a.duration_s * 1000, 2)} for a in outcome.attempts],
        "status": outcome.status,
        "latency_ms": round(outcome.latency_s * 1000, 2),
        "input_tokens": usage.input_tokens if usage is not None else None,
        "output_tokens": usage.output_tokens if usage is not None else None,
        "cached_input_tokens": usage.cached_input_tokens if usage is not None else None,
        "cost_usd": outcome.cost_usd,
        "trace_id": outcome.trace_id or None,
    }
    if usage is not None and usage.cache_write_tokens:  # priced apart (Anthropic's prompt cache)
        entry["cache_write_tokens"] = usage.cache_write_tokens
        if usage.cache_write_1h_tokens:
            entry["cache_write_1h_tokens"] = usage.cache_write_1h_tokens
    if usage is not None and usage.web_searches:
        entry["web_searches"] = usage.web_searches
    if usage is not None and usage.service_tier is not None and usage.service_tier not in STANDARD_TIERS:
        entry["service_tier"] = usage.service_tier  # priced at its own list (`pricing.serviceTiers`)
    if outcome.usage_estimated:
        entry["usage_estimated"] = True
    if outcome.token_count is not None:
        entry["token_count"] = outcome.token_count
    if outcome.refused is not None:
        entry["refused"] = outcome.refused
    if outcome.error is not None:
        entry["error"] = outcome.error
    if outcome.fallback_from is not None:
        entry["fallback_from"] = outcome.fallback_from
    if outcome.passed_over:
        entry["passed_over"] = outcome.passed_over_shown()
    return entry


def log_access(outcome: Outcome) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    line = orjson.dumps(access_entry(outcome))
    buffered = _buffered
    if buffered is None:
        log.info("%s", line.decode())
    else:
        buffered.write(line)


LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
"""The `logging` format the CLI configures; `BufferedAccessLog` writes its lines the same way."""


class Timer(Protocol):
    def cancel(self) -> None: ...


Scheduler = Callable[[float, Callable[[], None]], Timer]
"""`loop.call_later`, or a test's stand-in."""


class BufferedAccessLog:
    """Access lines kept in memory and written to `stream` in one call per `interval_s`.

    The first line after a write arms a timer (`call_later`, the running loop's by default:
    build it on the loop); `max_bytes` bounds the memory and forces an earlier write. A
    failing stream (closed, broken pipe) drops the lines: the access log never fails a request.
    """

    def __init__(self, stream: BinaryIO, *, interval_s: float = 0.1, max_bytes: int = 64 * 1024,
                 wallclock: Callable[[], float] = time.time, call_later: Scheduler | None = None) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._max_bytes = max_bytes
        self._wallclock = wallclock
        self._call_later = call_later or asyncio.get_running_loop().call_later
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: Timer | None = None
        self._second = -1
        self._stamp = b""

    def write(self, json_line: bytes) -> None:
        now = self._wallclock()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)).encode()
        line = self._stamp + b",%03d INFO llmroute.access " % int((now - second) * 1000) + json_line + b"\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._max_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = self._call_later(self._interval_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write every buffered line now (blocking, one write call)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Flush, and send later lines through `logging` again. Call it at shutdown, on the loop."""
        global _buffered
        if _buffered is self:
            _buffered = None
            atexit.unregister(self.flush)
        self.flush()


_buffered: BufferedAccessLog | None = None


def buffer_access_log(stream: BinaryIO | None = None, *, interval_s: float = 0.1) -> BufferedAccessLog:
    """Write access lines through a `BufferedAccessLog` on `stream` (stderr by default) from now on.

    Call it on the running event loop after logging is configured; call `close()` on the result
    at shutdown (an `atexit` hook flushes what is left if that call never comes).
    """
    global _buffered
    if _buffered is not None:
        _buffered.close()
    _buffered = BufferedAccessLog(stream if stream is not None else sys.stderr.buffer, interval_s=interval_s)
    atexit.register(_buffered.flush)
    return _buffered
