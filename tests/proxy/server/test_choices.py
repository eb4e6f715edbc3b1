"""Several choices (`n`) and log probabilities, asked by a chat client of every kind of target.

An OpenAI target answers them itself; a Gemini target answers `n` as `candidateCount` and its
candidates become the choices; log probabilities are refused by the targets that cannot give them
(Gemini, Anthropic) with a 400 naming the field. Every choice's finish reason is in the attempt's span,
in choice order. Streams are read as they come over the network, as they come whole in one read (the
sidecar's fast path for those) and in the real APIs' untidy shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llmroute_proxy.server.telemetry import Telemetry, TelemetrySettings
from llmroute_proxy.sim import FaultPlan
from llmroute_proxy.sim.answers import count_tokens
from llmroute_proxy.sim.openai import OpenAIDialect
from llmroute_proxy.sim.runtime import SimConfig, build_app
from tests.proxy.documents import model, provider, target, with_tier
from tests.proxy.server.tracing import spans_from_now
from tests.proxy.stack import DOCUMENTS, NETWORK, Stack

QUESTION = "tell me a story"
MESSAGES: Any = [{"role": "user", "content": QUESTION}]
ANSWERS = {"openai": f"[sim-oai gpt-4o-mini] You said: {QUESTION}",
           "gemini": f"[sim-gemini gemini-2.5-flash] You said: {QUESTION}"}
ARRIVALS = ("network", "whole", "quirks")
SPANS = InMemorySpanExporter()

WHOLE_DOCUMENTS = [*with_tier(DOCUMENTS, "main", "openai", [target("oai-whole", "gpt-4o-mini")]),
                   provider("oai-whole", "openai", "{oai_whole}/v1", key_env="TEST_OAI_KEY",
                            models=[model("gpt-4o-mini")])]
"""The stack's configuration with its `openai` tier behind `oai-whole`, which answers whole."""


def whole_answers(upstream: Callable[[], str], faults: FaultPlan) -> web.Application:
    """The simulator at `upstream()` behind a buffering proxy (itself a simulator's app: its requests are
    recorded, `faults` apply): each answer, streamed or not, reaches the sidecar in one piece with its
    length, so a stream takes the sidecar's path for streams that arrive whole."""
    async def answer(request: web.Request) -> web.Response:
        headers = {"Authorization": request.headers["Authorization"], "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session, session.post(
                upstream() + request.path, data=await request.read(), headers=headers) as relayed:
            return web.Response(body=await relayed.read(), status=relayed.status,
                                content_type=relayed.content_type)

    app = build_app(SimConfig("sim-oai-whole"), faults, OpenAIDialect())
    app.router.add_post("/v1/chat/completions", answer)
    return app


@pytest.fixture(scope="module", params=ARRIVALS)
def arrival(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def stack(arrival: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with its simulators' answers cut at arbitrary offsets, arriving whole, or in quirky shapes."""
    tmp = tmp_path_factory.mktemp("choices")
    telemetry = Telemetry(TelemetrySettings(), span_exporter=SPANS)
    if arrival != "whole":
        with Stack(tmp, telemetry=telemetry, delivery=NETWORK, quirks=arrival == "quirks") as running:
            yield running
        return
    stack = Stack(tmp, telemetry=telemetry, config=WHOLE_DOCUMENTS, delivery=None, extra_sims={
        "oai-whole": lambda faults: whole_answers(lambda: stack.sims["oai"].url, faults)})
    with stack:
        yield stack


@pytest.fixture
def spans(stack: Stack) -> Callable[[], list[ReadableSpan]]:
    """The spans finished since the test began."""
    return spans_from_now(stack, SPANS)


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    api = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0, timeout=10)
    yield api
    api.close()


def expected_texts(tier: str, n: int) -> list[str]:
    first = ANSWERS[tier]
    return [first, *(f"(choice {index + 1}) {first}" for index in range(1, n))]


def output_tokens(texts: list[str]) -> int:
    return sum(count_tokens(text) for text in texts)


def assert_counts_every_choice(usage: Any, texts: list[str]) -> None:
    """The usage counts the output of every choice (and a thinking model's thoughts, as reasoning)."""
    assert usage is not None
    reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else 0
    assert usage.completion_tokens == output_tokens(texts) + (reasoning or 0)


@pytest.mark.parametrize("tier", ["openai", "gemini"])
def test_n_choices_come_back_with_their_texts_and_usage_counts_them_all(client: openai.OpenAI, tier: str) -> None:
    completion = client.chat.completions.create(model=tier, messages=MESSAGES, n=2)

    texts = expected_texts(tier, 2)
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, texts[0], "stop"), (1, texts[1], "stop")]
    assert_counts_every_choice(completion.usage, texts)


