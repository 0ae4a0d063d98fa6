"""The `phone_verifications` table: the numbers a Verify check approved, and when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sms_relay.adapters.postgres.engine import database_call
from sms_relay.status.status_ports import Transaction

_UPSERT = text(
    "INSERT INTO phone_verifications (phone_hash, phone_masked, verified_at) "
    "VALUES (:h, :m, :at) ON CONFLICT (phone_hash) DO UPDATE "
    "SET phone_masked = excluded.phone_masked, verified_at = excluded.verified_at"
)


class PostgresVerifications:
    """`sms_relay.status.status_ports.Verifications`; raises DatabaseUnavailableError."""

    @database_call
    async def record_verified(
        self, transaction: Transaction, phone_hash: str, phone_masked: str, at: datetime
    ) -> None:
        """Written in the outbox row's transaction (`PostgresOutboxRows.insert_with`)."""
        assert isinstance(transaction, AsyncConnection), "not a PostgreSQL transaction"
        await transaction.execute(_UPSERT, {"h": phone_hash, "m": phone_masked, "at": at})


PRUNE = text(
    "DELETE FROM phone_verifications WHERE phone_hash IN (SELECT phone_hash FROM "
    "phone_verifications WHERE verified_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT = text("SELECT count(*) FROM phone_verifications WHERE verified_at < :cutoff")
_ERASE = text("DELETE FROM phone_verifications WHERE phone_hash = :h")


@database_call
async def erase_number(connection: AsyncConnection, phone_hash: str) -> int:
    return int((await connection.execute(_ERASE, {"h": phone_hash})).rowcount or 0)
