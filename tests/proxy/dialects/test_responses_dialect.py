"""The Responses front door: requests → canonical (and on to each provider's body), canonical
answers → Response objects, checked against golden files and refusals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.anthropic.request_out import messages_body
from llmroute_proxy.dialects.base import ChatRequest, StreamChunk, Usage
from llmroute_proxy.dialects.gemini.request_out import build_generate_body
from llmroute_proxy.dialects.openai.responses import responses_request
from llmroute_proxy.dialects.responses.answer_out import response_frame, response_from_canonical
from llmroute_proxy.dialects.responses.request_in import ResponsesOnly, read_turn, request_to_canonical
from llmroute_proxy.dialects.responses.stream_out import ResponsesStreamEncoder, sse
from llmroute_proxy.dialects.thinking import TOKEN_PREFIX, read_token, token
from llmroute_proxy.errors import BadRequest
from llmroute_proxy.providers.openai import OpenAIProvider
from llmroute_proxy.table import ProviderType, Target, TargetId
from llmroute_proxy.validation import validate_chat

GOLDEN = Path(__file__).parent / "golden" / "responses"


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name).read_text())  # type: ignore[no-any-return]


def counter_ids() -> Any:
    count = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(count)}"


def provider_bodies(canonical: dict[str, Any]) -> dict[str, Any]:
    """What each provider type would be sent: the body, or the 400 its translator answers."""
    chat = ChatRequest(validate_chat(canonical))
    builders = {"openai": lambda: orjson.loads(OpenAIProvider().chat_request(chat, OPENAI_MAIN).body or b""),
                "anthropic": lambda: messages_body(chat.body, "claude-sonnet-4-5"),
                "gemini": lambda: build_generate_body(chat)}
    out: dict[str, Any] = {}
    for name, build in builders.items():
        try:
            out[name] = build()
        except BadRequest as refused:
            out[name] = {"refused": {"param": refused.param, "message": refused.message}}
    return out


OPENAI_MAIN = Target(id=TargetId("openai-main/gpt-4o-mini@us"), provider="openai-main",
                     provider_type=ProviderType.OPENAI, model="gpt-4o-mini", url="https://api.openai.com/v1",
                     region="us")


def translate_request(case: dict[str, Any]) -> dict[str, Any]:
    """The canonical request, what an OpenAI target is sent natively, and what the others are sent."""
    turn = request_to_canonical(case["request"], case.get("history", ()))
    native = responses_request("https://api.openai.com/v1/responses", {}, turn.native_body(), OPENAI_MAIN)
    return {"canonical": turn.canonical, "native": orjson.loads(native.body or b""),
            "upstream": provider_bodies(turn.canonical)}


def translate_response(case: dict[str, Any]) -> dict[str, Any]:
    turn = request_to_canonical(case["request"])
    completion = case["completion"]
    body, output = response_from_canonical(completion, Usage.from_openai(completion["usage"]), turn, "resp_1",
                                           1700000000, counter_ids())
    response: dict[str, Any] = orjson.loads(body)
    assert response["output"] == output
    return response


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("request_*.json")))
def test_requests_translate_as_the_golden_file_says(name: str) -> None:
    case = golden(name)
    assert translate_request(case) == case["expected"]


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("response_*.json")))
def test_answers_become_the_golden_response(name: str) -> None:
    case = golden(name)
    assert translate_response(case) == case["expected"]


BASE: dict[str, Any] = {"model": "auto", "input": "hi"}


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
    ({"tools": [{"type": "computer_use_preview", "display_width": 1, "display_height": 1}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f"}, {"type": "mcp", "server_label": "x"}]}, "tools[1].type"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"background": True}, "background"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"include": ["file_search_call.results"]}, "include[0]"),
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"messages": []}, "messages"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"reasoning": {"effort": "huge"}}, "reasoning.effort"),
    ({"temperature": 3}, "temperature"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a.pdf"}]}]},
     "input[0].content[0].file_data"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
    ({"input": []}, "input"),
    ({"model": ""}, "model"),
    ({"previous_response_id": 7}, "previous_response_id"),
    # values that cannot be looked up in a set (found by tests/proxy/fuzz/test_fuzz_app.py)
    ({"tools": [{"type": [], "name": "f"}]}, "tools[0].type"),
    ({"tools": [{"type": {"a": 1}, "name": "f"}]}, "tools[0].type"),
    ({"tool_choice": {"type": ["function"]}}, "tool_choice"),
    ({"include": [["reasoning.encrypted_content"]]}, "include[0]"),
    ({"service_tier": 1}, "service_tier"),
])
def test_what_cannot_be_served_is_refused_naming_the_field(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        request_to_canonical({**BASE, **extra})
    assert refused.value.param == param
    assert param.split(".")[0].split("[")[0] in refused.value.message


@pytest.mark.parametrize(("asked", "canonical"), [
    ("flex", "flex"), ("priority", "priority"), ("scale", "scale"), ("default", "default"), ("auto", None), (None, None),
])
def test_a_service_tier_is_carried_as_chat_completions_carry_it(asked: str | None, canonical: str | None) -> None:
    """Each provider gets the nearest tier it offers (`dialects/service_tiers.py`), as for chat completions."""
    turn = request_to_canonical({**BASE, **({"service_tier": asked} if asked else {})})
    assert turn.canonical.get("service_tier") == canonical
    assert turn.only is None  # any provider can take it


def test_reasoning_items_passed_back_are_accepted_and_left_out() -> None:
    turn = request_to_canonical({**BASE, "input": [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}]})
    assert turn.canonical["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]


EARLIER = {"type": "message", "id": "msg_1", "status": "completed", "role": "user",
           "content": [{"type": "input_text", "text": "earlier"}]}


def test_store_metadata_and_the_previous_id_stay_in_the_sidecar_for_translated_targets() -> None:
    turn = request_to_canonical({**BASE, "store": True, "metadata": {"a": "b"}, "previous_response_id": "resp_1"},
                                history=[EARLIER])
    assert not {"store", "metadata", "previous_response_id"} & set(turn.canonical)
    assert turn.canonical["messages"] == [{"role": "user", "content": "earlier"}, {"role": "user", "content": "hi"}]
    assert turn.store
    assert not request_to_canonical({**BASE, "store": False}).store


def test_a_native_target_gets_the_earlier_turns_as_items_in_place_of_the_previous_id() -> None:
    turn = request_to_canonical({**BASE, "store": True, "metadata": {"a": "b"}, "previous_response_id": "resp_1"},
                                history=[EARLIER])
    assert turn.native_body() == {"model": "auto", "store": True, "metadata": {"a": "b"}, "input": [
        {"type": "message", "status": "completed", "role": "user", "content": [{"type": "input_text", "text": "earlier"}]},
        {"type": "message", "role": "user", "content": "hi"}]}
    alone = request_to_canonical({**BASE, "store": False})
    assert alone.native_body() == {**BASE, "store": False}  # nothing to add: the client's own body


def test_history_items_without_a_canonical_form_are_left_out_for_translated_targets_only() -> None:
    history = [EARLIER, {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"query": "q"}},
               {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
               {"type": "message", "role": "user", "content": [
                   {"type": "input_text", "text": "see"}, {"type": "input_file", "file_id": "file-1"}]},
               {"type": "message", "id": "msg_2", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Found it.", "annotations": [{"type": "url_citation"}]}]}]
    turn = request_to_canonical(BASE, history=history)
    assert turn.canonical["messages"] == [{"role": "user", "content": "earlier"}, {"role": "user", "content": "see"},
                                          {"role": "assistant", "content": "Found it."}, {"role": "user", "content": "hi"}]
    native = turn.native_body()["input"]
    assert [item["type"] for item in native] == ["message", "web_search_call", "message", "message", "message"]
    assert not any("id" in item for item in native)  # ids the target may not hold are not sent


def translate_stream(case: dict[str, Any]) -> list[dict[str, Any]]:
    turn = request_to_canonical(case["request"])
    encoder = ResponsesStreamEncoder(turn, "resp_1", 1700000000, counter_ids())
    out = b"".join(encoder.encode(chunk) for chunk in case["chunks"])
    if case["end"] == "finish":
        out += encoder.finish()
    else:
        out += encoder.fail("attempt 1 on oai/gpt-4o-mini: stream broken after 2 chunks", "stream_broken")
    assert encoder.finish() == b"" and encoder.encode(case["chunks"][0]) == b""  # nothing after the end
    events = []
    for block in out.decode().split("\n\n")[:-1]:
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == "event: " + event["type"]
        events.append(event)
    assert encoder.response == events[-1]["response"]
    return events


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("stream_*.json")))
def test_streams_become_the_golden_events(name: str) -> None:
    case = golden(name)
    events = translate_stream(case)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events == case["expected"]


def decoded(written: bytes) -> list[dict[str, Any]]:
    """The events of a written stream, each checked to be exactly what `sse()` writes for it: text
    deltas and the whole-response events are filled-in templates, not dicts."""
    events = []
    for block in written.split(b"\n\n")[:-1]:
        data = block.split(b"\n")[1].removeprefix(b"data: ")
        assert sse(orjson.loads(data)) == block + b"\n\n"
        events.append(orjson.loads(data))
    return events


def one_delta_per_run(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`events` with each run of consecutive text deltas of one part as one delta, renumbered: what
    a read of all their chunks at once writes."""
    out: list[dict[str, Any]] = []
    for event in events:
        previous = out[-1] if out else {}
        if event["type"] == previous.get("type") == "response.output_text.delta" and (
                event["item_id"], event["content_index"]) == (previous["item_id"], previous["content_index"]):
            previous["delta"] += event["delta"]
        else:
            out.append({**event, "sequence_number": len(out)})
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("stream_*.json")))
def test_a_read_of_many_chunks_writes_their_text_as_one_delta_and_the_rest_as_one_at_a_time(name: str) -> None:
    """The text deltas of one read are one delta (they reach the client in one write anyway); every
    other event, and the final Response, is what a chunk at a time writes."""
    case = golden(name)
    turn = request_to_canonical(case["request"])
    chunks = [StreamChunk(chunk) for chunk in case["chunks"]]
    one_by_one = ResponsesStreamEncoder(turn, "resp_1", 1700000000, counter_ids())
    at_once = ResponsesStreamEncoder(turn, "resp_1", 1700000000, counter_ids())
    written = b"".join(one_by_one.encode_chunks([chunk]) for chunk in chunks)
    read_at_once = at_once.encode_chunks(chunks)
    end = (lambda e: e.finish()) if case["end"] == "finish" else (lambda e: e.fail("cut", "stream_broken"))
    written += end(one_by_one)
    read_at_once += end(at_once)
    assert end(at_once) == b"" and at_once.encode_chunks(chunks) == b""
    events = decoded(written)
    assert decoded(read_at_once) == one_delta_per_run(events)
    assert at_once.response_json == one_by_one.response_json == orjson.dumps(one_by_one.response)
    assert events[-1]["response"] == one_by_one.response


