"""Status projection: delivery-status records into `status_history` and `deliveries`.

Idempotent and order-independent. Each record from Twilio (callbacks, reconciler) is
inserted into `status_history` once, by its idempotency token. Then each touched
delivery's state is *derived* from its history: the highest-ranked Twilio status wins
(accepted < queued < sent < delivered = undelivered = failed = canceled < read), so a late
`sent` never overwrites `delivered`, the first final status stays, and a callback that
arrives before the consumer recorded `accepted` is applied when `accepted` comes.

The derivation is the ledger's (`ProjectionWrites.derive_twilio_states` in
`sms_relay.status.status_ports`: the ledger owns every write to `deliveries`). Only rows at
`accepted` or past it move: `claimed`, `sending`, `retry_scheduled`, `suppressed` and
`dead_lettered` belong to the consumer.
Twilio's own `sending` is kept in the history but never written to `deliveries.state`,
where `sending` means "a send of ours is in flight" to the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas.events import DeliveryStatusChanged, Status
from sms_relay.domain.states import TWILIO_RANK, DeliveryState, wire_status
from sms_relay.domain.twilio_codes import OPT_OUT_ERROR
from sms_relay.metrics import CallbackMetrics
from sms_relay.status.status_ports import ProjectionStore, StatusStep

log = logging.getLogger(__name__)


TWILIO_SOURCES = ("callbacks", "reconciler")


def rank(status: str) -> int:
    """-1 for states the projection never writes (the ledger's own, Twilio's `sending`)."""
    return TWILIO_RANK.get(status, -1)


@dataclass(frozen=True)
class Applied:
    new: int
    unknown: int
    moved: dict[str, str]  # event id -> the state it moved to


class StatusProjection:
    """Applies a batch of delivery-status records in one transaction; safe to replay."""

    def __init__(self, store: ProjectionStore, metrics: CallbackMetrics) -> None:
        self._store = store
        self._metrics = metrics

    async def apply(self, records: Sequence[DeliveryStatusChanged]) -> Applied:
        """Raises DatabaseUnavailableError; nothing is written then (one transaction)."""
        twilio = _unique_by_token(r for r in records if r.source in TWILIO_SOURCES)
        touched = {r.eventId for r in records if r.eventId}
        new = unknown = 0
        opted_out: set[str] = set()
        async with self._store.transaction() as writes:
            if twilio:
                for step in await writes.record_steps([_step(r) for r in twilio]):
                    if step.event_id:
                        touched.add(step.event_id)
                    if not step.new:
                        continue
                    new += 1
                    if not step.known:
                        unknown += 1
                    elif step.error_code == OPT_OUT_ERROR and step.event_id:
                        opted_out.add(step.event_id)
            moved: dict[str, str] = {}
            if touched:
                for move in await writes.derive_twilio_states(sorted(touched), TWILIO_SOURCES):
                    moved[move.event_id] = move.state
                    self._observe(move.state, move.accepted_at, move.occurred_at)
            if opted_out:
                await writes.suppress_recipients(sorted(opted_out), f"error_{OPT_OUT_ERROR}")
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
    """The record's token, or one derived from what the step is, so a repeat maps to it."""
    if record.idempotencyToken:
        return record.idempotencyToken
    return step_token(record.source, record.messageSid, record.status.value, record.errorCode)


def step_token(source: str, message_sid: str | None, status: str, error_code: int | None) -> str:
    """What a step is, as a token: the same for every copy of it, whoever sent it again."""
    return f"{source}:{message_sid}:{status}:{error_code}"


def _unique_by_token(records: Iterable[DeliveryStatusChanged]) -> list[DeliveryStatusChanged]:
    seen: dict[str, DeliveryStatusChanged] = {}
    for record in records:
        seen.setdefault(idempotency_token(record), record)
    return list(seen.values())


def _step(record: DeliveryStatusChanged) -> StatusStep:
    return StatusStep(
        event_id=record.eventId,
        message_sid=record.messageSid,
        status=record.status.value,
        error_code=record.errorCode,
        source=record.source,
        token=idempotency_token(record),
        occurred_at=record.occurredAt,
    )
