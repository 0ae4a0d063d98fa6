"""Writes to `deliveries` after the send: the status projection, `dlq replay`, the reconciler."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres.deliveries.ledger_statements import ERASED, S
from sms_relay.adapters.postgres.engine import database_call
from sms_relay.domain.states import (
    AWAITING_TWILIO,
    TWILIO_RANK,
    DeliveryState,
)
from sms_relay.status.status_ports import Moved

# The first two run inside their callers' transactions, so they take a connection.

_DERIVE_TWILIO_STATE = text(
    """
WITH ranked AS (
    SELECT h.*, COALESCE(CAST(CAST(:ranks AS jsonb) ->> h.status AS int), -1) AS rank
    FROM status_history h
    WHERE h.event_id = ANY(:ids) AND h.source = ANY(CAST(:sources AS text[]))
),
best AS (
    SELECT DISTINCT ON (event_id) event_id, status, error_code, occurred_at, rank
    FROM ranked WHERE rank >= 0
    ORDER BY event_id, rank DESC, occurred_at, id
)
UPDATE deliveries d SET state = best.status,
    error_code = COALESCE(best.error_code, d.error_code), updated_at = now()
FROM best
WHERE d.event_id = best.event_id
    AND COALESCE(CAST(CAST(:ranks AS jsonb) ->> d.state AS int), -1) >= 0
    AND best.rank > COALESCE(CAST(CAST(:ranks AS jsonb) ->> d.state AS int), -1)
RETURNING d.event_id, d.state, best.occurred_at,
    (SELECT min(a.occurred_at) FROM status_history a
     WHERE a.event_id = d.event_id AND a.status = :accepted) AS accepted_at
"""
)


@database_call
async def derive_twilio_states(
    connection: AsyncConnection, event_ids: Sequence[str], sources: Sequence[str]
) -> list[Moved]:
    """Move each row at `accepted` or past it to the highest-ranked Twilio status in its
    history (the steps of `sources`). Rows the consumer still owns (claimed, sending, ...)
    never move."""
    params = {
        "ids": sorted(event_ids),
        "sources": list(sources),
        "ranks": json.dumps(TWILIO_RANK),
        "accepted": S.ACCEPTED.value,
    }
    result = await connection.execute(_DERIVE_TWILIO_STATE, params)
    return [
        Moved(row["event_id"], DeliveryState(row["state"]), row["occurred_at"], row["accepted_at"])
        for row in result.mappings()
    ]


_REOPEN = text(
    "UPDATE deliveries SET state = :retry_scheduled, lease_until = clock_timestamp(), "
    "updated_at = now() WHERE event_id = ANY(:ids) AND state = :dead_lettered "
    "AND phone_hash <> :erased RETURNING event_id"
)


@database_call
async def reopen_dead_lettered(connection: AsyncConnection, event_ids: Sequence[str]) -> set[str]:
    """`dlq replay`: dead-lettered rows become claimable again. The doubt, the bodies sent
    and the window stay, so a replayed send that may have happened is reconciled first.
    An erased number's tombstone stays dead-lettered: its replay is a duplicate."""
    params = {
        "erased": ERASED,
        "ids": list(event_ids),
        "retry_scheduled": S.RETRY_SCHEDULED.value,
        "dead_lettered": S.DEAD_LETTERED.value,
    }
    return {row[0] for row in await connection.execute(_REOPEN, params)}


_TAKE_STUCK = text(
    """
UPDATE deliveries SET updated_at = now()
WHERE event_id IN (
    SELECT event_id FROM deliveries
    WHERE state = ANY(CAST(:awaiting AS text[])) AND message_sid IS NOT NULL
        AND updated_at < now() - make_interval(secs => :stuck)
    ORDER BY updated_at LIMIT :limit FOR UPDATE SKIP LOCKED
)
RETURNING event_id, event_type, message_sid, state, phone_masked
"""
)


@database_call
async def take_stuck_accepted(
    engine: AsyncEngine, stuck_after_seconds: float, limit: int
) -> list[dict[str, str]]:
    """The missing-callbacks reconciler's pick: messages not final after the stuck time.
    Touching `updated_at` takes them out of the next round (another replica's too)."""
    params = {"stuck": stuck_after_seconds, "limit": limit, "awaiting": sorted(AWAITING_TWILIO)}
    async with engine.begin() as connection:
        rows = (await connection.execute(_TAKE_STUCK, params)).mappings().all()
    return [dict(row) for row in rows]
