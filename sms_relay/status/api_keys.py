"""API keys of upstream clients: created once, stored as a hash, scoped, revocable.

A key reads `smsr_<key id>_<secret>`: the key id (public, 12 hex digits) names the row,
the secret is 32 random bytes. Only SHA-256 of the whole key is stored. A slow password
hash (bcrypt, scrypt, argon2) defends guessable secrets against offline guessing; a
256-bit random secret cannot be guessed with any hash, so a fast one does and keeps
every request's check cheap (a slow hash on each request would be a denial-of-service
lever). Presented keys are compared with `hmac.compare_digest` on the hashes.

The key is shown once, by `create`; `list` shows ids, clients, scopes and limits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres.tables import api_keys

PREFIX = "smsr"
_KEY = re.compile(r"\Asmsr_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
# What identifies a client in the audit trail: short, printable, no spaces.
CLIENT_NAME = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    client: str
    event_kinds: tuple[str, ...]
    rate_limit: int
    rate_window_seconds: float
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    def may_send(self, kind: str) -> bool:
        return kind in self.event_kinds

    @property
    def limit_key(self) -> str:
        return f"api-key:{self.key_id}"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, whole key) of a fresh key."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def _from_row(row: Row[Any]) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        client=row.client,
        event_kinds=tuple(row.event_kinds),
        rate_limit=row.rate_limit,
        rate_window_seconds=row.rate_window_seconds,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class ApiKeys:
    """The `api_keys` table. Every method raises what SQLAlchemy raises."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, client: str, event_kinds: list[str], rate_limit: int, rate_window_seconds: float
    ) -> tuple[ApiKey, str]:
        """The new key's record and the key itself (to show once, never stored)."""
        key_id, key = new_key()
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    insert(api_keys)
                    .values(
                        key_id=key_id,
                        client=client,
                        secret_hash=_digest(key),
                        event_kinds=sorted(set(event_kinds)),
                        rate_limit=rate_limit,
                        rate_window_seconds=rate_window_seconds,
                    )
                    .returning(api_keys)
                )
            ).one()
        return _from_row(row), key

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._engine.connect() as connection:
            return [_from_row(row) for row in (await connection.execute(query)).all()]

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke at once (the next request is refused); None when no such key."""
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    update(api_keys)
                    .where(api_keys.c.key_id == key_id)
                    .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
                    .returning(api_keys)
                )
            ).first()
        return _from_row(row) if row is not None else None

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The live key `presented` is, or None (malformed, unknown, revoked or wrong)."""
        match = _KEY.match(presented)
        if match is None:
            return None
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(api_keys).where(api_keys.c.key_id == match.group(1))
                )
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash, _digest(presented)):
            return None
        return _from_row(row)
