"""Opt-out keywords and the suppression list (keyed hashes of numbers, never in clear).

Inbound keywords are applied once per inbound MessageSid, and only in the order Twilio
received them: the webhook carries no timestamp, and arrival order is not Twilio's order
(a START whose webhook failed can be retried, or replayed, after a later STOP). So each
keyword is stamped with its Message resource's `date_created`, fetched from Twilio by its
SID, and applied only when it is newer than the last keyword applied for the number.
`date_created` has whole seconds: on a tie, an opt-out wins and an opt-in does not apply.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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


class KeywordResult(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # older than the last keyword applied for the number: recorded only
    DUPLICATE = "duplicate"  # this MessageSid was seen before: no second effect


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
_ADD = text(
    "INSERT INTO suppressions (phone_hash, phone_masked, reason) "
    "VALUES (:h, :m, :r) ON CONFLICT (phone_hash) DO NOTHING"
)
_REMOVE = text("DELETE FROM suppressions WHERE phone_hash = :h")


class PostgresSuppressions:
    """The `suppressions` table the consumer checks at claim time."""

    def __init__(self, engine: AsyncEngine, hash_key: str) -> None:
        self._engine = engine
        self._hash_key = hash_key

    async def apply_keyword(
        self, number: str, keyword: Keyword, message_sid: str, received_at: datetime
    ) -> KeywordResult:
        """Record an inbound keyword once; an opt-out suppresses `number`, an opt-in lifts
        any suppression (the subscriber's own START outranks an earlier opt-out or 21610),
        HELP changes nothing. All in one transaction. Raises what SQLAlchemy raises."""
        hashed = phone_hash(self._hash_key, number)
        row = {"sid": message_sid, "h": hashed, "action": keyword.value, "at": received_at}
        async with self._engine.begin() as connection:
            if (await connection.execute(_SEEN, row)).first() is None:
                return KeywordResult.DUPLICATE
            if keyword in (Keyword.OPT_OUT, Keyword.OPT_IN):
                if (await connection.execute(_NEWER, row)).first() is None:
                    return KeywordResult.STALE
                await self._change(connection, number, hashed, keyword)
            await connection.execute(_APPLIED, row)
        return KeywordResult.APPLIED

    @staticmethod
    async def _change(
        connection: AsyncConnection, number: str, hashed: str, keyword: Keyword
    ) -> None:
        if keyword is Keyword.OPT_OUT:
            await connection.execute(_ADD, {"h": hashed, "m": mask_phone(number), "r": "opt_out"})
        else:
            await connection.execute(_REMOVE, {"h": hashed})

    async def contains(self, number: str) -> bool:
        async with self._engine.connect() as connection:
            found = await connection.execute(
                text("SELECT 1 FROM suppressions WHERE phone_hash = :h"),
                {"h": phone_hash(self._hash_key, number)},
            )
            return found.first() is not None
