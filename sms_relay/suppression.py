"""Opt-out keywords and the suppression list (keyed hashes of numbers, never in clear)."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.masking import mask_phone, phone_hash

# Twilio's default opt-out and opt-in keywords (Advanced Opt-Out uses the same lists).
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


class Keyword(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    OTHER = "other"


def classify(body: str) -> Keyword:
    """The whole body, trimmed, case-insensitive: "stop " opts out, "stop it" does not."""
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return Keyword.OPT_OUT
    if word in OPT_IN_KEYWORDS:
        return Keyword.OPT_IN
    if word in HELP_KEYWORDS:
        return Keyword.HELP
    return Keyword.OTHER


class PostgresSuppressions:
    """The `suppressions` table the consumer checks at claim time."""

    def __init__(self, engine: AsyncEngine, hash_key: str) -> None:
        self._engine = engine
        self._hash_key = hash_key

    async def add(self, number: str, reason: str) -> None:
        """Raises what SQLAlchemy raises."""
        async with self._engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO suppressions (phone_hash, phone_masked, reason) "
                    "VALUES (:h, :m, :r) ON CONFLICT (phone_hash) DO NOTHING"
                ),
                {"h": phone_hash(self._hash_key, number), "m": mask_phone(number), "r": reason},
            )

    async def remove(self, number: str) -> bool:
        """Any reason: the subscriber's own START outranks an earlier opt-out or 21610."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                text("DELETE FROM suppressions WHERE phone_hash = :h"),
                {"h": phone_hash(self._hash_key, number)},
            )
        return bool(result.rowcount)

    async def contains(self, number: str) -> bool:
        async with self._engine.connect() as connection:
            found = await connection.execute(
                text("SELECT 1 FROM suppressions WHERE phone_hash = :h"),
                {"h": phone_hash(self._hash_key, number)},
            )
            return found.first() is not None
