"""The llmroute-operator command line: flags, their environment defaults, and what is required."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute_operator.main import Settings, parse


def test_the_defaults_watch_the_whole_cluster_and_need_a_hub_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMROUTE_HUB_CERT", "LLMROUTE_HUB_KEY", "LLMROUTE_DEV_CERTS", "LLMROUTE_NAMESPACES"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        parse([])
    settings = parse(["--hub-cert", "c.pem", "--hub-key", "k.pem"])
    assert settings == Settings(hub_cert=Path("c.pem"), hub_key=Path("k.pem"))


def test_the_environment_gives_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTE_DEV_CERTS", "/tmp/dev")
    monkeypatch.setenv("LLMROUTE_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("LLMROUTE_HUB_PORT", "16443")
    monkeypatch.setenv("LLMROUTE_STATUS_DEBOUNCE_SECONDS", "0.5")
    settings = parse(["--hub-port", "17443", "--log-level", "debug"])
    assert settings.dev_certs == Path("/tmp/dev") and settings.namespaces == ("team-a", "team-b")
    assert settings.hub_port == 17443 and settings.status_debounce_s == 0.5 and settings.log_level == "DEBUG"
