"""How llmroute's own errors speak HTTP."""

from __future__ import annotations

import pytest

from llmroute_proxy.errors import LocalLimitExceeded, retry_after_header


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")])
def test_retry_after_is_whole_seconds_rounded_up_and_never_zero(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def test_a_local_limit_invites_a_retry_and_a_spent_budget_does_not() -> None:
    assert LocalLimitExceeded("busy", 2.5).headers() == {"retry-after": "3", "x-should-retry": "true"}
    spent = LocalLimitExceeded("spent", 3600, code="budget_exceeded", should_retry=False)
    assert spent.headers() == {"retry-after": "3600", "x-should-retry": "false"}
    assert spent.status == 429 and spent.code == "budget_exceeded"
