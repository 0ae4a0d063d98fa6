"""Status projection: delivery-status records into `status_history` and `deliveries`.

Idempotent and order-independent. Each record from Twilio (callbacks, reconciler) is
inserted into `status_history` once, by its idempotency token. Then each touched
delivery's state is *derived* from its history: the highest-ranked Twilio status wins
(accepted < queued < sent < delivered = undelivered = failed = canceled < read), so a late
`sent` never overwrites `delivered`, the first final status stays, and a callback that
arrives before the consumer recorded `accepted` is applied when `accepted` comes.

The derivation is the ledger's (`sms_relay.delivery.ports.derive_twilio_states`: the ledger owns
every write to `deliveries`). Only rows at `accepted` or past it move: `claimed`,
`sending`, `retry_scheduled`, `suppressed` and `dead_lettered` belong to the consumer.
Twilio's own `sending` is kept in the history but never written to `deliveries.state`,
where `sending` means "a send of ours is in flight" to the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import DeliveryStatusChanged, Status
from sms_relay.adapters.postgres.deliveries import derive_twilio_states
from sms_relay.domain.states import TWILIO_RANK, DeliveryState, wire_status
from sms_relay.domain.twilio_codes import OPT_OUT_ERROR
from sms_relay.metrics import CallbackMetrics

log = logging.getLogger(__name__)


TWILIO_SOURCES = ("callbacks", "reconciler")


def rank(status: str) -> int:
    """-1 for states the projection never writes (the ledger's own, Twilio's `sending`)."""
    return TWILIO_RANK.get(status, -1)


_RECORD = text(
    """
WITH input AS (
    SELECT * FROM unnest(
        CAST(:events AS text[]), CAST(:sids AS text[]), CAST(:statuses AS text[]),
        CAST(:codes AS int[]), CAST(:sources AS text[]), CAST(:tokens AS text[]),
        CAST(:times AS timestamptz[])
    ) AS t(event_id, message_sid, status, error_code, source, token, occurred_at)
),
resolved AS (
    SELECT COALESCE(by_event.event_id, by_sid.event_id, i.event_id) AS event_id,
        i.message_sid, i.status, i.error_code, i.source, i.token, i.occurred_at,
        (by_event.event_id IS NOT NULL OR by_sid.event_id IS NOT NULL) AS known
    FROM input i
    LEFT JOIN deliveries by_event ON by_event.event_id = i.event_id
    LEFT JOIN deliveries by_sid ON by_sid.message_sid = i.message_sid
),
inserted AS (
    INSERT INTO status_history (event_id, message_sid, status, error_code, source,
        idempotency_token, occurred_at)
    SELECT event_id, message_sid, status, error_code, source, token, occurred_at
    FROM resolved
    ON CONFLICT (idempotency_token) DO NOTHING
    RETURNING idempotency_token
)
SELECT r.token, r.event_id, r.known, r.error_code, (ins.idempotency_token IS NOT NULL) AS new
FROM resolved r LEFT JOIN inserted ins ON ins.idempotency_token = r.token
"""
)

_SUPPRESS = text(
    "INSERT INTO suppressions (phone_hash, phone_masked, reason) "
    "SELECT phone_hash, phone_masked, :reason FROM deliveries WHERE event_id = ANY(:ids) "
    "ON CONFLICT (phone_hash) DO NOTHING"
)


@dataclass(frozen=True)
class Applied:
    new: int
    unknown: int
    moved: dict[str, str]  # event id -> the state it moved to


class StatusProjection:
    """Applies a batch of delivery-status records in one transaction; safe to replay."""

    def __init__(self, engine: AsyncEngine, metrics: CallbackMetrics) -> None:
        self._engine = engine
        self._metrics = metrics

    async def apply(self, records: Sequence[DeliveryStatusChanged]) -> Applied:
        """Raises what SQLAlchemy raises; nothing is written then (one transaction)."""
        twilio = _unique_by_token(r for r in records if r.source in TWILIO_SOURCES)
        touched = {r.eventId for r in records if r.eventId}
        new = unknown = 0
        opted_out: set[str] = set()
        async with self._engine.begin() as connection:
            if twilio:
                rows = (await connection.execute(_RECORD, _params(twilio))).mappings().all()
                for row in rows:
                    if row["event_id"]:
                        touched.add(row["event_id"])
                    if not row["new"]:
                        continue
                    new += 1
                    if not row["known"]:
                        unknown += 1
                    elif row["error_code"] == OPT_OUT_ERROR:
                        opted_out.add(row["event_id"])
            moved: dict[str, str] = {}
            if touched:
                for step in await derive_twilio_states(connection, sorted(touched)):
                    moved[step.event_id] = step.state
                    self._observe(step.state, step.accepted_at, step.occurred_at)
            if opted_out:
                params = {"ids": sorted(opted_out), "reason": f"error_{OPT_OUT_ERROR}"}
                await connection.execute(_SUPPRESS, params)
        for record in records:
            self._metrics.projected.labels(record.source).inc()
        self._metrics.unknown_sid.inc(unknown)
        if unknown:
            log.warning("status for a message we do not know", extra={"records": unknown})
        return Applied(new=new, unknown=unknown, moved=moved)

    def _observe(
        self, state: DeliveryState, accepted_at: datetime | None, delivered_at: datetime | None
    ) -> None:
        delivered = wire_status(state) is Status.DELIVERED
        if delivered and accepted_at is not None and delivered_at is not None:
            seconds = (delivered_at - accepted_at).total_seconds()
            self._metrics.delivery_latency.observe(max(seconds, 0.0))


def idempotency_token(record: DeliveryStatusChanged) -> str:
    """Twilio's token, or one derived from what the step is, so a repeat maps to it."""
    if record.idempotencyToken:
        return record.idempotencyToken
    return f"{record.source}:{record.messageSid}:{record.status.value}:{record.errorCode}"


def _unique_by_token(records: Iterable[DeliveryStatusChanged]) -> list[DeliveryStatusChanged]:
    seen: dict[str, DeliveryStatusChanged] = {}
    for record in records:
        seen.setdefault(idempotency_token(record), record)
    return list(seen.values())


def _params(records: Sequence[DeliveryStatusChanged]) -> dict[str, object]:
    return {
        "events": [r.eventId for r in records],
        "sids": [r.messageSid for r in records],
        "statuses": [r.status.value for r in records],
        "codes": [r.errorCode for r in records],
        "sources": [r.source for r in records],
        "tokens": [idempotency_token(r) for r in records],
        "times": [r.occurredAt for r in records],
    }