RESPONSE_MEMBERS = ["id", "object", "created_at", "status", "background", "error", "incomplete_details", "instructions",
                    "max_output_tokens", "metadata", "model", "output", "parallel_tool_calls", "previous_response_id",
                    "reasoning", "safety_identifier", "service_tier", "store", "temperature", "text", "tool_choice",
                    "tools", "top_p", "truncation", "usage", "user"]


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.json")))
def test_the_response_frame_writes_what_orjson_writes_for_the_whole_object(name: str) -> None:
    """The frame is bytes joined around five holes (a request without the tail's fields shares one
    precomputed tail): together they must be exactly the bytes orjson writes for the object."""
    turn = request_to_canonical(golden(name)["request"])
    written = response_frame(turn, "resp_1", 1700000000, "m").json(
        b'"failed"', b'[{"type":"message"}]', b'{"input_tokens":1}', b'{"code":"x"}', b'{"reason":"y"}')
    response = orjson.loads(written)
    assert orjson.dumps(response) == written
    assert list(response) == RESPONSE_MEMBERS
    assert (response["status"], response["output"], response["usage"], response["error"],
            response["incomplete_details"]) == ("failed", [{"type": "message"}], {"input_tokens": 1}, {"code": "x"},
                                                {"reason": "y"})
    assert (response["id"], response["created_at"], response["model"]) == ("resp_1", 1700000000, "m")


