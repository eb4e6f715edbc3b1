"""A stream that has wholly arrived before anything was sent is judged whole.

When an upstream's whole stream is in the sidecar's hands at its first read (a short answer, a
fast model, one TCP segment), the sidecar reads it to its end before answering, and writes the
answer in one piece. So a stream that turns out broken — an in-band error after some content —
is still a failure before the first token, and fails over invisibly; the same stream arriving
in two parts with a pause between them has been committed by its first token, and ends with an
in-band error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.routing.tokens import estimate_tokens
from llmroute_proxy.sim import FaultPlan
from tests.proxy.documents import provider, route, target
from tests.proxy.server.conftest import stream_app
from tests.proxy.server.spending import ended
from tests.proxy.stack import Stack

CHAT = "/v1/chat/completions"

CONFIG = [
    provider("broken", "openai-compatible", "{broken}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    provider("complete", "openai-compatible", "{complete}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    provider("oai-b", "openai-compatible", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", models=["gpt-4o-mini"]),
    route("main", {"ha": [target("broken", "gpt-4o-mini"), target("oai-b", "gpt-4o-mini", priority=1)]},
          default_tier="ha",
          outlierDetection={"consecutiveFailures": 1000000, "baseEjection": "1s", "maxEjection": "1s"}),
    route("good", {"one": [target("complete", "gpt-4o-mini")]}, default_tier="one"),
    provider("metered", "openai", "{metered}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    provider("erring", "openai", "{erring}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    provider("on-choice", "openai-compatible", "{on_choice}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    route("metered", {"one": [target("metered", "gpt-4o-mini")]}, default_tier="one"),
    route("on-choice", {"one": [target("on-choice", "gpt-4o-mini")]}, default_tier="one"),
    route("erring", {"ha": [target("erring", "gpt-4o-mini"), target("oai-b", "gpt-4o-mini", priority=1)]},
          default_tier="ha",
          outlierDetection={"consecutiveFailures": 1000000, "baseEjection": "1s", "maxEjection": "1s"}),
    provider("metered-compatible", "openai-compatible", "{metered_compatible}/v1", key_env="TEST_OAI_KEY",
             models=["gpt-4o-mini"]),
    route("metered-compatible", {"one": [target("metered-compatible", "gpt-4o-mini")]}, default_tier="one"),
    provider("garbled", "openai-compatible", "{garbled}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"]),
    route("garbled", {"ha": [target("garbled", "gpt-4o-mini"), target("oai-b", "gpt-4o-mini", priority=1)]},
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
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
USAGE_EVENT = _event({"id": "chatcmpl-whole", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                      "choices": [], "usage": USAGE})
IN_BAND_ERROR = _event({"error": {"message": "The server had an error while processing your request.",
                                  "type": "server_error", "param": None, "code": None}})
GARBLED = b'data: {"id":"chatcmpl-broken",,"choices":[{"index":0,"delta":{"content":"an "},"finish_reason":null}]}\n\n'
FINISH_WITH_USAGE = _event({"id": "chatcmpl-whole", "object": "chat.completion.chunk", "created": 1,
                            "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                            "usage": USAGE}) + b"data: [DONE]\n\n"
FINISH = _event({"id": "chatcmpl-whole", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"data: [DONE]\n\n"


def _stack(tmp: pytest.TempPathFactory, gap_s: float) -> Stack:
    def broken(faults: FaultPlan) -> web.Application:
        """A stream that ends after two content chunks, with neither a finish chunk nor `[DONE]`."""
        return stream_app(CHAT, CONTENT, b"", gap_s)

    def complete(faults: FaultPlan) -> web.Application:
        return stream_app(CHAT, _chunk("Whole "), _chunk("answer") + FINISH, gap_s)

    def metered(faults: FaultPlan) -> web.Application:
        """A stream with its usage in a chunk of its own, as OpenAI sends it."""
        return stream_app(CHAT, _chunk("Whole "), _chunk("answer") + FINISH.replace(b"data: [DONE]", USAGE_EVENT.rstrip()
                                                                                + b"\n\ndata: [DONE]"), gap_s)

    def erring(faults: FaultPlan) -> web.Application:
        """A stream whose error comes in band after some content, then ends as if well."""
        return stream_app(CHAT, _chunk("Half "), IN_BAND_ERROR + FINISH, gap_s)

    def on_choice(faults: FaultPlan) -> web.Application:
        """A compatible server's stream with its usage on the finish chunk."""
        return stream_app(CHAT, _chunk("Whole "), _chunk("answer") + FINISH_WITH_USAGE, gap_s)

    def garbled(faults: FaultPlan) -> web.Application:
        """A stream with an event between that is not JSON (which the byte searches do not see)."""
        return stream_app(CHAT, _chunk("Half "), GARBLED + _chunk("answer") + FINISH, gap_s)

    return Stack(tmp.mktemp("whole"), config=CONFIG, extra_sims={
        "broken": broken, "complete": complete, "metered": metered, "erring": erring, "on-choice": on_choice,
        "garbled": garbled, "metered-compatible": metered},
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


def test_a_stream_that_arrived_whole_is_answered_with_its_length_in_one_piece(whole: Stack) -> None:
    client = _client(whole).with_options(default_headers={"x-llmroute-route": "good"})
    stream = client.chat.completions.with_raw_response.create(model="one", messages=HELLO, stream=True)
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "transfer-encoding" not in stream.headers and int(stream.headers["content-length"]) > 0
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices) == "Whole answer"


