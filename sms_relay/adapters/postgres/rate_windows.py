"""Rate limits shared by every replica: sliding windows kept in PostgreSQL.

Each key (a number's hash, a client network, an API key) is one `rate_limits` row
holding the times of its hits still inside the window, oldest first, never more than the
limit. A check locks the rows of its keys (in key order, so two checks cannot deadlock),
drops the hits that left the window and appends one, all in one transaction on the
database's clock: N replicas allow the configured count, not N times it, and their own
clocks do not matter.

Eviction never resets a budget early: a row is deleted only once its newest hit has left
the window, when the budget is full again anyway. There is no bound on the number of
keys that evicts live ones; each row holds at most `limit` timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres.engine import database_call
from sms_relay.status.status_ports import Limit

__all__ = ["Limit", "PostgresRateWindows", "erase_keys", "hit"]

_ENSURE = text(
    "INSERT INTO rate_limits (key, expires_at) VALUES (:key, now()) ON CONFLICT DO NOTHING"
)
_LOCK = text(
    "SELECT key, hits, clock_timestamp() AS now FROM rate_limits "
    "WHERE key = ANY(:keys) ORDER BY key FOR UPDATE"
)
_STORE = text("UPDATE rate_limits SET hits = :hits, expires_at = :expires WHERE key = :key")


@database_call
async def hit(engine: AsyncEngine, limits: Sequence[Limit]) -> float | None:
    """Count one hit against every limit when all of them allow it; otherwise count none.

    Returns None when allowed, else the seconds until all of them would allow it.
    Raises DatabaseUnavailableError.
    """
    by_key = {limit.key: limit for limit in limits}
    async with engine.begin() as connection:
        await connection.execute(_ENSURE, [{"key": key} for key in sorted(by_key)])
        rows = (await connection.execute(_LOCK, {"keys": sorted(by_key)})).all()
        kept: dict[str, list[datetime]] = {}
        waits: list[float] = []
        for row in rows:
            limit, now = by_key[row.key], row.now
            horizon = now - timedelta(seconds=limit.window)
            kept[row.key] = [at for at in row.hits if at > horizon]
            if len(kept[row.key]) >= limit.count:
                oldest = kept[row.key][-limit.count]
                waits.append((oldest - horizon).total_seconds())
        if waits:
            return max(*waits, 0.001)
        await connection.execute(
            _STORE,
            [
                {
                    "key": row.key,
                    "hits": [*kept[row.key], row.now],
                    "expires": row.now + timedelta(seconds=by_key[row.key].window),
                }
                for row in rows
            ],
        )
    return None


class PostgresRateWindows:
    """`sms_relay.status.status_ports.RateWindows` on one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def hit(self, limits: Sequence[Limit]) -> float | None:
        return await hit(self._engine, limits)


# Retention's batches: windows past their expiry (the cutoff is now).
PRUNE_EXPIRED = text(
    "DELETE FROM rate_limits WHERE key IN (SELECT key FROM rate_limits "
    "WHERE expires_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT_EXPIRED = text("SELECT count(*) FROM rate_limits WHERE expires_at < :cutoff")
_ERASE = text("DELETE FROM rate_limits WHERE key = ANY(:keys)")


@database_call
async def erase_keys(connection: AsyncConnection, keys: Sequence[str]) -> int:
    """Delete the windows of one number (its Verify limits, by key)."""
    return int((await connection.execute(_ERASE, {"keys": sorted(keys)})).rowcount or 0)
