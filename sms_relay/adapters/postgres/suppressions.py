"""The opt-out group: `suppressions`, and the inbound keywords (`inbound_keywords`,
`keyword_latest`) that add and lift them.

This module owns every write to those three tables. The ledger (a 21610 at send time),
the status projection (a 21610 in a callback), inbound keywords and `sms-relay suppress`
all suppress through `add` and `add_recipients_of`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres.engine import database_call, transaction

_ADD = text(
    "INSERT INTO suppressions (phone_hash, phone_masked, reason) "
    "SELECT * FROM unnest(CAST(:hashes AS text[]), CAST(:masked AS text[]), "
    "CAST(:reasons AS text[])) "
    "ON CONFLICT (phone_hash) DO NOTHING RETURNING phone_hash, created_at"
)
_RECIPIENTS_OF = text(
    "SELECT DISTINCT phone_hash, phone_masked FROM deliveries WHERE event_id = ANY(:ids)"
)
_REMOVE = text("DELETE FROM suppressions WHERE phone_hash = :h")
_FIND = text("SELECT reason, created_at FROM suppressions WHERE phone_hash = :h")
_LOCK = text("SELECT reason FROM suppressions WHERE phone_hash = :h FOR UPDATE")
_LIST = text(
    "SELECT phone_masked, reason, created_at FROM suppressions "
    "ORDER BY created_at DESC, phone_masked LIMIT :limit"
)

_SEEN = text(
    "INSERT INTO inbound_keywords (message_sid, phone_hash, action, received_at, applied) "
    "VALUES (:sid, :h, :action, :at, false) ON CONFLICT (message_sid) DO NOTHING "
    "RETURNING message_sid"
)
# Newer than the last keyword applied (or as old and an opt-out): becomes the last one.
_NEWER = text(
    "INSERT INTO keyword_latest AS k (phone_hash, action, received_at, message_sid) "
    "VALUES (:h, :action, :at, :sid) ON CONFLICT (phone_hash) DO UPDATE "
    "SET action = excluded.action, received_at = excluded.received_at, "
    "message_sid = excluded.message_sid "
    "WHERE k.received_at < excluded.received_at "
    "OR (k.received_at = excluded.received_at AND excluded.action = 'opt_out') "
    "RETURNING phone_hash"
)
_APPLIED = text("UPDATE inbound_keywords SET applied = true WHERE message_sid = :sid")


@database_call
async def add(
    connection: AsyncConnection, rows: Sequence[tuple[str, str, str]]
) -> dict[str, datetime]:
    """Suppress each (hash, masked number, reason) not suppressed yet; returns when each
    new one was added, by hash (one already suppressed keeps its reason and time)."""
    params = {
        "hashes": [r[0] for r in rows],
        "masked": [r[1] for r in rows],
        "reasons": [r[2] for r in rows],
    }
    return {row[0]: row[1] for row in await connection.execute(_ADD, params)}


@database_call
async def add_recipients_of(
    connection: AsyncConnection, event_ids: Sequence[str], reason: str
) -> None:
    """Suppress the numbers of these deliveries (a 21610 reported for them)."""
    found = (await connection.execute(_RECIPIENTS_OF, {"ids": sorted(event_ids)})).all()
    await add(connection, [(h, masked, reason) for h, masked in found])


class _KeywordWrites:
    """`sms_relay.status.status_ports.KeywordWrites` on one open transaction."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    @database_call
    async def first_sight(
        self, message_sid: str, phone_hash: str, action: str, received_at: datetime
    ) -> bool:
        row = {"sid": message_sid, "h": phone_hash, "action": action, "at": received_at}
        return (await self._connection.execute(_SEEN, row)).first() is not None

    @database_call
    async def newest_for_number(
        self, message_sid: str, phone_hash: str, action: str, received_at: datetime
    ) -> bool:
        row = {"sid": message_sid, "h": phone_hash, "action": action, "at": received_at}
        return (await self._connection.execute(_NEWER, row)).first() is not None

    async def suppress(self, phone_hash: str, phone_masked: str, reason: str) -> None:
        await add(self._connection, [(phone_hash, phone_masked, reason)])

    @database_call
    async def lift(self, phone_hash: str) -> None:
        await self._connection.execute(_REMOVE, {"h": phone_hash})

    @database_call
    async def mark_applied(self, message_sid: str) -> None:
        await self._connection.execute(_APPLIED, {"sid": message_sid})


class PostgresKeywordStore:
    """`sms_relay.status.status_ports.KeywordStore`: one transaction per inbound keyword."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_KeywordWrites]:
        async with transaction(self._engine) as connection:
            yield _KeywordWrites(connection)


# ---- `sms-relay suppress add|remove|list`


@database_call
async def add_one(
    engine: AsyncEngine, phone_hash: str, phone_masked: str, reason: str
) -> tuple[bool, str, datetime]:
    """(added, the reason it stands for, since when) after suppressing one number."""
    async with transaction(engine) as connection:
        added = await add(connection, [(phone_hash, phone_masked, reason)])
        if phone_hash in added:
            return True, reason, added[phone_hash]
        existing = (await connection.execute(_FIND, {"h": phone_hash})).one()
        return False, existing.reason, existing.created_at


@database_call
async def remove_one(
    engine: AsyncEngine, phone_hash: str, may_remove: Callable[[str], None]
) -> str | None:
    """Lift one suppression once `may_remove(its reason)` returned (it raises to refuse);
    the reason it stood for, or None when the number was not suppressed."""
    async with transaction(engine) as connection:
        reason = (await connection.execute(_LOCK, {"h": phone_hash})).scalar()
        if reason is None:
            return None
        may_remove(reason)
        await connection.execute(_REMOVE, {"h": phone_hash})
        return str(reason)


@database_call
async def listed(engine: AsyncEngine, limit: int | None) -> list[Any]:
    """Suppressed numbers (masked), newest first."""
    async with engine.connect() as connection:
        return list((await connection.execute(_LIST, {"limit": limit})).mappings().all())


# ---- retention and erasure (suppressions themselves never expire and are never erased)

PRUNE_KEYWORDS = text(
    "DELETE FROM inbound_keywords WHERE message_sid IN (SELECT message_sid FROM "
    "inbound_keywords WHERE created_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT_KEYWORDS = text("SELECT count(*) FROM inbound_keywords WHERE created_at < :cutoff")
PRUNE_LATEST = text(
    "DELETE FROM keyword_latest WHERE phone_hash IN (SELECT phone_hash FROM keyword_latest "
    "WHERE received_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT_LATEST = text("SELECT count(*) FROM keyword_latest WHERE received_at < :cutoff")
_ERASE_KEYWORDS = text("DELETE FROM inbound_keywords WHERE phone_hash = :h")
_ERASE_LATEST = text("DELETE FROM keyword_latest WHERE phone_hash = :h")


@database_call
async def erase_keywords(connection: AsyncConnection, phone_hash: str) -> dict[str, int]:
    """Delete one number's inbound keywords; its suppression stays."""
    keywords = await connection.execute(_ERASE_KEYWORDS, {"h": phone_hash})
    latest = await connection.execute(_ERASE_LATEST, {"h": phone_hash})
    return {"inbound_keywords": keywords.rowcount or 0, "keyword_latest": latest.rowcount or 0}
