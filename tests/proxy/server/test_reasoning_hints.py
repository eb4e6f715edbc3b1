"""A thinking control translated from another dialect is a hint: a model that has no reasoning is
answered without it, never failed for it.

Claude Code and other Anthropic clients send `thinking`; the sidecar turns it into
`reasoning_effort` for OpenAI targets, and OpenAI refuses that field on a model that does not reason
(gpt-4o, gpt-4.1: 400 "Unsupported parameter: 'reasoning_effort' is not supported with this model.").
A failover to such a model must not fail on the sidecar's own translation, so the target is asked
again at once without it. An OpenAI client's own `reasoning_effort` is its own choice: OpenAI's 400 is
passed on, as any client error.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.proxy.documents import edited, model, target, with_tier
from tests.proxy.server.conftest import last_request, sim_requests
from tests.proxy.stack import DOCUMENTS, Stack

THINKING = {"type": "enabled", "budget_tokens": 4096}
ASK = [{"role": "user", "content": "Think, then say hi."}]


OPUS = "claude-opus-4-1"
CONFIG = with_tier(edited(DOCUMENTS, "claude", models=[model("claude-sonnet-4-5"), model(OPUS)]), "main", "opus",
                   [target("claude", OPUS)])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("hints"), config=CONFIG) as running:
        yield running


def claude_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)


def test_an_anthropic_clients_thinking_reaches_gpt_4o_as_an_answer_not_a_400(stack: Stack) -> None:
    before = sim_requests(stack, "oai")
    message = claude_client(stack).messages.create(model="openai", max_tokens=1024, messages=ASK,  # type: ignore[arg-type]
                                                   thinking=THINKING)  # type: ignore[arg-type]
    assert message.content[-1].type == "text" and "You said" in message.content[-1].text  # type: ignore[union-attr]
    assert sim_requests(stack, "oai") == before + 2  # refused with the hint, answered without it
    assert "reasoning_effort" not in last_request(stack, "oai").body


def test_a_target_that_refused_the_hint_is_sent_none_again_until_the_table_changes(stack: Stack) -> None:
    def ask() -> int:
        before = sim_requests(stack, "oai")
        claude_client(stack).messages.create(model="openai", max_tokens=1024, messages=ASK,  # type: ignore[arg-type]
                                             thinking=THINKING)  # type: ignore[arg-type]
        return sim_requests(stack, "oai") - before

    stack.call(lambda: stack.sidecar.refuses_reasoning_hint.clear())
    assert [ask(), ask(), ask()] == [2, 1, 1]  # refused once, then asked without it at once
    assert "reasoning_effort" not in last_request(stack, "oai").body
    stack.call(lambda: stack.sidecar.install(stack.sidecar.table))  # type: ignore[arg-type]
    assert ask() == 2  # a new table (a model may have changed): asked with the hint again


def test_the_same_holds_for_a_stream(stack: Stack) -> None:
    with claude_client(stack).messages.stream(model="openai", max_tokens=1024, messages=ASK,  # type: ignore[arg-type]
                                              thinking=THINKING) as stream:  # type: ignore[arg-type]
        text = stream.get_final_text()
    assert "You said" in text and "reasoning_effort" not in last_request(stack, "oai").body


def test_a_model_that_reasons_gets_the_hint(stack: Stack) -> None:
    """gemini-2.5-flash thinks: the hint becomes its thinking budget, sent the first time."""
    before = sim_requests(stack, "gem")
    claude_client(stack).messages.create(model="gemini", max_tokens=1024, messages=ASK,  # type: ignore[arg-type]
                                         thinking=THINKING)  # type: ignore[arg-type]
    assert sim_requests(stack, "gem") == before + 1
    assert "thinkingConfig" in last_request(stack, "gem").body["generationConfig"]


def test_an_openai_clients_own_reasoning_effort_is_its_own_400(stack: Stack) -> None:
    before = sim_requests(stack, "oai")
    with pytest.raises(openai.BadRequestError) as refused:
        openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0).chat.completions.create(
            model="openai", messages=ASK, reasoning_effort="low")  # type: ignore[arg-type]
    assert refused.value.param == "reasoning_effort" and refused.value.code == "unsupported_parameter"
    assert sim_requests(stack, "oai") == before + 1  # asked once: the field was the client's to choose


@pytest.mark.parametrize("effort", ["high", "xhigh"])
def test_the_most_thinking_an_openai_client_asks_of_opus_stays_within_its_output_limit(stack: Stack, effort: str) -> None:
    """Claude counts thinking against max_tokens, so the sidecar adds the budget to it; Opus 4.1 refuses more
    than 32,000 (400 "max_tokens: 36864 > 32000, which is the maximum allowed number of output tokens")."""
    answer = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0).chat.completions.create(
        model="opus", messages=ASK, reasoning_effort=effort)  # type: ignore[arg-type]
    sent = last_request(stack, "claude").body
    assert answer.choices[0].message.content and sent["thinking"]["type"] == "enabled"
    assert sent["thinking"]["budget_tokens"] < sent["max_tokens"] <= 32000
