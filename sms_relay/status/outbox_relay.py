"""The outbox relay: unpublished `callback_outbox` rows to Kafka once it answers, in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sms_relay.errors import BrokerUnavailableError, DatabaseUnavailableError
from sms_relay.metrics import CallbackMetrics
from sms_relay.periodic import every
from sms_relay.status.status_ports import OutboxRows, Publisher

log = logging.getLogger(__name__)


class OutboxRelay:
    """Publishes unpublished outbox rows in order, once Kafka answers (the retention job
    prunes published ones).

    Rows younger than `grace_seconds` may still be in a webhook's hands (or in
    librdkafka's queue), so they are left alone. Replicas share the work with
    FOR UPDATE SKIP LOCKED.
    """

    def __init__(
        self,
        rows: OutboxRows,
        producer: Publisher,
        metrics: CallbackMetrics,
        *,
        grace_seconds: float,
        message_timeout_seconds: float,
        on_published: Callable[[], None] = lambda: None,
        batch_size: int = 500,
    ) -> None:
        self._rows = rows
        self._producer = producer
        self._metrics = metrics
        self._grace = grace_seconds
        self._wait = message_timeout_seconds + 1.0
        self._on_published = on_published
        self._batch_size = batch_size

    async def drain_once(self) -> int:
        """Publish one batch; returns how many rows were published.

        Raises DatabaseUnavailableError; Kafka failures leave the rows for the next round.
        """
        async with self._rows.take_unpublished(self._grace, self._batch_size) as batch:
            rows = batch.rows
            if not rows:
                return 0
            futures = [
                self._producer.produce(
                    row.topic,
                    row.value,
                    row.key,
                    [(k, str(v).encode()) for k, v in row.headers.items()] or None,
                )
                for row in rows
            ]
            # librdkafka settles every record within message.timeout.ms: wait for the
            # verdict rather than guess, so a late ack is never published twice.
            async with asyncio.timeout(self._wait):
                outcomes = await asyncio.gather(*futures, return_exceptions=True)
            published = [
                row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome is None
            ]
            if published:
                await batch.mark_published(published)
        if published:
            self._metrics.outbox_relayed.inc(len(published))
            self._on_published()
            log.info("outbox relayed", extra={"records": len(published)})
        return len(published)

    async def pending(self) -> int:
        return await self._rows.pending()

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Drain until `stop` is set; PostgreSQL or Kafka trouble only delays a round."""

        async def round_() -> None:
            while await self.drain_once() == self._batch_size:
                pass
            self._metrics.outbox_pending.set(await self.pending())

        await every(
            interval,
            round_,
            stop,
            what="outbox relay round",
            # TimeoutError: Kafka's verdicts did not all come within message.timeout.ms.
            survives=(DatabaseUnavailableError, TimeoutError, BrokerUnavailableError),
        )