@pytest.mark.parametrize("tier", ["openai", "gemini"])
def test_streamed_n_choices_are_told_apart_by_index_and_usage_counts_them_all(
        client: openai.OpenAI, tier: str) -> None:
    with client.chat.completions.stream(model=tier, messages=MESSAGES, n=2,
                                        stream_options={"include_usage": True}) as stream:
        chunks: list[ChatCompletionChunk] = [event.chunk for event in stream if event.type == "chunk"]
        final: ChatCompletion = stream.get_final_completion()

    texts = expected_texts(tier, 2)
    assert [(c.index, c.message.content, c.finish_reason) for c in final.choices] == [
        (0, texts[0], "stop"), (1, texts[1], "stop")]
    finishes = sorted((c.index, c.finish_reason) for chunk in chunks for c in chunk.choices if c.finish_reason)
    assert finishes == [(0, "stop"), (1, "stop")]
    assert chunks[-1].choices == [] and all(chunk.usage is None for chunk in chunks[:-1])
    assert_counts_every_choice(chunks[-1].usage, texts)


@pytest.mark.parametrize("asked", [{}, {"logprobs": True, "top_logprobs": 2}])
def test_a_stream_of_several_choices_that_arrived_whole_is_answered_whole_with_every_choice(
        client: openai.OpenAI, arrival: str, asked: dict[str, Any]) -> None:
    raw = client.chat.completions.with_raw_response.create(model="openai", messages=MESSAGES, n=2, stream=True,
                                                           extra_body=asked)
    chunks = list(raw.parse())

    assert ("content-length" in raw.headers) is (arrival == "whole")  # the fast path took it, or not
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == index)
             for index in (0, 1)]
    assert texts == expected_texts("openai", 2)
    assert [(c.choices[0].index, c.choices[0].finish_reason) for c in chunks if c.choices[0].finish_reason] == [
        (0, "stop"), (1, "stop")]


@pytest.mark.parametrize("tier", ["openai", "gemini"])
@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_every_choices_finish_reason_is_in_the_attempts_span_in_choice_order(
        client: openai.OpenAI, spans: Callable[[], list[ReadableSpan]], tier: str, stream: bool) -> None:
    """The first choice fits the output limit, the second (the same text, with a prefix) is cut: `stop`, then
    `length`. The question is long enough that the limit leaves a thinking Gemini room to answer."""
    question = "tell me a story about a lighthouse keeper, his cat and the winter storm"
    limit = count_tokens(ANSWERS[tier].replace(QUESTION, question))
    asked: dict[str, Any] = {"model": tier, "messages": [{"role": "user", "content": question}], "n": 2,
                             "max_tokens": limit}
    if stream:
        chunks = list(client.chat.completions.create(**asked, stream=True))
        finishes = [c.finish_reason for c in sorted((c for chunk in chunks for c in chunk.choices if c.finish_reason),
                                                    key=lambda c: c.index)]
    else:
        finishes = [c.finish_reason for c in client.chat.completions.create(**asked).choices]

    assert finishes == ["stop", "length"]
    [attempt] = [span for span in spans() if span.kind is SpanKind.CLIENT]
    assert (attempt.attributes or {})["gen_ai.response.finish_reasons"] == ("stop", "length")


def test_logprobs_of_an_openai_target_come_back_for_every_token(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="openai", messages=MESSAGES, n=2, logprobs=True,
                                                top_logprobs=2)

    for choice, text in zip(completion.choices, expected_texts("openai", 2), strict=True):
        assert choice.logprobs is not None and choice.logprobs.content
        assert "".join(token.token for token in choice.logprobs.content) == text
        assert all(len(token.top_logprobs) == 2 for token in choice.logprobs.content)


def test_streamed_logprobs_of_an_openai_target_add_up_to_the_whole_answers(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="openai", messages=MESSAGES, n=2, logprobs=True, top_logprobs=2)
    with client.chat.completions.stream(model="openai", messages=MESSAGES, n=2, logprobs=True,
                                        top_logprobs=2) as stream:
        streamed = stream.get_final_completion()

    assert [c.message.content for c in streamed.choices] == expected_texts("openai", 2)
    for got, wanted in zip(streamed.choices, whole.choices, strict=True):
        assert got.logprobs is not None and wanted.logprobs is not None
        assert got.logprobs.content == wanted.logprobs.content


@pytest.mark.parametrize("tier", ["gemini", "anthropic"])
@pytest.mark.parametrize("asked", [{"logprobs": True}, {"logprobs": True, "top_logprobs": 2}])
@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_asked_of_a_target_that_cannot_give_them_are_refused_naming_the_field(
        client: openai.OpenAI, tier: str, asked: dict[str, Any], stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=tier, messages=MESSAGES, stream=stream, extra_body=asked)

    assert refused.value.status_code == 400 and refused.value.param == "logprobs"
    assert "log probabilities" in refused.value.message


def test_n_asked_of_an_anthropic_target_is_refused_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="anthropic", messages=MESSAGES, n=2)

    assert refused.value.status_code == 400 and refused.value.param == "n"
