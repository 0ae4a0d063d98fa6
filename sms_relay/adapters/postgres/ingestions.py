"""The `ingestions` table: which client put which event on a topic over HTTP (the audit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres.engine import database_call

_EARLIER = text(
    "SELECT (SELECT state FROM deliveries WHERE event_id = :id) AS state, "
    "EXISTS (SELECT 1 FROM ingestions WHERE event_id = :id AND client = :client) AS own, "
    "EXISTS (SELECT 1 FROM ingestions WHERE event_id = :id) AS ingested"
)
_INSERT = text(
    "INSERT INTO ingestions (event_id, event_type, key_id, client, topic) "
    "VALUES (:event_id, :event_type, :key_id, :client, :topic)"
)
_OF = text("SELECT * FROM ingestions WHERE event_id = :event_id ORDER BY received_at, id")


@dataclass(frozen=True)
class Earlier:
    """What is known of an event id before it is ingested."""

    state: str | None  # its delivery's state, when the consumer has claimed it
    own: bool  # this client ingested it before
    ingested: bool  # some client ingested it before


@database_call
async def earlier(engine: AsyncEngine, event_id: str, client: str) -> Earlier:
    async with engine.connect() as connection:
        row = (await connection.execute(_EARLIER, {"id": event_id, "client": client})).one()
    return Earlier(row.state, row.own, row.ingested)


@database_call
async def record(
    engine: AsyncEngine, event_id: str, event_type: str, key_id: str, client: str, topic: str
) -> None:
    """Which client (key id and client name, never the key) put the event on `topic`."""
    params = {
        "event_id": event_id,
        "event_type": event_type,
        "key_id": key_id,
        "client": client,
        "topic": topic,
    }
    async with engine.begin() as connection:
        await connection.execute(_INSERT, params)


@database_call
async def ingestions_of(engine: AsyncEngine, event_id: str | None) -> list[Any]:
    """Every ingestion of one event, oldest first (`trace`)."""
    async with engine.connect() as connection:
        return list((await connection.execute(_OF, {"event_id": event_id})).mappings().all())


PRUNE = text(
    "DELETE FROM ingestions WHERE id IN (SELECT id FROM ingestions "
    "WHERE received_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT = text("SELECT count(*) FROM ingestions WHERE received_at < :cutoff")
_ERASE = text("DELETE FROM ingestions WHERE event_id = ANY(:ids)")


@database_call
async def erase_events(connection: AsyncConnection, event_ids: Sequence[str]) -> int:
    """Delete the ingestion audit of these events (those of an erased number)."""
    if not event_ids:
        return 0
    return int((await connection.execute(_ERASE, {"ids": sorted(event_ids)})).rowcount or 0)
