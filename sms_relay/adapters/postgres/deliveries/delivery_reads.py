"""Reads of `deliveries`: the consumer's gauges, `trace`, `dlq list`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres.deliveries.ledger_statements import S
from sms_relay.adapters.postgres.engine import database_call

_STUCK = text(
    """
SELECT count(*) FROM deliveries
WHERE state = :sending AND lease_until < clock_timestamp()
    AND COALESCE(sending_started_at, updated_at)
        < clock_timestamp() - make_interval(secs => :stuck_after)
"""
)
_UNRESOLVED = text("SELECT count(*) FROM deliveries WHERE doubt_since IS NOT NULL")
_FIND = text("SELECT * FROM deliveries WHERE event_id = :ident OR message_sid = :ident")
_STATES_OF = text("SELECT event_id, state, error_code FROM deliveries WHERE event_id = ANY(:ids)")


@database_call
async def count_stuck_claims(engine: AsyncEngine, stuck_after_seconds: float) -> int:
    """Deliveries in `sending` whose lease expired and whose send began long ago."""
    params = {"stuck_after": stuck_after_seconds, "sending": S.SENDING.value}
    async with engine.connect() as connection:
        return int((await connection.execute(_STUCK, params)).scalar_one())


@database_call
async def count_unresolved_doubts(engine: AsyncEngine) -> int:
    """Deliveries whose earlier send may have created a message not matched yet."""
    async with engine.connect() as connection:
        return int((await connection.execute(_UNRESOLVED)).scalar_one())


@database_call
async def find(engine: AsyncEngine, ident: str) -> Any | None:
    """The row of one delivery, by event id or Message SID (`trace`)."""
    async with engine.connect() as connection:
        return (await connection.execute(_FIND, {"ident": ident})).mappings().first()


@database_call
async def states_of(
    engine: AsyncEngine, event_ids: Sequence[str]
) -> dict[str, tuple[str, int | None]]:
    """(state, error code) of each delivery that exists, by event id (`dlq list`)."""
    async with engine.connect() as connection:
        rows = await connection.execute(_STATES_OF, {"ids": list(event_ids)})
        return {row[0]: (row[1], row[2]) for row in rows}
