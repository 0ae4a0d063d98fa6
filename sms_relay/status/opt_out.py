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

from sms_relay.masking import mask_phone, phone_hash
from sms_relay.status.status_ports import KeywordStore

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


class OptOutKeywords:
    """Applies inbound keywords to the suppression list the consumer checks at claim time."""

    def __init__(self, store: KeywordStore, hash_key: str) -> None:
        self._store = store
        self._hash_key = hash_key

    async def apply_keyword(
        self, number: str, keyword: Keyword, message_sid: str, received_at: datetime
    ) -> KeywordResult:
        """Record an inbound keyword once; an opt-out suppresses `number`, an opt-in lifts
        any suppression (the subscriber's own START outranks an earlier opt-out or 21610),
        HELP changes nothing. All in one transaction. Raises DatabaseUnavailableError."""
        hashed = phone_hash(self._hash_key, number)
        seen = (message_sid, hashed, keyword.value, received_at)
        async with self._store.transaction() as writes:
            if not await writes.first_sight(*seen):
                return KeywordResult.DUPLICATE
            if keyword in (Keyword.OPT_OUT, Keyword.OPT_IN):
                if not await writes.newest_for_number(*seen):
                    return KeywordResult.STALE
                if keyword is Keyword.OPT_OUT:
                    await writes.suppress(hashed, mask_phone(number), Keyword.OPT_OUT.value)
                else:
                    await writes.lift(hashed)
            await writes.mark_applied(message_sid)
        return KeywordResult.APPLIED
