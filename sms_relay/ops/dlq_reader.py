"""Reading the dead-letter topic in bounded memory, oldest first, without joining a group.

A `TopicScan` assigns the partitions (no group forms, nothing is committed), reads from
given positions up to end offsets taken before (a DLQ that keeps growing cannot make a
run endless) and merges the partitions by timestamp, holding about `buffer` records in
all (a share per partition): a partition whose share is full is paused until it drains.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from schemas.events import event_id_of
from sms_relay.adapters.kafka.clients import create_consumer, position
from sms_relay.adapters.kafka.headers import ATTEMPT, DLQ_REASON, ERROR, decode_headers
from sms_relay.errors import OpsError
from sms_relay.ops.common import KAFKA_LOGGER, METADATA_TIMEOUT, iso, kafka_unreachable
from sms_relay.settings import KafkaSettings

# Records that never became a delivery: replaying them only helps if upstream fixed them.
INVALID_REASONS = frozenset({"invalid_json", "schema_violation"})
_OLDEST = datetime.min.replace(tzinfo=UTC)
# librdkafka prefetches up to 64 MB and 100,000 records per partition by default: on a
# big DLQ that, not our buffers, would be the memory of a run. A paused partition's
# prefetched records are dropped and fetched again on resume: without the short backoffs
# each resume waits up to a second.
_PREFETCH = {
    "queued.max.messages.kbytes": 8192,
    "queued.min.messages": 1000,
    "fetch.queue.backoff.ms": 10,
    "fetch.error.backoff.ms": 10,
    "fetch.wait.max.ms": 100,
}

Offsets = dict[int, int]


@dataclass
class DlqRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    timestamp: datetime | None
    event_id: str | None
    # From PostgreSQL, filled in a page at a time by `dlq_pages.annotate`.
    state: str | None = None
    error_code: int | None = None
    replays: int = 0

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def reason(self) -> str | None:
        return self.headers.get(DLQ_REASON)

    @property
    def invalid(self) -> bool:
        return self.reason in INVALID_REASONS

    @property
    def order(self) -> tuple[datetime, int, int]:
        """Oldest first; ties (and records without a time) by partition and offset."""
        return (self.timestamp or _OLDEST, self.partition, self.offset)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "eventId": self.event_id,
            "reason": self.reason,
            "error": self.headers.get(ERROR),
            "attempt": _int(self.headers.get(ATTEMPT)),
            "time": iso(self.timestamp),
            "state": self.state,
            "errorCode": self.error_code,
            "replays": self.replays,
        }


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _record(message: Message) -> DlqRecord:
    topic, partition, offset = position(message)
    kind, millis = message.timestamp()
    value = message.value() or b""
    return DlqRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=message.key(),
        value=value,
        headers=decode_headers(message),
        timestamp=None
        if kind == TIMESTAMP_NOT_AVAILABLE
        else datetime.fromtimestamp(millis / 1000, UTC),
        event_id=event_id_of(value),
    )


class TopicScan:
    """One throwaway consumer on one topic; a context manager that closes it.

    Raises OpsError when the broker does not answer or the topic does not exist.
    """

    def __init__(
        self, settings: KafkaSettings, topic: str, buffer: int = 500, timeout: float = 30.0
    ) -> None:
        self.topic = topic
        self._closed = False
        self._timeout = timeout
        self._consumer = create_consumer(
            settings,
            **{
                "group.id": f"sms-relay-ops-{uuid.uuid4().hex}",
                "group.protocol": "classic",
                "enable.partition.eof": True,
                "logger": KAFKA_LOGGER,
                **_PREFETCH,
            },
        )
        try:
            metadata = self._consumer.list_topics(topic, timeout=METADATA_TIMEOUT)
        except KafkaException as error:
            self._consumer.close()
            raise kafka_unreachable(settings.bootstrap_servers, error) from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            self._consumer.close()
            raise OpsError(f"topic {topic} does not exist (run `sms-relay topics`)")
        self.partitions = sorted(found.partitions)
        self._buffer = max(1, buffer // max(1, len(self.partitions)))

    def __enter__(self) -> TopicScan:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closed = True
        self._consumer.close()

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """(first offset, end offset) of every partition, now."""
        return {
            number: self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, number), timeout=self._timeout
            )
            for number in self.partitions
        }

    def offsets_at(self, since: datetime, ends: Mapping[int, int]) -> Offsets:
        """Per partition, the first offset whose record is at or after `since` (its end
        offset when there is none)."""
        millis = int(since.timestamp() * 1000)
        asked = [TopicPartition(self.topic, number, millis) for number in self.partitions]
        found = self._consumer.offsets_for_times(asked, timeout=self._timeout)
        return {tp.partition: ends[tp.partition] if tp.offset < 0 else tp.offset for tp in found}

    def records(self, starts: Mapping[int, int], ends: Mapping[int, int]) -> Iterator[DlqRecord]:
        """Every record from `starts` up to (not including) `ends`, oldest first across
        partitions, each exactly once. Raises OpsError when reading fails or stalls."""
        unread = {p: starts.get(p, 0) for p, end in ends.items() if starts.get(p, 0) < end}
        if not unread:
            return
        buffers: dict[int, deque[DlqRecord]] = {p: deque() for p in unread}
        paused: set[int] = set()
        self._consumer.assign([TopicPartition(self.topic, p, o) for p, o in unread.items()])
        try:
            while buffers:
                # Emit while every partition still being read has a record waiting: the
                # oldest of their heads is then the oldest record left.
                while all(buffers[p] for p in unread):
                    for number in [p for p, waiting in buffers.items() if not waiting]:
                        del buffers[number]  # read to its end and emitted
                    if not buffers:
                        return
                    number = min(buffers, key=lambda p: buffers[p][0].order)
                    yield buffers[number].popleft()
                    if number in paused and len(buffers[number]) <= self._buffer // 2:
                        self._consumer.resume([TopicPartition(self.topic, number)])
                        paused.discard(number)
                if unread:
                    self._fill(unread, ends, buffers, paused)
        finally:
            if not self._closed:  # a reader left unfinished may be collected later
                self._consumer.unassign()

    def _fill(
        self,
        unread: dict[int, int],
        ends: Mapping[int, int],
        buffers: dict[int, deque[DlqRecord]],
        paused: set[int],
    ) -> None:
        """Consume until a record arrives for a partition that has none waiting."""
        deadline = time.monotonic() + self._timeout
        while any(not buffers[p] for p in unread):
            if time.monotonic() > deadline:
                raise OpsError(f"reading {self.topic} stalled for {self._timeout:.0f}s")
            # What is queued now, else wait for one: consume(n, t) waits for all n or t.
            messages = self._consumer.consume(self._buffer, 0) or self._consumer.consume(1, 0.5)
            for message in messages:
                number = message.partition()
                problem = message.error()
                if problem is not None:
                    if problem.code() == KafkaError._PARTITION_EOF and number is not None:
                        unread.pop(number, None)  # at the end offset, or past the one taken
                        continue
                    raise OpsError(f"reading {self.topic} failed: {problem.str()}")
                record = _record(message)
                expected = unread.get(record.partition)
                # A paused partition may be fetched again from where we stood: skip repeats.
                if expected is None or record.offset < expected:
                    continue
                if record.offset >= ends[record.partition]:
                    unread.pop(record.partition)
                    continue
                buffers[record.partition].append(record)
                unread[record.partition] = record.offset + 1
                if unread[record.partition] >= ends[record.partition]:
                    unread.pop(record.partition)
            for number, waiting in buffers.items():
                if len(waiting) >= self._buffer and number in unread and number not in paused:
                    self._consumer.pause([TopicPartition(self.topic, number)])
                    paused.add(number)
