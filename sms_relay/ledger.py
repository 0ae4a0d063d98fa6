"""The delivery ledger: one row per eventId, claimed under a fenced lease, in PostgreSQL.

State machine of a delivery:

    claimed ──► sending ──► accepted ──► queued/sent/delivered/... (status projection)
       │           │  └───► failed (permanent Twilio error)
       │           └──────► retry_scheduled ──► (claimed again from a retry topic)
       ├──► suppressed                      └─► dead_lettered
       └──► (lease expired while `sending`: the next claimer reconciles with Twilio)

Every write after the claim carries the lease token; a writer whose lease was taken over
matches no row and learns it lost the claim (fencing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# States a new claim may take over once the lease has run out.
RESUMABLE = ("claimed", "sending", "retry_scheduled")
FINAL = ("accepted", "failed", "suppressed", "dead_lettered")


class ClaimOutcome(StrEnum):
    NEW = "new"
    RESUMED = "resumed"  # an earlier claim ended before sending, or scheduled a retry
    IN_DOUBT = "in_doubt"  # an earlier claim died while sending: ask Twilio first
    DUPLICATE = "duplicate"  # already done
    BUSY = "busy"  # another consumer holds a live lease


@dataclass(frozen=True)
class ClaimRequest:
    event_id: str
    event_type: str
    phone_hash: str
    phone_masked: str
    consent_at: datetime | None
    consent_purpose: str | None


@dataclass(frozen=True)
class Claim:
    event_id: str
    outcome: ClaimOutcome
    lease_token: int | None
    suppressed: bool
    prior_state: str | None
    attempts: int
    sending_started_at: datetime | None
    message_sid: str | None
    error_code: int | None
    reported: bool


@dataclass(frozen=True)
class Settlement:
    """What a claim came to; written under its lease token."""

    event_id: str
    lease_token: int
    state: str
    attempt: int
    message_sid: str | None = None
    error_code: int | None = None
    error: str | None = None


_CLAIM = text(
    """
WITH input AS (
    SELECT * FROM unnest(
        CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:hashes AS text[]),
        CAST(:masked AS text[]), CAST(:consents AS timestamptz[]), CAST(:purposes AS text[])
    ) AS t(event_id, event_type, phone_hash, phone_masked, consent_at, consent_purpose)
),
before AS (
    SELECT d.* FROM deliveries d JOIN input USING (event_id)
),
claimed AS (
    INSERT INTO deliveries AS d (event_id, event_type, state, phone_hash, phone_masked,
        consent_at, consent_purpose, lease_owner, lease_token, lease_until)
    SELECT event_id, event_type, 'claimed', phone_hash, phone_masked, consent_at,
        consent_purpose, :owner, nextval('delivery_lease_token_seq'),
        clock_timestamp() + make_interval(secs => :lease)
    FROM input
    ON CONFLICT (event_id) DO UPDATE SET
        lease_owner = excluded.lease_owner, lease_token = excluded.lease_token,
        lease_until = excluded.lease_until, updated_at = now()
    WHERE d.state IN ('claimed', 'sending', 'retry_scheduled')
        AND (d.lease_until IS NULL OR d.lease_until <= clock_timestamp()
             -- our own claim from a batch that failed and was rewound: nothing of it runs
             OR d.lease_owner = excluded.lease_owner)
    RETURNING d.event_id, d.lease_token
)
SELECT input.event_id, claimed.lease_token, before.state, before.attempts,
    before.sending_started_at, before.message_sid, before.error_code, before.reported,
    EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_hash = input.phone_hash) AS suppressed
FROM input
LEFT JOIN claimed USING (event_id)
LEFT JOIN before USING (event_id)
"""
)

_MARK_SENDING = text(
    """
UPDATE deliveries d SET state = 'sending',
    sent_body_hashes = CASE WHEN v.body_hash = ANY(d.sent_body_hashes) THEN d.sent_body_hashes
                       ELSE array_append(d.sent_body_hashes, v.body_hash) END,
    sending_started_at = COALESCE(d.sending_started_at, clock_timestamp()), updated_at = now()
FROM unnest(CAST(:ids AS text[]), CAST(:tokens AS bigint[]), CAST(:hashes AS text[]))
    AS v(event_id, token, body_hash)
WHERE d.event_id = v.event_id AND d.lease_token = v.token
RETURNING d.event_id, d.sending_started_at
"""
)

_SETTLE = text(
    """
