"""The `callback_outbox` table: the outbox's rows (`sms_relay.status.status_ports.OutboxRows`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres.engine import database_call, database_errors, transaction
from sms_relay.status.outbox import OutboundRecord
from sms_relay.status.status_ports import AlsoInTransaction, UnpublishedRow

# Any unique key seen before (the token, or the content key) makes the record a duplicate.
_INSERT = text(
    "INSERT INTO callback_outbox (topic, key, value, headers, idempotency_token, content_key) "
    "SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:keys AS bytea[]), "
    "CAST(:values AS bytea[]), CAST(:headers AS jsonb[]), CAST(:tokens AS text[]), "
    "CAST(:content_keys AS text[])) "
    "ON CONFLICT DO NOTHING RETURNING id, idempotency_token"
)
_MARK = text("UPDATE callback_outbox SET published_at = now() WHERE id = ANY(:ids)")
_TAKE = text(
    "SELECT id, topic, key, value, headers FROM callback_outbox "
    "WHERE published_at IS NULL AND created_at < now() - make_interval(secs => :grace) "
    "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_PENDING = text("SELECT count(*) FROM callback_outbox WHERE published_at IS NULL")


def _params(records: Sequence[OutboundRecord]) -> dict[str, object]:
    return {
        "topics": [r.topic for r in records],
        "keys": [r.key for r in records],
        "values": [r.value for r in records],
        "headers": [json.dumps(r.headers) for r in records],
        "tokens": [r.token for r in records],
        "content_keys": [r.content_key for r in records],
    }


@dataclass
class _Taken:
    connection: AsyncConnection
    rows: list[UnpublishedRow]

    @database_call
    async def mark_published(self, ids: Sequence[int]) -> None:
        await self.connection.execute(_MARK, {"ids": list(ids)})


class PostgresOutboxRows:
    """Each call raises DatabaseUnavailableError when PostgreSQL cannot take it, also when
    it has not answered within `deadline_seconds` (a webhook is waiting)."""

    def __init__(self, engine: AsyncEngine, *, deadline_seconds: float = 3.0) -> None:
        self._engine = engine
        # The same pool; each statement commits on its own.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._deadline = deadline_seconds

    @database_call
    async def insert_many(self, records: Sequence[OutboundRecord]) -> dict[str, int]:
        async with asyncio.timeout(self._deadline), self._autocommit.connect() as connection:
            rows = (await connection.execute(_INSERT, _params(records))).all()
        return {token: row_id for row_id, token in rows}

    @database_call
    async def insert_with(self, record: OutboundRecord, also: AlsoInTransaction) -> int | None:
        async with asyncio.timeout(self._deadline), transaction(self._engine) as connection:
            rows = (await connection.execute(_INSERT, _params([record]))).all()
            row_id: int | None = rows[0][0] if rows else None
            if row_id is not None:
                await also(connection)
        return row_id

    @database_call
    async def mark_published(self, ids: Sequence[int]) -> None:
        async with asyncio.timeout(self._deadline), self._autocommit.connect() as connection:
            await connection.execute(_MARK, {"ids": list(ids)})

    @asynccontextmanager
    async def take_unpublished(self, grace_seconds: float, limit: int) -> AsyncIterator[_Taken]:
        """Rows older than `grace_seconds`, locked (SKIP LOCKED: replicas share the work)
        until the block ends, when the marks commit."""
        async with transaction(self._engine) as connection:
            async with database_errors():
                params = {"grace": grace_seconds, "limit": limit}
                found = (await connection.execute(_TAKE, params)).all()
            rows = [
                UnpublishedRow(
                    id=row.id,
                    topic=row.topic,
                    key=bytes(row.key) if row.key is not None else None,
                    value=bytes(row.value),
                    headers={k: str(v) for k, v in (row.headers or {}).items()},
                )
                for row in found
            ]
            yield _Taken(connection, rows)

    @database_call
    async def pending(self) -> int:
        async with self._engine.connect() as connection:
            return int((await connection.execute(_PENDING)).scalar_one())


# Retention: published rows past it (the BRIN index on created_at finds the old blocks;
# a row is published after it is created, so both bounds hold).
PRUNE_PUBLISHED = text(
    "DELETE FROM callback_outbox WHERE id IN (SELECT id FROM callback_outbox "
    "WHERE created_at < :cutoff AND published_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT_PUBLISHED = text(
    "SELECT count(*) FROM callback_outbox WHERE created_at < :cutoff AND published_at < :cutoff"
)
