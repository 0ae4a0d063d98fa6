"""The consume loop: poll a batch, decide every record, publish the effects, commit.

A batch is committed only after each record's effect is durable (settled in PostgreSQL
and acknowledged by Kafka). Rebalance callbacks run inside `consume()`, between batches,
so revoked partitions never have work in flight. A failed batch is rewound and tried
again; the ledger makes the second pass idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.records import Rejected, dlq_headers, now_ms, parse, retry_headers, status_record
from schemas.events import Status
from sms_relay.adapters.kafka import AsyncProducer, decode_headers, position
from sms_relay.metrics import ConsumerMetrics
from sms_relay.sending import DeliveryService, Job, Outcome, Result
from sms_relay.settings import Settings
from sms_relay.templates import EventKind

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class ConsumeLoop:
    def __init__(
        self,
        consumer: Consumer,
        producer: AsyncProducer,
        service: DeliveryService,
        settings: Settings,
        metrics: ConsumerMetrics,
        kind: EventKind,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._service = service
        self._kafka = settings.kafka
        self._metrics = metrics
        self._kind = kind
        tiers = settings.sending.tier_delays()
        self._tier_of_topic = {
            self._kafka.retry_topic(name): i for i, (name, _) in enumerate(tiers)
        }
        self._paused: dict[Partition, int] = {}  # partition -> when its next record is due (ms)
        # A batch must finish well within max.poll.interval.ms (300 s): at most ~30 s of
        # sending at the configured rate, or the group would evict us mid-batch.
        rate = settings.sending.messages_per_second
        self._batch_size = max(1, min(settings.sending.batch_size, int(rate * 30)))

    @property
    def topics(self) -> list[str]:
        return [self._kafka.topic_order_shipped, *self._tier_of_topic]

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer.subscribe(self.topics, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._resume_due()
            batch: list[Message] = await loop.run_in_executor(
                None, self._consumer.consume, self._batch_size, 0.5
            )
            if batch:
                await self._run_batch(batch)

    def _on_revoke(self, _consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._paused.pop((tp.topic, tp.partition), None)
        self._metrics.paused_partitions.set(len(self._paused))

    def _resume_due(self) -> None:
        due = [p for p, when in self._paused.items() if when <= now_ms()]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])
            for partition in due:
                del self._paused[partition]
            self._metrics.paused_partitions.set(len(self._paused))

    async def _run_batch(self, batch: list[Message]) -> None:
        started = time.perf_counter()
        records = [m for m in batch if not self._is_error(m)]
        oldest = min((m.timestamp()[1] for m in records), default=now_ms())
        self._metrics.oldest_unprocessed_age.set(max(0.0, (now_ms() - oldest) / 1000))
        try:
            await self._handle(records)
        except Exception as error:
            # PostgreSQL or Kafka went away mid-batch: nothing was committed, so rewind
            # and try the same records again once they answer.
            log.warning(
                "batch failed; rewinding", extra={"error": type(error).__name__}, exc_info=True
            )
            self._rewind(records)
            await asyncio.sleep(1.0)
        finally:
            self._metrics.batch_duration.observe(time.perf_counter() - started)
            self._metrics.oldest_unprocessed_age.set(0)

    def _is_error(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": error.str()})
        return True

    async def _handle(self, records: list[Message]) -> None:
        jobs: dict[str, tuple[Job, Message]] = {}
        rejected: list[tuple[Message, Rejected]] = []
        positions: dict[Partition, int] = {}
        blocked: set[Partition] = set()
        duplicates_in_batch = 0
        for message in records:
            topic, number, offset = position(message)
            partition = (topic, number)
            if partition in blocked:
                continue
            self._metrics.events_consumed.labels(topic).inc()
            headers = decode_headers(message)
            tier_index = self._tier_of_topic.get(topic, -1)
            not_before = int(headers.get("not-before", "0") or 0)
            if tier_index >= 0 and not_before > now_ms():
                self._pause_until(message, not_before)
                blocked.add(partition)
                continue
            positions[partition] = offset + 1
            parsed = parse(self._kind, message)
            if isinstance(parsed, Rejected):
                rejected.append((message, parsed))
            elif parsed.eventId in jobs:
                duplicates_in_batch += 1
            else:
                attempts = int(headers.get("attempt", "0") or 0)
                jobs[parsed.eventId] = (Job(self._kind, parsed, attempts, tier_index), message)

        results = await self._service.process([job for job, _ in jobs.values()])
        self._metrics.outcomes.labels(Outcome.DUPLICATE.value).inc(duplicates_in_batch)
        self._metrics.outcomes.labels("rejected").inc(len(rejected))
        effects: list[Awaitable[None]] = [self._reject(m, why) for m, why in rejected]
        reported = []
        for result in results:
            effects.extend(self._publish(result, jobs[result.job.event.eventId][1]))
            if result.report is not None:
                reported.append(result.job.event.eventId)
        await asyncio.gather(*effects)
        await self._service.mark_reported(reported)
        await self._commit(positions)

    def _pause_until(self, message: Message, due_ms: int) -> None:
        topic, partition, offset = position(message)
        tp = TopicPartition(topic, partition, offset)
        self._consumer.seek(tp)
        self._consumer.pause([tp])
        self._paused[(topic, partition)] = due_ms
        self._metrics.paused_partitions.set(len(self._paused))

    async def _reject(self, message: Message, why: Rejected) -> None:
        log.warning(
            "event rejected",
            extra={"eventId": why.event_id, "reason": why.reason, "error": why.error},
        )
        dlq = self._producer.produce(
            self._kafka.dlq_topic,
            message.value() or b"",
            message.key(),
            dlq_headers(message, why.reason, 0, why.error),
        )
        status = self._producer.produce(
            self._kafka.topic_delivery_status,
            status_record(Status.REJECTED, why.event_id, phone=None, attempt=0, reason=why.reason),
            why.event_id,
        )
        await asyncio.gather(dlq, status)

    def _publish(self, result: Result, message: Message) -> list[Awaitable[None]]:
        event = result.job.event
        effects: list[Awaitable[None]] = []
        if result.outcome in (Outcome.RETRY_SCHEDULED, Outcome.BUSY) and result.retry_tier:
            tier, delay = result.retry_tier
            effects.append(
                self._producer.produce(
                    self._kafka.retry_topic(tier),
                    message.value() or b"",
                    message.key(),
                    retry_headers(
                        message, result.attempts, now_ms() + int(delay * 1000), result.error
                    ),
                )
            )
        if result.outcome is Outcome.DEAD_LETTERED:
            effects.append(
                self._producer.produce(
                    self._kafka.dlq_topic,
                    message.value() or b"",
                    message.key(),
                    dlq_headers(message, "retries_exhausted", result.attempts, result.error),
                )
            )
        if result.report is not None:
            effects.append(
                self._producer.produce(
                    self._kafka.topic_delivery_status,
                    status_record(
                        result.report,
                        event.eventId,
                        phone=event.phone,
                        attempt=result.attempts,
                        message_sid=result.message_sid,
                        error_code=result.error_code,
                        reason=result.error,
                    ),
                    event.eventId,
                )
            )
        log.info(
            "event settled",
            extra={
                "eventId": event.eventId,
                "outcome": result.outcome.value,
                "messageSid": result.message_sid,
                "attempt": result.attempts,
                "to": event.phone,  # masked by the log formatter
                "errorCode": result.error_code,
            },
        )
        return effects

    async def _commit(self, positions: dict[Partition, int]) -> None:
        if not positions:
            return
        offsets = [TopicPartition(t, p, offset) for (t, p), offset in positions.items()]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                None, lambda: self._consumer.commit(offsets=offsets, asynchronous=False)
            )
        except KafkaException as error:
            # Partitions moved on (rebalance, fenced member): the new owner re-reads them
            # and the ledger turns the re-read into duplicates.
            log.warning("offset commit failed", extra={"error": str(error.args[0])})

    def _rewind(self, records: list[Message]) -> None:
        first: dict[Partition, int] = {}
        for message in records:
            topic, partition, offset = position(message)
            first.setdefault((topic, partition), offset)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException:
                log.warning("rewind failed; partition no longer assigned")