WITH v AS (
    SELECT * FROM unnest(
        CAST(:ids AS text[]), CAST(:tokens AS bigint[]), CAST(:states AS text[]),
        CAST(:attempts AS int[]), CAST(:sids AS text[]), CAST(:codes AS int[]),
        CAST(:errors AS text[])
    ) AS t(event_id, token, state, attempt, sid, code, error)
),
settled AS (
    UPDATE deliveries d SET state = v.state, attempts = v.attempt,
        message_sid = COALESCE(v.sid, d.message_sid), error_code = v.code,
        last_error = v.error, reported = false, updated_at = now(),
        -- a scheduled retry hands the event on at once; the topic decides when
        lease_until = CASE WHEN v.state = 'retry_scheduled' THEN clock_timestamp()
                      ELSE d.lease_until END
    FROM v WHERE d.event_id = v.event_id AND d.lease_token = v.token
    RETURNING d.event_id, d.state, d.message_sid, d.error_code, v.attempt
),
history AS (
    INSERT INTO status_history (event_id, message_sid, status, error_code, source,
        idempotency_token, occurred_at)
    SELECT event_id, message_sid, state, error_code, 'consumer',
        'consumer:' || event_id || ':' || state || ':' || attempt, clock_timestamp()
    FROM settled
    ON CONFLICT (idempotency_token) DO NOTHING
)
SELECT event_id FROM settled
"""
)


class PostgresLedger:
    """Claims, settles and fences deliveries; each method is one round trip."""

    def __init__(self, engine: AsyncEngine, owner: str, lease_seconds: float) -> None:
        self._engine = engine
        self._owner = owner
        self._lease_seconds = lease_seconds

    async def claim(self, requests: Sequence[ClaimRequest]) -> dict[str, Claim]:
        """Claim every event id (each at most once in `requests`)."""
        if not requests:
            return {}
        params = {
            "ids": [r.event_id for r in requests],
            "types": [r.event_type for r in requests],
            "hashes": [r.phone_hash for r in requests],
            "masked": [r.phone_masked for r in requests],
            "consents": [r.consent_at for r in requests],
            "purposes": [r.consent_purpose for r in requests],
            "owner": self._owner,
            "lease": self._lease_seconds,
        }
        async with self._engine.begin() as connection:
            rows = (await connection.execute(_CLAIM, params)).mappings().all()
        claims = {}
        for row in rows:
            claims[row["event_id"]] = Claim(
                event_id=row["event_id"],
                outcome=_outcome(row["lease_token"], row["state"]),
                lease_token=row["lease_token"],
                suppressed=row["suppressed"],
                prior_state=row["state"],
                attempts=row["attempts"] or 0,
                sending_started_at=row["sending_started_at"],
                message_sid=row["message_sid"],
                error_code=row["error_code"],
                reported=bool(row["reported"]),
            )
        return claims

    async def mark_sending(self, items: Sequence[tuple[str, int, str]]) -> dict[str, datetime]:
        """(event_id, lease_token, body_hash) -> sending; returns the ids still ours and
        when their first send began (the start of the reconciliation window)."""
        if not items:
            return {}
        params = {
            "ids": [i[0] for i in items],
            "tokens": [i[1] for i in items],
            "hashes": [i[2] for i in items],
        }
        async with self._engine.begin() as connection:
            rows = (await connection.execute(_MARK_SENDING, params)).all()
        return {row[0]: row[1] for row in rows}

    async def settle(self, settlements: Sequence[Settlement]) -> set[str]:
        """Write outcomes under their leases; returns the ids written (the rest were lost)."""
        if not settlements:
            return set()
        params = {
            "ids": [s.event_id for s in settlements],
            "tokens": [s.lease_token for s in settlements],
            "states": [s.state for s in settlements],
            "attempts": [s.attempt for s in settlements],
            "sids": [s.message_sid for s in settlements],
            "codes": [s.error_code for s in settlements],
            "errors": [s.error for s in settlements],
        }
        async with self._engine.begin() as connection:
            rows = (await connection.execute(_SETTLE, params)).all()
        return {row[0] for row in rows}

    async def mark_reported(self, event_ids: Iterable[str]) -> None:
        ids = list(event_ids)
        if not ids:
            return
        async with self._engine.begin() as connection:
            await connection.execute(
                text("UPDATE deliveries SET reported = true WHERE event_id = ANY(:ids)"),
                {"ids": ids},
            )

    async def suppress(self, phone_hash: str, phone_masked: str, reason: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO suppressions (phone_hash, phone_masked, reason) "
                    "VALUES (:h, :m, :r) ON CONFLICT (phone_hash) DO NOTHING"
                ),
                {"h": phone_hash, "m": phone_masked, "r": reason},
            )


def _outcome(lease_token: int | None, prior_state: str | None) -> ClaimOutcome:
    if lease_token is None:
        # No prior state but no claim either: a concurrent claimer inserted it just now.
        busy = prior_state is None or prior_state in RESUMABLE
        return ClaimOutcome.BUSY if busy else ClaimOutcome.DUPLICATE
    if prior_state is None:
        return ClaimOutcome.NEW
    if prior_state == "sending":
        return ClaimOutcome.IN_DOUBT
    return ClaimOutcome.RESUMED
