"""Writes to `deliveries` that remove rows: retention's batches and a number's erasure."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres.engine import database_call

# ANY(ARRAY(...)): the batch is found by primary key whatever the planner thinks of the
# subquery's size (an IN may become a hash join over the whole ledger).
# Settled, older than the horizon by creation and by last change, not in doubt, no live
# lease (a replayed event may hold one on a settled row), and its own step reported.
_OLD_SETTLED = """
    state = ANY(CAST(:states AS text[])) AND created_at < :cutoff AND updated_at < :cutoff
    AND doubt_since IS NULL AND (lease_until IS NULL OR lease_until < now())
    AND NOT (settled_state IS NOT NULL AND NOT reported)
"""
_PRUNE = text(
    f"""
DELETE FROM deliveries WHERE event_id = ANY(ARRAY(
    SELECT event_id FROM deliveries WHERE {_OLD_SETTLED}
    ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED
)) AND {_OLD_SETTLED} RETURNING event_id, message_sid
"""  # noqa: S608 (the fragment is our own constant, no input)
)
_COUNT = text(f"SELECT count(*) FROM deliveries WHERE {_OLD_SETTLED}")  # noqa: S608
_ERASE = text("DELETE FROM deliveries WHERE phone_hash = :h RETURNING event_id, message_sid")


@database_call
async def prune_settled(
    connection: AsyncConnection, states: Sequence[str], cutoff: object, limit: int
) -> list[tuple[str, str | None]]:
    """Delete up to `limit` settled rows older than `cutoff`; their (eventId, SID)."""
    params = {"states": sorted(states), "cutoff": cutoff, "limit": limit}
    return [(row[0], row[1]) for row in await connection.execute(_PRUNE, params)]


@database_call
async def count_settled(engine: AsyncEngine, states: Sequence[str], cutoff: object) -> int:
    async with engine.connect() as connection:
        params = {"states": sorted(states), "cutoff": cutoff}
        return int((await connection.execute(_COUNT, params)).scalar_one())


@database_call
async def erase_number(
    connection: AsyncConnection, phone_hash: str
) -> list[tuple[str, str | None]]:
    """Delete every delivery to one number, whatever its state; their (eventId, SID)."""
    return [(row[0], row[1]) for row in await connection.execute(_ERASE, {"h": phone_hash})]
