from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson
import pytest

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.errors import AttemptRecord, FailureKind
from llmroute_proxy.server.accesslog import LINE_FORMAT, BufferedAccessLog, buffer_access_log, log_access
from llmroute_proxy.server.outcome import Outcome
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

SECRET = "sk-proj-NEVER-LOG-ME"
PROMPT = "please summarise my medical record"

TARGET = Target(id=TargetId("openai/gpt-4o@eu"), provider="openai", provider_type=ProviderType.OPENAI,
                model="gpt-4o", url="https://api.openai.com/v1", region="eu", credential=Secret(SECRET))


def outcome(**changes: Any) -> Outcome:
    """A request that ended; each test changes what it is about."""
    fields: dict[str, Any] = {
        "at": 1764000000.0, "route": "default", "model": "auto", "tier": "smart", "rule": "long-prompts",
        "reason": "rule long-prompts matched", "experiment": None, "stream": False, "target": TARGET,
        "attempts": [], "status": 200, "latency_s": 0.1, "usage": None, "cost_usd": None, "trace_id": ""}
    return Outcome(**{**fields, **changes})


def logged(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    records = [r for r in caplog.records if r.name == "llmroute.access"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "\n" not in line
    entry: dict[str, object] = orjson.loads(line)
    return entry


def test_one_json_line_says_where_the_request_went_and_what_it_cost(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    ended = outcome(stream=True, experiment="canary", usage=Usage(1200, 300, 1000), cost_usd=0.0042,
                    status=200, latency_s=0.93456, trace_id="4bf92f3577b34da6a3ce929d0e0e4736", attempts=[
                                AttemptRecord("anthropic/claude@us", 529, FailureKind.OVERLOADED, "Overloaded", 0.12),
                                AttemptRecord("openai/gpt-4o@eu", 200, None, "ok", 0.8)])
    log_access(ended)
    assert logged(caplog) == {
        "route": "default", "model": "auto", "tier": "smart", "rule": "long-prompts", "experiment": "canary",
        "target": "openai/gpt-4o@eu", "provider": "openai", "upstream_model": "gpt-4o", "stream": True,
        "attempts": 2,
        "tried": [{"target": "anthropic/claude@us", "status": 529, "outcome": "overloaded", "ms": 120.0},
                  {"target": "openai/gpt-4o@eu", "status": 200, "outcome": "ok", "ms": 800.0}],
        "status": 200, "latency_ms": 934.56, "input_tokens": 1200, "output_tokens": 300,
        "cached_input_tokens": 1000, "cost_usd": 0.0042, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }


def test_a_stream_the_client_stopped_says_its_usage_and_cost_are_estimates(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    log_access(outcome(stream=True, status=499, usage=Usage(1200, 20), cost_usd=0.0032, usage_estimated=True))
    entry = logged(caplog)
    assert (entry["status"], entry["output_tokens"], entry["cost_usd"], entry["usage_estimated"]) == (
        499, 20, 0.0032, True)


def test_a_token_count_says_how_it_was_counted_and_other_lines_do_not(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    log_access(outcome(token_count="exact"))
    assert logged(caplog)["token_count"] == "exact"
    caplog.clear()
    log_access(outcome())
    assert "token_count" not in logged(caplog)


def test_a_request_refused_before_routing_says_why_and_other_lines_do_not(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    log_access(outcome(status=404, tier="", rule="", target=None, refused="model_not_found"))
    assert logged(caplog)["refused"] == "model_not_found"
    caplog.clear()
    log_access(outcome())
    assert "refused" not in logged(caplog)


def test_a_request_that_reached_no_target_logs_nulls_not_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    log_access(outcome(target=None, status=429, latency_s=0.001))
    entry = logged(caplog)
    assert (entry["status"], entry["target"], entry["attempts"], entry["cost_usd"], entry["trace_id"]) == (
        429, None, 0, None, None)


def test_no_prompt_credential_or_upstream_message_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    attempt = AttemptRecord("openai/gpt-4o@eu", 400, FailureKind.CLIENT_ERROR, f"bad input: {PROMPT}", 0.1)
    log_access(outcome(attempts=[attempt], status=400))
    line = caplog.records[0].getMessage()
    assert PROMPT not in line and SECRET not in line


def test_nothing_is_built_when_the_access_logger_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "llmroute.access")
    ended = outcome()
    ended.attempts = None  # type: ignore[assignment]  # building the line would fail on this
    log_access(ended)
    assert not [r for r in caplog.records if r.name == "llmroute.access"]


class FakeTimers:
    """`loop.call_later` in the test's hands: nothing fires until the test says so."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, Callable[[], None]]] = []
        self.cancelled = 0

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimers:
        self.armed.append((delay, callback))
        return self

    def cancel(self) -> None:
        self.cancelled += 1

    def fire(self) -> None:
        _, callback = self.armed.pop()
        callback()


NOW = 1_780_000_000.125  # a wall-clock time with 125 ms


def buffered(stream: BinaryIO, timers: FakeTimers, **kwargs: Any) -> BufferedAccessLog:
    return BufferedAccessLog(stream, wallclock=lambda: NOW, call_later=timers, **kwargs)


def test_a_buffered_line_is_exactly_what_the_cli_logging_format_writes() -> None:
    stream, timers = io.BytesIO(), FakeTimers()
    writer = buffered(stream, timers)
    writer.write(b'{"route":"default"}')
    writer.flush()
    record = logging.LogRecord("llmroute.access", logging.INFO, __file__, 1, "%s", ('{"route":"default"}',), None)
    record.created, record.msecs = NOW, 125.0
    assert stream.getvalue() == (logging.Formatter(LINE_FORMAT).format(record) + "\n").encode()


def test_buffered_lines_are_written_together_when_the_timer_fires() -> None:
    stream, timers = io.BytesIO(), FakeTimers()
    writer = buffered(stream, timers, interval_s=0.1)
    writer.write(b"{}")
    writer.write(b"[]")
    assert stream.getvalue() == b""
    assert [delay for delay, _ in timers.armed] == [0.1]
    timers.fire()
    assert stream.getvalue().count(b" INFO llmroute.access ") == 2
    assert stream.getvalue().endswith(b" INFO llmroute.access []\n")
    writer.write(b"{}")
    assert len(timers.armed) == 1


def test_a_full_buffer_is_written_at_once_without_waiting_for_the_timer() -> None:
    stream, timers = io.BytesIO(), FakeTimers()
    writer = buffered(stream, timers, max_bytes=300)  # a line is 45 + 60 + 1 bytes
    writer.write(b"x" * 60)
    writer.write(b"x" * 60)
    assert stream.getvalue() == b""
    writer.write(b"x" * 60)
    assert len(stream.getvalue().splitlines()) == 3
    assert timers.cancelled == 1


def test_a_broken_stream_drops_the_lines_and_raises_nothing() -> None:
    stream, timers = io.BytesIO(), FakeTimers()
    stream.close()
    writer = buffered(stream, timers)
    writer.write(b"{}")
    writer.flush()
    writer.write(b"{}")
    assert len(timers.armed) == 2


async def test_the_server_buffer_takes_the_lines_and_close_hands_them_back_to_logging(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "llmroute.access")
    stream = io.BytesIO()
    writer = buffer_access_log(stream)
    try:
        log_access(outcome())
        assert not [r for r in caplog.records if r.name == "llmroute.access"]
        assert stream.getvalue() == b""
    finally:
        writer.close()
    line = stream.getvalue().decode()
    assert line.endswith("\n") and line.count("\n") == 1
    assert orjson.loads(line.split(" INFO llmroute.access ", 1)[1])["status"] == 200
    assert PROMPT not in line and SECRET not in line
    log_access(outcome(status=201))
    assert logged(caplog)["status"] == 201


async def test_the_logger_level_still_decides_when_lines_are_buffered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "llmroute.access")
    stream = io.BytesIO()
    writer = buffer_access_log(stream)
    log_access(outcome())
    writer.close()
    assert stream.getvalue() == b""
