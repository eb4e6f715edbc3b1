"""The OpenAI simulator's Responses API, as the official `openai` SDK (and the raw wire) sees it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import orjson
import pydantic
import pytest
from openai.types.responses import Response

from llmroute_proxy.sim import SimServer, openai_app, sim_state
from llmroute_proxy.sim.responses_input import BUILT_IN_TOOLS
from tests.proxy.sim import SimPool

KEY = "sk-sim-responses-test-key"
MODEL = "gpt-4o-mini"
REASONER = "gpt-5-mini"
QUESTION = "What is the weather like in Paris today?"
ANSWER = f"[sim-openai {MODEL}] You said: {QUESTION}"
INPUT_TOKENS = 10  # 8 words × 1.3
ANSWER_TOKENS = 16  # 12 words × 1.3
WEATHER: Any = {"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "required": ["city", "days"], "additionalProperties": False,
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}
TIME: Any = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture
async def sim(sims: SimPool) -> SimServer:
    return await sims.start(openai_app(KEY, chunks=4))


@pytest.fixture
def client(sims: SimPool) -> Callable[[SimServer], openai.AsyncOpenAI]:
    def connect(server: SimServer) -> openai.AsyncOpenAI:
        api = openai.AsyncOpenAI(api_key=KEY, base_url=server.url + "/v1", max_retries=0, timeout=5)
        sims.on_close(api.close)
        return api
    return connect


Client = Callable[[SimServer], openai.AsyncOpenAI]


async def post(server: SimServer, body: Any, path: str = "/v1/responses") -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.post(
            server.url + path, data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}) as response:
        return response.status, await response.read()


def sse(raw: bytes) -> list[tuple[str, Any]]:
    """The (event name, data) pairs of an SSE body."""
    events = []
    for block in raw.decode().split("\n\n"):
        if block:
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((lines["event"], json.loads(lines["data"])))
    return events


# --- non-streaming -----------------------------------------------------------------------------

async def test_a_text_answer_is_a_completed_response_with_counted_usage(sim: SimServer, client: Client) -> None:
    response = await client(sim).responses.create(model=MODEL, input=QUESTION, instructions="Be brief.",
                                                  metadata={"team": "sim"})

    assert response.id.startswith("resp_") and response.object == "response"
    assert (response.status, response.model, response.output_text) == ("completed", MODEL, ANSWER)
    assert response.instructions == "Be brief." and response.metadata == {"team": "sim"}
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_") and message.status == "completed"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (INPUT_TOKENS + 3, ANSWER_TOKENS)
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.completed_at is not None and response.error is None and response.incomplete_details is None


async def test_the_wire_object_has_every_member_of_the_sdk_type_and_no_output_text(sim: SimServer) -> None:
    status, raw = await post(sim, {"model": MODEL, "input": QUESTION})
    body = orjson.loads(raw)

    assert status == 200
    assert set(Response.model_fields) <= body.keys()
    assert "output_text" not in body
    assert body["store"] is True and body["billing"] == {"payer": "developer"}  # beyond the SDK's type
    assert body["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
    assert (body["temperature"], body["top_p"], body["tool_choice"], body["truncation"]) == (1.0, 1.0, "auto",
                                                                                             "disabled")
    Response.model_validate(body)  # strict: every member has the SDK's type


async def test_null_fields_are_echoed_as_their_defaults(sim: SimServer) -> None:
    nullable = ("instructions", "max_output_tokens", "temperature", "top_p", "metadata", "store", "parallel_tool_calls",
                "tool_choice", "tools", "text", "reasoning", "include", "previous_response_id", "truncation",
                "top_logprobs", "user", "stream", "stream_options")
    status, raw = await post(sim, {"model": MODEL, "input": QUESTION, **dict.fromkeys(nullable)})
    body = orjson.loads(raw)

    assert status == 200
    assert (body["temperature"], body["top_p"], body["tool_choice"], body["truncation"], body["top_logprobs"]) == (
        1.0, 1.0, "auto", "disabled", 0)
    assert (body["parallel_tool_calls"], body["store"], body["metadata"], body["tools"]) == (True, True, {}, [])
    Response.model_validate(body)


async def test_cached_tokens_count_inside_the_input_tokens(sims: SimPool, client: Client) -> None:
    sim = await sims.start(openai_app(KEY, cached_tokens=64))

    response = await client(sim).responses.create(model=MODEL, input=QUESTION)

    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.input_tokens_details.cached_tokens) == (INPUT_TOKENS + 64, 64)


@pytest.mark.parametrize(("tool_choice", "name", "arguments"), [
    ("auto", "get_weather", {"city": "sim", "days": 1}),
    ("required", "get_weather", {"city": "sim", "days": 1}),
    ({"type": "function", "name": "get_time"}, "get_time", {}),
])
async def test_an_offered_function_is_called_with_arguments_from_its_required_properties(
        sim: SimServer, client: Client, tool_choice: Any, name: str, arguments: dict[str, Any]) -> None:
    response = await client(sim).responses.create(model=MODEL, input=QUESTION, tools=[WEATHER, TIME],
                                                  tool_choice=tool_choice)

    assert len(response.output) == 1
    call = response.output[0]
    assert call.type == "function_call" and call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert (call.name, json.loads(call.arguments), call.status) == (name, arguments, "completed")
    assert response.output_text == "" and response.tools[0].type == "function"


async def test_a_function_output_continues_the_stored_conversation(sim: SimServer, client: Client) -> None:
    api = client(sim)
    first = await api.responses.create(model=MODEL, input=QUESTION, tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call"

    second = await api.responses.create(model=MODEL, previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}])

    assert second.output_text == f"[sim-openai {MODEL}] Tool said: 18C and sunny"
    assert second.previous_response_id == first.id


async def test_an_unknown_previous_response_is_a_404_naming_it(sim: SimServer, client: Client) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client(sim).responses.create(model=MODEL, input="again", previous_response_id="resp_nope")

    assert caught.value.body == {"message": "Previous response with id 'resp_nope' not found.",
                                 "type": "invalid_request_error", "param": "previous_response_id",
                                 "code": "previous_response_not_found"}


async def test_a_response_made_with_store_false_cannot_be_continued(sim: SimServer, client: Client) -> None:
    api = client(sim)
    first = await api.responses.create(model=MODEL, input=QUESTION, store=False)

    with pytest.raises(openai.NotFoundError):
        await api.responses.create(model=MODEL, input="again", previous_response_id=first.id)


async def test_a_stored_response_is_retrieved_and_deleted(sim: SimServer, client: Client) -> None:
    api = client(sim)
    made = await api.responses.create(model=MODEL, input=QUESTION)

    fetched = await api.responses.retrieve(made.id)
    await api.responses.delete(made.id)

    assert fetched.output_text == ANSWER and fetched.id == made.id
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(made.id)


async def test_the_input_items_of_a_stored_response_are_listed_in_pages(sim: SimServer, client: Client) -> None:
    api = client(sim)
    created = await api.responses.create(model=MODEL, input=[
        {"role": "user", "content": "Weather?"}, {"role": "user", "content": [{"type": "input_text", "text": "Now."}]}])
    newest_first = [item async for item in api.responses.input_items.list(created.id)]
    assert [(item.type, item.content[0].type, item.content[0].text) for item in newest_first] == [  # type: ignore[union-attr]
        ("message", "input_text", "Now."), ("message", "input_text", "Weather?")]
    assert all(item.id.startswith("msg_") for item in newest_first)  # type: ignore[union-attr]
    first_page = await api.responses.input_items.list(created.id, order="asc", limit=1)
    assert first_page.has_more and [item.id for item in first_page.data] == [newest_first[1].id]  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as refused:
        await api.responses.input_items.list(created.id, limit=101)
    assert refused.value.param == "limit"
    with pytest.raises(openai.NotFoundError):
        await api.responses.input_items.list("resp_unknown")


async def test_json_schema_output_is_parsed_by_the_sdk(sim: SimServer, client: Client) -> None:
    class Weather(pydantic.BaseModel):
        city: str
        days: int

    parsed = await client(sim).responses.parse(model=MODEL, input=QUESTION, text_format=Weather)

    assert parsed.output_parsed == Weather(city="sim", days=1)
    assert parsed.text is not None and parsed.text.format is not None and parsed.text.format.type == "json_schema"


async def test_json_mode_answers_json_when_the_input_says_json(sim: SimServer, client: Client) -> None:
    response = await client(sim).responses.create(model=MODEL, input=f"{QUESTION} Answer in JSON.",
                                                  text={"format": {"type": "json_object"}})

    assert json.loads(response.output_text) == {"answer": f"[sim-openai {MODEL}] You said: {QUESTION} Answer in JSON."}


async def test_max_output_tokens_cuts_the_answer_as_incomplete(sim: SimServer, client: Client) -> None:
    response = await client(sim).responses.create(model=MODEL, input=QUESTION * 2, max_output_tokens=16)

    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].type == "message" and response.output[0].status == "incomplete"
    assert response.usage is not None and response.usage.output_tokens <= 16
    assert response.completed_at is None


async def test_a_reasoning_model_puts_a_reasoning_item_first(sim: SimServer, client: Client) -> None:
    response = await client(sim).responses.create(model=REASONER, input=QUESTION, reasoning={"effort": "low"},
                                                  include=["reasoning.encrypted_content"])

    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary == []
    assert reasoning.encrypted_content is not None and reasoning.encrypted_content.startswith("gAAAAAB")
    assert response.output[1].type == "message"
    assert response.reasoning is not None and response.reasoning.effort == "low"
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 64


async def test_reasoning_that_uses_the_whole_budget_leaves_no_message(sim: SimServer, client: Client) -> None:
    response = await client(sim).responses.create(model=REASONER, input=QUESTION, max_output_tokens=100)

    assert response.status == "incomplete" and [item.type for item in response.output] == ["reasoning"]
    assert response.output_text == ""
    assert response.usage is not None and response.usage.output_tokens == 100


async def test_a_reasoning_item_passed_back_needs_its_store_or_its_encrypted_content(
        sim: SimServer, client: Client) -> None:
    api = client(sim)
    kept = await api.responses.create(model=REASONER, input=QUESTION)
    unkept = await api.responses.create(model=REASONER, input=QUESTION, store=False)
    reasoning = unkept.output[0].model_dump(exclude_none=True)
    follow_up: Any = {"role": "user", "content": "And tomorrow?"}

    again = await api.responses.create(model=REASONER, input=[kept.output[0].model_dump(exclude_none=True),
                                                              follow_up], store=False)
    with pytest.raises(openai.NotFoundError) as caught:
        await api.responses.create(model=REASONER, input=[reasoning, follow_up], store=False)

    assert again.status == "completed"
    assert "Items are not persisted when `store` is set to false" in caught.value.message


async def test_web_search_answers_with_a_search_call_and_a_cited_message(sim: SimServer, client: Client) -> None:
    response = await client(sim).responses.create(model=MODEL, input=QUESTION, tools=[{"type": "web_search"}])

    search, message = response.output
    assert search.type == "web_search_call" and search.status == "completed"
    assert search.action.type == "search" and search.action.query == QUESTION
    assert message.type == "message" and message.content[0].type == "output_text"
    citation = message.content[0].annotations[0]
    assert citation.type == "url_citation" and "utm_source=openai" in citation.url
    assert message.content[0].text[citation.start_index:citation.end_index].startswith("([sim.example](")


# --- request validation ------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "param", "code", "message"), [
    ({"input": QUESTION}, 400, "model", "missing_required_parameter", "Missing required parameter: 'model'."),
    ({"model": MODEL}, 400, "input", "missing_required_parameter", "Missing required parameter: 'input'."),
    ({"model": MODEL, "input": QUESTION, "messages": []}, 400, "messages", "unknown_parameter",
     "Unknown parameter: 'messages'."),
    ({"model": MODEL, "input": QUESTION, "tools": [{"type": ["function"]}]}, 400, "tools[0].type", "invalid_value",
     "Invalid value: '['function']'. Supported values are: 'function', "
     + ", ".join(f"'{value}'" for value in sorted(BUILT_IN_TOOLS)) + "."),
    ({"model": MODEL, "input": QUESTION, "max_output_tokens": "10"}, 400, "max_output_tokens", "invalid_type",
     "Invalid type for 'max_output_tokens': expected an integer, but got a string instead."),
    ({"model": MODEL, "input": QUESTION, "max_output_tokens": 8}, 400, "max_output_tokens", "integer_below_min_value",
     "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 8 instead."),
    ({"model": MODEL, "input": {"role": "user"}}, 400, "input", "invalid_type",
     "Invalid type for 'input': expected one of a string or array of input items, but got an object instead."),
    ({"model": MODEL, "input": QUESTION, "reasoning": {"effort": "high"}}, 400, "reasoning.effort",
     "unsupported_parameter", "Unsupported parameter: 'reasoning.effort' is not supported with this model."),
    ({"model": MODEL, "input": [{"role": "assistant", "content": [{"type": "input_text", "text": "hi"}]}]}, 400,
     "input[0].content[0]", "invalid_value", "Invalid value: 'input_text'. Supported values are: 'output_text' and "
     "'refusal'."),
    ({"model": MODEL, "input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}, 400, "input",
     None, "No tool call found for function call output with call_id call_x."),
    ({"model": MODEL, "input": QUESTION, "text": {"format": {"type": "json_object"}}}, 400, "input", None,
     "Response input messages must contain the word 'json' in some form to use 'text.format' of type 'json_object'."),
    ({"model": MODEL, "input": QUESTION, "stream_options": {"include_obfuscation": False}}, 400, "stream_options",
     "invalid_value", "The 'stream_options' parameter is only allowed when 'stream' is enabled."),
    ({"model": MODEL, "input": QUESTION, "temperature": 3}, 400, "temperature", "decimal_above_max_value",
     "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead."),
    ({"model": MODEL, "input": QUESTION, "top_p": -0.5}, 400, "top_p", "decimal_below_min_value",
     "Invalid 'top_p': decimal below minimum value. Expected a value >= 0, but got -0.5 instead."),
    ({"model": MODEL, "input": QUESTION, "tool_choice": "any"}, 400, "tool_choice", "invalid_value",
     "Invalid value: 'any'. Supported values are: 'none', 'auto', and 'required'."),
    ({"model": MODEL, "input": QUESTION, "metadata": {f"k{i}": "v" for i in range(17)}}, 400, "metadata",
     "object_above_max_properties", "Invalid 'metadata': too many properties. Expected an object with at most 16 "
     "properties, but got an object with 17 properties instead."),
    ({"model": MODEL, "input": QUESTION, "metadata": {"note": "x" * 513}}, 400, "metadata.note",
     "string_above_max_length", "Invalid 'metadata.note': string too long. Expected a string with maximum length "
     "512, but got a string with length 513 instead."),
    ({"model": "o3", "input": QUESTION, "temperature": 0.2}, 400, "temperature", "unsupported_parameter",
     "Unsupported parameter: 'temperature' is not supported with this model."),
    ({"model": MODEL, "input": QUESTION, "tools": [{"type": "retrieval"}]}, 400, "tools[0].type", "invalid_value",
     None),
    ({"model": MODEL, "input": QUESTION, "include": ["usage"]}, 400, "include[0]", "invalid_value", None),
])
async def test_bad_requests_are_refused_as_openai_words_them(
        sim: SimServer, body: Any, status: int, param: str, code: str | None, message: str | None) -> None:
    answered, raw = await post(sim, body)

    error = orjson.loads(raw)["error"]
    assert answered == status
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"] == message or (message is None and error["message"].startswith("Invalid value: "))


# --- streaming ---------------------------------------------------------------------------------

async def test_a_stream_of_text_is_accumulated_by_the_sdk_helper(sim: SimServer, client: Client) -> None:
    deltas: list[str] = []
    async with client(sim).responses.stream(model=MODEL, input=QUESTION) as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
                assert event.snapshot == "".join(deltas)
        final = await stream.get_final_response()

    assert len(deltas) == 4 and "".join(deltas) == ANSWER
    assert final.output_text == ANSWER and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == ANSWER_TOKENS
    assert sim_state(sim.app).stats.by_path["/v1/responses"] == 1


async def test_streamed_function_arguments_are_accumulated(sim: SimServer, client: Client) -> None:
    deltas: list[str] = []
    async with client(sim).responses.stream(model=MODEL, input=QUESTION, tools=[WEATHER]) as stream:
        async for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()

    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "sim", "days": 1}
    assert len(deltas) > 1 and "".join(deltas) == call.arguments


async def test_the_stream_wire_is_named_events_numbered_from_zero_without_done(sim: SimServer) -> None:
    status, raw = await post(sim, {"model": MODEL, "input": QUESTION, "stream": True})
    events = sse(raw)

    assert status == 200 and b"[DONE]" not in raw
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    names = [name for name, _ in events]
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * 4, "response.output_text.done",
                     "response.content_part.done", "response.output_item.done", "response.completed"]
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    assert completed["status"] == "completed" and completed["id"] == created["id"]
    deltas = [data for name, data in events if name == "response.output_text.delta"]
    assert all(d["logprobs"] == [] and isinstance(d["obfuscation"], str) and d["obfuscation"] for d in deltas)
    added = events[2][1]["item"]
    assert (added["status"], added["content"]) == ("in_progress", [])


async def test_obfuscation_is_left_out_when_the_request_turns_it_off(sim: SimServer) -> None:
    _, raw = await post(sim, {"model": MODEL, "input": QUESTION, "stream": True,
                              "stream_options": {"include_obfuscation": False}})

    assert not any("obfuscation" in data for _, data in sse(raw))


async def test_a_streamed_reasoning_summary_and_web_search_come_before_the_message(
        sim: SimServer, client: Client) -> None:
    async with client(sim).responses.stream(model=REASONER, input=QUESTION, tools=[{"type": "web_search"}],
                                            reasoning={"effort": "low", "summary": "auto"}) as stream:
        names = [event.type async for event in stream]
        final = await stream.get_final_response()

    assert [item.type for item in final.output] == ["reasoning", "web_search_call", "message"]
    for expected in ("response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                     "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                     "response.web_search_call.searching", "response.output_text.annotation.added"):
        assert expected in names
    assert names.index("response.reasoning_summary_part.done") < names.index("response.web_search_call.in_progress")
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text.startswith("**Answering the question**")


async def test_a_streamed_incomplete_answer_ends_with_response_incomplete(sim: SimServer) -> None:
    _, raw = await post(sim, {"model": MODEL, "input": QUESTION * 2, "max_output_tokens": 16, "stream": True})
    events = sse(raw)

    name, data = events[-1]
    assert name == "response.incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert "response.completed" not in [name for name, _ in events]


async def test_a_streamed_response_is_stored_for_the_next_turn(sim: SimServer, client: Client) -> None:
    api = client(sim)
    async with api.responses.stream(model=MODEL, input=QUESTION) as stream:
        first = await stream.get_final_response()

    second = await api.responses.create(model=MODEL, input="And tomorrow?", previous_response_id=first.id)

    assert second.output_text == f"[sim-openai {MODEL}] You said: And tomorrow?"
    assert second.usage is not None and second.usage.input_tokens > INPUT_TOKENS + ANSWER_TOKENS


# --- quirks ------------------------------------------------------------------------------------

async def test_with_quirks_a_reasoning_model_announces_its_calls_and_phases_its_messages(
        sims: SimPool, client: Client) -> None:
    sim = await sims.start(openai_app(KEY, chunks=4, quirks=True))
    api = client(sim)

    calling = await api.responses.create(model=REASONER, input=QUESTION, tools=[WEATHER, TIME])
    async with api.responses.stream(model=REASONER, input=QUESTION) as stream:
        answered = await stream.get_final_response()

    assert [item.type for item in calling.output] == ["reasoning", "message", "function_call", "function_call"]
    preamble = calling.output[1]
    assert preamble.type == "message" and preamble.phase == "commentary"
    assert calling.output_text == "I'll call get_weather and get_time."
    message = answered.output[1]
    assert message.type == "message" and message.phase == "final_answer"
    assert answered.output_text == f"[sim-openai {REASONER}] You said: {QUESTION}"


async def test_without_quirks_messages_carry_no_phase(sim: SimServer) -> None:
    _, raw = await post(sim, {"model": REASONER, "input": QUESTION, "tools": [WEATHER]})

    assert [item["type"] for item in orjson.loads(raw)["output"]] == ["reasoning", "function_call"]
    assert b'"phase"' not in raw
