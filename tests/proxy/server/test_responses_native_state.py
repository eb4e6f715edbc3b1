"""A conversation's reasoning, carried between turns to OpenAI targets, across accounts and failovers.

The sidecar holds the conversation (`previous_response_id`) and replays it to an OpenAI target as
items. OpenAI refuses a reasoning item it neither stored nor can decrypt (404, a client error: no
failover would save the turn), so the sidecar replays reasoning only with its encrypted content and
never sends the ids of items another account made. Two simulated OpenAI accounts, each with its own
store, show both rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llmroute_proxy.server.response_store import ResponseStore
from llmroute_proxy.sim import Fault, FaultKind, openai_app
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.server.conftest import last_request, sim_requests
from tests.proxy.stack import KEYS, Stack

REASONER = model("gpt-5-mini", context_window=400000, input_per_mtok=0.25, output_per_mtok=2.0)
CONFIG = [
    provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=[REASONER]),
    provider("oai-b", "openai", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", region="there", models=[REASONER]),
    # one account at two endpoints, each keeping its own responses (as two Azure resources do)
    provider("regional", "openai", [("here", "{oai}/v1"), ("west", "{oai_west}/v1")], key_env="TEST_OAI_KEY",
             models=[REASONER]),
    route("main", {
        "one": [target("oai", "gpt-5-mini")],
        "two-accounts": [target("oai", "gpt-5-mini"), target("oai-b", "gpt-5-mini", priority=1)],
        "regions": [target("regional", "gpt-5-mini")],
    }, default_tier="one",
        fallback=QUICK_FALLBACK,
        outlierDetection={"consecutiveFailures": 1000, "baseEjection": "1s", "maxEjection": "1s"}),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    west = {"oai-west": lambda faults: openai_app(KEYS["oai"], name="sim-oai-west", faults=faults)}
    with Stack(tmp_path_factory.mktemp("native-state"), config=CONFIG, extra_sims=west) as running:
        yield running


@pytest.fixture(autouse=True)
def no_faults(stack: Stack) -> Iterator[None]:
    yield
    for name in ("oai", "oai-b", "oai-west"):
        stack.call(lambda name=name: stack.faults[name].clear())  # type: ignore[misc]


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)


def sent_input(stack: Stack, sim: str) -> list[dict[str, Any]]:
    body = last_request(stack, sim).body
    assert "previous_response_id" not in body
    items: list[dict[str, Any]] = body["input"]
    return items


def test_encrypted_reasoning_is_carried_to_the_next_turn_on_the_same_provider(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="one", input="Think, then say hi.", include=["reasoning.encrypted_content"])
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    second = sdk.responses.create(model="one", input="And again.", previous_response_id=first.id)
    assert second.status == "completed" and second.output_text
    replayed = [item for item in sent_input(stack, "oai") if item.get("type") == "reasoning"]
    assert replayed == [{"type": "reasoning", "id": reasoning.id, "summary": [],
                         "encrypted_content": reasoning.encrypted_content}]


@pytest.mark.parametrize("include", [[], ["reasoning.encrypted_content"]])
def test_reasoning_is_not_replayed_to_another_account_so_it_can_take_the_next_turn(
        stack: Stack, include: list[str]) -> None:
    sdk = client(stack)
    first = sdk.responses.with_raw_response.create(model="two-accounts", input="Think, then say hi.",
                                                   include=include)  # type: ignore[arg-type]
    assert first.headers["x-llmroute-provider"] == "oai"
    assert first.parse().output[0].type == "reasoning"  # the first account's: stored there, encrypted for it
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    second = sdk.responses.with_raw_response.create(model="two-accounts", input="And again.",
                                                    previous_response_id=first.parse().id)
    assert second.headers["x-llmroute-provider"] == "oai-b" and second.headers["x-llmroute-attempts"] == "2"
    assert second.parse().output_text
    replayed = sent_input(stack, "oai-b")
    assert [item.get("type") for item in replayed] == ["message", "message", "message"]
    assert not any("id" in item for item in replayed)  # the first account's ids mean nothing here


def test_the_other_account_refuses_a_reasoning_item_it_does_not_hold_as_the_clients_own_error(
        stack: Stack) -> None:
    """What the rule above protects against: the item sent as the client got it is OpenAI's 404, the
    request's fault: passed on, not failed over, and the target is not ejected for it."""
    sdk = client(stack)
    first = sdk.responses.create(model="one", input="Think, then say hi.")
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    with pytest.raises(openai.NotFoundError) as refused:
        sdk.responses.create(model="two-accounts", input=[  # type: ignore[misc]
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"role": "user", "content": "And again."}])
    assert "rs_" in refused.value.message
    assert refused.value.response.headers["x-llmroute-attempts"] == "2"  # oai's 503, then oai-b's 404
    still = client(stack).responses.with_raw_response.create(model="two-accounts", input="hi")
    assert still.headers["x-llmroute-provider"] == "oai-b"  # not ejected for the client's item


