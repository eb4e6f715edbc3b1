"""The OpenAI Agents SDK, with its default model class (Responses), runs through the sidecar
against every provider type: a function tool, structured output and a streamed run."""

from __future__ import annotations

import json

import openai
import pydantic
import pytest
from agents import Agent, OpenAIProvider, OpenAIResponsesModel, RunConfig, Runner, function_tool

from tests.proxy.server.conftest import last_request
from tests.proxy.stack import Stack

TIERS = {"openai": "oai", "anthropic": "claude", "gemini": "gem"}
CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    CALLS.append(city)
    return f"18C in {city}"


class Place(pydantic.BaseModel):
    city: str
    days: int


def run_config(stack: Stack) -> RunConfig:
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    return RunConfig(model_provider=OpenAIProvider(openai_client=client), tracing_disabled=True)


def test_the_default_model_class_is_the_responses_one(stack: Stack) -> None:
    provider = run_config(stack).model_provider
    assert isinstance(provider.get_model("openai"), OpenAIResponsesModel)


@pytest.mark.parametrize("tier", TIERS)
async def test_an_agent_calls_a_function_tool_and_answers(stack: Stack, tier: str) -> None:
    CALLS.clear()
    agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model=tier)
    result = await Runner.run(agent, "Weather in Paris?", run_config=run_config(stack))
    assert CALLS == ["sim"]
    assert "Tool said:" in result.final_output and "18C in sim" in result.final_output
    assert "get_weather" in json.dumps(last_request(stack, TIERS[tier]).body)


@pytest.mark.parametrize("tier", TIERS)
async def test_an_agent_gets_structured_output(stack: Stack, tier: str) -> None:
    agent = Agent(name="planner", instructions="Pick a city.", output_type=Place, model=tier)
    result = await Runner.run(agent, "Where, and for how many days?", run_config=run_config(stack))
    assert result.final_output == Place(city="sim", days=1)


@pytest.mark.parametrize("tier", TIERS)
async def test_a_streamed_run_shows_the_tool_call_its_output_and_the_answer(stack: Stack, tier: str) -> None:
    CALLS.clear()
    agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model=tier)
    run = Runner.run_streamed(agent, "Weather in Rome?", run_config=run_config(stack))
    items = [event.item.type async for event in run.stream_events() if event.type == "run_item_stream_event"]
    assert items == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert CALLS == ["sim"] and "18C in sim" in run.final_output
