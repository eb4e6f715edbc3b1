"""Claude Code's own request, as version 2.1.197 sends it, through the sidecar to every provider type.

The shape was captured from the real CLI pointed at a local server: a `system` message in the middle
of the conversation (its beta `mid-conversation-system-2026-04-07`), `context_management`,
`output_config.effort`, adaptive thinking, cached system blocks, tools with a `$schema`, and seven
beta features in `anthropic-beta`. Before, the sidecar refused every such request (400: role must be
user or assistant), so Claude Code could not use it at all.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.proxy.server.conftest import last_request, sim_requests
from tests.proxy.stack import Stack

BETAS = ["claude-code-20250219", "interleaved-thinking-2025-05-14", "thinking-token-count-2026-05-13",
         "context-management-2025-06-27", "prompt-caching-scope-2026-01-05", "mid-conversation-system-2026-04-07",
         "effort-2025-11-24"]
AGENTS = "Available agent types for the Agent tool:\n- claude: Catch-all for any task."
MESSAGES: Any = [
    {"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, use this context.\n"
                                 "</system-reminder>"},
        {"type": "text", "text": "Say hi"}]},
    {"role": "system", "content": AGENTS},
]
SYSTEM: Any = [
    {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"},
    {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
]
BASH: Any = {"name": "Bash", "description": "Run a command.", "input_schema": {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
    "properties": {"command": {"type": "string"}}, "required": ["command"]}}
EXTRA = {"context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
         "output_config": {"effort": "high"}}


def claude_code(stack: Stack, tier: str, max_tokens: int = 8000) -> Any:
    client = anthropic.Anthropic(base_url=stack.url, api_key="sk-app", max_retries=0)
    with client.beta.messages.stream(
            model=tier, max_tokens=max_tokens, system=SYSTEM, messages=MESSAGES, tools=[BASH], betas=BETAS,
            thinking={"type": "adaptive"},  # type: ignore[typeddict-item]
            metadata={"user_id": '{"device_id":"f209","session_id":"79d0"}'},
            extra_body=EXTRA) as stream:
        return stream.get_final_message()


def answered(message: Any) -> bool:
    """A text answer, or a call of Claude Code's tool (a simulator may choose either)."""
    return any((block.type == "text" and "You said: <system-reminder>" in block.text)
               or (block.type == "tool_use" and block.name == "Bash") for block in message.content)


def test_claude_code_is_answered_by_claude_with_its_request_as_it_sent_it(stack: Stack) -> None:
    assert answered(claude_code(stack, "anthropic"))
    sent = last_request(stack, "claude")
    assert sent.body["messages"] == MESSAGES and sent.body["context_management"] == EXTRA["context_management"]
    assert sent.headers["anthropic-beta"].split(",") == BETAS


@pytest.mark.parametrize(("tier", "sim"), [("openai", "oai"), ("gemini", "gem")])
def test_claude_code_is_answered_by_other_providers_with_its_system_message_where_it_said_it(
        stack: Stack, tier: str, sim: str) -> None:
    assert answered(claude_code(stack, tier))
    sent = last_request(stack, sim).body
    if sim == "oai":
        roles = [message["role"] for message in sent["messages"]]
        assert roles == ["system", "user", "system"] and sent["messages"][2]["content"] == AGENTS
    else:
        assert {"text": AGENTS} in sent["systemInstruction"]["parts"] and "context_management" not in sent


def test_claude_codes_32000_output_tokens_are_asked_of_gpt_4o_mini_as_the_16384_it_gives(stack: Stack) -> None:
    """OpenAI refuses more than a model gives (400, stating the most); the limit was chosen for Claude."""
    client = anthropic.Anthropic(base_url=stack.url, api_key="sk-app", max_retries=0)
    hi: Any = [{"role": "user", "content": "hi"}]
    before = sim_requests(stack, "oai")
    first = client.messages.with_raw_response.create(model="openai", max_tokens=32000, messages=hi, timeout=30)
    assert first.parse().content and first.headers["x-llmroute-attempts"] == "1"
    assert sim_requests(stack, "oai") == before + 2  # refused for 32000, answered for 16384
    assert last_request(stack, "oai").body["max_completion_tokens"] == 16384
    client.messages.create(model="openai", max_tokens=32000, messages=hi, timeout=30)
    assert sim_requests(stack, "oai") == before + 3  # the target's limit is remembered: asked once


def test_an_openai_clients_own_output_limit_is_its_own_choice(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-app", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="openai", max_tokens=32000, messages=[{"role": "user", "content": "hi"}])
    assert "supports at most 16384 completion tokens" in refused.value.message


def test_claude_codes_own_request_is_mended_twice_for_gpt_4o_mini_within_one_attempt(stack: Stack) -> None:
    """Its adaptive thinking becomes a reasoning hint gpt-4o-mini refuses, then its 32,000 output tokens
    are more than the model gives: each refusal is of the sidecar's translation, mended at once."""
    stack.call(lambda: (stack.sidecar.refuses_reasoning_hint.clear(), stack.sidecar.output_limits.clear()))
    before = sim_requests(stack, "oai")  # as on a new table: nothing learnt of the target yet
    assert answered(claude_code(stack, "openai", max_tokens=32000))
    sent = last_request(stack, "oai").body
    assert "reasoning_effort" not in sent and sent["max_completion_tokens"] == 16384
    assert sim_requests(stack, "oai") == before + 3


async def test_claude_codes_head_of_its_base_url_is_answered_not_logged_as_refused(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmroute.proxy")
    async with aiohttp.ClientSession() as session:
        async with session.head(stack.url + "/") as head:
            assert head.status == 200
        async with session.get(stack.url + "/") as get:
            assert get.status == 200 and "/v1/messages" in await get.text()
    assert not [r for r in caplog.records if "refused a request" in r.getMessage()]
