"""The consume loop: poll a batch, decide every record, publish the effects, commit.

A batch's offsets are committed only after each of its records' effects is durable
(settled in PostgreSQL and acknowledged by Kafka). Up to four batches may be in flight,
so the next ones send while the last sends of the earlier ones finish; offsets are still
committed in poll order, and a batch waits for its predecessor before claiming an eventId
the predecessor still holds. A failed batch fails its successors too; all their records
are rewound and tried again, and the ledger makes that idempotent.

Every call into the consumer happens on the polling thread (commits ride along with the
next poll), because librdkafka runs rebalance callbacks inside the poll: when partitions
are revoked, the callback waits for the batches in flight and commits them right there,
before the partitions move on.

A record whose event must wait (held by another live lease, our own lease ran short, or
in doubt and not listed by Twilio yet) is held back: its offset stays uncommitted, the
records behind it go on, and it is offered again when its wait is over. Waiting never
climbs the retry tiers, never stalls the partition and never spins.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from consumer.batch import Batch, Partition, decode
from consumer.effects import Effects
from consumer.intake import Intake
from consumer.records import now_ms
from sms_relay.adapters.kafka.clients import AsyncProducer, position
from sms_relay.delivery.ports import Job, Result
from sms_relay.delivery.service import DeliveryService
from sms_relay.domain.kinds import EventKind
from sms_relay.domain.outcomes import WAITING, Outcome
from sms_relay.metrics import ConsumerMetrics
from sms_relay.settings import Settings

log = logging.getLogger(__name__)

# Four measured +8-10% over two at 128 in flight (BENCHMARKS.md). Batches are cut so that
# all of them together hold about 2 s of sending at the configured rate: a revoke waits
# for what is in flight, and every member's rebalance waits for that revoke.
MAX_BATCHES_IN_FLIGHT = 4
SECONDS_OF_SENDING_IN_FLIGHT = 2
POLL_SECONDS = 0.5  # the longest wait for records (stop and due holds are looked at after)


class PredecessorFailedError(Exception):
    """An earlier batch failed: committing this one would skip its records."""


@dataclass
class _InFlight:
    batch: Batch
    task: asyncio.Task[None]


@dataclass(frozen=True)
class _Held:
    """A record kept back until `due` (monotonic): its event must wait."""

    due: float
    job: Job
    message: Message
    generation: int  # of the batch that fetched it

    @property
    def partition(self) -> Partition:
        topic, partition, _ = position(self.message)
        return topic, partition

    @property
    def offset(self) -> int:
        return position(self.message)[2]


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
        self._effects = Effects(producer, settings.kafka)
        self._service = service
        self._kafka = settings.kafka
        self._metrics = metrics
        self._kind = kind
        self._grace = settings.sending.shutdown_grace_seconds
        tiers = settings.sending.tier_delays()
        self._tier_of_topic = {
            self._kafka.retry_topic(name): i for i, (name, _) in enumerate(tiers)
        }
        self._paused: dict[Partition, int] = {}  # partition -> when its next record is due (ms)
        self._in_flight: deque[_InFlight] = deque()
        self._durable: dict[Partition, int] = {}  # next offset whose predecessors are done
        self._committed: dict[Partition, int] = {}
        self._held: dict[tuple[Partition, int], _Held] = {}  # (partition, offset) -> record
        self._offering: set[asyncio.Task[None]] = set()
        # Bumped whenever partitions are revoked or lost. Work fetched before a partition
        # was lost must not commit or hold it afterwards, even if it is ours again by
        # then: another member may have moved on (and held records) in between.
        self._generation = 0
        self._lost_at: dict[Partition, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # No poll while the pipeline is full, and a revoke or a shutdown waits for what is
        # in flight: keep it to ~2 s of sending at the configured rate, far within
        # max.poll.interval.ms (300 s) and SMS_SHUTDOWN_GRACE_SECONDS (20 s).
        rate = settings.sending.messages_per_second
        per_batch = int(rate * SECONDS_OF_SENDING_IN_FLIGHT / MAX_BATCHES_IN_FLIGHT)
        self._batch_size = max(1, min(settings.sending.batch_size, per_batch))
        self._intake = Intake(consumer, self._batch_size)

    @property
    def topics(self) -> list[str]:
        return [self._kafka.topic_order_shipped, *self._tier_of_topic]

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not stop.is_set():
                self._resume_due()
                # Never wait past the next held record's due time, so a throttled send
                # comes back after its backoff, not up to POLL_SECONDS later.
                next_due = self._offer_due()
                await self._reap()
                wait = min(POLL_SECONDS, max(0.001, next_due - time.monotonic()))
                if len(self._in_flight) >= MAX_BATCHES_IN_FLIGHT:
                    await asyncio.wait({self._in_flight[0].task}, timeout=wait)
                    continue
                messages = await self._loop.run_in_executor(None, self._commit_and_poll, wait)
                if messages:
                    self._start(messages)
            if self._in_flight:  # stopping: let the batches in hand finish
                await asyncio.wait([f.task for f in self._in_flight])
            await self._reap()
            await self._loop.run_in_executor(None, self._commit)
        finally:
            for in_flight in self._in_flight:  # cancelled past the grace period
                in_flight.task.cancel()
            for task in list(self._offering):  # their records are read again by the next owner
                task.cancel()

    def _start(self, messages: list[Message]) -> None:
        batch = decode(messages, self._kind, self._tier_of_topic, self._pause_until, self._metrics)
        batch.generation = self._generation
        previous = self._in_flight[-1].task if self._in_flight else None
        held = any(batch.jobs.keys() & f.batch.jobs.keys() for f in self._in_flight)
        task = asyncio.create_task(self._finish(batch, previous, wait_first=held))
        self._in_flight.append(_InFlight(batch, task))

    async def _finish(
        self, batch: Batch, previous: asyncio.Task[None] | None, *, wait_first: bool
    ) -> None:
        started = time.perf_counter()
        self._metrics.oldest_unprocessed_age.set(max(0.0, (now_ms() - batch.oldest_ms) / 1000))
        if previous is not None and wait_first:
            # It still holds a claim on one of our eventIds: let it settle first.
            await asyncio.wait({previous})
        results = await self._service.process([job for job, _ in batch.jobs.values()])
        self._metrics.outcomes.labels(Outcome.DUPLICATE.value).inc(batch.duplicates)
        self._metrics.outcomes.labels("rejected").inc(len(batch.rejected))
        effects: list[Awaitable[None]] = [self._effects.reject(m, r) for m, r in batch.rejected]
        messages = {event_id: message for event_id, (_, message) in batch.jobs.items()}
        await self._publish(results, messages, effects, batch.generation)
        if previous is not None:
            await asyncio.wait({previous})
            if previous.cancelled() or previous.exception() is not None:
                raise PredecessorFailedError
        self._metrics.batch_duration.observe(time.perf_counter() - started)
        if len(self._in_flight) <= 1:
            self._metrics.oldest_unprocessed_age.set(0)

    async def _publish(
        self,
        results: list[Result],
        messages: dict[str, Message],
        effects: list[Awaitable[None]],
        generation: int,
    ) -> None:
        """Hold back the records that must wait; publish the others' records, then mark
        their steps reported. Holds are taken before any await, so a commit never passes
        a held record."""
        reported = []
        for result in results:
            message = messages[result.job.event.eventId]
            if result.outcome in WAITING:
                self._hold(result, message, generation)
                continue
            effects.extend(self._effects.publish(result, message))
            if result.report is not None:
                reported.append((result.job.event.eventId, result.report))
        await asyncio.gather(*effects)
        await self._service.mark_reported(reported)

    def _hold(self, result: Result, message: Message, generation: int) -> None:
        held = _Held(time.monotonic() + result.wait_seconds, result.job, message, generation)
        if not self._stale(held.partition, generation):  # else the new owner reads it
            self._held[(held.partition, held.offset)] = held

    def _stale(self, partition: Partition, generation: int) -> bool:
        return self._lost_at.get(partition, -1) > generation

    def _offer_due(self) -> float:
        """Offer the held records whose wait is over again, as one batch of their own;
        returns when the next of the others is due (monotonic). Their offsets are held,
        so they need no place in the ordered chain."""
        now = time.monotonic()
        due, next_due = [], math.inf
        # list() first: the polling thread may drop held records meanwhile (revoke).
        for h in list(self._held.values()):
            if h.due <= now:
                due.append(h)
            else:
                next_due = min(next_due, h.due)
        if not due:
            return next_due
        unique: dict[str, _Held] = {}
        for held in due:
            key = held.job.event.eventId
            if key in unique:  # two held records of one event: the later one waits on
                continue
            # Pushed back meanwhile; released (or held again) when the offer ends.
            pushed = _Held(float("inf"), held.job, held.message, held.generation)
            unique[key] = pushed
            self._held[(held.partition, held.offset)] = pushed
        task = asyncio.create_task(self._offer(list(unique.values())))
        self._offering.add(task)
        task.add_done_callback(self._offering.discard)
        return next_due

    async def _offer(self, records: list[_Held]) -> None:
        generation = min(h.generation for h in records)
        try:
            results = await self._service.process([h.job for h in records])
            messages = {h.job.event.eventId: h.message for h in records}
            await self._publish(results, messages, [], generation)  # holds again what waits
            for h in records:  # the rest is durable now: commits may pass it
                key = (h.partition, h.offset)
                # Only our own mark: after a lost and regained partition the same offset
                # may be held, or offered, by newer work.
                if self._held.get(key) is h:
                    self._held.pop(key, None)
        except Exception as error:  # the database or Kafka away: the offsets stay held
            log.warning(
                "held records could not be offered; trying again",
                extra={"error": type(error).__name__},
            )
            retry = time.monotonic() + 1.0 + random.random()
            for h in records:
                key = (h.partition, h.offset)
                if not self._stale(h.partition, h.generation):
                    self._held[key] = _Held(retry, h.job, h.message, h.generation)

    async def _reap(self) -> None:
        """Forget finished batches; after a failure, rewind it and every batch behind it."""
        failed = self._collect_finished()
        while failed and self._in_flight:  # the successors fail too, once they are done
            await asyncio.wait({self._in_flight[0].task})
            failed.extend(self._collect_finished(after_failure=True))
        if failed:
            self._rewind(failed)
            await asyncio.sleep(1.0)

    def _collect_finished(self, *, after_failure: bool = False) -> list[Message]:
        """Pop the finished batches at the head: the offsets of those that succeeded join
        the next commit; returns the records of those that failed, to be rewound."""
        failed: list[Message] = []
        while self._in_flight and self._in_flight[0].task.done():
            head = self._in_flight.popleft()
            error = None if head.task.cancelled() else head.task.exception()
            if head.task.cancelled() or error is not None or after_failure or failed:
                if not isinstance(error, PredecessorFailedError) and not failed:
                    # PostgreSQL or Kafka went away mid-batch: nothing of it was committed.
                    log.warning(
                        "batch failed; rewinding",
                        extra={"error": type(error).__name__},
                        exc_info=error,
                    )
                failed.extend(head.batch.records)
            else:
                generation = head.batch.generation
                for partition, offset in head.batch.positions.items():
                    if not self._stale(partition, generation):
                        self._durable[partition] = offset
        return failed

    def _on_assign(self, _consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": len(partitions)})
        self._intake.assign((tp.topic, tp.partition) for tp in partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        # Runs inside consume() on the polling thread, while the event loop is free: let
        # the batches in flight finish, then commit them while we still own their
        # partitions. (Their tasks never call the consumer, so waiting cannot deadlock.)
        log.info(
            "partitions revoked",
            extra={"partitions": len(partitions), "batchesInFlight": len(self._in_flight)},
        )
        if (self._in_flight or self._offering) and self._loop is not None:
            tasks = [f.task for f in self._in_flight] + list(self._offering)
            drained = asyncio.run_coroutine_threadsafe(asyncio.wait(tasks), self._loop)
            try:
                drained.result(timeout=self._grace)
            except TimeoutError:
                log.warning("revoked with batches still in flight; they will not commit")
            failed = self._collect_finished()
            if failed:
                self._rewind(failed)
        self._commit()
        self._on_lost(_consumer, partitions)

    def _on_lost(self, _consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._generation += 1
        for partition in gone:
            self._lost_at[partition] = self._generation
            self._paused.pop(partition, None)
            self._durable.pop(partition, None)
            self._committed.pop(partition, None)
        # The new owner reads the held and the buffered records again from the last commit.
        self._intake.revoke(gone)
        dropped = self._drop_held(lambda partition, _offset: partition in gone)
        log.info("partitions gone", extra={"partitions": len(gone), "heldDropped": dropped})
        self._metrics.paused_partitions.set(len(self._paused))

    def _drop_held(self, which: Callable[[Partition, int], bool]) -> int:
        keys = [k for k in list(self._held) if which(*k)]
        for key in keys:
            self._held.pop(key, None)
        return len(keys)

    def _resume_due(self) -> None:
        due = [p for p, when in self._paused.items() if when <= now_ms()]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])
            for partition in due:
                del self._paused[partition]
            self._metrics.paused_partitions.set(len(self._paused))

    def _pause_until(self, message: Message, due_ms: int) -> None:
        topic, partition, offset = position(message)
        tp = TopicPartition(topic, partition, offset)
        self._consumer.seek(tp)
        self._consumer.pause([tp])
        self._intake.drop((topic, partition), resume=False)  # read again after the wait
        self._paused[(topic, partition)] = due_ms
        self._metrics.paused_partitions.set(len(self._paused))

    def _commit_and_poll(self, timeout: float) -> list[Message]:
        """One trip of the polling thread: commit what is durable, then fetch."""
        self._commit()
        # Waits for the first record only, then takes what is already fetched: waiting for
        # a full batch held low-rate records back by up to the timeout (BENCHMARKS.md).
        return self._intake.poll(timeout)

    def _commit(self) -> None:
        """Commit what is durable, never past a held record."""
        first_held: dict[Partition, int] = {}
        # Runs on the polling thread: list()/dict() take snapshots the event loop's
        # tasks cannot change under us.
        for partition, offset in list(self._held):
            first_held[partition] = min(offset, first_held.get(partition, offset))
        targets = {}
        for partition, offset in dict(self._durable).items():
            target = min(offset, first_held.get(partition, offset))
            if target > self._committed.get(partition, -1):
                targets[partition] = target
        if not targets:
            return
        offsets = [TopicPartition(t, p, offset) for (t, p), offset in targets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self._committed.update(targets)
        except KafkaException as error:
            # Partitions moved on (rebalance, fenced member): the new owner re-reads them
            # and the ledger turns the re-read into duplicates.
            log.warning("offset commit failed", extra={"error": str(error.args[0])})

    def _rewind(self, records: list[Message]) -> None:
        first: dict[Partition, int] = {}
        for message in records:
            topic, partition, offset = position(message)
            first[(topic, partition)] = min(offset, first.get((topic, partition), offset))
        # Held records at or after a rewound offset are read again: forget them.
        self._drop_held(lambda partition, offset: offset >= first.get(partition, offset + 1))
        for (topic, partition), offset in first.items():
            self._intake.drop((topic, partition), resume=True)  # what it fetched is read again
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException:
                log.warning("rewind failed; partition no longer assigned")