@pytest.mark.parametrize("model", [None, "", 7])
def test_an_openai_only_request_without_a_model_is_refused_for_the_model(model: Any) -> None:
    body: dict[str, Any] = {"input": "hi", "frobnicate": 1, "tools": [{"type": "web_search"}]}
    if model is not None:
        body["model"] = model
    with pytest.raises(BadRequest) as refused:
        read_turn(body)
    assert refused.value.param == "model" and not isinstance(refused.value, ResponsesOnly)


def test_an_openai_only_request_is_summed_up_for_routing_and_names_what_only_openai_serves() -> None:
    turn = read_turn({"model": "auto", "instructions": "Be brief.", "max_output_tokens": 50, "stream": True,
                      "input": [{"role": "user", "content": [{"type": "input_text", "text": "news?"}]}],
                      "tools": [{"type": "web_search"}]}, history=[EARLIER])
    assert turn.only is not None and turn.only.param == "tools[0].type"
    assert turn.canonical == {"model": "auto", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "earlier"},
        {"role": "user", "content": "news?"}], "max_completion_tokens": 50, "stream": True,
        "tools": [{"type": "function", "function": {"name": "openai_tool"}}]}
    assert turn.native_body()["tools"] == [{"type": "web_search"}]


CLAUDES_ANSWER = golden("response_thinking_encrypted.json")


