"""An OpenAI Responses stream that has wholly arrived before anything was sent is relayed in one piece.

The native counterpart of test_whole_streams.py: a Responses request to an `openai` target gets the
provider's own event stream; when all of it is in the sidecar's hands at its first read, the sidecar
vouches for it by its bytes and relays it as it came, in one write with its length, and keeps the
Response it ended with. A stream that turns out broken fails over invisibly, as it would event by event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from llmroute_proxy.dialects.base import WholeRelayedStream
from llmroute_proxy.dialects.openai.responses import ResponsesEventTranslator
from llmroute_proxy.dialects.responses.encoder import ResponsesEncoder
from llmroute_proxy.sim import FaultPlan
from tests.proxy.documents import provider, route, target
from tests.proxy.server.conftest import stream_app
from tests.proxy.stack import Stack

RESPONSES = "/v1/responses"

CONFIG = [
    provider("native", "openai", "{native}/v1", key_env="TEST_OAI_KEY", models=["gpt-5-mini"]),
    provider("failing", "openai", "{failing}/v1", key_env="TEST_OAI_KEY", models=["gpt-5-mini"]),
    route("main", {"one": [target("native", "gpt-5-mini")],
                   "ha": [target("failing", "gpt-5-mini"), target("native", "gpt-5-mini", priority=1)]},
          default_tier="one",
          outlierDetection={"consecutiveFailures": 1000000, "baseEjection": "1s", "maxEjection": "1s"}),
]


def event(kind: str, number: int, **fields: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, "sequence_number": number,
                                                                       **fields}))


RESPONSE = {"id": "resp_whole1", "object": "response", "created_at": 1764000000, "status": "in_progress",
            "error": None, "incomplete_details": None, "instructions": None, "model": "gpt-5-mini-2025-08-07",
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": None,
            "metadata": {}}
MESSAGE = {"id": "msg_whole1", "type": "message", "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello there"}]}
WHERE = {"item_id": "msg_whole1", "output_index": 0, "content_index": 0}
HEAD = b"".join([
    event("response.created", 0, response=RESPONSE),
    event("response.in_progress", 1, response=RESPONSE),
    event("response.output_item.added", 2, output_index=0, item={**MESSAGE, "status": "in_progress", "content": []}),
    event("response.content_part.added", 3, **WHERE, part={"type": "output_text", "annotations": [], "logprobs": [],
                                                           "text": ""}),
    event("response.output_text.delta", 4, **WHERE, delta="Hello", logprobs=[], obfuscation="aZ3k9Q"),
    event("response.output_text.delta", 5, **WHERE, delta=" there", logprobs=[], obfuscation="Q1x"),
])
TAIL = b"".join([
    event("response.output_text.done", 6, **WHERE, text="Hello there", logprobs=[]),
    event("response.content_part.done", 7, **WHERE, part=MESSAGE["content"][0]),  # type: ignore[index]
    event("response.output_item.done", 8, output_index=0, item=MESSAGE),
    event("response.completed", 9, response={**RESPONSE, "status": "completed", "output": [MESSAGE], "usage": {
        "input_tokens": 9, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 12}}),
])
ERROR_AFTER_OUTPUT = event("error", 6, code="server_error", message="The server had an error.", param=None)


def _stack(tmp: pytest.TempPathFactory, gap_s: float) -> Stack:
    def native(faults: FaultPlan) -> web.Application:
        return stream_app(RESPONSES, HEAD, TAIL, gap_s)

    def failing(faults: FaultPlan) -> web.Application:
        return stream_app(RESPONSES, HEAD, ERROR_AFTER_OUTPUT, gap_s)

    return Stack(tmp.mktemp("native-whole"), config=CONFIG, extra_sims={"native": native, "failing": failing},
                 delivery=None)


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


@pytest.mark.parametrize("arrival", ["whole", "in_two_parts"])
def test_the_providers_stream_reaches_the_client_as_it_came_and_is_kept(arrival: str,
                                                                      request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue(arrival)
    with _client(stack).responses.with_streaming_response.create(model="one", input="hi", stream=True) as raw:
        body = b"".join(raw.iter_bytes())
        length = raw.headers.get("content-length")
    assert body == HEAD + TAIL
    assert (length == str(len(body))) is (arrival == "whole")  # one piece with its length, or streamed
    kept = _client(stack).responses.retrieve("resp_whole1")
    assert kept.output_text == "Hello there" and kept.usage is not None and kept.usage.total_tokens == 12


def test_a_stream_whose_error_comes_after_its_output_but_arrived_whole_fails_over_invisibly(whole: Stack) -> None:
    with _client(whole).responses.with_streaming_response.create(model="ha", input="hi", stream=True) as raw:
        body = b"".join(raw.iter_bytes())
        assert raw.headers["x-llmroute-provider"] == "native" and raw.headers["x-llmroute-attempts"] == "2"
    assert body == HEAD + TAIL


def test_the_same_error_after_a_committed_first_token_ends_the_stream_failed(in_two_parts: Stack) -> None:
    with _client(in_two_parts).responses.stream(model="ha", input="hi") as stream:
        events = list(stream)
    assert [e.type for e in events][-1] == "response.failed"
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.id == "resp_whole1" and failed.output[0].content[0].text == "Hello there"  # type: ignore[union-attr]


def test_a_stream_that_arrived_whole_is_judged_by_its_bytes_not_read_event_by_event(
        whole: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    relayed: list[int] = []
    original = ResponsesEncoder.relay_whole

    def counting(self: ResponsesEncoder, stream: WholeRelayedStream) -> bytes:
        relayed.append(len(stream.body))
        return original(self, stream)

    monkeypatch.setattr(ResponsesEncoder, "relay_whole", counting)
    monkeypatch.setattr(ResponsesEventTranslator, "feed", lambda self, data: pytest.fail("read event by event"))
    with _client(whole).responses.with_streaming_response.create(model="one", input="hi", stream=True) as raw:
        assert b"".join(raw.iter_bytes()) == HEAD + TAIL
    assert relayed == [len(HEAD + TAIL)]
