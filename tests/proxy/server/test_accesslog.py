from __future__ import annotations

import logging
from dataclasses import dataclass, field

import orjson
import pytest

from llmroute_proxy.errors import AttemptRecord, FailureKind
from llmroute_proxy.providers.base import ChatRequest, Usage
from llmroute_proxy.server.accesslog import log_access
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

SECRET = "sk-proj-NEVER-LOG-ME"
PROMPT = "please summarise my medical record"

TARGET = Target(id=TargetId("openai/gpt-4o@eu"), provider="openai", provider_type=ProviderType.OPENAI,
                model="gpt-4o", url="https://api.openai.com/v1", region="eu", credential=Secret(SECRET))


@dataclass
class Named:
    name: str


@dataclass
class Choice:
    tier: str
    rule: str | None


@dataclass
class FakeExchange:
    chat: ChatRequest
    route: Named = field(default_factory=lambda: Named("default"))
    choice: Choice = field(default_factory=lambda: Choice("smart", "long-prompts"))
    experiment: Named | None = None
    target: Target | None = TARGET
    attempts: list[AttemptRecord] = field(default_factory=list)
    usage: Usage | None = None
    cost: float | None = None

    @property
    def requested_model(self) -> str:
        return str(self.chat.body.get("model"))


def chat(stream: bool = False) -> ChatRequest:
    return ChatRequest({"model": "auto", "stream": stream, "messages": [{"role": "user", "content": PROMPT}]})


def logged(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    records = [r for r in caplog.records if r.name == "llmroute.access"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "\n" not in line
    entry: dict[str, object] = orjson.loads(line)
    return entry


def test_one_json_line_says_where_the_request_went_and_what_it_cost(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    exchange = FakeExchange(chat(stream=True), experiment=Named("canary"), usage=Usage(1200, 300, 1000),
                            cost=0.0042, attempts=[
                                AttemptRecord("anthropic/claude@us", 529, FailureKind.OVERLOADED, "Overloaded", 0.12),
                                AttemptRecord("openai/gpt-4o@eu", 200, None, "ok", 0.8)])
    log_access(exchange, 200, 0.93456, "4bf92f3577b34da6a3ce929d0e0e4736")
    assert logged(caplog) == {
        "route": "default", "model": "auto", "tier": "smart", "rule": "long-prompts", "experiment": "canary",
        "target": "openai/gpt-4o@eu", "provider": "openai", "upstream_model": "gpt-4o", "stream": True,
        "attempts": 2,
        "tried": [{"target": "anthropic/claude@us", "status": 529, "outcome": "overloaded", "ms": 120.0},
                  {"target": "openai/gpt-4o@eu", "status": 200, "outcome": "ok", "ms": 800.0}],
        "status": 200, "latency_ms": 934.56, "input_tokens": 1200, "output_tokens": 300,
        "cached_input_tokens": 1000, "cost_usd": 0.0042, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }


def test_a_request_that_reached_no_target_logs_nulls_not_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    log_access(FakeExchange(chat(), target=None), 429, 0.001, "")
    entry = logged(caplog)
    assert (entry["status"], entry["target"], entry["attempts"], entry["cost_usd"], entry["trace_id"]) == (
        429, None, 0, None, None)


def test_no_prompt_credential_or_upstream_message_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    attempt = AttemptRecord("openai/gpt-4o@eu", 400, FailureKind.CLIENT_ERROR, f"bad input: {PROMPT}", 0.1)
    log_access(FakeExchange(chat(), attempts=[attempt]), 400, 0.1, "")
    line = caplog.records[0].getMessage()
    assert PROMPT not in line and SECRET not in line


def test_nothing_is_built_when_the_access_logger_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "llmroute.access")
    exchange = FakeExchange(chat())
    exchange.attempts = None  # type: ignore[assignment]  # building the line would fail on this
    log_access(exchange, 200, 0.1, "")
    assert not [r for r in caplog.records if r.name == "llmroute.access"]
