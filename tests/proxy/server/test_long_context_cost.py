"""A long prompt makes every token of its request dearer, where the model's prices say so.

Gemini 2.5 Pro (and Claude with its 1M context) bill every token of a request whose prompt is above
200,000 tokens at a second, dearer price list: `pricing.longContext`. The threshold here is 50 tokens,
so that a test prompt crosses it.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.proxy.documents import model, provider, route, target
from tests.proxy.stack import Stack

BASE = {"inputPerMTok": 1.25, "outputPerMTok": 10.0}
LONG = {"aboveInputTokens": 50, "inputPerMTok": 2.5, "outputPerMTok": 15.0}
PRO = model("gemini-2.5-pro")
PRO["pricing"] = {**BASE, "longContext": LONG}
CONFIG = [
    provider("gem", "gemini", "{gem}", key_env="TEST_GEM_KEY", models=[PRO]),
    route("long", {"pro": [target("gem", "gemini-2.5-pro")]}, default_tier="pro"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("long-context"), config=CONFIG, quirks=True) as running:
        yield running


def ask(stack: Stack, words: int) -> tuple[float, int, int]:
    """The cost header of a prompt of `words` words, and the prompt and completion tokens answered."""
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    answered = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "rain " * words}])
    usage = answered.parse().usage
    assert usage is not None
    return float(answered.headers["x-llmroute-cost-usd"]), usage.prompt_tokens, usage.completion_tokens


def test_a_short_prompt_is_billed_at_the_base_prices(stack: Stack) -> None:
    cost, prompt, completion = ask(stack, 10)

    assert prompt <= 50
    assert cost == pytest.approx((prompt * BASE["inputPerMTok"] + completion * BASE["outputPerMTok"]) / 1e6, rel=1e-9)


def test_a_prompt_above_the_threshold_bills_every_token_at_the_long_context_prices(stack: Stack) -> None:
    cost, prompt, completion = ask(stack, 100)

    assert prompt > 50
    assert cost == pytest.approx((prompt * LONG["inputPerMTok"] + completion * LONG["outputPerMTok"]) / 1e6, rel=1e-9)
