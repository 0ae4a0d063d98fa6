"""The `deliveries` table: the ledger's claims, leases and settles, and every other write.

This module owns every write to `deliveries` (the states and their moves are named in
`sms_relay.domain.states`, and bound from there): `PostgresLedger` implements the delivery
core's `Ledger` port (`sms_relay.delivery.ports`); the functions below serve the status
projection, `dlq replay` and the missing-callback reconciler, and the reads of the
consumer's gauges, `trace` and `dlq list`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sms_relay.adapters.postgres import suppressions
from sms_relay.adapters.postgres.engine import database_call
from sms_relay.adapters.postgres.status_history import RECORD_SETTLED_STEPS
from sms_relay.delivery.ports import (
    Claim,
    ClaimRequest,
    Settlement,
    SettleResult,
)
from sms_relay.domain.outcomes import claim_outcome
from sms_relay.domain.states import (
    AWAITING_TWILIO,
    CONSUMER_SETTLED,
    RESUMABLE,
    TWILIO_RANK,
    DeliveryState,
)
from sms_relay.status.ports import Moved

S = DeliveryState
# The states the statements name, bound as parameters: the enum is their one spelling.
_STATES = {
    "claimed": S.CLAIMED.value,
    "sending": S.SENDING.value,
    "retry_scheduled": S.RETRY_SCHEDULED.value,
    "resumable": sorted(RESUMABLE),
    "settled": sorted(CONSUMER_SETTLED),
}

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
    SELECT event_id, event_type, CAST(:claimed AS text), phone_hash, phone_masked, consent_at,
        consent_purpose, :owner, nextval('delivery_lease_token_seq'),
        clock_timestamp() + make_interval(secs => :lease)
    FROM input
    ON CONFLICT (event_id) DO UPDATE SET
        lease_owner = excluded.lease_owner, lease_token = excluded.lease_token,
        lease_until = excluded.lease_until, updated_at = now(),
        -- Taking over a send that never settled: it may have created a message, at the
        -- latest while its lease ran (every Twilio call checks the lease first). So the
        -- doubt counts from the lease's end, even when an older doubt was already set
        -- (the holder may have been resending after it). GREATEST ignores a NULL.
        doubt_since = CASE WHEN d.state = :sending
            THEN GREATEST(d.doubt_since, LEAST(d.lease_until, clock_timestamp()))
            ELSE d.doubt_since END,
        -- The doubt is recorded: the new holder marks `sending` again only right before
        -- it creates, so its death while it only reconciles moves the doubt no further.
        state = CASE WHEN d.state = :sending THEN CAST(:retry_scheduled AS text)
            ELSE d.state END
    WHERE d.state = ANY(CAST(:resumable AS text[]))
        AND (d.lease_until IS NULL OR d.lease_until <= clock_timestamp()
             -- our own claim from a batch that failed and was rewound (the service never
             -- re-claims an event whose send still runs in this process)
             OR d.lease_owner = excluded.lease_owner)
    RETURNING d.event_id, d.lease_token, d.doubt_since
)
SELECT input.event_id, claimed.lease_token, claimed.doubt_since, before.state,
    before.attempts, before.sending_started_at, before.message_sid, before.error_code,
    before.settled_state, before.reported, before.sent_body_hashes,
    GREATEST(EXTRACT(EPOCH FROM before.lease_until - clock_timestamp()), 0) AS busy_for,
    EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_hash = input.phone_hash) AS suppressed
FROM input
LEFT JOIN claimed USING (event_id)
LEFT JOIN before USING (event_id)
"""
)

_MARK_SENDING = text(
    """
UPDATE deliveries d SET state = CAST(:sending AS text),
    sent_body_hashes = CASE WHEN v.body_hash = ANY(d.sent_body_hashes) THEN d.sent_body_hashes
                       ELSE array_append(d.sent_body_hashes, v.body_hash) END,
    sending_started_at = COALESCE(d.sending_started_at, clock_timestamp()), updated_at = now()
FROM unnest(CAST(:ids AS text[]), CAST(:tokens AS bigint[]), CAST(:hashes AS text[]))
    AS v(event_id, token, body_hash)
WHERE d.event_id = v.event_id AND d.lease_token = v.token
RETURNING d.event_id, d.sending_started_at
"""
)

