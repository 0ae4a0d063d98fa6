"""Durable publishing: a PostgreSQL outbox row first, Kafka within a deadline, a relay after.

    publish(record)
      1. insert the row into callback_outbox, ON CONFLICT DO NOTHING
         └─ conflict: the token (or the content key) was seen before ──► DUPLICATE
      2. produce (acks=all), wait up to the deadline
         ├─ acknowledged ──► PUBLISHED (marking published_at follows, batched)
         └─ no answer ──► the row stays unpublished ──► OUTBOXED (the relay publishes it)
      PostgreSQL unreachable in step 1: produce anyway ──► PUBLISHED_UNTRACKED, or
      neither reachable ──► OutboxUnavailableError (the webhook answers 503).

Step 1 commits the rows of every webhook waiting at that moment in one statement (a
group commit, in autocommit: one round trip for all of them), unless a use case adds its
own write, which gets a transaction of its own. The marking of step 2 is off the
request's path: acknowledged rows are marked together in the same way. Each webhook
still answers only once its own row is committed and its record acknowledged.

Crash windows: dying between 1 and 2 leaves an unpublished row, which the relay
publishes (no loss). Dying between the ack and the marking (a few milliseconds, the
batching included) makes the relay publish the record a second time (at-least-once);
its idempotency token lets every reader, the status projection included, drop the copy.
A record that missed the deadline is still in librdkafka's queue until
`message.timeout.ms`: if it is acknowledged late the row is marked then, and the relay
only takes rows older than that timeout, so the two never publish the same row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sms_relay.errors import (
    BrokerUnavailableError,
    DatabaseUnavailableError,
    OutboxUnavailableError,
)
from sms_relay.metrics import CallbackMetrics
from sms_relay.periodic import every
from sms_relay.status.status_ports import AlsoInTransaction, OutboxRows, Publisher, RecordHeaders

log = logging.getLogger(__name__)


class Durability(StrEnum):
    PUBLISHED = "published"  # the broker acknowledged it (acks=all)
    OUTBOXED = "outboxed"  # in PostgreSQL; the relay publishes it once Kafka answers
    DUPLICATE = "duplicate"  # its token was taken before: already durable, not published again
    PUBLISHED_UNTRACKED = "published_untracked"  # PostgreSQL away; acknowledged, no token kept


@dataclass(frozen=True)
class OutboundRecord:
    topic: str
    key: bytes | None
    value: bytes
    # Unique per logical record (Twilio's I-Twilio-Idempotency-Token for callbacks).
    token: str
    headers: dict[str, str] = field(default_factory=dict)
    # Unique per content where a token alone can be forged (a replayed status callback).
    content_key: str | None = None

    def kafka_headers(self) -> RecordHeaders | None:
        return [(k, v.encode()) for k, v in self.headers.items()] or None


class Outbox:
    """Publishes records durably: see the module docstring for the order of steps."""

    def __init__(
        self,
        rows: OutboxRows,
        producer: Publisher,
        metrics: CallbackMetrics,
        *,
        deadline_seconds: float,
        message_timeout_seconds: float,
    ) -> None:
        self._rows = rows
        self._producer = producer
        self._metrics = metrics
        self._deadline = deadline_seconds
        # After a missed deadline, skip waiting for Kafka for a while: the relay probes it.
        self._suspect_for = message_timeout_seconds
        self._suspect_until = 0.0
        self._unmarked: list[int] = []  # acknowledged, published_at not yet written
        self._marking: asyncio.Task[None] | None = None
        self._uninserted: list[tuple[OutboundRecord, asyncio.Future[int | None]]] = []
        self._inserting: asyncio.Task[None] | None = None

    @property
    def kafka_suspect(self) -> bool:
        return time.monotonic() < self._suspect_until

    def kafka_answered(self) -> None:
        self._suspect_until = 0.0

    async def publish(
        self, record: OutboundRecord, also: AlsoInTransaction | None = None
    ) -> Durability:
        """Make `record` durable once. Raises OutboxUnavailableError when nothing took it."""
        try:
            row_id = await self._insert(record, also)
        except DatabaseUnavailableError as error:
            log.error("outbox insert failed; publishing without it", extra={"error": repr(error)})
            return await self._publish_untracked(record)
        if row_id is None:
            return Durability.DUPLICATE
        if self.kafka_suspect:
            return Durability.OUTBOXED
        try:
            future = self._producer.produce(
                record.topic, record.value, record.key, record.kafka_headers()
            )
            async with asyncio.timeout(self._deadline):
                await asyncio.shield(future)
        except TimeoutError:
            self._metrics.kafka_deadline_missed.inc()
            self._suspect_until = time.monotonic() + self._suspect_for
            future.add_done_callback(lambda done: self._acknowledged_late(row_id, done))
            return Durability.OUTBOXED
        except BrokerUnavailableError as error:
            log.warning("kafka refused a record; the relay retries it", extra={"error": str(error)})
            return Durability.OUTBOXED
        self.kafka_answered()
        self._mark_soon(row_id)
        return Durability.PUBLISHED

    async def close(self) -> None:
        """Wait for the rows being inserted and the acknowledged rows being marked."""
        tasks = [t for t in (self._inserting, self._marking) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _insert(self, record: OutboundRecord, also: AlsoInTransaction | None) -> int | None:
        """The new row's id, or None when the token was taken.

        Raises DatabaseUnavailableError."""
        if also is None:
            done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
            self._uninserted.append((record, done))
            if self._inserting is None or self._inserting.done():
                self._inserting = asyncio.get_running_loop().create_task(self._insert_waiting())
            return await asyncio.shield(done)
        return await self._rows.insert_with(record, also)

    async def _insert_waiting(self) -> None:
        """Insert every waiting row in one statement, then those that arrived meanwhile."""
        while self._uninserted:
            waiting, self._uninserted = self._uninserted[:1000], self._uninserted[1000:]
            # A record whose token or content key an earlier one in the batch has is a copy.
            first: dict[str, int] = {}  # token -> its first record
            seen_content: set[str] = set()
            for n, (record, _) in enumerate(waiting):
                if record.token in first or record.content_key in seen_content:
                    continue
                first[record.token] = n
                if record.content_key is not None:
                    seen_content.add(record.content_key)
            try:
                ids = await self._rows.insert_many([waiting[n][0] for n in first.values()])
            except DatabaseUnavailableError as error:
                for _, done in waiting:
                    if not done.done():
                        done.set_exception(error)
                continue
            for n, (record, done) in enumerate(waiting):
                if not done.done():
                    mine = first.get(record.token) == n
                    done.set_result(ids.get(record.token) if mine else None)

    async def _publish_untracked(self, record: OutboundRecord) -> Durability:
        try:
            await self._producer.send(
                record.topic,
                record.value,
                record.key,
                record.kafka_headers(),
                timeout=self._deadline,
            )
        except BrokerUnavailableError as error:
            raise OutboxUnavailableError("neither PostgreSQL nor Kafka took the record") from error
        return Durability.PUBLISHED_UNTRACKED

    def _mark_soon(self, row_id: int) -> None:
        """Queue a row to be marked published. One task marks whatever is waiting in one
        statement, then what arrived meanwhile: no timer, and no webhook waits for it."""
        self._unmarked.append(row_id)
        if self._marking is None or self._marking.done():
            self._marking = asyncio.get_running_loop().create_task(self._mark_waiting())

    async def _mark_waiting(self) -> None:
        while self._unmarked:
            ids, self._unmarked = self._unmarked, []
            await self._mark(ids)

    async def _mark(self, ids: list[int]) -> None:
        """Best effort: an unmarked row is published again by the relay (a duplicate)."""
        try:
            await self._rows.mark_published(ids)
        except DatabaseUnavailableError as error:
            log.warning("could not mark outbox rows published", extra={"error": repr(error)})

    def _acknowledged_late(self, row_id: int, done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # failed for good: the row stays for the relay
        self._mark_soon(row_id)


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