@pytest.mark.parametrize("include", [["reasoning.encrypted_content"], None])
def test_claudes_signed_thinking_is_kept_always_and_shown_only_when_included(include: Any) -> None:
    request = {**CLAUDES_ANSWER["request"], "include": include}
    completion = CLAUDES_ANSWER["completion"]
    body, kept = response_from_canonical(completion, Usage.from_openai(completion["usage"]),
                                         request_to_canonical(request), "resp_1", 1700000000, counter_ids(), "claude-a")
    shown = orjson.loads(body)["output"][0]
    assert read_token(kept[0]["encrypted_content"], "x") == completion["choices"][0]["message"]["thinking_blocks"]
    assert ("encrypted_content" in shown) is bool(include) and shown["summary"] == kept[0]["summary"]


def test_a_streamed_answer_keeps_its_sealed_thinking_without_showing_it_unasked() -> None:
    case = golden("stream_thinking_encrypted.json")
    turn = request_to_canonical({**case["request"], "include": None})
    encoder = ResponsesStreamEncoder(turn, "resp_1", 1700000000, counter_ids())
    written = encoder.encode_chunks([StreamChunk(chunk) for chunk in case["chunks"]]) + encoder.finish()
    assert b"encrypted_content" not in written and encoder.response is not None
    assert encoder.output[0]["encrypted_content"] == case["expected"][-1]["response"]["output"][0]["encrypted_content"]


@pytest.mark.parametrize("content", [TOKEN_PREFIX + "bm90IGpzb24", TOKEN_PREFIX])
def test_a_malformed_token_of_ours_passed_back_is_a_400_naming_it(content: str) -> None:
    reasoning = {"type": "reasoning", "summary": [], "encrypted_content": content}
    with pytest.raises(BadRequest) as refused:
        read_turn({"model": "auto", "input": [{"role": "user", "content": "hi"}, reasoning]})
    assert refused.value.param == "input[1].encrypted_content"


def test_signed_thinking_in_the_earlier_turns_goes_back_to_its_tool_call() -> None:
    history = golden("request_thinking_blocks.json")["request"]["input"][:-1]
    turn = request_to_canonical({"model": "auto", "input": [{"type": "function_call_output", "call_id": "toolu_1",
                                                             "output": "18C"}]}, history)
    assert [block["type"] for block in turn.canonical["messages"][1]["thinking_blocks"]] == [
        "thinking", "redacted_thinking"]


def test_a_function_call_after_claudes_blocks_is_its_own_answer_and_claude_keeps_the_first_ones_blocks() -> None:
    """Two answers passed back without a user turn between: the second one's call does not join the first
    one's text with its blocks behind it, and Claude is sent one turn opened by the first answer's thinking."""
    first = {"type": "thinking", "thinking": "Sunny, surely.", "signature": "EqFirst"}
    second = {"type": "thinking", "thinking": "Check it.", "signature": "EqSecond"}
    turn = request_to_canonical({"model": "auto", "reasoning": {"effort": "low"}, "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "reasoning", "summary": [], "encrypted_content": token("claude-a", [first])},
        {"role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
        {"type": "reasoning", "summary": [], "encrypted_content": token("claude-a", [second])},
        {"type": "function_call", "call_id": "toolu_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "18C"}]})
    answers = [m for m in turn.canonical["messages"] if m["role"] == "assistant"]
    assert [m["thinking_blocks"] for m in answers] == [[first], [second]]
    assert "tool_calls" not in answers[0] and answers[1]["content"] is None
    claude = provider_bodies(turn.canonical)["anthropic"]
    assert [block["type"] for block in claude["messages"][1]["content"]] == ["thinking", "text", "tool_use"]
    assert claude["messages"][1]["content"][0] == first and claude["thinking"]["type"] == "enabled"
