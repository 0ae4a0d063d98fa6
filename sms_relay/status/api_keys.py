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

from sms_relay.status.status_ports import ApiKeyStore

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


class ApiKeys:
    """Creates, lists, revokes and checks keys; every method raises DatabaseUnavailableError."""

    def __init__(self, store: ApiKeyStore) -> None:
        self._store = store

    async def create(
        self, client: str, event_kinds: list[str], rate_limit: int, rate_window_seconds: float
    ) -> tuple[ApiKey, str]:
        """The new key's record and the key itself (to show once, never stored)."""
        key_id, key = new_key()
        record = ApiKey(
            key_id, client, tuple(sorted(set(event_kinds))), rate_limit, rate_window_seconds
        )
        return await self._store.insert(record, _digest(key)), key

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        return await self._store.list(include_revoked=include_revoked)

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke at once (the next request is refused); None when no such key."""
        return await self._store.revoke(key_id)

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The live key `presented` is, or None (malformed, unknown, revoked or wrong)."""
        match = _KEY.match(presented)
        if match is None:
            return None
        stored = await self._store.find(match.group(1))
        if stored is None or stored.key.revoked_at is not None:
            return None
        if not hmac.compare_digest(stored.secret_hash, _digest(presented)):
            return None
        return stored.key
