"""What the consume loop may commit: its batches in flight, its held records, lost partitions.

Offsets are committed in poll order: a batch's offsets become durable only once it and
every batch before it succeeded, and a commit never passes a held record. Work fetched
before a partition was lost must not commit or hold it afterwards, even if the partition
is ours again by then: another member may have moved on (and held records) in between.

The polling thread (commits, rebalance callbacks) and the event loop's tasks both use
this bookkeeping; the polling thread reads it through snapshots (list(), dict()) that
the tasks cannot change under it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Message

from consumer.batch import Batch, Partition
from sms_relay.adapters.kafka.clients import position
from sms_relay.delivery.delivery_ports import Job

log = logging.getLogger(__name__)


class PredecessorFailedError(Exception):
    """An earlier batch failed: committing this one would skip its records."""


@dataclass
class InFlight:
    batch: Batch
    task: asyncio.Task[None]


@dataclass(frozen=True)
class Held:
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


class OffsetTracker:
    def __init__(self) -> None:
        self.in_flight: deque[InFlight] = deque()  # in poll order
        self.held: dict[tuple[Partition, int], Held] = {}  # (partition, offset) -> record
        # Bumped whenever partitions are revoked or lost, to tell work fetched before.
        self.generation = 0
        self._lost_at: dict[Partition, int] = {}
        self._durable: dict[Partition, int] = {}  # next offset whose predecessors are done
        self._committed: dict[Partition, int] = {}

    def stale(self, partition: Partition, generation: int) -> bool:
        """Whether work of `generation` fetched `partition` before it was last lost."""
        return self._lost_at.get(partition, -1) > generation

    def hold(self, held: Held) -> None:
        if not self.stale(held.partition, held.generation):  # else the new owner reads it
            self.held[(held.partition, held.offset)] = held

    def take_due(self, now: float) -> tuple[list[Held], float]:
        """The held records whose wait is over at `now`, one per event, and when the next
        of the others is due (monotonic). Those taken stay held, pushed back, until their
        offer ends (`release`, or `hold` again)."""
        due, next_due = [], math.inf
        # list() first: the polling thread may drop held records meanwhile (revoke).
        for h in list(self.held.values()):
            if h.due <= now:
                due.append(h)
            else:
                next_due = min(next_due, h.due)
        unique: dict[str, Held] = {}
        for held in due:
            key = held.job.event.eventId
            if key in unique:  # two held records of one event: the later one waits on
                continue
            pushed = Held(math.inf, held.job, held.message, held.generation)
            unique[key] = pushed
            self.held[(held.partition, held.offset)] = pushed
        return list(unique.values()), next_due

    def release(self, records: Iterable[Held]) -> None:
        """Their offer ended and they are durable now: commits may pass them."""
        for h in records:
            key = (h.partition, h.offset)
            # Only our own mark: after a lost and regained partition the same offset
            # may be held, or offered, by newer work.
            if self.held.get(key) is h:
                self.held.pop(key, None)

    def drop_held(self, which: Callable[[Partition, int], bool]) -> int:
        keys = [k for k in list(self.held) if which(*k)]
        for key in keys:
            self.held.pop(key, None)
        return len(keys)

    def collect_finished(self, *, after_failure: bool = False) -> list[Message]:
        """Pop the finished batches at the head: the offsets of those that succeeded join
        the next commit; returns the records of those that failed, to be rewound."""
        failed: list[Message] = []
        while self.in_flight and self.in_flight[0].task.done():
            head = self.in_flight.popleft()
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
                    if not self.stale(partition, generation):
                        self._durable[partition] = offset
        return failed

    def rewind(self, records: Iterable[Message]) -> dict[Partition, int]:
        """The first offset per partition of `records`, which are read again from there;
        the held records at or after it are forgotten."""
        first: dict[Partition, int] = {}
        for message in records:
            topic, partition, offset = position(message)
            first[(topic, partition)] = min(offset, first.get((topic, partition), offset))
        self.drop_held(lambda partition, offset: offset >= first.get(partition, offset + 1))
        return first

    def lose(self, partitions: set[Partition]) -> int:
        """Revoked or lost: forget their offsets and held records (the new owner reads
        them again from the last commit); returns how many held records were dropped."""
        self.generation += 1
        for partition in partitions:
            self._lost_at[partition] = self.generation
            self._durable.pop(partition, None)
            self._committed.pop(partition, None)
        return self.drop_held(lambda partition, _offset: partition in partitions)

    def to_commit(self) -> dict[Partition, int]:
        """Per partition, the offset to commit now: what is durable, never past a held
        record, where that is beyond the last commit."""
        first_held: dict[Partition, int] = {}
        for partition, offset in list(self.held):
            first_held[partition] = min(offset, first_held.get(partition, offset))
        targets = {}
        for partition, offset in dict(self._durable).items():
            target = min(offset, first_held.get(partition, offset))
            if target > self._committed.get(partition, -1):
                targets[partition] = target
        return targets

    def committed(self, offsets: dict[Partition, int]) -> None:
        self._committed.update(offsets)
