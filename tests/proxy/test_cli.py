"""`llmroute-proxy validate` prints every error with its document and field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute_proxy.cli import main, parser

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "standalone.yaml"

BROKEN = """
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: openai}
spec:
  type: opneai
  endpoints: [{region: us, url: "https://api.openai.com/v1"}]
  credentials: {env: OPENAI_API_KEY}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  tiers: {fast: {targets: [{provider: openai, model: gpt-4o-mini, weight: -1}]}}
  defaultTier: smart
"""


def test_validate_accepts_the_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out


def test_validate_lists_every_error_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "LLMProvider/openai: spec.type" in err and "opneai" in err
    assert "LLMRoute/chat: spec.defaultTier" in err
    assert "3 error(s)" in err or "error(s)" in err
    assert err.count("\n") >= 3


def test_serve_refuses_a_bad_config_before_listening(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert main(["serve", "--config", str(path), "--port", "0", "--admin-port", "0"]) == 1
    assert "refused" in capsys.readouterr().err


LEAKY = """
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: openai}
spec:
  type: openai
  endpoints: [{region: eu, url: "ftp://api.openai.com/v1?key=sk-proj-Zq3xT8vN2mK5pL7wR4yB9cJ1dF6gH0sA"}]
  credentials: {env: OPENAI_API_KEY}
  models: [{name: gpt-4o-mini}]
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  tiers: {fast: {targets: [{provider: openai, model: gpt-4o-mini}]}}
  defaultTier: fast
"""


@pytest.mark.parametrize("command", [["validate"], ["serve", "--port", "0", "--admin-port", "0", "--config"]])
def test_a_key_pasted_into_a_url_is_not_echoed_by_the_error_that_quotes_the_url(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    path = tmp_path / "leaky.yaml"
    path.write_text(LEAKY)
    assert main([*command, str(path)]) == 1
    err = capsys.readouterr().err
    assert "spec.endpoints[0].url" in err and "ftp://api.openai.com" in err  # still says what and where
    assert "Zq3xT8vN" not in err  # not even the part of the key that a shortened quote keeps


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("LLMROUTE_MAX_BODY_BYTES", "16MiB", "argument --max-body-bytes: not a positive whole number: '16MiB'"),
    ("LLMROUTE_DRAIN_SECONDS", "soon", "argument --drain-seconds: not a number of seconds of 0 or more: 'soon'"),
    ("LLMROUTE_RESPONSES_STORE_BYTES", "-1", "argument --responses-store-bytes: not a whole number of 0 or more"),
    ("LLMROUTE_RESPONSES_TTL_SECONDS", "1h", "argument --responses-ttl-seconds: not a positive number of seconds"),
    ("LLMROUTE_LOG_LEVEL", "verbose", "argument --log-level: not a log level (DEBUG, INFO, WARNING, ERROR)"),
    ("LLMROUTE_KEEPALIVE_SECONDS", "0", "argument --keepalive-seconds: not a positive number of seconds: '0'"),
])
def test_a_bad_environment_default_is_a_usage_error_that_names_the_variable(
        variable: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, value)

    for command in (["serve", "--config", str(EXAMPLE)], ["demo"]):
        with pytest.raises(SystemExit) as stopped:
            parser().parse_args(command)

        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert said in error and f"(from ${variable})" in error


def test_validate_reads_none_of_the_serving_variables(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMROUTE_MAX_BODY_BYTES", "16MiB")

    assert main(["validate", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--max-body-bytes", "0"], ["--max-body-bytes", "-1"], ["--drain-seconds", "-5"],
                                  ["--log-level", "loud"]])
def test_a_bad_flag_value_is_refused_and_says_nothing_of_a_variable(
        flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parser().parse_args(["serve", "--config", str(EXAMPLE), *flag])

    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {flag[0]}:" in error and "(from $" not in error


def test_the_log_level_is_taken_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTE_LOG_LEVEL", "warning")
    assert parser().parse_args(["demo"]).log_level == "WARNING"
    assert parser().parse_args(["demo", "--log-level", "Debug"]).log_level == "DEBUG"


def test_validate_warns_of_models_without_pricing_and_still_passes_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "unpriced.yaml"
    path.write_text(BROKEN.replace("opneai", "openai").replace(", weight: -1", "").replace("smart", "fast")
                    + "  budget: {limitUSD: 50, period: day}\n")

    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "ok" in out
    assert err == ("warning: LLMRoute chat: openai/gpt-4o-mini has no pricing: its budget never counts them; give "
                   "the model's pricing in its LLMProvider (pricing of zeros for a free model)\n")
