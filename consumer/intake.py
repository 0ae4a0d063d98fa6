"""Records fetched ahead, kept per partition and handed out in turn.

librdkafka delivers one queue in the order its fetches arrived: a partition assigned
while the others have a backlog gets its records only after that whole backlog. At a
rate limit that is minutes. A dead member's partitions are such late arrivals, and their
first records are the events it held, so recovery waited in that line (issue 10).

So every fetched record is taken out of librdkafka's queue at once into a buffer of its
partition; a partition with a full buffer is paused (librdkafka then drops what it had
fetched for it, and fetches again from after the last record we took once resumed).
Batches take one record from each partition in turn, so a new partition's records are
in the next batch, whatever the others hold.

Every method runs on the polling thread, or while no poll runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from confluent_kafka import Consumer, Message, TopicPartition

from consumer.batch import Partition
from sms_relay.adapters.kafka.clients import consume, position

# Records buffered per partition before it is paused, at the least. Fairness comes from
# taking the partitions in turn, not from this bound: it only caps memory (~0.5 MB a
# partition). A small one made every resume wait for a fetch round (fetch.wait.max.ms,
# 500 ms): re-reading settled records (a replay, a handover) ran at 121/s with the
# default 5-record batches, against 604/s with this (python -m bench.replay).
MIN_BUFFERED_PER_PARTITION = 500


class Intake:
    def __init__(self, consumer: Consumer, batch_size: int, per_partition: int = 0) -> None:
        """`per_partition`: records buffered before a partition is paused; by default
        two batches (a resumed partition refetches while one is still in hand), and at
        least MIN_BUFFERED_PER_PARTITION."""
        self._consumer = consumer
        self._batch_size = batch_size
        self._full = per_partition or max(2 * batch_size, MIN_BUFFERED_PER_PARTITION)
        self._buffers: dict[Partition, deque[Message]] = {}
        self._errors: list[Message] = []  # for decode() to log
        self._paused: set[Partition] = set()  # paused here because their buffer is full
        self._assigned: set[Partition] = set()

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def assign(self, partitions: Iterable[Partition]) -> None:
        """Called before librdkafka applies the assignment. A partition that comes back
        keeps a pause from when it was ours before (a full buffer or a retry tier's
        wait): lift it, or the partition is never read again."""
        assigned = set(partitions)
        self._assigned |= assigned
        if assigned:
            self._consumer.resume([TopicPartition(t, p) for t, p in assigned])

    def revoke(self, partitions: Iterable[Partition]) -> None:
        """Revoked or lost: their records are read again by the next owner."""
        for partition in partitions:
            self._assigned.discard(partition)
            self._buffers.pop(partition, None)
            self._paused.discard(partition)

    def drop(self, partition: Partition, *, resume: bool) -> None:
        """Forget what is buffered of `partition`: it was sought back (rewound, or paused
        for a retry tier's wait). `resume` lifts a pause of ours, so the seek is read."""
        self._buffers.pop(partition, None)
        if partition in self._paused:
            self._paused.discard(partition)
            if resume:
                self._consumer.resume([TopicPartition(*partition)])

    def poll(self, timeout: float) -> list[Message]:
        """The next batch: wait up to `timeout` only when nothing is buffered."""
        if not self._buffers and not self._errors:
            self._add(consume(self._consumer, 1, timeout))
        while True:  # take all that is fetched; each round pauses what filled up
            fetched = consume(self._consumer, self._batch_size, 0)
            if not fetched:
                break
            self._add(fetched)
        return self._take()

    def _add(self, messages: list[Message]) -> None:
        full = []
        for message in messages:
            if message.error() is not None:
                self._errors.append(message)
                continue
            topic, number, _ = position(message)
            partition = (topic, number)
            if partition not in self._assigned:
                continue  # fetched before it was revoked
            buffer = self._buffers.setdefault(partition, deque())
            buffer.append(message)
            if len(buffer) >= self._full and partition not in self._paused:
                full.append(partition)
        if full:
            self._consumer.pause([TopicPartition(t, p) for t, p in full])
            self._paused.update(full)

    def _take(self) -> list[Message]:
        batch, self._errors = self._errors, []
        while len(batch) < self._batch_size and self._buffers:
            partition = next(iter(self._buffers))
            buffer = self._buffers.pop(partition)
            batch.append(buffer.popleft())
            if buffer:
                self._buffers[partition] = buffer  # to the back of the line
        low = [p for p in self._paused if len(self._buffers.get(p, ())) <= self._full // 2]
        if low:
            self._consumer.resume([TopicPartition(t, p) for t, p in low])
            self._paused.difference_update(low)
        return batch
