"""The admin status page as a person sees it: a real Chromium renders it from the live `/status`.

The page is a script that fetches `status` and builds the DOM, so only a browser can tell
whether a person would see the table version, each target's circuit and the recent
decisions. Uses Debian's `/usr/bin/chromium` through Playwright (never `playwright install`,
which downloads a browser); `.ci/run` installs Chromium, and the module skips without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import Table, TargetId
from tests.proxy.documents import edited, named
from tests.proxy.stack import DOCUMENTS, KEYS, Stack

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/llmroute-status-page.png")
PHONE_WIDTH = 420
DARK_BACKGROUND = "rgb(18, 21, 27)"  # --bg under prefers-color-scheme: dark
MIXED_TIER = {"targets": [{"provider": "claude", "model": "claude-sonnet-4-5"},
                          {"provider": "gem", "model": "gemini-2.5-flash", "priority": 1}]}
BUDGET_CONFIG = edited(DOCUMENTS, "main", budget={"limitUSD": 5, "period": "day"})
MIXED_CONFIG = edited(DOCUMENTS, "main", tiers={**named(DOCUMENTS, "main")["spec"]["tiers"], "mixed": MIXED_TIER})
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
CODE: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Why does this fail?\n```python\ndef f(x):\n    return x[0]\n```"}]
CONSECUTIVE_FAILURES = 2  # the stack's outlierDetection.consecutiveFailures


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack, with a daily budget on the route so the page has spend to show."""
    with Stack(tmp_path_factory.mktemp("stack"), config=BUDGET_CONFIG) as running:
        yield running


@pytest.fixture(scope="module")
def mixed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own whose route has a tier of Claude, then Gemini."""
    with Stack(tmp_path_factory.mktemp("mixed"), config=MIXED_CONFIG) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.skip("no Chromium at /usr/bin/chromium (.ci/run installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 900})
        yield context
        context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    yield page
    page.close()


def loaded_table(stack: Stack) -> Table:
    table = stack.sidecar.table
    assert table is not None
    return table


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)


def send_traffic(stack: Stack) -> None:
    """A call no rule matches, one the code rule sends to Claude, then failovers until `oai` is ejected."""
    sdk = client(stack)
    sdk.chat.completions.create(model="auto", messages=HELLO)
    sdk.chat.completions.create(model="auto", messages=CODE)
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    for _ in range(CONSECUTIVE_FAILURES):
        raw = sdk.chat.completions.with_raw_response.create(model="ha", messages=HELLO)
        assert raw.headers["x-llmroute-provider"] == "oai-b"


def open_status_page(stack: Stack, page: Page) -> list[str]:
    """Loads the page, waits until it has rendered a `/status`, returns the browser's errors."""
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(stack.admin_url + "/")
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator("#version")).to_have_text(stack.call(lambda: loaded_table(stack).version))
    return errors


def test_the_page_shows_the_table_version_and_every_target_with_its_circuit(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    errors = open_status_page(stack, page)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert errors == []
    assert page.locator("#region").inner_text() == "here"
    assert page.locator("#inflight").inner_text() == "0"
    rows = page.locator("#targets tr[data-target]")
    expected = stack.call(lambda: sorted(loaded_table(stack).targets()))
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.target)")) == expected
    circuits = {target: page.locator(f'#targets tr[data-target="{target}"] .pill').inner_text()
                for target in expected}
    assert circuits.pop(TargetId("oai/gpt-4o-mini@here")) == "ejected"
    assert set(circuits.values()) == {"healthy"}
    ejected = page.locator('#targets tr[data-target="oai/gpt-4o-mini@here"] td').all_inner_texts()
    counters = stack.call(lambda: stack.sidecar.counters_for(TargetId("oai/gpt-4o-mini@here")))
    assert ejected[7] == f"{counters.failures / counters.requests * 100:.1f} %"
    assert ejected[9].startswith("overloaded")


