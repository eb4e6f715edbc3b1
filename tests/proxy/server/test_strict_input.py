"""Every field of both front doors is checked as strictly as the real APIs check it (issue 11, defect 7).

Each class of looseness gets a 400 in the endpoint's own error shape, naming the field; what the
real APIs accept still goes through.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.proxy.server.conftest import sim_requests
from tests.proxy.stack import Stack

HELLO = [{"role": "user", "content": "hello"}]
CHAT = {"model": "openai", "messages": HELLO}
EMBED = {"model": "embed", "input": "a cat"}
MESSAGES = {"model": "openai", "max_tokens": 16, "messages": HELLO}


async def post(stack: Stack, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            stack.url + path, data=body if isinstance(body, bytes) else orjson.dumps(body), headers={"content-type": "application/json"}) as r:
        return r.status, orjson.loads(await r.read())


def user(content: Any) -> dict[str, Any]:
    return {**CHAT, "messages": [{"role": "user", "content": content}]}


CHAT_CASES = {
    # wrong type where a boolean is due
    "stream-string": ({**CHAT, "stream": "yes"}, "stream"),
    "stream-number": ({**CHAT, "stream": 1}, "stream"),
    "logprobs-string": ({**CHAT, "logprobs": "true"}, "logprobs"),
    "include-usage-string": ({**CHAT, "stream": True, "stream_options": {"include_usage": "yes"}},
                             "stream_options.include_usage"),
    # a boolean where a number is due (True is an int in Python)
    "max-tokens-true": ({**CHAT, "max_tokens": True}, "max_tokens"),
    "temperature-true": ({**CHAT, "temperature": True}, "temperature"),
    "seed-false": ({**CHAT, "seed": False}, "seed"),
    # numbers out of the API's range, or too large to be integers
    "temperature-3": ({**CHAT, "temperature": 3}, "temperature"),
    "top-p-1.5": ({**CHAT, "top_p": 1.5}, "top_p"),
    "presence-penalty--3": ({**CHAT, "presence_penalty": -3}, "presence_penalty"),
    "top-logprobs-21": ({**CHAT, "top_logprobs": 21}, "top_logprobs"),
    "max-tokens-negative": ({**CHAT, "max_completion_tokens": -5}, "max_completion_tokens"),
    "max-tokens-beyond-64-bits": (orjson.dumps(CHAT)[:-1] + b', "max_tokens": 1' + b"0" * 30 + b"}", "max_tokens"),
    "logit-bias-200": ({**CHAT, "logit_bias": {"50256": 200}}, "logit_bias.50256"),
    # roles that are not strings (a list role used to raise TypeError: a 500)
    "role-number": ({**CHAT, "messages": [{"role": 5, "content": "x"}]}, "messages[0].role"),
    "role-list": ({**CHAT, "messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    # content parts
    "part-unknown-type": (user([{"type": "video", "video": {}}]), "messages[0].content[0].type"),
    "part-without-type": (user([{"text": "x"}]), "messages[0].content[0].type"),
    "part-not-object": (user(["x"]), "messages[0].content[0]"),
    "part-text-not-string": (user([{"type": "text", "text": 5}]), "messages[0].content[0].text"),
    "part-image-without-url": (user([{"type": "image_url", "image_url": {}}]),
                               "messages[0].content[0].image_url.url"),
    "part-image-in-system": ({**CHAT, "messages": [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, *HELLO]},
        "messages[0].content[0].type"),
    "content-empty-array": (user([]), "messages[0].content"),
    # tool use
    "tool-message-without-call-id": ({**CHAT, "messages": [*HELLO, {"role": "tool", "content": "x"}]},
                                     "messages[1].tool_call_id"),
    "tool-call-without-function": ({**CHAT, "messages": [
        *HELLO, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]},
        "messages[1].tool_calls[0].function"),
    "tools-empty": ({**CHAT, "tools": []}, "tools"),
    "tool-without-name": ({**CHAT, "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    "tool-unknown-type": ({**CHAT, "tools": [{"type": "retrieval"}]}, "tools[0].type"),
    "tool-choice-unknown": ({**CHAT, "tool_choice": "sometimes"}, "tool_choice"),
    "tool-choice-without-name": ({**CHAT, "tool_choice": {"type": "function", "function": {}}},
                                 "tool_choice.function.name"),
    # arrays: wrong items, too many
    "stop-five": ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    "stop-number-item": ({**CHAT, "stop": ["a", 1]}, "stop[1]"),
    # other fields of the wrong type or value
    "response-format-unknown": ({**CHAT, "response_format": {"type": "xml"}}, "response_format.type"),
    "response-format-schema-unnamed": ({**CHAT, "response_format": {"type": "json_schema", "json_schema": {}}},
                                       "response_format.json_schema.name"),
    "user-number": ({**CHAT, "user": 5}, "user"),
    "metadata-value-number": ({**CHAT, "metadata": {"a": 1}}, "metadata.a"),
}


@pytest.mark.parametrize(("body", "param"), CHAT_CASES.values(), ids=CHAT_CASES.keys())
async def test_chat_completions_refuse_each_loose_field_by_its_path(stack: Stack, body: Any, param: str) -> None:
    status, answer = await post(stack, "/v1/chat/completions", body)
    assert status == 400, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error"
    assert param in answer["error"]["message"]
    assert sim_requests(stack, "oai") == 0  # refused at the door, nothing sent upstream


EMBED_CASES = {
    "input-empty-string": ({**EMBED, "input": ""}, "input"),
    "input-empty-array": ({**EMBED, "input": []}, "input"),
    "input-boolean-token": ({**EMBED, "input": [True, 2]}, "input[0]"),
    "input-float-token": ({**EMBED, "input": [1.5]}, "input[0]"),
    "input-negative-token": ({**EMBED, "input": [[1, -2]]}, "input[0][1]"),
    "input-empty-tokens": ({**EMBED, "input": [[]]}, "input[0]"),
    "input-object": ({**EMBED, "input": [{"text": "x"}]}, "input[0]"),
    "input-too-many": ({**EMBED, "input": ["x"] * 2049}, "input"),
    "encoding-format-unknown": ({**EMBED, "encoding_format": "hex"}, "encoding_format"),
    "dimensions-true": ({**EMBED, "dimensions": True}, "dimensions"),
    "dimensions-zero": ({**EMBED, "dimensions": 0}, "dimensions"),
}


@pytest.mark.parametrize(("body", "param"), EMBED_CASES.values(), ids=EMBED_CASES.keys())
async def test_embeddings_refuse_each_loose_field_by_its_path(stack: Stack, body: Any, param: str) -> None:
    status, answer = await post(stack, "/v1/embeddings", body)
    assert status == 400, answer
    assert answer["error"]["param"] == param
    assert param in answer["error"]["message"]


def turn(content: Any, role: Any = "user") -> dict[str, Any]:
    return {**MESSAGES, "messages": [{"role": role, "content": content}]}


SERVER_TOOL = [{"type": "web_search_20250305", "name": "web_search"}]
MESSAGES_CASES = {
    "stream-string": ({**MESSAGES, "stream": "yes"}, "stream"),
    "stream-number": ({**MESSAGES, "stream": 1}, "stream"),
    # an Anthropic-only request (a server tool) is checked as fully as any other
    "stream-string-with-server-tool": ({**MESSAGES, "stream": "yes", "tools": SERVER_TOOL}, "stream"),
    "max-tokens-negative": ({**MESSAGES, "max_tokens": -1}, "max_tokens"),
    "max-tokens-float": ({**MESSAGES, "max_tokens": 1.5}, "max_tokens"),
    "temperature-true": ({**MESSAGES, "temperature": True}, "temperature"),
    "temperature-1.5": ({**MESSAGES, "temperature": 1.5}, "temperature"),
    "top-k-negative": ({**MESSAGES, "top_k": -1}, "top_k"),
    "top-k-string": ({**MESSAGES, "top_k": "5"}, "top_k"),
    "stop-sequences-number": ({**MESSAGES, "stop_sequences": ["a", 1]}, "stop_sequences[1]"),
    "metadata-string": ({**MESSAGES, "metadata": "x"}, "metadata"),
    "metadata-user-id-number": ({**MESSAGES, "metadata": {"user_id": 5}}, "metadata.user_id"),
    "system-number": ({**MESSAGES, "system": 5}, "system"),
    "role-list": (turn("x", ["user"]), "messages[0].role"),
    "content-empty-string": (turn(""), "messages[0].content"),
    "content-empty-array": (turn([]), "messages[0].content"),
    "block-not-object": (turn([5]), "messages[0].content[0]"),
    "tools-not-array": ({**MESSAGES, "tools": "x"}, "tools"),
    "tool-without-name": ({**MESSAGES, "tools": [{"input_schema": {}}]}, "tools[0].name"),
    "tool-choice-tool-without-name": ({**MESSAGES, "tool_choice": {"type": "tool"}}, "tool_choice.name"),
    "tool-choice-parallel-string": ({**MESSAGES, "tool_choice": {"type": "auto", "disable_parallel_tool_use": "y"}},
                                    "tool_choice.disable_parallel_tool_use"),
    "thinking-string": ({**MESSAGES, "thinking": "yes"}, "thinking"),
    "thinking-unknown-type": ({**MESSAGES, "thinking": {"type": "on"}}, "thinking.type"),
    "thinking-without-budget": ({**MESSAGES, "thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    "thinking-budget-true": ({**MESSAGES, "thinking": {"type": "enabled", "budget_tokens": True}},
                             "thinking.budget_tokens"),
}


@pytest.mark.parametrize(("body", "param"), MESSAGES_CASES.values(), ids=MESSAGES_CASES.keys())
async def test_messages_refuse_each_loose_field_naming_it(stack: Stack, body: Any, param: str) -> None:
    status, answer = await post(stack, "/v1/messages", body)
    assert status == 400, answer
    assert answer == {"type": "error", "error": {"type": "invalid_request_error",
                                                 "message": answer["error"]["message"]}}
    assert param in answer["error"]["message"]
    assert sim_requests(stack, "oai") == 0


ACCEPTED_CHAT = {
    "edges-of-ranges": {**CHAT, "temperature": 2, "top_p": 0, "presence_penalty": -2, "frequency_penalty": 2,
                        "top_logprobs": 0, "logprobs": True, "seed": -1},
    "nulls-for-optional-fields": {**CHAT, "temperature": None, "stop": None, "tools": None, "user": None},
    "four-stop-sequences": {**CHAT, "stop": ["a", "b", "c", "d"]},
    "assistant-null-content-with-tool-calls": {**CHAT, "messages": [
        *HELLO, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]}]},
    "developer-text-parts": {**CHAT, "messages": [{"role": "developer", "content": [{"type": "text", "text": "x"}]},
                                                  *HELLO]},
    "unknown-top-level-field": {**CHAT, "verbosity": "low", "prediction": {"type": "content", "content": "x"}},
}


@pytest.mark.parametrize("body", ACCEPTED_CHAT.values(), ids=ACCEPTED_CHAT.keys())
async def test_what_openai_accepts_is_still_served(stack: Stack, body: Any) -> None:
    status, answer = await post(stack, "/v1/chat/completions", body)
    assert status == 200, answer
    assert answer["object"] == "chat.completion"


@pytest.mark.parametrize("inputs", [["a", "b"], [1, 2, 3], [[1, 2], [3]], ["x"] * 2048],
                         ids=["texts", "tokens", "token-arrays", "2048-texts"])
async def test_what_openai_embeddings_accept_is_still_served(stack: Stack, inputs: Any) -> None:
    status, answer = await post(stack, "/v1/embeddings", {**EMBED, "input": inputs})
    assert status == 200, answer
    assert len(answer["data"]) == (len(inputs) if isinstance(inputs[0], str | list) else 1)


ACCEPTED_MESSAGES = {
    "edges-of-ranges": {**MESSAGES, "temperature": 1, "top_p": 0, "top_k": 0, "stream": False},
    "assistant-prefill-may-be-empty": {**MESSAGES, "messages": [*HELLO, {"role": "assistant", "content": ""}]},
    "thinking-disabled": {**MESSAGES, "thinking": {"type": "disabled"}},
    "metadata-without-user": {**MESSAGES, "metadata": {}},
}


@pytest.mark.parametrize("body", ACCEPTED_MESSAGES.values(), ids=ACCEPTED_MESSAGES.keys())
async def test_what_anthropic_accepts_is_still_served(stack: Stack, body: Any) -> None:
    status, answer = await post(stack, "/v1/messages", body)
    assert status == 200, answer
    assert answer["type"] == "message"
