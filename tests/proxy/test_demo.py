"""The demo's embedded config is valid, and its cheat-sheet's prompts route as the sheet says."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from llmroute_proxy.config import load_table
from llmroute_proxy.demo import CHEAT_SHEET, DEMO_CONFIG, DEMO_KEYS, SIM_PORTS
from llmroute_proxy.routing.rules import RequestFacts, choose_tier


@pytest.fixture
def demo_route(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "demo.yaml"
    path.write_text(DEMO_CONFIG)
    return load_table(path, region="demo", environ=DEMO_KEYS).routes[0]


def cheat_sheet_bodies() -> list[dict[str, object]]:
    sheet = CHEAT_SHEET.format(port=15400, admin=15401, flaky_note="", **SIM_PORTS)
    return [orjson.loads(body) for body in re.findall(r"-d '(\{.*?\})'", sheet)
            if '"messages"' in body]


@pytest.mark.parametrize(("words", "tier"), [("Hi there!", "fast"), ("def f(x)", "code"),
                                             ("Analyze this", "smart")])
def test_each_cheat_sheet_prompt_lands_where_the_sheet_says(demo_route, words: str, tier: str) -> None:  # type: ignore[no-untyped-def]
    body = next(b for b in cheat_sheet_bodies() if words in str(b["messages"]))
    facts = RequestFacts(str(body["model"]), body["messages"], {}, False, None)  # type: ignore[arg-type]
    assert choose_tier(demo_route, facts).tier == tier


def test_the_smart_tier_falls_back_to_a_provider_other_than_the_flaky_one(demo_route) -> None:  # type: ignore[no-untyped-def]
    providers = [t.provider for t in demo_route.tiers["smart"].targets]
    assert providers[0] == "anthropic" and "openai" not in providers
