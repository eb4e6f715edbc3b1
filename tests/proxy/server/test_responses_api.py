"""The OpenAI SDK's Responses client calls the sidecar, which serves it from every provider type."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator

import openai
import pydantic
import pytest

from llmroute_proxy.server.kept_responses import delete_response
from llmroute_proxy.server.response_store import ResponseStore
from llmroute_proxy.sim import Fault, FaultKind
from tests.proxy.documents import target, with_tier
from tests.proxy.server.conftest import last_request, sim_requests
from tests.proxy.stack import DOCUMENTS, KEYS, Stack

# the shared stack's route, with a tier whose fallback is another provider type
MIXED = with_tier(DOCUMENTS, "main", "mixed",
                  [target("oai", "gpt-4o-mini"), target("claude", "claude-sonnet-4-5", priority=1)])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stack"), config=MIXED) as running:
        yield running

TIERS = {"openai": "oai", "anthropic": "claude", "gemini": "gem"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False},
           "strict": True}


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key-never-forwarded", max_retries=0)


@pytest.mark.parametrize("tier", TIERS)
def test_text_in_text_out_from_every_provider(stack: Stack, tier: str) -> None:
    raw = client(stack).responses.with_raw_response.create(
        model=tier, instructions="Be brief.", input="hello there", max_output_tokens=200, temperature=0.5,
        metadata={"ticket": "T-1"}, user="u-1")
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.incomplete_details is None
    assert "You said: hello there" in response.output_text
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_") and message.role == "assistant"
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.metadata == {"ticket": "T-1"} and response.instructions == "Be brief."
    routed = {name: raw.headers[f"x-llmroute-{name}"] for name in ("route", "tier", "provider", "attempts")}
    assert routed == {"route": "main", "tier": tier, "provider": TIERS[tier], "attempts": "1"}
    assert float(raw.headers["x-llmroute-cost-usd"]) > 0


@pytest.mark.parametrize("tier", TIERS)
def test_a_function_tool_round_trips_through_every_provider(stack: Stack, tier: str) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model=tier, input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].id is not None and calls[0].id.startswith("fc_")
    assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "sim"}
    second = sdk.responses.create(model=tier, tools=[WEATHER], input=[  # type: ignore[list-item]
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],  # type: ignore[misc]
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C and cloudy"}])
    assert "18C and cloudy" in second.output_text


def test_the_provider_gets_the_translated_request(stack: Stack) -> None:
    client(stack).responses.create(
        model="anthropic", instructions="Be brief.", input="hi", tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False,
        max_output_tokens=100, reasoning={"effort": "low"}, store=False)
    sent = last_request(stack, "claude").body
    assert sent["system"] == "Be brief." and sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert "thinking" not in sent  # Claude refuses thinking beside a forced tool call
    assert not {"store", "metadata", "previous_response_id", "instructions"} & set(sent)
    client(stack).responses.create(model="anthropic", input="hi", tools=[WEATHER],  # type: ignore[list-item]
                                   reasoning={"effort": "low"}, store=False)
    assert last_request(stack, "claude").body["thinking"]["type"] == "enabled"


class Place(pydantic.BaseModel):
    city: str
    days: int


@pytest.mark.parametrize("tier", TIERS)
def test_structured_output_parses_in_the_sdk(stack: Stack, tier: str) -> None:
    response = client(stack).responses.parse(model=tier, input="Which city, for how long?", text_format=Place)
    assert response.output_parsed == Place(city="sim", days=1)
    assert response.text.format.type == "json_schema"  # type: ignore[union-attr]
    sent = json.dumps(last_request(stack, TIERS[tier]).body)
    assert '"days"' in sent and '"city"' in sent


@pytest.mark.parametrize("tier", ["openai", "gemini"])
def test_json_mode_answers_json(stack: Stack, tier: str) -> None:
    response = client(stack).responses.create(model=tier, input="Reply in JSON", text={"format": {"type": "json_object"}})
    assert "You said: Reply in JSON" in json.loads(response.output_text)["answer"]


OPENAI_ONLY = [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"extra_body": {"frobnicate": True}}, "frobnicate"),
]


@pytest.mark.parametrize(("kwargs", "param"), OPENAI_ONLY)
def test_what_only_openai_serves_is_a_400_naming_the_field_for_a_tier_without_openai_targets(
        stack: Stack, kwargs: dict[str, object], param: str) -> None:
    before = sim_requests(stack, "claude")
    with pytest.raises(openai.BadRequestError) as refused:
        client(stack).responses.create(model="anthropic", input="hi", **kwargs)  # type: ignore[arg-type]
    assert refused.value.param == param
    assert "no Azure OpenAI or OpenAI target" in refused.value.message
    assert refused.value.response.headers["x-llmroute-attempts"] == "0"
    assert sim_requests(stack, "claude") == before


def test_a_built_in_tool_is_served_natively_by_an_openai_target(stack: Stack) -> None:
    raw = client(stack).responses.with_raw_response.create(
        model="mixed", input="What happened today?", tools=[{"type": "web_search"}])
    assert raw.headers["x-llmroute-provider"] == "oai"  # the tier's Anthropic fallback cannot take it
    response = raw.parse()
    assert [item.type for item in response.output] == ["web_search_call", "message"]
    assert response.output_text
    sent = last_request(stack, "oai")
    assert sent.path.endswith("/responses") and sent.body["tools"] == [{"type": "web_search"}]


def test_what_openai_itself_refuses_is_its_own_400_and_is_not_failed_over(stack: Stack) -> None:
    before = sim_requests(stack, "claude")
    with pytest.raises(openai.BadRequestError) as refused:
        client(stack).responses.create(model="mixed", input="hi", extra_body={"frobnicate": True})
    assert refused.value.param == "frobnicate"
    assert refused.value.response.headers["x-llmroute-attempts"] == "1"
    assert sim_requests(stack, "claude") == before


def test_an_openai_target_is_sent_the_clients_own_request(stack: Stack) -> None:
    client(stack).responses.create(model="openai", instructions="Be brief.", input="hi", store=False,
                                   metadata={"ticket": "T-2"}, include=["reasoning.encrypted_content"])
    sent = last_request(stack, "oai")
    assert sent.path.endswith("/responses")
    assert sent.body == {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "hi", "store": False,
                         "metadata": {"ticket": "T-2"}, "include": ["reasoning.encrypted_content"]}


def test_a_providers_refusal_names_the_responses_field(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(stack).responses.create(model="anthropic", input="hi", text={"format": {"type": "json_object"}})
    assert refused.value.param == "text.format"


def test_a_failing_target_fails_over_like_chat_completions(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=500)))
    raw = client(stack).responses.with_raw_response.create(model="ha", input="hello")
    assert "sim-oai-b" in raw.parse().output_text
    assert raw.headers["x-llmroute-provider"] == "oai-b" and raw.headers["x-llmroute-attempts"] == "2"


def test_an_unknown_model_is_a_404_in_the_error_shape(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client(stack).responses.create(model="no-such-tier", input="hi")
    assert missing.value.param == "model" and "Available" in missing.value.message


# ---- streams ---------------------------------------------------------------------------------

TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added", "response.output_text.delta", "response.output_text.done",
               "response.content_part.done", "response.output_item.done", "response.completed"]
CALL_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.function_call_arguments.delta", "response.function_call_arguments.done",
               "response.output_item.done", "response.completed"]


def distinct_in_order(types: list[str]) -> list[str]:
    return [kind for i, kind in enumerate(types) if i == 0 or types[i - 1] != kind]


@pytest.mark.parametrize("tier", TIERS)
def test_the_sdk_stream_helper_accumulates_text_from_every_provider(stack: Stack, tier: str) -> None:
    with client(stack).responses.stream(model=tier, input="tell me a story", instructions="Be brief.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert distinct_in_order([event.type for event in events]) == TEXT_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "You said: tell me a story" in final.output_text and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0
    assert final.id.startswith("resp_") and final.output[0].id.startswith("msg_")  # type: ignore[union-attr]


@pytest.mark.parametrize("tier", TIERS)
def test_streamed_function_call_arguments_accumulate_in_the_sdk(stack: Stack, tier: str) -> None:
    with client(stack).responses.stream(model=tier, input="Weather?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
        events = list(stream)
        final = stream.get_final_response()
    assert distinct_in_order([event.type for event in events]) == CALL_EVENTS
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "sim"}


def test_a_raw_stream_says_where_it_was_routed(stack: Stack) -> None:
    with client(stack).responses.with_streaming_response.create(model="gemini", input="hi", stream=True) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-llmroute-provider"] == "gem"
        body = b"".join(raw.iter_bytes())
    assert body.startswith(b"event: response.created\n") and b"event: response.completed\n" in body


@pytest.mark.parametrize("kind", [FaultKind.BREAK_AFTER_TOKENS, FaultKind.ANTHROPIC_ERROR_EVENT])
@pytest.mark.parametrize("tier", TIERS)
def test_a_failure_after_the_first_token_ends_the_stream_with_response_failed(stack: Stack, tier: str,
                                                                               kind: FaultKind) -> None:
    stack.call(lambda: stack.faults[TIERS[tier]].always(Fault(kind, tokens=2)))
    with client(stack).responses.stream(model=tier, input="a long answer please, in many words") as stream:
        events = list(stream)
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    types = [event.type for event in events]
    assert types[-1] == "response.failed" and "response.completed" not in types
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None
    assert failed.output[0].status == "incomplete" and failed.output[0].content[0].text  # type: ignore[union-attr]


def test_failover_before_the_first_token_is_invisible(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.BREAK_BEFORE_FIRST_TOKEN)))
    with client(stack).responses.stream(model="ha", input="hello") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert distinct_in_order([event.type for event in events]) == TEXT_EVENTS
    assert "sim-oai-b" in final.output_text


# ---- state -----------------------------------------------------------------------------------


def test_a_conversation_continues_by_id_when_its_second_turn_fails_over_to_another_provider_type(
        stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.with_raw_response.create(model="mixed", input="Weather in Paris?", tools=[WEATHER],  # type: ignore[list-item]
                                                   instructions="Use the tool.")
    assert first.headers["x-llmroute-provider"] == "oai"
    call = first.parse().output[0]
    assert call.type == "function_call"
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    second = sdk.responses.with_raw_response.create(
        model="mixed", previous_response_id=first.parse().id, tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C and cloudy"}])
    assert second.headers["x-llmroute-provider"] == "claude" and second.headers["x-llmroute-attempts"] == "2"
    assert "[sim-anthropic claude-sonnet-4-5] Tool said: 18C and cloudy" in second.parse().output_text
    sent = last_request(stack, "claude").body
    assert "system" not in sent  # instructions are not inherited by the next turn
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0] == {"type": "tool_use", "id": call.call_id, "name": "get_weather",
                                                 "input": {"city": "sim"}}
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"
    third = sdk.responses.create(model="mixed", previous_response_id=second.parse().id, input="And tomorrow?")
    assert "You said: And tomorrow?" in third.output_text and third.previous_response_id == second.parse().id


def test_a_conversation_begun_on_claude_continues_natively_on_openai_with_the_earlier_turns_as_items(
        stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="anthropic", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    call = first.output[-1]
    assert call.type == "function_call"
    second = sdk.responses.create(model="openai", previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
                                  input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"}])
    assert "18C" in second.output_text
    sent = last_request(stack, "oai").body
    assert "previous_response_id" not in sent
    assert [item.get("type") for item in sent["input"]] == ["message", "function_call", "function_call_output"]
    assert sent["input"][1]["call_id"] == call.call_id and "id" not in sent["input"][1]
    third = sdk.responses.create(model="gemini", previous_response_id=second.id, input="Thanks!")
    assert "You said: Thanks!" in third.output_text  # and on to a third provider type


@pytest.mark.parametrize("streamed", [False, True])
def test_a_stored_response_can_be_read_and_deleted(stack: Stack, streamed: bool) -> None:
    sdk = client(stack)
    if streamed:
        with sdk.responses.stream(model="gemini", input="remember me", metadata={"k": "v"}) as stream:
            created = stream.get_final_response()
    else:
        created = sdk.responses.create(model="gemini", input="remember me", metadata={"k": "v"})
    read = sdk.responses.retrieve(created.id)
    assert (read.id, read.output_text, read.metadata, read.usage) == (created.id, created.output_text, {"k": "v"},
                                                                      created.usage)
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError, match="it was deleted"):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError, match="it was deleted") as gone:
        sdk.responses.create(model="gemini", previous_response_id=created.id, input="again")
    assert gone.value.param == "previous_response_id" and gone.value.code == "response_not_found"


def openai_itself(stack: Stack) -> openai.OpenAI:
    """The simulated OpenAI account the `openai` tier reaches, called directly (as the app never does)."""
    return openai.OpenAI(base_url=stack.sims["oai"].url + "/v1", api_key=KEYS["oai"], max_retries=0)


def test_deleting_a_response_openai_answered_deletes_openais_own_copy_too(stack: Stack) -> None:
    sdk = client(stack)
    created = sdk.responses.create(model="openai", input="forget me everywhere")
    assert openai_itself(stack).responses.retrieve(created.id).id == created.id  # OpenAI kept it too
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        openai_itself(stack).responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError, match="it was deleted"):
        sdk.responses.retrieve(created.id)


def test_a_response_openai_cannot_delete_now_is_kept_on_both_sides_until_it_can(stack: Stack) -> None:
    sdk = client(stack)
    created = sdk.responses.create(model="openai", input="forget me everywhere")
    stack.run(stack.sims["oai"].stop_listening())
    try:
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.responses.delete(created.id)
        assert failed.value.status_code == 502 and failed.value.code == "provider_delete_failed"
        assert "provider 'oai'" in failed.value.message and KEYS["oai"] not in failed.value.message
        assert sdk.responses.retrieve(created.id).id == created.id  # nothing was deleted: try again later
    finally:
        stack.run(stack.sims["oai"].resume())
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        openai_itself(stack).responses.retrieve(created.id)


def test_two_deletions_of_one_response_both_succeed(stack: Stack) -> None:
    """Both ask the provider (the second is told 404: gone already) before either deletes the copy here."""
    created = client(stack).responses.create(model="openai", input="forget me twice")

    async def twice() -> list[None]:
        route = stack.sidecar.table.route(None) if stack.sidecar.table is not None else None
        return await asyncio.gather(delete_response(stack.sidecar, created.id, route),
                                    delete_response(stack.sidecar, created.id, route))

    assert stack.run(twice()) == [None, None]
    with pytest.raises(openai.NotFoundError, match="it was deleted"):
        client(stack).responses.retrieve(created.id)


def test_a_response_another_provider_answered_is_deleted_here_only(stack: Stack) -> None:
    sdk = client(stack)
    created = sdk.responses.create(model="anthropic", input="forget me")
    before = sim_requests(stack, "claude")
    sdk.responses.delete(created.id)
    assert sim_requests(stack, "claude") == before  # Anthropic keeps no Response: nothing to ask it
    with pytest.raises(openai.NotFoundError, match="it was deleted"):
        sdk.responses.retrieve(created.id)


def test_store_false_keeps_nothing(stack: Stack) -> None:
    sdk = client(stack)
    before = stack.call(lambda: stack.sidecar.responses.stored)
    created = sdk.responses.create(model="openai", input="forget me", store=False)
    assert created.store is False
    assert stack.call(lambda: stack.sidecar.responses.stored) == before
    with pytest.raises(openai.NotFoundError, match="never stored it"):
        sdk.responses.retrieve(created.id)


def test_an_expired_response_is_a_404_saying_so_unless_the_provider_that_made_it_holds_it(stack: Stack) -> None:
    sdk = client(stack)
    created = sdk.responses.create(model="openai", input="short-lived")
    real_clock = stack.sidecar.clock
    ttl = stack.sidecar.responses.ttl_s
    stack.call(lambda: setattr(stack.sidecar, "clock", lambda: real_clock() + ttl + 1))
    try:
        with pytest.raises(openai.NotFoundError, match="expired") as gone:  # a tier without OpenAI targets
            sdk.responses.create(model="anthropic", previous_response_id=created.id, input="still there?")
        kept_by_openai = sdk.responses.create(model="openai", previous_response_id=created.id, input="still there?")
    finally:
        stack.call(lambda: setattr(stack.sidecar, "clock", real_clock))
    assert gone.value.response.json()["error"]["type"] == "invalid_request_error"
    assert kept_by_openai.previous_response_id == created.id and kept_by_openai.output_text


def forget_every_response(stack: Stack) -> None:
    """What a sidecar restart does to its response store; the providers keep theirs."""
    stack.call(lambda: setattr(stack.sidecar, "responses", ResponseStore(
        stack.sidecar.responses.max_bytes, stack.sidecar.responses.ttl_s)))


def test_after_a_restart_a_conversation_openai_answered_continues_there_by_its_id(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="openai", input="My name is Ada.")
    forget_every_response(stack)
    second = sdk.responses.with_raw_response.create(model="mixed", previous_response_id=first.id,
                                                    input="What is my name?")
    assert second.headers["x-llmroute-provider"] == "oai"
    sent = last_request(stack, "oai").body
    assert (sent["previous_response_id"], sent["input"]) == (first.id, "What is my name?")  # OpenAI holds the rest
    assert second.parse().previous_response_id == first.id and second.parse().output_text
    assert sdk.responses.retrieve(second.parse().id).output_text == second.parse().output_text  # kept here too
    assert [item.type for item in sdk.responses.input_items.list(second.parse().id)] == ["message"]
    with sdk.responses.stream(model="openai", previous_response_id=second.parse().id, input="Again?") as stream:
        third = stream.get_final_response()  # its earlier turns live at OpenAI: it is continued there again
    assert third.previous_response_id == second.parse().id and third.output_text
    assert last_request(stack, "oai").body["previous_response_id"] == second.parse().id


def test_after_a_restart_a_response_openai_keeps_is_read_and_deleted_through_the_sidecar(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="openai", input="My name is Ada.")
    forget_every_response(stack)
    read = sdk.responses.retrieve(first.id)  # OpenAI's own copy, as OpenAI answers it
    assert (read.id, read.output_text) == (first.id, first.output_text)
    sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        openai_itself(stack).responses.retrieve(first.id)


def test_after_a_restart_the_input_items_of_a_response_openai_keeps_are_its_own_pages(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="openai", input=[{"role": "user", "content": "My name is Ada."},
                                                        {"role": "user", "content": "Remember it."}])
    forget_every_response(stack)
    newest_first = list(sdk.responses.input_items.list(first.id))
    assert [item.content[0].text for item in newest_first] == ["Remember it.", "My name is Ada."]  # type: ignore[union-attr]
    page = sdk.responses.input_items.list(first.id, order="asc", limit=1)  # the query goes on to OpenAI
    assert page.has_more and [item.id for item in page.data] == [newest_first[1].id]
    assert [item.id for item in page] == [item.id for item in reversed(newest_first)]  # the SDK pages on by `after`


def test_after_a_restart_a_provider_that_cannot_be_asked_is_a_502_not_a_404(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="openai", input="My name is Ada.")
    forget_every_response(stack)
    stack.run(stack.sims["oai"].stop_listening())
    try:
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.responses.retrieve(first.id)
    finally:
        stack.run(stack.sims["oai"].resume())
    assert (failed.value.status_code, failed.value.code) == (502, "provider_lookup_failed")
    assert "provider 'oai'" in failed.value.message and KEYS["oai"] not in failed.value.message
    assert sdk.responses.retrieve(first.id).id == first.id  # asked again, it answers


def test_after_a_restart_a_response_no_provider_keeps_is_a_404_naming_who_was_asked(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="anthropic", input="My name is Ada.")  # under an id the sidecar made
    forget_every_response(stack)
    for call in (sdk.responses.retrieve, sdk.responses.delete, sdk.responses.input_items.list):
        with pytest.raises(openai.NotFoundError) as gone:
            call(first.id)
        asked = f"nor does oai (127.0.0.1:{stack.sims['oai'].port}), asked for it"  # the provider at its endpoint
        assert "this sidecar never stored it" in gone.value.message and asked in gone.value.message


def test_a_conversation_only_a_provider_may_hold_never_goes_to_one_that_cannot(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="openai", input="My name is Ada.")
    forget_every_response(stack)
    claude_before = sim_requests(stack, "claude")
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.responses.create(model="mixed", previous_response_id=first.id, input="What is my name?")
    assert failed.value.status_code >= 500
    assert sim_requests(stack, "claude") == claude_before  # no failover to a provider that never saw the turns


def test_a_sidecar_made_id_lost_in_a_restart_is_a_404_saying_why_and_ejects_nothing(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="anthropic", input="My name is Ada.")  # under an id the sidecar made
    forget_every_response(stack)
    with pytest.raises(openai.NotFoundError) as gone:
        sdk.responses.create(model="mixed", previous_response_id=first.id, input="What is my name?")
    assert gone.value.param == "previous_response_id"
    assert "this sidecar never stored it" in gone.value.message  # why it was looked for at OpenAI
    assert f"which said: Previous response with id '{first.id}' not found" in gone.value.message
    assert gone.value.response.headers["x-llmroute-attempts"] == "1"  # the client's to fix: not failed over
    still = sdk.responses.with_raw_response.create(model="mixed", input="hi")
    assert still.headers["x-llmroute-provider"] == "oai"


def test_an_id_never_stored_is_a_404_saying_why_on_a_tier_without_openai_targets(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError, match="never stored it") as gone:
        client(stack).responses.create(model="gemini", previous_response_id="resp_" + "0" * 48, input="hi")
    assert (gone.value.param, gone.value.code) == ("previous_response_id", "response_not_found")


def test_a_deleted_response_is_not_looked_for_at_the_provider(stack: Stack) -> None:
    sdk = client(stack)
    created = sdk.responses.create(model="openai", input="delete me")
    sdk.responses.delete(created.id)
    before = sim_requests(stack, "oai")
    with pytest.raises(openai.NotFoundError, match="it was deleted"):
        sdk.responses.create(model="openai", previous_response_id=created.id, input="still there?")
    assert sim_requests(stack, "oai") == before


def test_status_shows_the_store(stack: Stack) -> None:
    client(stack).responses.create(model="openai", input="count me")
    with urllib.request.urlopen(stack.admin_url + "/status", timeout=5) as answer:
        store = json.load(answer)["responses_store"]
    assert store["entries"] >= 1 and 0 < store["bytes"] <= store["max_bytes"] == 32 * 1024 * 1024
    assert store["ttl_seconds"] == 3600


def test_input_items_lists_the_requests_own_items_in_pages(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="gemini", input="Weather?", tools=[WEATHER])  # type: ignore[list-item]
    call = next(item for item in first.output if item.type == "function_call")
    second = sdk.responses.create(model="gemini", previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
                                  input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
                                         {"role": "user", "content": "And tomorrow?"}])
    only = list(sdk.responses.input_items.list(first.id))
    assert [(i.type, i.role, i.content[0].type, i.content[0].text) for i in only] == [  # type: ignore[union-attr]
        ("message", "user", "input_text", "Weather?")]
    newest_first = list(sdk.responses.input_items.list(second.id))  # this turn's items only, newest first
    assert [item.type for item in newest_first] == ["message", "function_call_output"]
    assert newest_first[1].output == "18C" and all(item.id for item in newest_first)  # type: ignore[union-attr]
    page = sdk.responses.input_items.list(second.id, order="asc", limit=1)
    assert page.has_more and [item.type for item in page.data] == ["function_call_output"]
    assert [item.id for item in page] == [item.id for item in reversed(newest_first)]  # the SDK pages on by `after`
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.responses.input_items.list(second.id, limit=1000)
    assert bad.value.param == "limit"


def test_input_items_of_an_unknown_id_is_a_404_in_the_error_shape(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as gone:
        client(stack).responses.input_items.list("resp_nothing")
    assert gone.value.code == "response_not_found" and "never stored it" in gone.value.message


def test_cancel_says_nothing_runs_in_the_background(stack: Stack) -> None:
    sdk = client(stack)
    created = sdk.responses.create(model="openai", input="done already")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.cancel(created.id)
    assert refused.value.code == "not_cancellable" and "background" in refused.value.message
    with pytest.raises(openai.NotFoundError) as gone:
        sdk.responses.cancel("resp_nothing")
    assert gone.value.code == "response_not_found"