# Only a live lease is extended. A settle releases the lease but keeps its token, and a
# heartbeat sent just before it (or blocked on its row lock) must not hand the released
# row a fresh lease: the next claimer would wait that whole lease out as `busy`.
_RENEW = text(
    """
UPDATE deliveries d SET lease_until = clock_timestamp() + make_interval(secs => :lease)
FROM unnest(CAST(:ids AS text[]), CAST(:tokens AS bigint[])) AS v(event_id, token)
WHERE d.event_id = v.event_id AND d.lease_token = v.token
    AND d.lease_until > clock_timestamp()
RETURNING d.event_id
"""
)

_SETTLE = text(
    f"""
WITH v AS (
    SELECT * FROM unnest(
        CAST(:ids AS text[]), CAST(:tokens AS bigint[]), CAST(:states AS text[]),
        CAST(:attempts AS int[]), CAST(:sids AS text[]), CAST(:codes AS int[]),
        CAST(:errors AS text[]), CAST(:doubts AS timestamptz[])
    ) AS t(event_id, token, state, attempt, sid, code, error, doubt)
),
held AS (
    SELECT v.*, (v.sid IS NOT NULL AND EXISTS (
        SELECT 1 FROM deliveries o WHERE o.message_sid = v.sid AND o.event_id <> v.event_id
    )) AS sid_taken
    FROM v JOIN deliveries d ON d.event_id = v.event_id AND d.lease_token = v.token
),
settled AS (
    UPDATE deliveries d SET state = h.state, attempts = h.attempt,
        message_sid = COALESCE(h.sid, d.message_sid), error_code = h.code,
        last_error = h.error, doubt_since = h.doubt, updated_at = now(),
        settled_state = CASE WHEN h.state = ANY(CAST(:settled AS text[])) THEN h.state
                        ELSE d.settled_state END,
        reported = CASE WHEN h.state = ANY(CAST(:settled AS text[])) THEN false
                   ELSE d.reported END,
        -- settled or scheduled: the event is handed on at once (a retry topic decides when)
        lease_until = clock_timestamp()
    FROM held h WHERE d.event_id = h.event_id AND NOT h.sid_taken
    RETURNING d.event_id, d.state, d.message_sid, d.error_code, h.attempt
),
history AS ({RECORD_SETTLED_STEPS})
SELECT event_id, false AS sid_taken FROM settled
UNION ALL
SELECT event_id, true FROM held WHERE sid_taken
"""  # noqa: S608 (the fragment is our own constant, no input)
)

_MARK_REPORTED = text(
    """
UPDATE deliveries d SET reported = true
FROM unnest(CAST(:ids AS text[]), CAST(:states AS text[])) AS v(event_id, state)
WHERE d.event_id = v.event_id AND d.settled_state = v.state
"""
)


