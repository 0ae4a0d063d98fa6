"""The `api_keys` table: upstream clients' keys, stored as their SHA-256 only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres.engine import database_call
from sms_relay.status.api_keys import ApiKey
from sms_relay.status.status_ports import StoredApiKey

_INSERT = text(
    "INSERT INTO api_keys (key_id, client, secret_hash, event_kinds, rate_limit, "
    "rate_window_seconds) VALUES (:key_id, :client, :secret_hash, :kinds, :rate_limit, "
    ":window) RETURNING *"
)
_LIST = text("SELECT * FROM api_keys WHERE :all OR revoked_at IS NULL ORDER BY created_at, key_id")
_REVOKE = text(
    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = :key_id "
    "RETURNING *"
)
_FIND = text("SELECT * FROM api_keys WHERE key_id = :key_id")


def _key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        client=row.client,
        event_kinds=tuple(row.event_kinds),
        rate_limit=row.rate_limit,
        rate_window_seconds=row.rate_window_seconds,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class PostgresApiKeys:
    """`sms_relay.status.status_ports.ApiKeyStore`; raises what `engine.database_call` maps to."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @database_call
    async def insert(self, key: ApiKey, secret_hash: str) -> ApiKey:
        params = {
            "key_id": key.key_id,
            "client": key.client,
            "secret_hash": secret_hash,
            "kinds": list(key.event_kinds),
            "rate_limit": key.rate_limit,
            "window": key.rate_window_seconds,
        }
        async with self._engine.begin() as connection:
            return _key((await connection.execute(_INSERT, params)).one())

    @database_call
    async def list(self, *, include_revoked: bool) -> list[ApiKey]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(_LIST, {"all": include_revoked})
            return [_key(row) for row in rows]

    @database_call
    async def revoke(self, key_id: str) -> ApiKey | None:
        async with self._engine.begin() as connection:
            row = (await connection.execute(_REVOKE, {"key_id": key_id})).first()
        return _key(row) if row is not None else None

    @database_call
    async def find(self, key_id: str) -> StoredApiKey | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(_FIND, {"key_id": key_id})).first()
        return StoredApiKey(_key(row), row.secret_hash) if row is not None else None


# Only revoked keys, and only once their revocation is older than the retention.
PRUNE_REVOKED = text(
    "DELETE FROM api_keys WHERE key_id IN (SELECT key_id FROM api_keys "
    "WHERE revoked_at < :cutoff LIMIT :limit FOR UPDATE SKIP LOCKED)"
)
COUNT_REVOKED = text("SELECT count(*) FROM api_keys WHERE revoked_at < :cutoff")
