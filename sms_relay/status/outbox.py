"""Durable publishing: Kafka first and the PostgreSQL outbox when it does not answer, or
the outbox row first where a use case writes in the same transaction.

    publish_kafka_first(record)                      status callbacks
      1. produce (acks=all), wait up to the deadline ──► acknowledged ──► PUBLISHED
      2. no ack in time, or refused: insert into callback_outbox, ON CONFLICT DO NOTHING
         ├─ inserted ──► OUTBOXED (the relay publishes it; a late ack marks it published)
         └─ conflict: the token (or content key) was outboxed before ──► DUPLICATE
      PostgreSQL unreachable in step 2 ──► OutboxUnavailableError (the webhook answers 503)

    publish(record, also)                 Verify (its row in the same transaction), the reconciler
      1. insert the row (and `also`'s writes) ──► conflict ──► DUPLICATE
      2. produce, wait up to the deadline ──► PUBLISHED, or no answer ──► OUTBOXED
      PostgreSQL unreachable in step 1: produce anyway ──► PUBLISHED_UNTRACKED, or
      neither reachable ──► OutboxUnavailableError

Why Kafka first: a 2xx needs one durable copy, and Kafka's acks=all is one; a row
written on every callback too cost more CPU than the rest of the handler (the insert,
the marking, PostgreSQL's own work on the same cores). The price is where replays are
caught: with Kafka up, a replay (Twilio's retry, or a captured request sent again with a
fresh token) is published again rather than answered `duplicate`. It is the same record:
its idempotency token is derived from what the signature covers (MessageSid,
MessageStatus, ErrorCode: `status_projection.idempotency_token`), never from the
unsigned I-Twilio-Idempotency-Token, so every reader that drops copies by token
(the status projection: `status_history` is unique on it) sees it once.

The outbox inserts commit the rows of every caller waiting at that moment in one
statement (a group commit, in autocommit); a use case that adds its own write gets a
transaction of its own. Acknowledged rows are marked published together, off the path.

Crash windows, none of which loses a 2xx or makes a second effect for a reader:
- dying before the ack: no answer went out; Twilio retries, a copy with the same token
  may reach Kafka (librdkafka still had it), which readers drop;
- a record that missed the deadline stays in librdkafka's queue until
  `message.timeout.ms` and may be acknowledged after its row was written: the row is then
  marked, and the relay only takes rows older than that timeout, so the two never publish
  the same row; dying before the marking makes the relay publish a copy (same token);
- `publish`: dying between the insert and the produce leaves an unpublished row for the
  relay; between the ack and the marking, a copy (same token).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sms_relay.errors import (
    BrokerUnavailableError,
    DatabaseUnavailableError,
    OutboxUnavailableError,
)
from sms_relay.metrics import CallbackMetrics
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

    async def publish_kafka_first(self, record: OutboundRecord) -> Durability:
        """Make `record` durable: Kafka's ack, else an outbox row. Raises
        OutboxUnavailableError when neither took it."""
        pending: asyncio.Future[None] | None = None
        if not self.kafka_suspect:
            try:
                pending = self._producer.produce(
                    record.topic, record.value, record.key, record.kafka_headers()
                )
                acknowledged = await _settled_within(pending, self._deadline)
            except BrokerUnavailableError as error:
                pending = None  # refused: it will not be acknowledged later
                log.warning("kafka refused a record; outboxing it", extra={"error": str(error)})
            else:
                if acknowledged:
                    self.kafka_answered()
                    return Durability.PUBLISHED
                self._missed_deadline()
        try:
            row_id = await self._insert(record, None)
        except DatabaseUnavailableError as error:
            raise OutboxUnavailableError("neither Kafka nor PostgreSQL took the record") from error
        if row_id is None:
            return Durability.DUPLICATE
        if pending is not None:
            # Still in librdkafka's queue: a late ack marks the row, so the relay skips it.
            pending.add_done_callback(lambda done: self._acknowledged_late(row_id, done))
        return Durability.OUTBOXED

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
            self._missed_deadline()
            future.add_done_callback(lambda done: self._acknowledged_late(row_id, done))
            return Durability.OUTBOXED
        except BrokerUnavailableError as error:
            log.warning("kafka refused a record; the relay retries it", extra={"error": str(error)})
            return Durability.OUTBOXED
        self.kafka_answered()
        self._mark_soon(row_id)
        return Durability.PUBLISHED

    def _missed_deadline(self) -> None:
        self._metrics.kafka_deadline_missed.inc()
        self._suspect_until = time.monotonic() + self._suspect_for

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

    def _acknowledged_late(self, row_id: int, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # failed for good: the row stays for the relay
        self._mark_soon(row_id)


async def _settled_within(future: asyncio.Future[None], seconds: float) -> bool:
    """Whether `future` settled within `seconds`; never cancels it (librdkafka still
    holds the record). Lighter than asyncio.timeout around asyncio.shield, which this
    path paid on every callback. Raises the future's error (BrokerUnavailableError)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_done: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    if not future.done():
        return False
    future.result()
    return True