class PostgresLedger:
    """Claims, settles and fences deliveries; each method is one round trip."""

    def __init__(self, engine: AsyncEngine, owner: str, lease_seconds: float) -> None:
        self._engine = engine
        self._owner = owner
        self._lease_seconds = lease_seconds

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    @database_call
    async def claim(self, requests: Sequence[ClaimRequest]) -> dict[str, Claim]:
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
            **_STATES,
        }
        async with self._engine.begin() as connection:
            rows = (await connection.execute(_CLAIM, params)).mappings().all()
        claims = {}
        for row in rows:
            prior = DeliveryState(row["state"]) if row["state"] else None
            settled = row["settled_state"]
            claims[row["event_id"]] = Claim(
                event_id=row["event_id"],
                outcome=claim_outcome(row["lease_token"], prior, row["doubt_since"]),
                lease_token=row["lease_token"],
                suppressed=row["suppressed"],
                prior_state=prior,
                attempts=row["attempts"] or 0,
                message_sid=row["message_sid"],
                error_code=row["error_code"],
                settled_state=DeliveryState(settled) if settled else None,
                reported=bool(row["reported"]),
                doubt_since=row["doubt_since"],
                window_start=row["sending_started_at"],
                sent_body_hashes=tuple(row["sent_body_hashes"] or ()),
                busy_for=float(row["busy_for"] or 0.0),
            )
        return claims

    @database_call
    async def mark_sending(self, items: Sequence[tuple[str, int, str]]) -> dict[str, datetime]:
        if not items:
            return {}
        params = {
            "ids": [i[0] for i in items],
            "tokens": [i[1] for i in items],
            "hashes": [i[2] for i in items],
            "sending": _STATES["sending"],
        }
        async with self._engine.begin() as connection:
            rows = (await connection.execute(_MARK_SENDING, params)).all()
        return {row[0]: row[1] for row in rows}

    @database_call
    async def renew(self, leases: Mapping[str, int]) -> set[str]:
        if not leases:
            return set()
        params = {
            "ids": list(leases),
            "tokens": list(leases.values()),
            "lease": self._lease_seconds,
        }
        async with self._engine.begin() as connection:
            rows = (await connection.execute(_RENEW, params)).all()
        return {row[0] for row in rows}

    @database_call
    async def settle(self, settlements: Sequence[Settlement]) -> SettleResult:
        if not settlements:
            return SettleResult(frozenset())
        params = {
            "ids": [s.event_id for s in settlements],
            "tokens": [s.lease_token for s in settlements],
            "states": [s.state.value for s in settlements],
            "attempts": [s.attempt for s in settlements],
            "sids": [s.message_sid for s in settlements],
            "codes": [s.error_code for s in settlements],
            "errors": [s.error for s in settlements],
            "doubts": [s.doubt_since for s in settlements],
            "settled": _STATES["settled"],
        }
        for attempt in range(3):
            try:
                async with self._engine.begin() as connection:
                    rows = (await connection.execute(_SETTLE, params)).all()
                break
            except IntegrityError:
                # Another event's settle took the same SID concurrently; the next try
                # sees it committed and leaves this row out (sid_taken).
                if attempt == 2:
                    raise
        return SettleResult(
            written=frozenset(row[0] for row in rows if not row[1]),
            sid_taken=frozenset(row[0] for row in rows if row[1]),
        )

    @database_call
    async def mark_reported(self, steps: Sequence[tuple[str, DeliveryState]]) -> None:
        if not steps:
            return
        params = {"ids": [s[0] for s in steps], "states": [s[1].value for s in steps]}
        async with self._engine.begin() as connection:
            await connection.execute(_MARK_REPORTED, params)

    @database_call
    async def owned_sids(self, sids: Sequence[str], event_id: str) -> set[str]:
        if not sids:
            return set()
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT message_sid FROM deliveries "
                    "WHERE message_sid = ANY(:sids) AND event_id <> :event_id"
                ),
                {"sids": list(sids), "event_id": event_id},
            )
            return {row[0] for row in rows}

    @database_call
    async def suppress(self, phone_hash: str, phone_masked: str, reason: str) -> None:
        async with self._engine.begin() as connection:
            await suppressions.add(connection, [(phone_hash, phone_masked, reason)])


# ---- Writes of the other writers: the status projection, `dlq replay`, the reconciler.
# The first two run inside their callers' transactions, so they take a connection.

_DERIVE_TWILIO_STATE = text(
    """
WITH ranked AS (
    SELECT h.*, COALESCE(CAST(CAST(:ranks AS jsonb) ->> h.status AS int), -1) AS rank
    FROM status_history h
    WHERE h.event_id = ANY(:ids) AND h.source = ANY(CAST(:sources AS text[]))
),
best AS (
    SELECT DISTINCT ON (event_id) event_id, status, error_code, occurred_at, rank
    FROM ranked WHERE rank >= 0
    ORDER BY event_id, rank DESC, occurred_at, id
)
UPDATE deliveries d SET state = best.status,
    error_code = COALESCE(best.error_code, d.error_code), updated_at = now()
FROM best
WHERE d.event_id = best.event_id
    AND COALESCE(CAST(CAST(:ranks AS jsonb) ->> d.state AS int), -1) >= 0
    AND best.rank > COALESCE(CAST(CAST(:ranks AS jsonb) ->> d.state AS int), -1)
RETURNING d.event_id, d.state, best.occurred_at,
    (SELECT min(a.occurred_at) FROM status_history a
     WHERE a.event_id = d.event_id AND a.status = :accepted) AS accepted_at
"""
)


