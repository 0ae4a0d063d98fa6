"""The scheduler: takes the scheduled sends that are due and hands them to the delivery
core, the same claim, checks, fencing, lease and in-doubt rules as every other send.

Its offset long committed, a scheduled event's only durable trace is its row in the
ledger (its state) and its scheduled send (what is needed to send it). That row stays
until the event settles for good and its status record is reported (a crash in between:
taken again, its record published again): an event that must wait (busy, in doubt, throttled) or
retry is put back with the time it is due again, and is retried here, never on a retry
topic, until it is sent or its appointment starts (`expired`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta

from pydantic import ValidationError

from schemas.events import Status
from sms_relay.clock import SYSTEM_CLOCK, Clock
from sms_relay.delivery.delivery_ports import Job, Ledger, Result
from sms_relay.delivery.service import DeliveryService
from sms_relay.domain.outcomes import WAITING, Outcome
from sms_relay.kinds.event_kind import EventKind

log = logging.getLogger(__name__)

# A transient failure is tried again this long after, when no tier names a delay.
RETRY_SECONDS = 30.0


class Scheduler:
    def __init__(
        self,
        ledger: Ledger,
        service: DeliveryService,
        kinds: Mapping[str, EventKind],
        publish: Callable[[Sequence[Result]], Awaitable[None]],
        *,
        batch_size: int = 100,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._ledger = ledger
        self._service = service
        self._kinds = kinds
        self._publish = publish
        self._batch_size = batch_size
        self._clock = clock

    async def run_once(self) -> int:
        """Send (or settle) what is due now; returns how many were taken. Raises what the
        ledger or `publish` raises (what was taken is taken again after its lease)."""
        sends = await self._ledger.take_due(self._batch_size)
        jobs = []
        for send in sends:
            kind = self._kinds.get(send.kind)
            if kind is None:  # served by another process: it takes it after the lease
                continue
            try:
                event = kind.model.model_validate_json(send.payload)
            except ValidationError as error:
                log.error(  # never the value: only where it failed
                    "scheduled event no longer valid; left for an operator",
                    extra={"eventId": send.event_id, "error": str(error.errors()[0]["loc"])},
                )
                continue
            jobs.append(Job.of(kind, event, attempts=0, tier_index=-1, from_schedule=True))
        if not jobs:
            return len(sends)
        results = await self._service.process(jobs)
        now = self._clock.now()
        again: dict[str, datetime] = {}
        for result in results:
            if result.outcome in WAITING:
                again[result.job.event.eventId] = now + timedelta(seconds=result.wait_seconds)
            elif result.outcome is Outcome.RETRY_SCHEDULED:
                delay = result.retry_tier.delay_seconds if result.retry_tier else RETRY_SECONDS
                again[result.job.event.eventId] = now + timedelta(seconds=delay)
        settled = [r for r in results if r.outcome not in WAITING]
        await self._publish(settled)
        reported: list[tuple[str, Status]] = [
            (r.job.event.eventId, r.report) for r in settled if r.report is not None
        ]
        await self._service.mark_reported(reported)
        await self._ledger.put_back(again)
        return len(sends)
