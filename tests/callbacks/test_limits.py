"""The shared sliding windows on PostgreSQL: exact counts, all-or-nothing, safe eviction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres.batches import delete_batch
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.adapters.postgres.rate_windows import PRUNE_EXPIRED, Limit, hit
from tests.callbacks.conftest import query_rows
from tests.support import eventually


async def prune(engine: AsyncEngine) -> int:
    """The retention job's batch for `rate_limits`: windows past their expiry."""
    return await delete_batch(engine, PRUNE_EXPIRED, datetime.now(UTC), 5000)


pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_concurrent_hits_never_exceed_the_count(engine: AsyncEngine) -> None:
    limit = Limit("k", 5, 60)
    answers = await asyncio.gather(*(hit(engine, [limit]) for _ in range(12)))
    assert sum(answer is None for answer in answers) == 5
    assert all(0 < answer <= 60 for answer in answers if answer is not None)


async def test_a_hit_counts_against_every_limit_or_none(engine: AsyncEngine) -> None:
    number, network = Limit("number", 1, 60), Limit("network", 5, 60)
    assert await hit(engine, [number, network]) is None
    assert await hit(engine, [number, network]) is not None  # the number is spent
    # ... and that refusal did not use the network's budget.
    for _ in range(4):
        assert await hit(engine, [network]) is None
    assert await hit(engine, [network]) is not None


async def test_eviction_never_resets_a_budget_early(engine: AsyncEngine, database_url: str) -> None:
    # A window long enough that the four calls below fit in it on a busy host.
    limit = Limit("short", 2, 3.0)
    assert await hit(engine, [limit]) is None
    assert await hit(engine, [limit]) is None
    assert await prune(engine) == 0  # live hits: nothing is evicted
    assert await hit(engine, [limit]) is not None

    # Once the window has passed, the row is empty: pruning it changes nothing.
    async def expired() -> bool:
        return await prune(engine) == 1

    await eventually(expired, what="the row to expire", timeout=20)
    assert query_rows(database_url, "SELECT key FROM rate_limits WHERE key = 'short'") == []
    assert await hit(engine, [limit]) is None