@database_call
async def derive_twilio_states(
    connection: AsyncConnection, event_ids: Sequence[str], sources: Sequence[str]
) -> list[Moved]:
    """Move each row at `accepted` or past it to the highest-ranked Twilio status in its
    history (the steps of `sources`). Rows the consumer still owns (claimed, sending, ...)
    never move."""
    params = {
        "ids": sorted(event_ids),
        "sources": list(sources),
        "ranks": json.dumps(TWILIO_RANK),
        "accepted": S.ACCEPTED.value,
    }
    result = await connection.execute(_DERIVE_TWILIO_STATE, params)
    return [
        Moved(row["event_id"], DeliveryState(row["state"]), row["occurred_at"], row["accepted_at"])
        for row in result.mappings()
    ]


_REOPEN = text(
    "UPDATE deliveries SET state = :retry_scheduled, lease_until = clock_timestamp(), "
    "updated_at = now() WHERE event_id = ANY(:ids) AND state = :dead_lettered "
    "RETURNING event_id"
)


@database_call
async def reopen_dead_lettered(connection: AsyncConnection, event_ids: Sequence[str]) -> set[str]:
    """`dlq replay`: dead-lettered rows become claimable again. The doubt, the bodies sent
    and the window stay, so a replayed send that may have happened is reconciled first."""
    params = {
        "ids": list(event_ids),
        "retry_scheduled": S.RETRY_SCHEDULED.value,
        "dead_lettered": S.DEAD_LETTERED.value,
    }
    return {row[0] for row in await connection.execute(_REOPEN, params)}


_TAKE_STUCK = text(
    """
UPDATE deliveries SET updated_at = now()
WHERE event_id IN (
    SELECT event_id FROM deliveries
    WHERE state = ANY(CAST(:awaiting AS text[])) AND message_sid IS NOT NULL
        AND updated_at < now() - make_interval(secs => :stuck)
    ORDER BY updated_at LIMIT :limit FOR UPDATE SKIP LOCKED
)
RETURNING event_id, message_sid, state, phone_masked
"""
)


@database_call
async def take_stuck_accepted(
    engine: AsyncEngine, stuck_after_seconds: float, limit: int
) -> list[dict[str, str]]:
    """The missing-callbacks reconciler's pick: messages not final after the stuck time.
    Touching `updated_at` takes them out of the next round (another replica's too)."""
    params = {"stuck": stuck_after_seconds, "limit": limit, "awaiting": sorted(AWAITING_TWILIO)}
    async with engine.begin() as connection:
        rows = (await connection.execute(_TAKE_STUCK, params)).mappings().all()
    return [dict(row) for row in rows]


# ---- Reads: the consumer's gauges, `trace`, `dlq list`.

_STUCK = text(
    """
SELECT count(*) FROM deliveries
WHERE state = :sending AND lease_until < clock_timestamp()
    AND COALESCE(sending_started_at, updated_at)
        < clock_timestamp() - make_interval(secs => :stuck_after)
"""
)
_UNRESOLVED = text("SELECT count(*) FROM deliveries WHERE doubt_since IS NOT NULL")
_FIND = text("SELECT * FROM deliveries WHERE event_id = :ident OR message_sid = :ident")
_STATES_OF = text("SELECT event_id, state, error_code FROM deliveries WHERE event_id = ANY(:ids)")


@database_call
async def count_stuck_claims(engine: AsyncEngine, stuck_after_seconds: float) -> int:
    """Deliveries in `sending` whose lease expired and whose send began long ago."""
    params = {"stuck_after": stuck_after_seconds, "sending": S.SENDING.value}
    async with engine.connect() as connection:
        return int((await connection.execute(_STUCK, params)).scalar_one())


@database_call
async def count_unresolved_doubts(engine: AsyncEngine) -> int:
    """Deliveries whose earlier send may have created a message not matched yet."""
    async with engine.connect() as connection:
        return int((await connection.execute(_UNRESOLVED)).scalar_one())


@database_call
async def find(engine: AsyncEngine, ident: str) -> Any | None:
    """The row of one delivery, by event id or Message SID (`trace`)."""
    async with engine.connect() as connection:
        return (await connection.execute(_FIND, {"ident": ident})).mappings().first()


@database_call
async def states_of(
    engine: AsyncEngine, event_ids: Sequence[str]
) -> dict[str, tuple[str, int | None]]:
    """(state, error code) of each delivery that exists, by event id (`dlq list`)."""
    async with engine.connect() as connection:
        rows = await connection.execute(_STATES_OF, {"ids": list(event_ids)})
        return {row[0]: (row[1], row[2]) for row in rows}
