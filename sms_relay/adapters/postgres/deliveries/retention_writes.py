"""Writes to `deliveries` that remove data: retention's batches and a number's erasure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres.deliveries.ledger_statements import ERASED
from sms_relay.adapters.postgres.engine import database_call

# Settled and let go: not in doubt, no live lease (a replayed event may hold one on a
# settled row), and its own step reported. Anything else is in flight.
_SETTLED = """
    state = ANY(CAST(:states AS text[])) AND doubt_since IS NULL
    AND (lease_until IS NULL OR lease_until < now())
    AND NOT (settled_state IS NOT NULL AND NOT reported)
"""
# ... and older than the horizon by creation and by last change.
_OLD_SETTLED = f"{_SETTLED} AND created_at < :cutoff AND updated_at < :cutoff"
# ANY(ARRAY(...)): the batch is found by primary key whatever the planner thinks of the
# subquery's size (an IN may become a hash join over the whole ledger).
_PRUNE = text(
    f"""
DELETE FROM deliveries WHERE event_id = ANY(ARRAY(
    SELECT event_id FROM deliveries WHERE {_OLD_SETTLED}
    ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED
)) AND {_OLD_SETTLED} RETURNING event_id, message_sid
"""  # noqa: S608 (the fragments are our own constants, no input)
)
_COUNT = text(f"SELECT count(*) FROM deliveries WHERE {_OLD_SETTLED}")  # noqa: S608

# A settled row of the number becomes a tombstone: its eventId, state and times stay, so a
# replay of the event is still a duplicate, until pruning takes it at the horizon (its
# `updated_at` is left alone). Whatever leads to the person goes. FOR UPDATE waits for a
# claim that holds the row and then checks the rule again on what it committed.
_TOMBSTONE = text(
    f"""
WITH settled AS (
    SELECT event_id, message_sid FROM deliveries
    WHERE phone_hash = :h AND {_SETTLED} FOR UPDATE
)
UPDATE deliveries d SET phone_hash = :erased, phone_masked = :erased, message_sid = NULL,
    last_error = NULL, consent_at = NULL, consent_purpose = NULL, consent_source = NULL,
    sent_body_hashes = CAST('{{}}' AS text[])
FROM settled WHERE d.event_id = settled.event_id
RETURNING d.event_id, settled.message_sid
"""  # noqa: S608 (the fragment is our own constant, no input)
)
# Run after the tombstones in the same transaction: every row of the number left is in flight.
_IN_FLIGHT = text("SELECT count(*) FROM deliveries WHERE phone_hash = :h")


@dataclass(frozen=True)
class ErasedDeliveries:
    """A number's settled deliveries made tombstones, and its rows in flight left alone."""

    event_ids: list[str]
    message_sids: list[str]  # the tombstones' SIDs before erasure (for Twilio's log)
    in_flight: int


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
    connection: AsyncConnection, phone_hash: str, settled_states: Sequence[str]
) -> ErasedDeliveries:
    """Make tombstones of one number's settled deliveries (`settled_states`, let go by the
    consumer); count the rows in flight, which stay as they are."""
    params = {"h": phone_hash, "states": sorted(settled_states), "erased": ERASED}
    rows = (await connection.execute(_TOMBSTONE, params)).all()
    in_flight = (await connection.execute(_IN_FLIGHT, {"h": phone_hash})).scalar_one()
    return ErasedDeliveries(
        event_ids=[row[0] for row in rows],
        message_sids=[row[1] for row in rows if row[1]],
        in_flight=int(in_flight),
    )
