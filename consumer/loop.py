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

What may be committed (the batches in flight, the held records, lost partitions) is
kept by `consumer.offsets`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Collection, Iterable, Sequence

from confluent_kafka import Consumer, Message, TopicPartition

from consumer.batch import Batch, Partition, decode, routes
from consumer.effects import Effects
from consumer.intake import Intake
from consumer.offsets import Held, InFlight, OffsetTracker, PredecessorFailedError
from consumer.records import now_ms
from sms_relay.adapters.kafka.clients import commit, position, seek
from sms_relay.adapters.kafka.producer import AsyncProducer
from sms_relay.delivery.delivery_ports import Result
from sms_relay.delivery.service import DeliveryService
from sms_relay.domain.outcomes import WAITING, Outcome
from sms_relay.errors import BrokerUnavailableError
from sms_relay.kinds.event_kind import EventKind
from sms_relay.metrics import ConsumerMetrics
from sms_relay.settings import Settings

log = logging.getLogger(__name__)

# Four measured +8-10% over two at 128 in flight (BENCHMARKS.md). Batches are cut so that
# all of them together hold about 2 s of sending at the configured rate: a revoke waits
# for what is in flight, and every member's rebalance waits for that revoke.
MAX_BATCHES_IN_FLIGHT = 4
SECONDS_OF_SENDING_IN_FLIGHT = 2
POLL_SECONDS = 0.5  # the longest wait for records (stop and due holds are looked at after)


class ConsumeLoop:
    def __init__(
        self,
        consumer: Consumer,
        producer: AsyncProducer,
        service: DeliveryService,
        settings: Settings,
        metrics: ConsumerMetrics,
        kinds: Iterable[EventKind],
        drained_topics: Collection[str] = (),  # retry topics named after a delay, drained too
    ) -> None:
        self._consumer = consumer
        self._effects = Effects(producer, settings.kafka)
        self._service = service
        self._kafka = settings.kafka
        self._metrics = metrics
        self._grace = settings.sending.shutdown_grace_seconds
        self._routes = routes(kinds, settings, drained_topics)
        self._paused: dict[Partition, int] = {}  # partition -> when its next record is due (ms)
        self._offsets = OffsetTracker()
        self._in_flight = self._offsets.in_flight  # the same deque: the batches in poll order
        self._offering: set[asyncio.Task[None]] = set()
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
        return list(self._routes)

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
        batch = decode(messages, self._routes, self._pause_until, self._metrics)
        batch.generation = self._offsets.generation
        previous = self._in_flight[-1].task if self._in_flight else None
        held = any(batch.jobs.keys() & f.batch.jobs.keys() for f in self._in_flight)
        task = asyncio.create_task(self._finish(batch, previous, wait_first=held))
        self._in_flight.append(InFlight(batch, task))

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
                due = time.monotonic() + result.wait_seconds
                self._offsets.hold(Held(due, result.job, message, generation))
                continue
            effects.extend(self._effects.publish(result, message))
            if result.report is not None:
                reported.append((result.job.event.eventId, result.report))
        await asyncio.gather(*effects)
        await self._service.mark_reported(reported)

    def _offer_due(self) -> float:
        """Offer the held records whose wait is over again, as one batch of their own;
        returns when the next of the others is due (monotonic). Their offsets are held,
        so they need no place in the ordered chain."""
        records, next_due = self._offsets.take_due(time.monotonic())
        if records:
            task = asyncio.create_task(self._offer(records))
            self._offering.add(task)
            task.add_done_callback(self._offering.discard)
        return next_due

    async def _offer(self, records: list[Held]) -> None:
        generation = min(h.generation for h in records)
        try:
            results = await self._service.process([h.job for h in records])
            messages = {h.job.event.eventId: h.message for h in records}
            await self._publish(results, messages, [], generation)  # holds again what waits
            self._offsets.release(records)  # the rest is durable now: commits may pass it
        except Exception as error:  # the database or Kafka away: the offsets stay held
            log.warning(
                "held records could not be offered; trying again",
                extra={"error": type(error).__name__},
            )
            retry = time.monotonic() + 1.0 + random.random()
            for h in records:
                self._offsets.hold(Held(retry, h.job, h.message, h.generation))

    async def _reap(self) -> None:
        """Forget finished batches; after a failure, rewind it and every batch behind it."""
        failed = self._offsets.collect_finished()
        while failed and self._in_flight:  # the successors fail too, once they are done
            await asyncio.wait({self._in_flight[0].task})
            failed.extend(self._offsets.collect_finished(after_failure=True))
        if failed:
            self._rewind(failed)
            await asyncio.sleep(1.0)

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
            failed = self._offsets.collect_finished()
            if failed:
                self._rewind(failed)
        self._commit()
        self._on_lost(_consumer, partitions)

    def _on_lost(self, _consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        # The new owner reads the held and the buffered records again from the last commit.
        dropped = self._offsets.lose(gone)
        for partition in gone:
            self._paused.pop(partition, None)
        self._intake.revoke(gone)
        log.info("partitions gone", extra={"partitions": len(gone), "heldDropped": dropped})
        self._metrics.paused_partitions.set(len(self._paused))

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
        seek(self._consumer, tp)
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
        targets = self._offsets.to_commit()
        if not targets:
            return
        offsets = [TopicPartition(t, p, offset) for (t, p), offset in targets.items()]
        try:
            commit(self._consumer, offsets)
            self._offsets.committed(targets)
        except BrokerUnavailableError as error:
            # Partitions moved on (rebalance, fenced member): the new owner re-reads them
            # and the ledger turns the re-read into duplicates.
            log.warning("offset commit failed", extra={"error": str(error)})

    def _rewind(self, records: list[Message]) -> None:
        # Held records at or after a rewound offset are read again: the tracker forgets them.
        for (topic, partition), offset in self._offsets.rewind(records).items():
            self._intake.drop((topic, partition), resume=True)  # what it fetched is read again
            try:
                seek(self._consumer, TopicPartition(topic, partition, offset))
            except BrokerUnavailableError:
                log.warning("rewind failed; partition no longer assigned")
