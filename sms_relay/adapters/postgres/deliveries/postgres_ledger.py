"""`PostgresLedger`: the delivery core's ledger port in PostgreSQL, one round trip a call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from sms_relay.adapters.postgres import alert_windows, suppressions
from sms_relay.adapters.postgres.deliveries import scheduled_writes
from sms_relay.adapters.postgres.deliveries.ledger_statements import (
    CLAIM,
    ERASED,
    MARK_REPORTED,
    MARK_SENDING,
    RENEW,
    SETTLE,
    STATES,
)
from sms_relay.adapters.postgres.engine import database_call
from sms_relay.delivery.delivery_ports import (
    Claim,
    ClaimRequest,
    ScheduledSend,
    Settlement,
    SettleResult,
)
from sms_relay.domain.collapse import CollapseAsk
from sms_relay.domain.outcomes import claim_outcome
from sms_relay.domain.states import (
    DeliveryState,
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
            "sources": [r.consent_source for r in requests],
            "cancel_keys": [r.cancel_key for r in requests],
            "send_hashes": [r.send_hash for r in requests],
            "owner": self._owner,
            "lease": self._lease_seconds,
            "erased": ERASED,
            **STATES,
        }
        async with self._engine.begin() as connection:
            rows = (await connection.execute(CLAIM, params)).mappings().all()
            # Flood control in the same transaction: a window is taken with its claim.
            taken = {r["event_id"] for r in rows if r["lease_token"] and not r["suppressed"]}
            asks = [
                CollapseAsk(r.event_id, r.phone_hash, r.collapse)
                for r in requests
                if r.collapse is not None and r.event_id in taken
            ]
            collapsed = await alert_windows.decide(connection, asks)
        send_hashes = {r.event_id: r.send_hash for r in requests}
        claims = {}
        for row in rows:
            prior = DeliveryState(row["state"]) if row["state"] else None
            settled = row["settled_state"]
            marked = bool(row["marked"])
            claims[row["event_id"]] = Claim(
                event_id=row["event_id"],
                outcome=claim_outcome(
                    row["lease_token"], prior, row["doubt_since"], erased=row["erased"]
                ),
                lease_token=row["lease_token"],
                suppressed=row["suppressed"],
                prior_state=prior,
                attempts=row["attempts"] or 0,
                message_sid=row["message_sid"],
                error_code=row["error_code"],
                settled_state=DeliveryState(settled) if settled else None,
                reported=bool(row["reported"]),
                doubt_since=row["doubt_since"],
                window_start=row["started"] if marked else row["sending_started_at"],
                sent_body_hashes=(
                    (send_hashes[row["event_id"]] or "",)
                    if marked
                    else tuple(row["sent_body_hashes"] or ())
                ),
                busy_for=float(row["busy_for"] or 0.0),
                collapsed=collapsed.get(row["event_id"]),
                canceled=bool(row["canceled"]),
                marked=marked,
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
            "sending": STATES["sending"],
        }
        async with self._engine.begin() as connection:
            rows = (await connection.execute(MARK_SENDING, params)).all()
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
            rows = (await connection.execute(RENEW, params)).all()
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
            "segments": [s.segments.segments if s.segments else None for s in settlements],
            "encodings": [s.segments.encoding.value if s.segments else None for s in settlements],
            "settled": STATES["settled"],
        }
        for attempt in range(3):
            try:
                async with self._engine.begin() as connection:
                    rows = (await connection.execute(SETTLE, params)).all()
                    written = {row[0] for row in rows if not row[1]}
                    await scheduled_writes.after_settle(connection, settlements, written)
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
            await connection.execute(MARK_REPORTED, params)
            await scheduled_writes.after_reported(connection, params, STATES["resumable"])

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

    @database_call
    async def take_due(self, limit: int) -> list[ScheduledSend]:
        params = {"limit": limit, "lease": self._lease_seconds}
        async with self._engine.begin() as connection:
            rows = (await connection.execute(scheduled_writes.TAKE_DUE, params)).all()
        return [scheduled_writes.scheduled_send(row) for row in rows]

    @database_call
    async def put_back(self, not_before: Mapping[str, datetime]) -> None:
        if not not_before:
            return
        params = {"ids": list(not_before), "ats": list(not_before.values())}
        async with self._engine.begin() as connection:
            await connection.execute(scheduled_writes.PUT_BACK, params)

    @database_call
    async def cancel(self, cancels: Sequence[tuple[str, str]]) -> int:
        if not cancels:
            return 0
        params = {"keys": [c[0] for c in cancels], "ids": [c[1] for c in cancels]}
        async with self._engine.begin() as connection:
            rows = (await connection.execute(scheduled_writes.CANCEL, params)).all()
        return len({row[0] for row in rows})
