"""An OpenAI-compatible server that speaks the Responses API too (vLLM, OpenRouter, Open Responses
servers), configured with `openaiCompatible.responsesAPI`: sent the client's own Responses request and
relayed, as OpenAI is; one without the setting gets the chat-completions translation, as before."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.proxy.documents import provider, route, target
from tests.proxy.server.conftest import last_request
from tests.proxy.stack import Stack

CONFIG = [
    provider("speaks-responses", "openai-compatible", "{oai}/v1", key_env="TEST_OAI_KEY", models=["gpt-4o-mini"],
             openaiCompatible={"responsesAPI": True}),
    provider("chat-only", "openai-compatible", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", models=["gpt-4o-mini"]),
    route("main", {"native": [target("speaks-responses", "gpt-4o-mini")],
                   "translated": [target("chat-only", "gpt-4o-mini")]}, default_tier="native"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("compatible"), config=CONFIG) as running:
        yield running


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)


def test_a_server_that_speaks_responses_gets_the_clients_own_request_and_its_answer_is_relayed(stack: Stack) -> None:
    answer = client(stack).responses.create(model="native", input="Say hi", metadata={"ticket": "T-1"})
    sent = last_request(stack, "oai")
    assert sent.path == "/v1/responses"
    assert (sent.body["input"], sent.body["model"], sent.body["metadata"]) == ("Say hi", "gpt-4o-mini", {"ticket": "T-1"})
    assert answer.output_text and answer.metadata == {"ticket": "T-1"}


def test_its_stream_is_relayed_event_by_event(stack: Stack) -> None:
    with client(stack).responses.stream(model="native", input="Tell me more") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert last_request(stack, "oai").path == "/v1/responses"
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed" and final.output_text


def test_chat_completions_to_the_same_server_stay_chat_completions(stack: Stack) -> None:
    client(stack).chat.completions.create(model="native", messages=[{"role": "user", "content": "hi"}])
    assert last_request(stack, "oai").path == "/v1/chat/completions"


def test_a_server_without_the_setting_gets_the_chat_translation(stack: Stack) -> None:
    answer = client(stack).responses.create(model="translated", input="Say hi")
    assert last_request(stack, "oai-b").path == "/v1/chat/completions" and answer.output_text


def test_what_only_the_responses_api_can_say_goes_to_the_server_that_speaks_it(stack: Stack) -> None:
    web_search = [{"type": "web_search"}]
    answer = client(stack).responses.create(model="native", input="News?", tools=web_search)  # type: ignore[list-item]
    assert last_request(stack, "oai").body["tools"] == web_search and answer.output_text
    with pytest.raises(openai.BadRequestError) as refused:
        client(stack).responses.create(model="translated", input="News?", tools=web_search)  # type: ignore[list-item]
    assert "openaiCompatible.responsesAPI" in refused.value.message
