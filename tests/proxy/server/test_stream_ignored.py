"""An upstream that ignores `stream: true` and answers with the whole answer as one JSON document (some
OpenAI-compatible servers and buffering proxies do): the official SDKs, streaming through the sidecar, get
that answer as a stream, from the same target, counted and priced; nothing fails over or is ejected."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import TargetId
from tests.proxy.stack import Stack

HELLO: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stream-ignored")) as running:
        yield running


def healthy(stack: Stack, target: str) -> bool:
    health = stack.call(lambda: stack.sidecar.health.snapshot(TargetId(target), stack.sidecar.clock()))
    return health.last_failure is None


@pytest.mark.parametrize("usage", [True, False], ids=["include_usage", "no usage asked"])
def test_the_openai_sdks_stream_gets_the_whole_answer_from_the_same_target(stack: Stack, usage: bool) -> None:
    stack.call(lambda: stack.faults["oai"].next(Fault(FaultKind.IGNORE_STREAM)))
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0, timeout=20)
    raw = client.chat.completions.with_raw_response.create(
        model="ha", messages=HELLO, stream=True, **({"stream_options": {"include_usage": True}} if usage else {}))
    chunks = list(raw.parse())
    assert raw.headers["x-llmroute-provider"] == "oai" and raw.headers["x-llmroute-attempts"] == "1"
    assert raw.headers["content-type"].startswith("text/event-stream")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[sim-oai gpt-4o-mini] You said: hello")
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    counted = [c.usage for c in chunks if c.usage is not None]
    assert (len(counted) == 1 and counted[0].completion_tokens > 0) if usage else counted == []
    assert healthy(stack, "oai/gpt-4o-mini@here")


def test_the_openai_sdks_stream_helper_reads_a_tool_call_from_a_whole_answer(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].next(Fault(FaultKind.IGNORE_STREAM)))
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0, timeout=20)
    tools: Any = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
                                                                                        "properties": {}}}}]
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HELLO, tools=tools,
                                        tool_choice="required") as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"] and final.choices[0].finish_reason == "tool_calls"
    assert healthy(stack, "oai/gpt-4o-mini@here")  # answered at once, not after a failed attempt


def test_the_anthropic_sdks_stream_gets_the_whole_answer_with_its_usage(stack: Stack) -> None:
    stack.call(lambda: stack.faults["claude"].next(Fault(FaultKind.IGNORE_STREAM)))
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0, timeout=20)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text.startswith("[sim-anthropic claude-sonnet-4-5]") and "hello" in text
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    assert message.id.startswith("msg_")
    assert healthy(stack, "claude/claude-sonnet-4-5@here")
