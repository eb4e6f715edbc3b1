"""OpenAI and Azure OpenAI targets are sent a Responses request natively, and their answers are read back.

The event streams below have the shapes OpenAI's Responses API sends: every event named and
numbered, `obfuscation` padding and empty `logprobs` on text deltas, a reasoning item whose summary
is empty but whose encrypted content rides along, function call arguments in pieces.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.base import (
    ANSWERED_BY,
    DEFAULT_SEARCH_ESTIMATE,
    ChatRequest,
    NativeBody,
    NativeDialect,
    StreamChunk,
    carries_output,
)
from llmroute_proxy.dialects.openai.responses import ResponsesEventTranslator, result_from_response
from llmroute_proxy.dialects.responses.encoder import ResponsesEncoder
from llmroute_proxy.dialects.responses.request_in import read_turn
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.azure_openai import AzureOpenAIProvider
from llmroute_proxy.providers.base import Provider
from llmroute_proxy.providers.openai import OpenAICompatibleProvider, OpenAIProvider
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

OPENAI: Provider = OpenAIProvider()
AZURE: Provider = AzureOpenAIProvider()
COMPATIBLE: Provider = OpenAICompatibleProvider()


def make_target(provider_type: ProviderType, url: str, model: str = "gpt-5-mini",
                options: dict[str, str] | None = None) -> Target:
    return Target(id=TargetId(f"p/{model}@us"), provider="p", provider_type=provider_type, model=model, url=url,
                  region="us", credential=Secret("sk-test-0123456789"), options=options or {})


OPENAI_TARGET = make_target(ProviderType.OPENAI, "https://api.openai.com/v1")

BODY = {"model": "smart", "input": "Say hi", "tools": [{"type": "web_search"}], "include": ["web_search_call.results"],
        "store": True, "metadata": {"ticket": "T-1"}}


def native_request(body: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None) -> ChatRequest:
    turn = read_turn(body or BODY, history or [])
    return ChatRequest(turn.canonical, NativeBody(NativeDialect.OPENAI_RESPONSES, turn.native_body(), turn.only))


def event(kind: str, number: int, **fields: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, "sequence_number": number, **fields}))


RESPONSE = {"id": "resp_68c1", "object": "response", "created_at": 1764000000, "status": "in_progress",
            "background": False, "error": None, "incomplete_details": None, "instructions": None,
            "model": "gpt-5-mini-2025-08-07", "output": [], "parallel_tool_calls": True, "store": True,
            "tools": [], "usage": None, "metadata": {}}
REASONING = {"id": "rs_68c1", "type": "reasoning", "summary": [], "encrypted_content": "gAAAAABo-opaque"}
MESSAGE = {"id": "msg_68c1", "type": "message", "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "Hi there"}]}
USAGE = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 70,
         "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 82}
TEXT_STREAM = b"".join([
    event("response.created", 0, response=RESPONSE),
    event("response.in_progress", 1, response=RESPONSE),
    event("response.output_item.added", 2, output_index=0, item={**REASONING, "encrypted_content": None}),
    event("response.output_item.done", 3, output_index=0, item=REASONING),
    event("response.output_item.added", 4, output_index=1,
          item={"id": "msg_68c1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}),
    event("response.content_part.added", 5, item_id="msg_68c1", output_index=1, content_index=0,
          part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""}),
    event("response.output_text.delta", 6, item_id="msg_68c1", output_index=1, content_index=0, delta="Hi",
          logprobs=[], obfuscation="x7Qp0a"),
    event("response.output_text.delta", 7, item_id="msg_68c1", output_index=1, content_index=0, delta=" there",
          logprobs=[], obfuscation="Zk2"),
    event("response.output_text.done", 8, item_id="msg_68c1", output_index=1, content_index=0, text="Hi there",
          logprobs=[]),
    event("response.content_part.done", 9, item_id="msg_68c1", output_index=1, content_index=0,
          part=MESSAGE["content"][0]),  # type: ignore[index]
    event("response.output_item.done", 10, output_index=1, item=MESSAGE),
    event("response.completed", 11, response={**RESPONSE, "status": "completed", "output": [REASONING, MESSAGE],
                                              "usage": USAGE}),
])
CALL = {"id": "fc_68c2", "type": "function_call", "status": "completed", "arguments": '{"city":"Paris"}',
        "call_id": "call_Xy12", "name": "get_weather"}
CALL_STREAM = b"".join([
    event("response.created", 0, response=RESPONSE),
    event("response.in_progress", 1, response=RESPONSE),
    event("response.output_item.added", 2, output_index=0,
          item={**CALL, "status": "in_progress", "arguments": ""}),
    event("response.function_call_arguments.delta", 3, item_id="fc_68c2", output_index=0, delta='{"city":',
          obfuscation="q1"),
    event("response.function_call_arguments.delta", 4, item_id="fc_68c2", output_index=0, delta='"Paris"}',
          obfuscation="w"),
    event("response.function_call_arguments.done", 5, item_id="fc_68c2", output_index=0,
          arguments='{"city":"Paris"}'),
    event("response.output_item.done", 6, output_index=0, item=CALL),
    event("response.completed", 7, response={**RESPONSE, "status": "completed", "output": [CALL], "usage": USAGE}),
])


def read(stream: bytes, split: int | None = None) -> tuple[ResponsesEventTranslator, list[StreamChunk]]:
    translator = ResponsesEventTranslator("gpt-5-mini")
    pieces = [stream[i:i + split] for i in range(0, len(stream), split)] if split else [stream]
    chunks = [chunk for piece in pieces for chunk in translator.feed(piece)]
    chunks += translator.close()
    return translator, chunks


def canonical_text(chunks: list[StreamChunk]) -> str:
    return "".join(c.data["choices"][0]["delta"].get("content") or "" for c in chunks if c.data["choices"])


# ---- requests ----------------------------------------------------------------------------------


def test_an_openai_target_gets_the_clients_own_request_with_only_the_model_replaced() -> None:
    request = OPENAI.chat_request(native_request(), OPENAI_TARGET)
    assert request.url == "https://api.openai.com/v1/responses"
    assert request.headers["Authorization"] == "Bearer sk-test-0123456789"
    assert orjson.loads(request.body or b"") == {**BODY, "model": "gpt-5-mini"}


def test_an_openai_compatible_target_gets_the_canonical_chat_request() -> None:
    plain = native_request({"model": "smart", "input": "Say hi"})
    request = COMPATIBLE.chat_request(plain, make_target(ProviderType.OPENAI_COMPATIBLE, "http://vllm:8000/v1"))
    assert request.url == "http://vllm:8000/v1/chat/completions"
    assert orjson.loads(request.body or b"")["messages"] == [{"role": "user", "content": "Say hi"}]


def test_an_earlier_turn_held_by_the_sidecar_replaces_the_previous_id() -> None:
    history = [{"type": "message", "id": "msg_1", "status": "completed", "role": "user",
                "content": [{"type": "input_text", "text": "earlier"}]}, {**REASONING, ANSWERED_BY: "p"},
               {**REASONING, "id": "rs_other", ANSWERED_BY: "another-account"},
               {"type": "reasoning", "id": "rs_made_here", "summary": [{"type": "summary_text", "text": "x"}]}]
    request = OPENAI.chat_request(native_request({"model": "smart", "input": "now", "previous_response_id": "resp_1"},
                                                 history), OPENAI_TARGET)
    sent = orjson.loads(request.body or b"")
    assert "previous_response_id" not in sent
    assert sent["input"] == [
        {"type": "message", "status": "completed", "role": "user", "content": [{"type": "input_text", "text": "earlier"}]},
        REASONING,  # replayed with its encrypted content to the provider that made it, unmarked; another
        # account's, and reasoning without its content (it refers to a stored item), left out
        {"type": "message", "role": "user", "content": "now"}]


@pytest.mark.parametrize(("url", "options", "expected"), [
    ("https://contoso.openai.azure.com", {}, "https://contoso.openai.azure.com/openai/v1/responses"),
    ("https://contoso.openai.azure.com", {"api_version": "2024-10-21"},
     "https://contoso.openai.azure.com/openai/v1/responses"),
    ("https://contoso.openai.azure.com/openai/v1", {}, "https://contoso.openai.azure.com/openai/v1/responses"),
    ("https://contoso.openai.azure.com", {"api_version": "preview"},
     "https://contoso.openai.azure.com/openai/v1/responses?api-version=preview"),
])
def test_an_azure_target_gets_it_on_the_v1_responses_path_with_the_deployment_as_model(
        url: str, options: dict[str, str], expected: str) -> None:
    target = make_target(ProviderType.AZURE_OPENAI, url, model="gpt5-prod", options=options)
    request = AZURE.chat_request(native_request(), target)
    assert request.url == expected
    assert request.headers["api-key"] == "sk-test-0123456789" and "Authorization" not in request.headers
    assert orjson.loads(request.body or b"")["model"] == "gpt5-prod"


def test_a_response_openai_keeps_is_deleted_at_its_own_path_with_the_targets_key() -> None:
    request = OPENAI.stored_response_request(OPENAI_TARGET, "resp_123", "DELETE")
    assert request is not None and (request.method, request.url, request.body) == (
        "DELETE", "https://api.openai.com/v1/responses/resp_123", None)
    assert request.headers["Authorization"] == "Bearer sk-test-0123456789"


@pytest.mark.parametrize(("url", "options", "expected"), [
    ("https://contoso.openai.azure.com", {"api_version": "2024-10-21"},
     "https://contoso.openai.azure.com/openai/v1/responses/resp_1"),
    ("https://contoso.openai.azure.com", {"api_version": "preview"},
     "https://contoso.openai.azure.com/openai/v1/responses/resp_1?api-version=preview"),
])
def test_a_response_azure_keeps_is_deleted_on_the_v1_path(url: str, options: dict[str, str], expected: str) -> None:
    request = AZURE.stored_response_request(make_target(ProviderType.AZURE_OPENAI, url, options=options), "resp_1", "DELETE")
    assert request is not None and (request.method, request.url) == ("DELETE", expected)
    assert request.headers["api-key"] == "sk-test-0123456789"


AZURE_PREVIEW = make_target(ProviderType.AZURE_OPENAI, "https://contoso.openai.azure.com",
                            options={"api_version": "preview"})


@pytest.mark.parametrize(("provider", "target", "query", "expected"), [
    (OPENAI, OPENAI_TARGET, "order=asc&limit=1",
     "https://api.openai.com/v1/responses/resp_1/input_items?order=asc&limit=1"),
    (OPENAI, OPENAI_TARGET, "", "https://api.openai.com/v1/responses/resp_1/input_items"),
    (AZURE, AZURE_PREVIEW, "order=asc&limit=1",
     "https://contoso.openai.azure.com/openai/v1/responses/resp_1/input_items?api-version=preview&order=asc&limit=1"),
    (AZURE, AZURE_PREVIEW, "", "https://contoso.openai.azure.com/openai/v1/responses/resp_1/input_items?api-version=preview"),
])
def test_the_input_items_a_provider_keeps_are_asked_with_the_clients_query(
        provider: Any, target: Any, query: str, expected: str) -> None:
    request = provider.stored_response_request(target, "resp_1", "GET", query)
    assert request is not None and (request.method, request.url) == ("GET", expected)


def test_an_openai_compatible_server_keeps_no_response_to_delete() -> None:
    assert COMPATIBLE.stored_response_request(make_target(ProviderType.OPENAI_COMPATIBLE, "http://vllm:8000/v1"),
                                              "resp_1", "GET") is None


# ---- answers -----------------------------------------------------------------------------------


def test_a_native_answer_is_read_for_the_books_and_kept_whole_for_the_relay() -> None:
    response = {**RESPONSE, "status": "completed", "output": [REASONING, MESSAGE, CALL], "usage": USAGE}
    result = OPENAI.chat_response(orjson.dumps(response), native_request(), OPENAI_TARGET)
    assert result.native == response
    choice = result.data["choices"][0]
    assert choice["message"]["content"] == "Hi there" and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [{"id": "call_Xy12", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.output_tokens,
            result.usage.reasoning_tokens) == (12, 4, 70, 64)


def test_each_web_search_call_of_the_output_is_a_search_in_the_usage() -> None:
    search = {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "q"}}
    response = {**RESPONSE, "output": [search, {**search, "id": "ws_2"}, REASONING], "usage": USAGE}
    assert result_from_response(orjson.dumps(response), "m").usage.web_searches == 2
    assert result_from_response(orjson.dumps({**RESPONSE, "usage": USAGE}), "m").usage.web_searches == 0


@pytest.mark.parametrize(("body", "most"), [
    ({"input": "hi"}, 0),
    ({"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {}}]}, 0),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, DEFAULT_SEARCH_ESTIMATE),
    ({"input": "hi", "tools": [{"type": "web_search_preview"}], "max_tool_calls": 2}, 2),
], ids=["no tools", "a function", "unbounded search", "max_tool_calls"])
def test_a_responses_request_allows_as_many_searches_as_its_bound(body: dict[str, Any], most: int) -> None:
    request = ChatRequest({"model": "m", "messages": []}, NativeBody(NativeDialect.OPENAI_RESPONSES, body))
    assert request.web_searches == most


def test_an_incomplete_answer_finishes_for_length() -> None:
    response = {**RESPONSE, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                "output": [REASONING], "usage": USAGE}
    assert result_from_response(orjson.dumps(response), "m").data["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(("code", "kind"), [("server_error", FailureKind.SERVER_ERROR),
                                            ("rate_limit_exceeded", FailureKind.RATE_LIMITED),
                                            ("invalid_image", FailureKind.CLIENT_ERROR)])
def test_a_failed_response_is_an_error_of_the_kind_its_code_says(code: str, kind: FailureKind) -> None:
    failed = {**RESPONSE, "status": "failed", "error": {"code": code, "message": "no luck"}}
    with pytest.raises(UpstreamError) as raised:
        result_from_response(orjson.dumps(failed), "m")
    assert raised.value.kind is kind and "no luck" in raised.value.message


def test_an_answer_that_is_no_response_is_a_server_error() -> None:
    with pytest.raises(UpstreamError) as raised:
        result_from_response(b'{"object": "chat.completion", "choices": []}', "m")
    assert raised.value.kind is FailureKind.SERVER_ERROR


# ---- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [None, 1, 7, 64])
def test_a_native_stream_is_read_the_same_however_it_is_split(split: int | None) -> None:
    translator, chunks = read(TEXT_STREAM, split)
    assert b"".join(c.native or b"" for c in chunks) == TEXT_STREAM  # the relay re-encodes nothing
    assert all(c.native is not None for c in chunks)
    assert canonical_text(chunks) == "Hi there"
    assert translator.finish_reason == "stop"
    assert translator.usage is not None and translator.usage.reasoning_tokens == 64
    first_output = next(i for i, c in enumerate(chunks) if carries_output(c.data))
    assert b"response.output_text.delta" in (chunks[first_output].native or b"")  # reasoning does not commit


def test_function_call_arguments_become_canonical_tool_call_deltas() -> None:
    translator, chunks = read(CALL_STREAM)
    calls = [call for c in chunks if c.data["choices"] for call in c.data["choices"][0]["delta"].get("tool_calls") or ()]
    assert calls[0] == {"index": 0, "id": "call_Xy12", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(call["function"]["arguments"] for call in calls) == '{"city":"Paris"}'
    assert translator.finish_reason == "tool_calls"


def test_a_stream_without_its_completed_event_is_broken() -> None:
    translator = ResponsesEventTranslator("m")
    translator.feed(TEXT_STREAM[:TEXT_STREAM.index(b"event: response.completed")])
    with pytest.raises(UpstreamError) as raised:
        translator.close()
    assert raised.value.kind is FailureKind.STREAM_BROKEN


@pytest.mark.parametrize(("tail", "kind"), [
    (event("response.failed", 8, response={**RESPONSE, "status": "failed",
                                           "error": {"code": "server_error", "message": "boom"}}),
     FailureKind.SERVER_ERROR),
    (event("error", 8, code="rate_limit_exceeded", message="slow down", param=None), FailureKind.RATE_LIMITED),
])
def test_a_failure_in_the_stream_raises_as_the_error_it_stands_for(tail: bytes, kind: FailureKind) -> None:
    translator = ResponsesEventTranslator("m")
    with pytest.raises(UpstreamError) as raised:
        translator.feed(TEXT_STREAM[:TEXT_STREAM.index(b"event: response.output_text.done")] + tail)
    assert raised.value.kind is kind


# ---- the relay ---------------------------------------------------------------------------------


class Keeper:
    def __init__(self) -> None:
        self.kept: dict[str, tuple[bytes, list[dict[str, Any]], tuple[int, int]]] = {}
        self.held_by: dict[str, str] = {}

    def put(self, response_id: str, response: bytes, conversation: Any, now: float,
            input_span: tuple[int, int] = (0, 0), held_by: str = "", remote: bool = False) -> bool:
        self.kept[response_id] = (response, list(conversation), input_span)
        self.held_by[response_id] = held_by
        return True


def relaying_encoder(keeper: Keeper) -> ResponsesEncoder:
    encoder = ResponsesEncoder(read_turn({"model": "smart", "input": "Say hi", "stream": True}), 1764000000, keeper,
                               lambda: 0.0)
    encoder.attempting(OPENAI_TARGET)
    return encoder


KEPT_REASONING = {**REASONING, ANSWERED_BY: "p"}
"""Reasoning as the store keeps it: marked with the provider that made it, the only one sent it again."""


def test_a_relayed_stream_reaches_the_client_as_it_came_and_is_kept_under_the_providers_id() -> None:
    keeper = Keeper()
    encoder = relaying_encoder(keeper)
    _, chunks = read(TEXT_STREAM, 50)
    assert encoder.chunks(chunks[:5]) + encoder.chunks(chunks[5:]) + encoder.end(None) == TEXT_STREAM
    response, conversation, span = keeper.kept["resp_68c1"]
    assert orjson.loads(response)["output"] == [REASONING, MESSAGE]
    assert conversation[span[0]:span[1]][0]["content"] == [{"type": "input_text", "text": "Say hi"}]
    assert conversation[span[1]:] == [KEPT_REASONING, MESSAGE]


def test_a_relayed_stream_cut_after_its_first_output_ends_with_response_failed_numbered_next() -> None:
    keeper = Keeper()
    encoder = relaying_encoder(keeper)
    cut = TEXT_STREAM[:TEXT_STREAM.index(b"event: response.output_text.delta")]
    translator = ResponsesEventTranslator("m")
    relayed = encoder.chunks(translator.feed(cut))
    failed = encoder.stream_error(UpstreamError(FailureKind.STREAM_BROKEN, "the upstream hung up"))
    assert relayed == cut and failed.startswith(b"event: response.failed\ndata: ")
    payload = orjson.loads(failed.split(b"data: ", 1)[1])
    assert payload["sequence_number"] == 6  # six events were relayed, numbered 0-5
    assert payload["response"]["id"] == "resp_68c1" and payload["response"]["status"] == "failed"
    assert payload["response"]["output"][0] == REASONING  # finished before the cut
    assert payload["response"]["output"][1]["status"] == "incomplete"  # opened, nothing said yet
    assert "resp_68c1" in keeper.kept


def test_a_relayed_stream_cut_mid_answer_fails_with_what_it_had_said() -> None:
    encoder = relaying_encoder(Keeper())
    cut = TEXT_STREAM[:TEXT_STREAM.index(b"event: response.output_text.done")]
    encoder.chunks(ResponsesEventTranslator("m").feed(cut))
    failed = encoder.stream_error(UpstreamError(FailureKind.STREAM_BROKEN, "the upstream hung up"))
    output = orjson.loads(failed.split(b"data: ", 1)[1])["response"]["output"]
    assert output[0] == REASONING
    assert output[1]["id"] == "msg_68c1" and output[1]["status"] == "incomplete"
    assert output[1]["content"] == [{"type": "output_text", "text": "Hi there", "annotations": [], "logprobs": []}]


def test_a_relayed_call_cut_mid_arguments_fails_with_the_arguments_so_far() -> None:
    encoder = relaying_encoder(Keeper())
    encoder.chunks(ResponsesEventTranslator("m").feed(CALL_STREAM[:CALL_STREAM.index(b"event: response.function_call_arguments.done")]))
    failed = encoder.stream_error(UpstreamError(FailureKind.STREAM_BROKEN, "the upstream hung up"))
    call = orjson.loads(failed.split(b"data: ", 1)[1])["response"]["output"][0]
    assert call["call_id"] == "call_Xy12" and call["status"] == "incomplete" and call["arguments"] == '{"city":"Paris"}'


def test_a_relayed_answer_is_the_providers_response_kept_under_its_id() -> None:
    keeper = Keeper()
    encoder = relaying_encoder(keeper)
    response = {**RESPONSE, "status": "completed", "output": [MESSAGE], "usage": USAGE}
    upstream = orjson.dumps(response, option=orjson.OPT_INDENT_2)  # OpenAI's answers are indented
    body = encoder.unary(result_from_response(upstream, "m"))
    assert body == upstream and encoder.response_id == "resp_68c1"
    assert keeper.kept["resp_68c1"][0] == upstream
    assert keeper.kept["resp_68c1"][1][-1] == MESSAGE


def test_a_stream_that_ends_with_an_empty_output_is_kept_with_the_items_it_showed() -> None:
    keeper = Keeper()
    encoder = relaying_encoder(keeper)
    emptied = TEXT_STREAM.replace(orjson.dumps([REASONING, MESSAGE]), b"[]")
    assert emptied != TEXT_STREAM
    _, chunks = read(emptied)
    assert encoder.chunks(chunks) + encoder.end(None) == emptied  # the client gets what came
    assert orjson.loads(keeper.kept["resp_68c1"][0])["output"] == [REASONING, MESSAGE]


# ---- streams that arrived whole ------------------------------------------------------------------


INCOMPLETE_STREAM = TEXT_STREAM[:TEXT_STREAM.index(b"event: response.completed")] + event(
    "response.incomplete", 11, response={**RESPONSE, "status": "incomplete", "output": [REASONING, MESSAGE],
                                         "incomplete_details": {"reason": "max_output_tokens"}, "usage": USAGE})


@pytest.mark.parametrize("stream", [TEXT_STREAM, CALL_STREAM, INCOMPLETE_STREAM])
def test_a_stream_judged_whole_reads_as_event_by_event(stream: bytes) -> None:
    judge = ResponsesEventTranslator("m")
    whole = judge.judge_whole(stream)
    assert whole is not None and whole.body == stream
    reader, _ = read(stream)
    assert (judge.usage, judge.finish_reason) == (reader.usage, reader.finish_reason)
    assert judge.finish_reason == {TEXT_STREAM: "stop", CALL_STREAM: "tool_calls", INCOMPLETE_STREAM: "length"}[stream]
    assert whole.final == orjson.loads(stream[stream.rindex(b"event: "):].split(b"data: ", 1)[1])["response"]


@pytest.mark.parametrize("stream", [
    TEXT_STREAM[:TEXT_STREAM.index(b"event: response.completed")],  # not ended
    TEXT_STREAM.replace(b"event: response.output_text.done", b"event: error"),
    TEXT_STREAM[:TEXT_STREAM.index(b"event: response.completed")] + event(
        "response.failed", 11, response={**RESPONSE, "status": "failed", "error": {"code": "server_error"}}),
    TEXT_STREAM.replace(b"\n", b"\r\n"),
    TEXT_STREAM.replace(b"event: response.in_progress\n", b""),  # an unnamed event
    TEXT_STREAM.replace(b"\n\nevent: response.output_text.delta", b"\n\n: ping\n\nevent: response.output_text.delta"),
    TEXT_STREAM.replace(b"event: response.output_text.delta", b"event: response.output_text.annotation.added"),
    TEXT_STREAM.replace(orjson.dumps([REASONING, MESSAGE]), b"[]"),
    TEXT_STREAM.replace(b',"usage":' + orjson.dumps(USAGE), b',"usage":null'),  # unmetered: its chunks estimate it
])
def test_a_stream_that_cannot_be_vouched_for_by_its_bytes_is_read_event_by_event(stream: bytes) -> None:
    judge = ResponsesEventTranslator("m")
    assert judge.judge_whole(stream) is None
    assert judge.usage is None and judge.finish_reason is None


def test_a_judged_stream_can_still_be_read_event_by_event() -> None:
    """When the encoder cannot relay it whole (a client of another dialect), `feed` reads the same body."""
    translator = ResponsesEventTranslator("m")
    assert translator.judge_whole(TEXT_STREAM) is not None
    chunks = translator.feed(TEXT_STREAM) + translator.close()
    assert canonical_text(chunks) == "Hi there" and translator.finish_reason == "stop"


def test_relay_whole_answers_with_the_body_and_keeps_the_response_it_ended_with() -> None:
    keeper = Keeper()
    encoder = relaying_encoder(keeper)
    judged = ResponsesEventTranslator("m").judge_whole(TEXT_STREAM)
    assert judged is not None
    assert encoder.relay_whole(judged) == TEXT_STREAM
    response, conversation, span = keeper.kept["resp_68c1"]
    assert orjson.loads(response)["output"] == [REASONING, MESSAGE]  # the Response as the client got it
    assert conversation[span[1]:] == [KEPT_REASONING, MESSAGE]
    assert keeper.held_by["resp_68c1"] == "p (api.openai.com)"  # the provider keeps its own copy: a DELETE goes there too