def test_recent_decisions_show_tier_reason_and_each_failed_over_attempt(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    open_status_page(stack, page)
    newest = page.locator("#decisions tbody tr").first
    cells = newest.locator("td").all_inner_texts()
    assert cells[2] == "ha → ha"
    assert "model names tier 'ha'" in cells[3]
    assert cells[4] == "oai-b/gpt-4o-mini@there"
    chips = newest.locator(".chip")
    assert chips.count() == 2
    failed, served = chips.nth(0), chips.nth(1)
    assert failed.get_attribute("class") == "chip bad" and "oai/gpt-4o-mini@here 503" in failed.inner_text()
    assert served.get_attribute("class") == "chip ok" and served.inner_text() == "oai-b/gpt-4o-mini@there 200"
    by_rule = page.locator("#decisions tbody tr", has_text="anthropic").first.locator("td").all_inner_texts()
    assert by_rule[2] == "auto → anthropic"
    assert by_rule[3].startswith("code rule 'code':")
    assert by_rule[4] == "claude/claude-sonnet-4-5@here"
    by_default = page.locator("#decisions tbody tr", has_text="auto → openai").first.locator("td")
    assert by_default.nth(3).inner_text() == "default auto: no rule matched"


def test_a_target_passed_over_is_a_dashed_chip_naming_what_it_cannot_take(mixed_stack: Stack, page: Page) -> None:
    """Claude has no `seed`: the tier's next target answers, and the decision shows Claude passed over
    before the attempt that served it."""
    client(mixed_stack).chat.completions.create(model="mixed", messages=HELLO, seed=1)
    open_status_page(mixed_stack, page)
    chips = page.locator("#decisions tbody tr").first.locator(".chip")
    assert chips.count() == 2
    passed, served = chips.nth(0), chips.nth(1)
    assert passed.get_attribute("class") == "chip skip"
    assert passed.text_content() == "claude/claude-sonnet-4-5@here: cannot take seed"
    assert passed.get_attribute("title") == "claude/claude-sonnet-4-5@here passed over: cannot take seed"
    assert served.get_attribute("class") == "chip ok" and served.text_content() == "gem/gemini-2.5-flash@here 200"


def test_the_budget_shows_what_the_route_has_spent_of_its_limit(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    open_status_page(stack, page)
    budget = page.locator('#budgets [data-route="main"]')
    text = budget.inner_text()
    shown = re.search(r"\$([0-9.]+) of \$5\.00", text)
    assert "day" in text and shown is not None
    spent = stack.call(lambda: stack.sidecar.ledger.snapshot("main", stack.sidecar.wallclock()).spent_usd)
    assert spent > 0 and float(shown[1]) == pytest.approx(spent, rel=0.01)
    assert budget.get_by_role("progressbar").get_attribute("aria-valuenow") == f"{spent / 5 * 100:.1f}"


def test_no_credential_appears_anywhere_in_the_rendered_page(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    open_status_page(stack, page)
    rendered = page.content() + page.locator("body").inner_text()  # the live DOM, attributes included
    assert "oai/gpt-4o-mini@here" in rendered
    for name, key in KEYS.items():
        assert key not in rendered, name


def scheme_screenshot(page: Page, width: int, scheme: Literal["light", "dark"]) -> None:
    page.screenshot(path=f"/tmp/llmroute-status-page-{width}-{scheme}.png", full_page=True)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_at_phone_width_every_circuit_is_on_screen_without_horizontal_scrolling(
        stack: Stack, page: Page, scheme: Literal["light", "dark"]) -> None:
    send_traffic(stack)
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 900})
    page.emulate_media(color_scheme=scheme)
    assert open_status_page(stack, page) == []
    scheme_screenshot(page, PHONE_WIDTH, scheme)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    overflowing = page.locator(".scroll").evaluate_all(
        "boxes => boxes.filter(b => b.scrollWidth > b.clientWidth).map(b => b.id)")
    assert overflowing == []
    for target in stack.call(lambda: sorted(loaded_table(stack).targets())):
        circuit = page.locator(f'#targets tr[data-target="{target}"] .pill')
        box = circuit.bounding_box()
        assert circuit.is_visible() and box is not None, target
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE_WIDTH, target


def test_at_phone_width_a_decision_stays_compact_and_its_reason_readable(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 900})
    open_status_page(stack, page)
    rows = page.locator("#decisions tbody tr")
    heights = rows.evaluate_all("rows => rows.map(r => r.getBoundingClientRect().height)")
    assert heights and max(heights) <= 160
    why_widths = page.locator("#decisions td.c-why").evaluate_all(
        "cells => cells.map(c => c.getBoundingClientRect().width)")
    assert min(why_widths) >= 150


