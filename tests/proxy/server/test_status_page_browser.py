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
from typing import TYPE_CHECKING

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import TargetId
from tests.proxy.stack import CONFIG, KEYS, Stack

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/llmroute-status-page.png")
BUDGET_CONFIG = CONFIG + "  budget: {{limitUSD: 5, period: day}}\n"
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
    expect(page.locator("#version")).to_have_text(stack.call(lambda: stack.sidecar.table.version))
    return errors


def test_the_page_shows_the_table_version_and_every_target_with_its_circuit(stack: Stack, page: Page) -> None:
    send_traffic(stack)
    errors = open_status_page(stack, page)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert errors == []
    assert page.locator("#region").inner_text() == "here"
    assert page.locator("#inflight").inner_text() == "0"
    rows = page.locator("#targets tr[data-target]")
    expected = stack.call(lambda: sorted(stack.sidecar.table.targets()))
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.target)")) == expected
    circuits = {target: page.locator(f'#targets tr[data-target="{target}"] .pill').inner_text()
                for target in expected}
    assert circuits.pop("oai/gpt-4o-mini@here") == "ejected"
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
