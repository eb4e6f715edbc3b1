"""A fast fake OpenAI upstream for the benchmarks, on raw asyncio (no web framework).

It shares a core with the load generator, so every microsecond it spends is taken from the
load and shows up as noise in the proxies' figures: it parses just enough HTTP/1.1
(keep-alive, Content-Length bodies) and answers from a few orjson calls.

- `POST /v1/chat/completions` (also `/chat/completions`): a `chat.completion` with usage; with
  `"stream": true`, `--chunks` SSE chunks (the last with `finish_reason`), a usage chunk when
  `stream_options.include_usage` is set, then `data: [DONE]`, each event its own HTTP chunk
  and its own socket write, `--chunk-delay-ms` apart (0: back to back).
- `POST /v1/responses` (also `/responses`): OpenAI's Responses API, for targets of type `openai`
  that llmroute sends Responses requests to natively: a Response with one message and usage; with
  `"stream": true`, OpenAI's events (created, in_progress, the message's item and part opening,
  `--chunks` text deltas with `obfuscation` padding, their closing, completed), one write each.
- `GET /health`, `GET /v1/models`.

Run: `python bench/_upstream.py --port 9000 [--chunks 20] [--chunk-delay-ms 0]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

import orjson

MAX_HEAD = 64 * 1024
_ids = itertools.count(1)

_MODELS = orjson.dumps({"object": "list", "data": [
    {"id": "fake-gpt", "object": "model", "created": 0, "owned_by": "fake"}]})
_SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n")


def _response(status: str, body: bytes, content_type: bytes = b"application/json", close: bool = False) -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (status.encode(), content_type, len(body))
    return head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(payload: dict[str, Any]) -> bytes:
    return _http_chunk(b"data: " + orjson.dumps(payload) + b"\n\n")


class Upstream(asyncio.Protocol):
    """One client connection; requests are answered in order, one at a time."""

    def __init__(self, chunks: int, chunk_delay_s: float) -> None:
        self._chunks = chunks
        self._delay = chunk_delay_s
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None and not self._streaming and self._answer_one():
            pass

    def _answer_one(self) -> bool:
        """Answer the first complete request in the buffer; False when more bytes are needed."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self._reply(_response("431 Request Header Fields Too Large", b"", close=True), close=True)
            return False
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        method, path, _ = [*head[0].split(" "), "", ""][:3]
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self._reply(_response("411 Length Required", b"", close=True), close=True)
            return False
        length = int(fields.get("content-length") or 0)
        if len(self._buf) < end + 4 + length:
            return False
        body = bytes(self._buf[end + 4:end + 4 + length])
        del self._buf[:end + 4 + length]
        close = fields.get("connection", "").lower() == "close"
        self._route(method, path.split("?", 1)[0], body, close)
        return True

    def _route(self, method: str, path: str, body: bytes, close: bool) -> None:
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            self._chat(body, close)
        elif method == "POST" and path in ("/v1/responses", "/responses"):
            self._responses(body, close)
        elif method == "GET" and path == "/health":
            self._reply(_response("200 OK", b"ok", b"text/plain", close), close)
        elif method == "GET" and path in ("/v1/models", "/models"):
            self._reply(_response("200 OK", _MODELS, close=close), close)
        else:
            self._reply(_response("404 Not Found", b'{"error":{"message":"not found"}}', close=close), close)

    def _reply(self, data: bytes, close: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(data)
        if close:
            self._transport.close()

    def _chat(self, raw: bytes, close: bool) -> None:
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            self._reply(_response("400 Bad Request", b'{"error":{"message":"bad json"}}', close=close), close)
            return
        model = request.get("model") or "fake-gpt"
        messages = request.get("messages") or []
        prompt_tokens = max(1, sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": self._chunks,
                 "total_tokens": prompt_tokens + self._chunks}
        base = {"id": f"chatcmpl-fake{next(_ids)}", "created": int(time.time()), "model": model,
                "system_fingerprint": "fp_fake"}
        if not request.get("stream"):
            content = " ".join(f"tok{i}" for i in range(self._chunks))
            body = orjson.dumps({**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                "finish_reason": "stop"}], "usage": usage})
            self._reply(_response("200 OK", body, close=close), close)
            return
        options = request.get("stream_options")
        with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self._stream(self._stream_events({**base, "object": "chat.completion.chunk"}, usage if with_usage else None),
                     close)

    def _responses(self, raw: bytes, close: bool) -> None:
        request = orjson.loads(raw) if raw.startswith(b"{") else None
        if not isinstance(request, dict):
            self._reply(_response("400 Bad Request", b'{"error":{"message":"bad json"}}', close=close), close)
            return
        number = next(_ids)
        text = "".join(f"tok{i} " for i in range(self._chunks))
        message = {"id": f"msg_fake{number}", "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]}
        prompt_tokens = max(1, len(str(request.get("input") or "")) // 4)
        response = {"id": f"resp_fake{number}", "object": "response", "created_at": int(time.time()),
                    "status": "completed", "error": None, "incomplete_details": None, "model": request.get("model"),
                    "output": [message], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                    "usage": {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens": self._chunks, "output_tokens_details": {"reasoning_tokens": 0},
                              "total_tokens": prompt_tokens + self._chunks}}
        if not request.get("stream"):
            self._reply(_response("200 OK", orjson.dumps(response), close=close), close)
            return
        self._stream(self._response_events(response, message), close)

    def _response_events(self, response: dict[str, Any], message: dict[str, Any]) -> list[bytes]:
        shell = {**response, "status": "in_progress", "output": [], "usage": None}
        where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        kinds: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": shell}), ("response.in_progress", {"response": shell}),
            ("response.output_item.added", {"output_index": 0, "item": {**message, "status": "in_progress",
                                                                         "content": []}}),
            ("response.content_part.added", {**where, "part": part})]
        kinds += [("response.output_text.delta", {**where, "delta": f"tok{i} ", "logprobs": [], "obfuscation": "x0Zq"})
                  for i in range(self._chunks)]
        kinds += [("response.output_text.done", {**where, "text": message["content"][0]["text"], "logprobs": []}),
                  ("response.content_part.done", {**where, "part": message["content"][0]}),
                  ("response.output_item.done", {"output_index": 0, "item": message}),
                  ("response.completed", {"response": response})]
        return [_http_chunk(b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps(
            {"type": kind, "sequence_number": number, **fields}))) for number, (kind, fields) in enumerate(kinds)]

    def _stream_events(self, base: dict[str, Any], usage: dict[str, int] | None) -> list[bytes]:
        events = []
        last = self._chunks - 1
        for i in range(self._chunks):
            delta = {"role": "assistant", "content": f"tok{i} "} if i == 0 else {"content": f"tok{i} "}
            events.append(_event({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                       "finish_reason": "stop" if i == last else None}]}))
        if usage is not None:
            events.append(_event({**base, "choices": [], "usage": usage}))
        events.append(_http_chunk(b"data: [DONE]\n\n"))
        return events

    def _stream(self, events: list[bytes], close: bool) -> None:
        """An SSE answer: each event its own write, back to back or `--chunk-delay-ms` apart."""
        self._reply(_SSE_HEAD, False)
        if self._delay <= 0:
            for event in events:
                self._reply(event, False)
            self._reply(b"0\r\n\r\n", close)
            return
        self._streaming = True
        self._send_later(events, 0, close)

    def _send_later(self, events: list[bytes], index: int, close: bool) -> None:
        if self._transport is None:
            return
        self._reply(events[index], False)
        if index + 1 < len(events):
            asyncio.get_running_loop().call_later(self._delay, self._send_later, events, index + 1, close)
            return
        self._reply(b"0\r\n\r\n", close)
        self._streaming = False
        if self._buf:
            self.data_received(b"")


async def serve(host: str, port: int, chunks: int, chunk_delay_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(chunks, chunk_delay_ms / 1000.0), host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="gap between streamed chunks")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port, max(1, args.chunks), args.chunk_delay_ms))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