def test_at_desktop_width_every_column_fits_and_a_failed_attempt_chip_is_one_line_titled_in_full(
        stack: Stack, page: Page) -> None:
    send_traffic(stack)
    assert open_status_page(stack, page) == []
    assert page.locator(".scroll").evaluate_all("boxes => boxes.every(b => b.scrollWidth <= b.clientWidth)")
    assert page.locator("th").evaluate_all("heads => heads.filter(h => !h.checkVisibility()).length") == 0
    newest = page.locator("#decisions tbody tr").first
    failed, served = newest.locator(".chip.bad"), newest.locator(".chip.ok")
    failure = stack.call(lambda: stack.sidecar.decisions[-1].attempts[0])
    assert len(failure.reason) > 40
    assert failed.get_attribute("title") == f"{failure.target} {failure.status}: {failure.reason}"
    failed_box, served_box = failed.bounding_box(), served.bounding_box()
    assert failed_box is not None and served_box is not None
    assert failed_box["height"] == pytest.approx(served_box["height"], abs=1)
    assert failed.evaluate("chip => chip.querySelector('.detail').scrollWidth > chip.querySelector('.detail').clientWidth")


def test_errors_read_as_a_dash_for_a_target_without_requests(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    open_status_page(stack, page)
    idle, served = TargetId("gem/gemini-2.5-flash@here"), TargetId("claude/claude-sonnet-4-5@here")
    assert stack.call(lambda: stack.sidecar.counters_for(idle).requests) == 0
    assert page.locator(f'#targets tr[data-target="{idle}"] td.c-errors').inner_text() == "\u2014"
    assert stack.call(lambda: stack.sidecar.counters_for(served).failures) == 0
    assert page.locator(f'#targets tr[data-target="{served}"] td.c-errors').inner_text() == "0 %"


def test_a_decision_cost_is_shown_to_three_significant_digits_without_trailing_zeros(
        stack: Stack, page: Page) -> None:
    send_traffic(stack)
    open_status_page(stack, page)
    shown = page.locator("#decisions td.c-cost").all_inner_texts()
    costs = stack.call(lambda: [d.cost_usd for d in reversed(stack.sidecar.decisions)])
    assert len(shown) == len(costs) and all(cost is not None and 0 < cost < 0.01 for cost in costs)
    for text, cost in zip(shown, costs, strict=True):
        assert re.fullmatch(r"\$0\.0*[1-9]\d{0,2}", text) and not text.endswith("0"), text
        assert float(text[1:]) == pytest.approx(cost, rel=5e-3)


def test_a_small_spend_reads_as_under_a_tenth_of_a_percent_never_zero(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    open_status_page(stack, page)
    spent = stack.call(lambda: stack.sidecar.ledger.snapshot("main", stack.sidecar.wallclock()).spent_usd)
    assert 0 < spent / 5 * 100 < 0.1
    budget = page.locator('#budgets [data-route="main"]')
    assert "(<0.1 %)" in budget.inner_text()
    assert budget.get_by_role("progressbar").get_attribute("aria-valuetext") == "<0.1 %"


FORMATS: list[tuple[str, float | None, str]] = [
    ("usd", 0, "$0"), ("usd", 0.000013, "$0.000013"), ("usd", 0.000348, "$0.000348"),
    ("usd", 0.0003456, "$0.000346"), ("usd", 0.0000000012, "$0.0000000012"), ("usd", 0.5, "$0.50"),
    ("usd", 0.1234, "$0.123"), ("usd", 0.01, "$0.01"), ("usd", 5, "$5.00"), ("usd", 1234.5, "$1234.50"),
    ("usd", None, "\u2014"),
    ("share", 0, "0 %"), ("share", 0.007, "<0.1 %"), ("share", 0.1, "0.1 %"), ("share", 85.24, "85.2 %"),
    ("percent", 0, "0 %"), ("percent", 0.004, "<0.01 %"), ("percent", 2.5, "2.50 %"), ("percent", 66.666, "66.7 %"),
]


def test_money_and_shares_are_formatted_for_people(stack: Stack, page: Page) -> None:
    open_status_page(stack, page)
    shown = page.evaluate("calls => calls.map(([name, value]) => ({usd, share, percent})[name](value))",
                          [[name, value] for name, value, _ in FORMATS])
    assert shown == [expected for _, _, expected in FORMATS]


def test_the_page_follows_the_dark_color_scheme(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    page.emulate_media(color_scheme="dark")
    assert open_status_page(stack, page) == []
    scheme_screenshot(page, 1400, "dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == DARK_BACKGROUND
