"""A stream that has wholly arrived before anything was sent is judged whole.

When an upstream's whole stream is in the sidecar's hands at its first read (a short answer, a
fast model, one TCP segment), the sidecar reads it to its end before answering, and writes the
answer in one piece. So a stream that turns out broken — an in-band error after some content —
is still a failure before the first token, and fails over invisibly; the same stream arriving
in two parts with a pause between them has been committed by its first token, and ends with an
in-band error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import orjson
import pytest
from aiohttp import web

from llmroute_proxy.sim import FaultPlan
from tests.proxy.documents import provider, route, target
from tests.proxy.stack import Stack

CONFIG = [
    provider("broken", "openai-compatible", "{broken}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    provider("oai-b", "openai-compatible", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", models=["gpt-4o-mini"]),
    route("main", {"ha": [target("broken", "gpt-4o-mini"), target("oai-b", "gpt-4o-mini", priority=1)]},
          default_tier="ha",
          outlierDetection={"consecutiveFailures": 1000000, "baseEjection": "1s", "maxEjection": "1s"}),
]

HELLO: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def _event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _chunk(content: str) -> bytes:
    return _event({"id": "chatcmpl-broken", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                   "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})


CONTENT = _chunk("Half ") + _chunk("an answer")


def broken_app(gap_s: float) -> web.Application:
    """An upstream whose stream ends after two content chunks, with neither a finish chunk nor
    `[DONE]`: in one write with a Content-Length (`gap_s` 0), or chunked, its end `gap_s` later."""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        if gap_s == 0:
            return web.Response(body=CONTENT, content_type="text/event-stream")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(CONTENT)
        await asyncio.sleep(gap_s)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def _stack(tmp: pytest.TempPathFactory, gap_s: float) -> Stack:
    def factory(faults: FaultPlan) -> web.Application:
        return broken_app(gap_s)

    return Stack(tmp.mktemp("whole"), config=CONFIG, extra_sims={"broken": factory}, delivery=None)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _stack(tmp_path_factory, 0.0) as running:
        yield running


@pytest.fixture(scope="module")
def in_two_parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _stack(tmp_path_factory, 0.3) as running:
        yield running


def _client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)


def test_a_broken_stream_that_arrived_whole_fails_over_invisibly(whole: Stack) -> None:
    stream = _client(whole).chat.completions.with_raw_response.create(model="ha", messages=HELLO, stream=True)
    assert stream.headers["x-llmroute-provider"] == "oai-b"
    assert stream.headers["x-llmroute-attempts"] == "2"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream.parse() if chunk.choices)
    assert text and "Half" not in text


def test_a_broken_stream_committed_by_its_first_part_ends_with_an_error(in_two_parts: Stack) -> None:
    received: list[str] = []
    with pytest.raises(openai.APIError, match="without \\[DONE\\]"):
        for chunk in _client(in_two_parts).chat.completions.create(model="ha", messages=HELLO, stream=True):
            received.extend(choice.delta.content for choice in chunk.choices if choice.delta.content)
    assert received == ["Half ", "an answer"]
