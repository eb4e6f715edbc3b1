"""A bounded HTTP/1.1 load generator in Python, for what wrk cannot measure: time to first token.

C keep-alive connections each send the same chat completion request back to back until N
requests or S seconds (whichever comes first). Raw asyncio protocols (no HTTP client library),
so the generator stays cheap; it is still Python, and on one shared core it limits the rates it
can drive to a few thousand requests per second, which is why the benches prefer wrk for throughput.

Per request it records the whole latency and, for streams, the time to the first body byte
(TTFB) and to the first received bytes that carry `"content"` (TTFT). A response counts as ok
with status 200 and, for streams, a `data: [DONE]` event; for the rest a `"choices"` field.

Run: `python bench/_load.py --url http://127.0.0.1:9000/v1/chat/completions -c 1 -n 5000
      --seconds 5 [--stream] [--warmup 100]` → one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

PROMPT = "Say hello in five words please."


@dataclass(slots=True)
class Sample:
    ok: bool
    latency_s: float
    ttfb_s: float | None
    ttft_s: float | None


@dataclass(slots=True)
class Run:
    """Shared budget of one phase: how many requests may still start, and until when."""

    limit: int
    deadline: float
    started: int = 0
    samples: list[Sample] = field(default_factory=list)

    def take(self) -> bool:
        if self.started >= self.limit or time.perf_counter() >= self.deadline:
            return False
        self.started += 1
        return True


RESPONSES_PATH = "/v1/responses"


def markers(path: str) -> tuple[bytes, bytes, bytes]:
    """(first-token mark, end of a good stream, mark of a good answer) for the API at `path`."""
    if path.endswith(RESPONSES_PATH):
        return b'"delta"', b"event: response.completed", b'"output"'
    return b'"content"', b"data: [DONE]", b'"choices"'


def request_bytes(host: str, path: str, stream: bool, headers: list[str]) -> bytes:
    body: dict[str, object]
    if path.endswith(RESPONSES_PATH):
        body = {"model": "fake-gpt", "input": PROMPT, "max_output_tokens": 32}
        if stream:
            body["stream"] = True
    else:
        body = {"model": "fake-gpt", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
    payload = orjson.dumps(body)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             "Authorization: Bearer sk-fake", f"Content-Length: {len(payload)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class Client(asyncio.Protocol):
    """One keep-alive connection: sends, parses the answer (sized or chunked), sends again."""

    def __init__(self, run: Run, request: bytes, stream: bool, marks: tuple[bytes, bytes, bytes]) -> None:
        self._first_token, self._stream_end, self._answer = marks
        self._run = run
        self._request = request
        self._stream = stream
        self._transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._body = bytearray()
        self._status = 0
        self._in_body = False
        self._length: int | None = None
        self._chunk_left = 0
        self._t0 = 0.0
        self._ttfb: float | None = None
        self._ttft: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._t0:
            self._run.samples.append(Sample(False, time.perf_counter() - self._t0, None, None))
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def _next(self) -> None:
        assert self._transport is not None
        if not self._run.take():
            self._t0 = 0.0
            self._transport.close()
            return
        self._reset()
        self._t0 = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._stream and self._ttft is None and self._first_token in data:
            self._ttft = now - self._t0
        self._buf += data
        if not self._in_body and not self._parse_head():
            return
        if self._ttfb is None and self._buf:
            self._ttfb = now - self._t0
        if self._parse_body():
            ok = self._status == 200 and (self._stream_end in self._body if self._stream
                                          else self._answer in self._body)
            self._run.samples.append(Sample(ok, time.perf_counter() - self._t0, self._ttfb, self._ttft))
            self._next()

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        self._status = int(lines[0].split(" ")[1])
        self._length = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                self._length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked and self._length is None:
            self._length = 0
        del self._buf[:end + 4]
        self._in_body = True
        return True

    def _parse_body(self) -> bool:
        """Move decoded body bytes out of the buffer; True when the answer is complete."""
        if self._length is not None:
            if len(self._buf) < self._length:
                return False
            self._body += self._buf[:self._length]
            return True
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(self._buf))
                self._body += self._buf[:take]
                del self._buf[:take]
                self._chunk_left -= take
                if self._chunk_left:
                    return False
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return False
            line = bytes(self._buf[:line_end])
            if not line:  # CRLF after a chunk's data
                del self._buf[:2]
                continue
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                return self._buf.find(b"\r\n\r\n", line_end) == line_end
            del self._buf[:line_end + 2]
            self._chunk_left = size


async def run_phase(url: str, concurrency: int, limit: int, seconds: float, stream: bool,
                    headers: list[str]) -> tuple[list[Sample], float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = request_bytes(f"{host}:{port}", parts.path or "/", stream, headers)
    run = Run(limit, time.perf_counter() + seconds)
    loop = asyncio.get_running_loop()

    async def connection() -> None:
        while run.started < run.limit and time.perf_counter() < run.deadline:
            try:
                _, client = await loop.create_connection(lambda: Client(run, request, stream, markers(parts.path)), host, port)
            except OSError:
                run.samples.append(Sample(False, 0.0, None, None))
                await asyncio.sleep(0.05)
                continue
            await client.closed

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return run.samples, time.perf_counter() - t0


def percentile_ms(values: list[float], p: float) -> float | None:
    """Nearest rank, in milliseconds; None when there is nothing to rank."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(p / 100.0 * len(ordered)) - 1))
    return round(ordered[rank] * 1000.0, 3)


def summary(samples: list[Sample], wall_s: float, concurrency: int) -> dict[str, object]:
    ok = [s for s in samples if s.ok]
    latencies = [s.latency_s for s in ok]
    ttfb = [s.ttfb_s for s in ok if s.ttfb_s is not None]
    ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
    return {
        "tool": "python", "concurrency": concurrency, "requests": len(samples), "ok": len(ok),
        "errors": len(samples) - len(ok), "wall_s": round(wall_s, 3),
        "rps": round(len(ok) / wall_s, 1) if wall_s > 0 else 0.0,
        "lat_p50_ms": percentile_ms(latencies, 50), "lat_p90_ms": percentile_ms(latencies, 90),
        "lat_p99_ms": percentile_ms(latencies, 99),
        "ttfb_p50_ms": percentile_ms(ttfb, 50), "ttfb_p99_ms": percentile_ms(ttfb, 99),
        "ttft_p50_ms": percentile_ms(ttft, 50), "ttft_p99_ms": percentile_ms(ttft, 99),
    }


async def run_load(args: argparse.Namespace) -> dict[str, object]:
    if args.warmup:
        await run_phase(args.url, args.c, args.warmup, 30.0, args.stream, args.header)
    samples, wall = await run_phase(args.url, args.c, args.n, args.seconds, args.stream, args.header)
    return summary(samples, wall, args.c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", type=int, default=1, help="connections (concurrency)")
    parser.add_argument("-n", type=int, default=100_000, help="at most this many measured requests")
    parser.add_argument("--seconds", type=float, default=5.0, help="at most this long (in-flight ones finish)")
    parser.add_argument("--warmup", type=int, default=100, help="requests sent and discarded first")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-H", "--header", action="append", default=[], help="extra header 'Name: value'")
    result = asyncio.run(run_load(parser.parse_args()))
    print(orjson.dumps(result).decode())
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
