"""What every simulator test module shares: a pool of simulators started on loopback, closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.proxy.sim import SimPool


@pytest.fixture
async def sims() -> AsyncIterator[SimPool]:
    pool = SimPool()
    yield pool
    await pool.close()