def test_a_conversation_one_account_holds_goes_back_to_that_account_only(stack: Stack) -> None:
    """After a restart the sidecar cannot know which account holds an id, so it asks them in turn; the
    answer is kept marked with the account that held it, and later turns go to it alone: another account
    would only answer 404, and failing over to it would turn an outage into a lost conversation."""
    sdk = client(stack)
    first = sdk.responses.create(model="two-accounts", input="My name is Ada.")
    stack.call(lambda: setattr(stack.sidecar, "responses", ResponseStore(
        stack.sidecar.responses.max_bytes, stack.sidecar.responses.ttl_s)))  # what a restart does
    second = sdk.responses.with_raw_response.create(model="two-accounts", previous_response_id=first.id,
                                                    input="What is my name?")
    assert second.headers["x-llmroute-provider"] == "oai"
    other_before = sim_requests(stack, "oai-b")
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.responses.create(model="two-accounts", previous_response_id=second.parse().id, input="Again?")
    assert failed.value.status_code >= 500 and sim_requests(stack, "oai-b") == other_before
    stack.call(lambda: stack.faults["oai"].clear())
    third = sdk.responses.create(model="two-accounts", previous_response_id=second.parse().id, input="Again?")
    assert third.output_text and last_request(stack, "oai").body["previous_response_id"] == second.parse().id


def forget_every_response(stack: Stack) -> None:
    """What a sidecar restart does to its response store; the providers keep theirs."""
    stack.call(lambda: setattr(stack.sidecar, "responses", ResponseStore(
        stack.sidecar.responses.max_bytes, stack.sidecar.responses.ttl_s)))


def answered_while_down(stack: Stack, down: str, tier: str) -> str:
    """A first turn that another target than the tier's first answers natively: the id it keeps."""
    stack.call(lambda: stack.faults[down].always(Fault(FaultKind.STATUS, status=503)))
    try:
        return client(stack).responses.create(model=tier, input="My name is Ada.").id
    finally:
        stack.call(lambda: stack.faults[down].clear())


@pytest.mark.parametrize("streamed", [False, True])
def test_after_a_restart_each_account_is_asked_for_a_conversation_until_one_holds_it(
        stack: Stack, streamed: bool) -> None:
    first = answered_while_down(stack, "oai", "two-accounts")  # oai-b holds it
    forget_every_response(stack)
    asked_before = sim_requests(stack, "oai")
    sdk = client(stack)
    if streamed:
        with sdk.responses.stream(model="two-accounts", previous_response_id=first, input="My name?") as stream:
            second = stream.get_final_response()
    else:
        raw = sdk.responses.with_raw_response.create(model="two-accounts", previous_response_id=first,
                                                     input="My name?")
        assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-attempts"]) == ("oai-b", "2")
        second = raw.parse()
    assert second.previous_response_id == first and second.output_text
    assert sim_requests(stack, "oai") == asked_before + 1  # oai answered 404: not its conversation
    assert last_request(stack, "oai-b").body["previous_response_id"] == first
    assert client(stack).responses.with_raw_response.create(
        model="two-accounts", input="hi").headers["x-llmroute-provider"] == "oai"  # no fault of oai's
    third = sdk.responses.with_raw_response.create(model="two-accounts", previous_response_id=second.id,
                                                   input="Again?")
    assert (third.headers["x-llmroute-provider"], third.headers["x-llmroute-attempts"]) == ("oai-b", "1")


def test_after_a_restart_a_conversation_no_account_holds_is_the_last_404_saying_why(stack: Stack) -> None:
    forget_every_response(stack)
    with pytest.raises(openai.NotFoundError) as gone:
        client(stack).responses.create(model="two-accounts", previous_response_id="resp_" + "7" * 48, input="hi")
    assert gone.value.param == "previous_response_id" and "this sidecar never stored it" in gone.value.message
    assert gone.value.response.headers["x-llmroute-attempts"] == "2"  # each account asked once


def test_a_conversation_one_endpoint_holds_is_continued_and_deleted_at_that_endpoint(stack: Stack) -> None:
    """One provider at two endpoints that keep their responses apart: a turn goes back to the endpoint
    that holds its conversation, and DELETE deletes the copy there, not a 404 at the other."""
    first = answered_while_down(stack, "oai", "regions")  # the west endpoint answered
    forget_every_response(stack)
    sdk = client(stack)
    second = sdk.responses.with_raw_response.create(model="regions", previous_response_id=first, input="My name?")
    assert second.headers["x-llmroute-attempts"] == "2"  # here: 404; west holds it
    assert last_request(stack, "oai-west").body["previous_response_id"] == first
    here_before = sim_requests(stack, "oai")
    third = sdk.responses.create(model="regions", previous_response_id=second.parse().id, input="Again?")
    assert third.output_text and sim_requests(stack, "oai") == here_before  # straight to west
    sdk.responses.delete(third.id)
    assert sim_requests(stack, "oai") == here_before
    west = openai.OpenAI(base_url=stack.sims["oai-west"].url + "/v1", api_key=KEYS["oai"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        west.responses.retrieve(third.id)
