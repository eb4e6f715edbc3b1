"""The demo's embedded config is valid, and its cheat-sheet's prompts route as the sheet says."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from llmroute_proxy.config import load_table
from llmroute_proxy.demo import CHEAT_SHEET, DEMO_KEYS, demo_config, sim_ports
from llmroute_proxy.dialects.responses.request_in import read_turn
from llmroute_proxy.routing.rules import RequestFacts, choose_tier


@pytest.fixture
def demo_route(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "demo.yaml"
    path.write_text(demo_config(sim_ports()))
    return load_table(path, region="demo", environ=DEMO_KEYS).routes[0]


def cheat_sheet_bodies() -> list[dict[str, object]]:
    sheet = CHEAT_SHEET.format(port=15400, admin=15401, flaky_note="", **sim_ports())
    return [orjson.loads(body) for body in re.findall(r"-d '(\{.*?\})'", sheet)
            if '"messages"' in body]


@pytest.mark.parametrize(("words", "tier"), [("Hi there!", "fast"), ("def f(x)", "code"),
                                             ("Analyze this", "smart")])
def test_each_cheat_sheet_prompt_lands_where_the_sheet_says(demo_route, words: str, tier: str) -> None:  # type: ignore[no-untyped-def]
    body = next(b for b in cheat_sheet_bodies() if words in str(b["messages"]))
    facts = RequestFacts(str(body["model"]), body["messages"], {}, False, None)  # type: ignore[arg-type]
    assert choose_tier(demo_route, facts).tier == tier


def test_the_cheat_sheets_responses_request_is_one_the_sidecar_translates(demo_route) -> None:  # type: ignore[no-untyped-def]
    sheet = CHEAT_SHEET.format(port=15400, admin=15401, flaky_note="", **sim_ports())
    (body,) = [orjson.loads(b) for b in re.findall(r"-d '(\{.*?\})'", sheet) if '"input"' in b]
    turn = read_turn(body)
    assert turn.only is None  # every provider of the tier can take it
    facts = RequestFacts(str(body["model"]), turn.canonical["messages"], {}, False, None)
    assert choose_tier(demo_route, facts).tier == "smart"


def test_the_smart_tier_falls_back_to_a_provider_other_than_the_flaky_one(demo_route) -> None:  # type: ignore[no-untyped-def]
    providers = [t.provider for t in demo_route.tiers["smart"].targets]
    assert providers[0] == "anthropic" and "openai" not in providers



def free_ports(count: int) -> list[int]:
    """Free loopback ports, consecutive ones first (the demo's simulators take three in a row)."""
    import socket

    for base in range(20000, 60000, 97):
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                socks.append(sock)
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free ports")


def test_the_demo_command_starts_serves_and_stops_cleanly() -> None:
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port, admin, sims = free_ports(5)[:3]  # the simulators take sims, sims + 1 and sims + 2
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmroute_proxy", "demo", "--port", str(port), "--admin-port", str(admin),
         "--sim-port-base", str(sims), "--no-flaky"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as ready:
                    if ready.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the demo did not become ready in 30 s"
            time.sleep(0.1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
            headers={"content-type": "application/json"},
            data=orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "Hi there!"}]}))
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.headers["x-llmroute-tier"] == "fast"
            assert "You said: Hi there!" in orjson.loads(answer.read())["choices"][0]["message"]["content"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"localhost:{port}/v1/chat/completions" in err  # the cheat-sheet names the real ports
    assert f"localhost:{sims + 1}/_sim/faults" in err
