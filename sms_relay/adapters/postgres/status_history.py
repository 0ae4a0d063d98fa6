"""The `status_history` table: every status step of a message, each recorded once.

This module owns every write to `status_history`: the status projection's steps (Twilio's,
recorded by `PostgresProjectionStore`) and the consumer's settled steps, which the
ledger's settle statement writes through `RECORD_SETTLED_STEPS` in the same round trip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres import suppressions
from sms_relay.adapters.postgres.engine import database_call, transaction
from sms_relay.status.status_ports import Moved, RecordedStep, StatusStep

# A CTE body for the ledger's settle statement, over its `settled(event_id, message_sid,
# state, error_code, attempt)`: each consumer step once, by its own token.
RECORD_SETTLED_STEPS = """
    INSERT INTO status_history (event_id, message_sid, status, error_code, source,
        idempotency_token, occurred_at)
    SELECT event_id, message_sid, state, error_code, 'consumer',
        'consumer:' || event_id || ':' || state || ':' || attempt, clock_timestamp()
    FROM settled
    ON CONFLICT (idempotency_token) DO NOTHING
"""

_RECORD = text(
    """
WITH input AS (
    SELECT * FROM unnest(
        CAST(:events AS text[]), CAST(:sids AS text[]), CAST(:statuses AS text[]),
        CAST(:codes AS int[]), CAST(:sources AS text[]), CAST(:tokens AS text[]),
        CAST(:times AS timestamptz[])
    ) AS t(event_id, message_sid, status, error_code, source, token, occurred_at)
),
resolved AS (
    SELECT COALESCE(by_event.event_id, by_sid.event_id, i.event_id) AS event_id,
        i.message_sid, i.status, i.error_code, i.source, i.token, i.occurred_at,
        (by_event.event_id IS NOT NULL OR by_sid.event_id IS NOT NULL) AS known
    FROM input i
    LEFT JOIN deliveries by_event ON by_event.event_id = i.event_id
    LEFT JOIN deliveries by_sid ON by_sid.message_sid = i.message_sid
),
inserted AS (
    INSERT INTO status_history (event_id, message_sid, status, error_code, source,
        idempotency_token, occurred_at)
    SELECT event_id, message_sid, status, error_code, source, token, occurred_at
    FROM resolved
    ON CONFLICT (idempotency_token) DO NOTHING
    RETURNING idempotency_token
)
SELECT r.token, r.event_id, r.known, r.error_code, (ins.idempotency_token IS NOT NULL) AS new
FROM resolved r LEFT JOIN inserted ins ON ins.idempotency_token = r.token
"""
)

# Callbacks may know only the SID; a NULL SID must not match every SID-less step.
_STEPS_OF = text(
    "SELECT * FROM status_history WHERE event_id = :event_id "
    "OR (CAST(:sid AS text) IS NOT NULL AND message_sid = :sid) ORDER BY occurred_at, id"
)


class _ProjectionWrites:
    """`sms_relay.status.status_ports.ProjectionWrites` on one open transaction."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    @database_call
    async def record_steps(self, steps: Sequence[StatusStep]) -> list[RecordedStep]:
        params = {
            "events": [s.event_id for s in steps],
            "sids": [s.message_sid for s in steps],
            "statuses": [s.status for s in steps],
            "codes": [s.error_code for s in steps],
            "sources": [s.source for s in steps],
            "tokens": [s.token for s in steps],
            "times": [s.occurred_at for s in steps],
        }
        rows = (await self._connection.execute(_RECORD, params)).mappings().all()
        return [
            RecordedStep(r["token"], r["event_id"], r["known"], r["error_code"], r["new"])
            for r in rows
        ]

    async def derive_twilio_states(
        self, event_ids: Sequence[str], sources: Sequence[str]
    ) -> list[Moved]:
        # Imported here: `deliveries` imports this module for its settle statement.
        from sms_relay.adapters.postgres.deliveries import derive_twilio_states

        return await derive_twilio_states(self._connection, event_ids, sources)

    async def suppress_recipients(self, event_ids: Sequence[str], reason: str) -> None:
        await suppressions.add_recipients_of(self._connection, event_ids, reason)


class PostgresProjectionStore:
    """`sms_relay.status.status_ports.ProjectionStore`: the projection's writes, one transaction
    per batch; every method raises DatabaseUnavailableError."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_ProjectionWrites]:
        async with transaction(self._engine) as connection:
            yield _ProjectionWrites(connection)


@database_call
async def steps_of(engine: AsyncEngine, event_id: str | None, sid: str | None) -> list[Any]:
    """Every step of one message (by event id or Message SID), oldest first (`trace`)."""
    async with engine.connect() as connection:
        params = {"event_id": event_id, "sid": sid}
        return list((await connection.execute(_STEPS_OF, params)).mappings().all())


# ---- retention and erasure

# By id, from one index lookup per column: an OR of the two would scan the whole table.
_FORGET = text(
    "DELETE FROM status_history WHERE id = ANY(ARRAY("
    "SELECT id FROM status_history WHERE event_id = ANY(:ids) UNION "
    "SELECT id FROM status_history WHERE message_sid = ANY(CAST(:sids AS text[]))))"
)
# Steps of no known delivery (a callback for a message the ledger never had, or whose
# row went while the callback was on its way), past the horizon.
_ORPHAN = """
    recorded_at < :cutoff
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = h.event_id)
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_sid = h.message_sid)
"""
PRUNE_ORPHANS = text(
    f"""
DELETE FROM status_history WHERE id IN (
    SELECT h.id FROM status_history h WHERE {_ORPHAN} LIMIT :limit FOR UPDATE SKIP LOCKED
)
"""  # noqa: S608 (the fragment is our own constant, no input)
)
COUNT_ORPHANS = text(f"SELECT count(*) FROM status_history h WHERE {_ORPHAN}")  # noqa: S608


@database_call
async def forget_steps(
    connection: AsyncConnection, event_ids: Sequence[str], sids: Sequence[str]
) -> int:
    """Delete the steps of these deliveries (by eventId or SID); how many went."""
    if not event_ids and not sids:
        return 0
    params = {"ids": sorted(event_ids), "sids": sorted(sids)}
    return int((await connection.execute(_FORGET, params)).rowcount or 0)
