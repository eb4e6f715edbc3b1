"""In-process timing for the benchmarks that time a function (router, scrubbing, signing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def per_call_us(fn: Callable[[], Any], rounds: int) -> float:
    """The best of 7 batches, in µs per call: the least disturbed by other processes."""
    batches = []
    for _ in range(7):
        start = time.perf_counter_ns()
        for _ in range(rounds):
            fn()
        batches.append((time.perf_counter_ns() - start) / rounds / 1000)
    return min(batches)
