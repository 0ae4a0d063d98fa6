"""Missing callbacks: poll Twilio for messages stuck in a non-final status, record what it says.

Twilio sends no callback for `queued` and may send none at all. Each round takes the
deliveries at `accepted`, `queued` or `sent` not updated for `stuck_after` seconds
(touching `updated_at`, under SKIP LOCKED, so replicas and the next rounds leave them be
for another horizon), fetches each message and publishes a `source="reconciler"` record
through the outbox when Twilio knows more than we do. The token
`reconciler:<sid>:<status>` makes a finding published once, whoever finds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from schemas.events import DeliveryStatusChanged, Status
from sms_relay.adapters.postgres.deliveries import take_stuck_accepted
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import DatabaseUnavailableError, OutboxUnavailableError, ProviderError
from sms_relay.metrics import CallbackMetrics
from sms_relay.periodic import every
from sms_relay.status.outbox import OutboundRecord, Outbox
from sms_relay.status.status_ports import FetchedMessage
from sms_relay.status.status_projection import rank

log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[FetchedMessage]]


class MissingCallbacksReconciler:
    def __init__(
        self,
        engine: AsyncEngine,
        fetch: Fetch,
        outbox: Outbox,
        metrics: CallbackMetrics,
        *,
        topic: str,
        stuck_after_seconds: float,
        batch_size: int = 100,
        concurrency: int = 4,
    ) -> None:
        self._engine = engine
        self._fetch = fetch
        self._outbox = outbox
        self._metrics = metrics
        self._topic = topic
        self._stuck_after = stuck_after_seconds
        self._batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)

    async def reconcile_once(self) -> int:
        """Check one batch of stuck messages; returns how many had news.

        Raises DatabaseUnavailableError; Twilio errors are counted and the message is
        looked at again after another horizon.
        """
        rows = await take_stuck_accepted(self._engine, self._stuck_after, self._batch_size)
        results = await asyncio.gather(*(self._check(row) for row in rows))
        return sum(results)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        await every(
            interval,
            self.reconcile_once,
            stop,
            what="reconciler round",
            survives=(DatabaseUnavailableError,),
        )

    async def _check(self, row: dict[str, str]) -> bool:
        async with self._slots:
            try:
                found = await self._fetch(row["message_sid"])
            except ProviderError as error:
                self._metrics.reconciler_checks.labels("error").inc()
                log.warning("reconciler could not fetch a message", extra={"error": str(error)})
                return False
        if found.status not in Status.__members__.values() or rank(found.status) <= rank(
            row["state"]
        ):
            self._metrics.reconciler_checks.labels("unchanged").inc()
            return False
        record = DeliveryStatusChanged(
            eventId=row["event_id"],
            kind=row["event_type"],
            messageSid=found.sid,
            status=Status(found.status),
            errorCode=found.error_code,
            source="reconciler",
            to=row["phone_masked"],
            reason="missing_callback",
            idempotencyToken=f"reconciler:{found.sid}:{found.status}",
        )
        try:
            await self._outbox.publish(
                OutboundRecord(
                    topic=self._topic,
                    key=row["event_id"].encode(),
                    value=record.model_dump_json().encode(),
                    token=record.idempotencyToken or "",
                )
            )
        except OutboxUnavailableError:
            self._metrics.reconciler_checks.labels("error").inc()
            return False
        self._metrics.reconciler_checks.labels("changed").inc()
        return True