def test_a_stream_still_arriving_is_relayed_chunked(in_two_parts: Stack) -> None:
    client = _client(in_two_parts).with_options(default_headers={"x-llmroute-route": "good"})
    stream = client.chat.completions.with_raw_response.create(model="one", messages=HELLO, stream=True)
    assert stream.headers["transfer-encoding"] == "chunked" and "content-length" not in stream.headers
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices) == "Whole answer"


@pytest.mark.parametrize("arrival", ["whole", "in_two_parts"])
def test_a_stream_without_usage_is_charged_an_estimate_of_its_prompt_and_text(
        request: pytest.FixtureRequest, arrival: str) -> None:
    """A server that sends no usage: the stream is read event by event (not judged by its bytes,
    which would leave no chunks to estimate from), and what it showed is charged."""
    stack: Stack = request.getfixturevalue(arrival)
    client = _client(stack).with_options(default_headers={"x-llmroute-route": "good"})
    stream = client.chat.completions.with_raw_response.create(
        model="one", messages=HELLO, stream=True, stream_options={"include_usage": True})
    text, usages = _text(stream.parse())
    assert (text, usages) == ("Whole answer", [])
    assert ("content-length" in stream.headers) is (arrival == "whole")  # still answered in one piece
    outcome = ended(stack)  # recorded as its handler ends, a moment after the client's last byte
    prompt = RequestFacts("one", list(HELLO), {}, False, None).prompt_tokens
    assert outcome.usage_estimated
    assert outcome.usage == Usage(input_tokens=prompt, output_tokens=estimate_tokens("Whole answer"))


def _text(chunks: openai.Stream[ChatCompletionChunk]) -> tuple[str, list[CompletionUsage]]:
    received = list(chunks)
    return ("".join(c.choices[0].delta.content or "" for c in received if c.choices),
            [c.usage for c in received if c.usage is not None])


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_whole_stream_shows_its_usage_only_to_a_client_that_asked_and_is_billed_either_way(
        whole: Stack, include_usage: bool) -> None:
    client = _client(whole).with_options(default_headers={"x-llmroute-route": "metered"})
    options: Any = {"stream_options": {"include_usage": True}} if include_usage else {}
    text, usages = _text(client.chat.completions.create(model="one", messages=HELLO, stream=True, **options))
    assert text == "Whole answer"
    assert [(u.prompt_tokens, u.completion_tokens) for u in usages] == ([(7, 3)] if include_usage else [])
    outcome = ended(whole)
    assert outcome.usage == Usage(input_tokens=7, output_tokens=3) and outcome.cost_usd is not None


def test_an_in_band_error_in_a_stream_that_arrived_whole_fails_over_invisibly(whole: Stack) -> None:
    client = _client(whole).with_options(default_headers={"x-llmroute-route": "erring"})
    stream = client.chat.completions.with_raw_response.create(model="ha", messages=HELLO, stream=True)
    assert (stream.headers["x-llmroute-provider"], stream.headers["x-llmroute-attempts"]) == ("oai-b", "2")
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream.parse() if chunk.choices)
    assert text and "Half" not in text


def test_usage_on_the_finish_chunk_of_a_whole_stream_reaches_the_client_as_a_chunk_of_its_own(whole: Stack) -> None:
    client = _client(whole).with_options(default_headers={"x-llmroute-route": "on-choice"})
    received = list(client.chat.completions.create(model="one", messages=HELLO, stream=True,
                                                   stream_options={"include_usage": True}))
    assert [c.usage is not None for c in received] == [False, False, False, True]
    assert received[-1].choices == [] and received[-1].usage is not None
    assert (received[-1].usage.prompt_tokens, received[-1].usage.completion_tokens) == (7, 3)


def _responses_deltas(stack: Stack, route_name: str, tier: str) -> tuple[list[str], Any, dict[str, str]]:
    """The text deltas the SDK's `responses.stream` read, its final Response, and the answer's headers."""
    client = _client(stack).with_options(default_headers={"x-llmroute-route": route_name})
    with client.responses.with_streaming_response.create(model=tier, input="hello", stream=True) as raw:
        headers = dict(raw.headers)
    with client.responses.stream(model=tier, input="hello") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    return deltas, final, headers


def _responses_text(stack: Stack, route_name: str, tier: str) -> tuple[str, Any, dict[str, str]]:
    deltas, final, headers = _responses_deltas(stack, route_name, tier)
    return "".join(deltas), final, headers


def test_a_responses_stream_that_arrived_whole_reads_as_one_that_did_not(whole: Stack, in_two_parts: Stack) -> None:
    """Through chat completions (a compatible server): OpenAI's own targets are sent `/responses`.
    The texts of one read are one delta: the whole answer's, or each part's."""
    at_once, final, headers = _responses_deltas(whole, "metered-compatible", "one")
    assert "content-length" in headers  # written whole, from the judged body
    in_parts, final_in_parts, _ = _responses_deltas(in_two_parts, "metered-compatible", "one")
    assert at_once == ["Whole answer"] and in_parts == ["Whole ", "answer"]
    assert final.output_text == final_in_parts.output_text == "Whole answer"
    assert final.status == final_in_parts.status == "completed"
    assert final.usage is not None and final_in_parts.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        final_in_parts.usage.input_tokens, final_in_parts.usage.output_tokens) == (7, 3)


def test_a_whole_stream_with_an_event_that_is_not_json_fails_over_invisibly_for_a_responses_client(
        whole: Stack) -> None:
    text, final, headers = _responses_text(whole, "garbled", "ha")
    assert (headers["x-llmroute-provider"], headers["x-llmroute-attempts"]) == ("oai-b", "2")
    assert text == final.output_text and text and "Half" not in text
