"""The Bedrock simulator's Converse API as botocore's own `bedrock-runtime` client sees it (it validates
what it sends and parses what comes back with AWS's service model, event stream included), and as the
raw wire shows it: each stream event's members are its shape's, and Bedrock's ValidationExceptions."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import botocore.session
import orjson
import pytest
from botocore.config import Config

from llmroute_proxy.dialects.eventstream import EventStreamDecoder
from llmroute_proxy.sim import Fault, FaultKind, SimServer, bedrock_app, sim_state
from llmroute_proxy.sim.aws_identity import AwsKeys
from llmroute_proxy.sim.bedrock_converse import GUARDRAIL_TEXT
from tests.proxy.providers.test_bedrock_converse import (
    GPT_OSS,
    NOT_CHAT_MODELS,
    PLACE,
    USER_HI,
    WITH_STRUCTURED_OUTPUTS,
    WITHOUT_STRUCTURED_OUTPUTS,
    converse,
    service_model,
    unknown_members,
)
from tests.proxy.sim import SimPool

KEY = "ABSKsim-bedrock-key"
KEYS = AwsKeys(long_term={"AKIDLONGTERM": "long-term-secret"})
NOVA = "us.amazon.nova-pro-v1:0"
HELLO: Any = [{"role": "user", "content": [{"text": "hello there"}]}]
WEATHER: Any = {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}


@pytest.fixture
async def sim(sims: SimPool) -> SimServer:
    return await sims.start(bedrock_app(KEY, aws_keys=KEYS, region="us-east-1", chunks=4))


def botocore_client(sim: SimServer) -> Any:
    return botocore.session.get_session().create_client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=sim.url, aws_access_key_id="AKIDLONGTERM",
        aws_secret_access_key="long-term-secret", config=Config(retries={"max_attempts": 1}))


async def post(sim: SimServer, model: str, operation: str, body: Any) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{sim.url}/model/{model}/{operation}", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        return r.status, r.headers, await r.read()


async def test_botocore_reads_a_whole_answer_and_a_tool_call(sim: SimServer) -> None:
    client = botocore_client(sim)
    answer = await asyncio.to_thread(client.converse, modelId=NOVA, messages=HELLO, system=[{"text": "Be brief."}],
                                     inferenceConfig={"maxTokens": 64})
    called = await asyncio.to_thread(client.converse, modelId=NOVA, messages=HELLO, toolConfig={"tools": [WEATHER]})

    assert "You said: hello there" in answer["output"]["message"]["content"][0]["text"]
    assert answer["stopReason"] == "end_turn" and answer["usage"]["outputTokens"] > 0
    use = called["output"]["message"]["content"][0]["toolUse"]
    assert called["stopReason"] == "tool_use" and use["name"] == "get_weather" and use["input"] == {"city": "sim"}
    assert sim_state(sim.app).stats.last.path == f"/model/{NOVA}/converse"


async def test_botocore_reads_a_stream_event_by_event(sim: SimServer) -> None:
    client = botocore_client(sim)

    def events() -> list[dict[str, Any]]:
        return list(client.converse_stream(modelId=NOVA, messages=HELLO, toolConfig={"tools": [WEATHER]})["stream"])

    got = await asyncio.to_thread(events)

    names = [next(iter(event)) for event in got]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    assert got[names.index("contentBlockStart")]["contentBlockStart"]["start"]["toolUse"]["name"] == "get_weather"
    arguments = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in got if "contentBlockDelta" in e)
    assert orjson.loads(arguments) == {"city": "sim"}
    assert got[-2]["messageStop"]["stopReason"] == "tool_use" and got[-1]["metadata"]["usage"]["totalTokens"] > 0


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool"])
async def test_every_stream_event_has_only_its_shapes_members(sim: SimServer, tools: bool) -> None:
    body: dict[str, Any] = {"messages": HELLO, **({"toolConfig": {"tools": [WEATHER]}} if tools else {})}
    status, headers, raw = await post(sim, NOVA, "converse-stream", body)
    stream = service_model().operation_model("ConverseStream").output_shape.members["stream"]  # type: ignore[attr-defined]

    assert status == 200 and headers["Content-Type"] == "application/vnd.amazon.eventstream"
    for frame in EventStreamDecoder().feed(raw):
        name = frame.headers[":event-type"]
        event = orjson.loads(frame.payload)
        assert isinstance(event.pop("p"), str), "AWS pads every event"
        assert not list(unknown_members(event, stream.members[name], name))
        assert set(stream.members[name].required_members) <= set(event)


async def test_a_whole_answer_has_only_its_shapes_members(sim: SimServer) -> None:
    status, _, raw = await post(sim, "deepseek.r1-v1:0", "converse", {"messages": HELLO})
    answer = orjson.loads(raw)

    assert status == 200 and "reasoningContent" in answer["output"]["message"]["content"][0]
    assert not list(unknown_members(answer, service_model().operation_model("Converse").output_shape))


@pytest.mark.parametrize(("model", "body", "message"), [
    ("mistral.mixtral-8x7b-instruct-v0:1", {"messages": HELLO, "system": [{"text": "Be brief."}]},
     "doesn't support system messages"),
    ("meta.llama3-70b-instruct-v1:0", {"messages": HELLO, "toolConfig": {"tools": [WEATHER]}},
     "doesn't support tool use"),
    ("meta.llama3-3-70b-instruct-v1:0", {"messages": HELLO, "toolConfig": {"tools": [WEATHER],
                                                                          "toolChoice": {"tool": {"name": "x"}}}},
     "toolConfig.toolChoice.tool"),
    ("meta.llama3-3-70b-instruct-v1:0", {"messages": HELLO, "outputConfig": {"textFormat": {
        "type": "json_schema", "structure": {"jsonSchema": {"schema": "{}"}}}}}, "outputConfig.textFormat"),
    (NOVA, {"messages": [*HELLO, *HELLO]}, "must alternate between user and assistant"),
    (NOVA, {"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}, "must start with a user message"),
    (NOVA, {"messages": [{"role": "user", "content": [{"text": "  "}]}]}, "is blank"),
    (NOVA, {"messages": [*HELLO, {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]}]},
     "toolConfig field must be defined"),
    (NOVA, {"messages": HELLO, "model": NOVA}, "extraneous key [model]"),
])
async def test_what_bedrock_refuses_is_a_validation_exception(sim: SimServer, model: str, body: Any,
                                                              message: str) -> None:
    status, headers, raw = await post(sim, model, "converse", body)

    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    assert message in orjson.loads(raw)["message"]


async def test_the_refusal_fault_is_a_guardrail_that_intervened(sim: SimServer) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.REFUSAL))
    _, _, raw = await post(sim, NOVA, "converse", {"messages": HELLO})
    answer = orjson.loads(raw)

    assert answer["stopReason"] == "guardrail_intervened"
    assert answer["output"]["message"]["content"] == [{"text": GUARDRAIL_TEXT}]


async def test_a_stream_fault_is_an_exception_frame_after_the_text_so_far(sim: SimServer) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.ANTHROPIC_ERROR_EVENT, status=429, tokens=1))
    _, _, raw = await post(sim, NOVA, "converse-stream", {"messages": HELLO})
    frames = EventStreamDecoder().feed(raw)

    assert [f.headers.get(":event-type") for f in frames[:-1]] == ["messageStart", "contentBlockDelta"]
    assert (frames[-1].headers[":message-type"], frames[-1].headers[":exception-type"]) == (
        "exception", "throttlingException")


@pytest.mark.parametrize("model", WITHOUT_STRUCTURED_OUTPUTS)
async def test_a_model_without_structured_outputs_refuses_the_body_the_dialect_would_send_it(
        sim: SimServer, model: str) -> None:
    body = converse({"messages": USER_HI, "response_format": PLACE}, GPT_OSS)  # as if it were not refused
    status, headers, raw = await post(sim, model, "converse", body)

    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    assert "outputConfig.textFormat" in orjson.loads(raw)["message"]


@pytest.mark.parametrize("model", WITH_STRUCTURED_OUTPUTS)
async def test_a_model_with_structured_outputs_answers_in_the_schema(sim: SimServer, model: str) -> None:
    status, _, raw = await post(sim, model, "converse", converse({"messages": USER_HI, "response_format": PLACE}, model))

    assert status == 200
    assert orjson.loads(orjson.loads(raw)["output"]["message"]["content"][-1]["text"]) == {"city": "sim"}


@pytest.mark.parametrize("model", NOT_CHAT_MODELS)
@pytest.mark.parametrize("operation", ["converse", "converse-stream"])
async def test_a_model_that_is_not_a_chat_model_has_no_converse(sim: SimServer, model: str, operation: str) -> None:
    status, headers, raw = await post(sim, model, operation, {"messages": HELLO})

    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    assert orjson.loads(raw)["message"] == ("This action doesn't support the model that you provided. Try again "
                                            "with a supported text or chat model.")
