"""Reading the dead-letter topic without joining the service's group or committing."""

from __future__ import annotations

import time
import uuid
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
from sms_relay.adapters.postgres import deliveries, dlq_replays
from sms_relay.adapters.postgres.engine import AsyncEngine
from sms_relay.errors import OpsError
from sms_relay.ops.common import KAFKA_LOGGER, METADATA_TIMEOUT, iso, kafka_unreachable
from sms_relay.settings import KafkaSettings

# Records that never became a delivery: replaying them only helps if upstream fixed them.
INVALID_REASONS = frozenset({"invalid_json", "schema_violation"})


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
    # From PostgreSQL, filled in by `annotate`.
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


@dataclass(frozen=True)
class Filters:
    reason: str | None = None
    error_code: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None

    def select(self, records: list[DlqRecord]) -> list[DlqRecord]:
        """Records matching every filter, oldest first; `annotate` must have run."""
        chosen = [
            r
            for r in records
            if (self.reason is None or r.reason == self.reason)
            and (self.error_code is None or r.error_code == self.error_code)
            and (self.since is None or (r.timestamp is not None and r.timestamp >= self.since))
            and (self.until is None or (r.timestamp is not None and r.timestamp < self.until))
        ]
        return chosen[: self.limit] if self.limit is not None else chosen


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


def read_topic(settings: KafkaSettings, topic: str, timeout: float = 30.0) -> list[DlqRecord]:
    """Every record of `topic` up to its current end, by a throwaway consumer that commits
    nothing (its partitions are assigned, not subscribed: the group never forms).

    Raises OpsError when the topic does not exist or cannot be read in time.
    """
    consumer = create_consumer(
        settings,
        **{
            "group.id": f"sms-relay-ops-{uuid.uuid4().hex}",
            "group.protocol": "classic",
            "logger": KAFKA_LOGGER,
        },
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT)
        except KafkaException as error:
            raise kafka_unreachable(settings.bootstrap_servers, error) from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise OpsError(f"topic {topic} does not exist (run `sms-relay topics`)")
        ends: dict[int, int] = {}
        start: list[TopicPartition] = []
        for number in sorted(found.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, number), timeout=timeout
            )
            if high > low:
                ends[number] = high
                start.append(TopicPartition(topic, number, low))
        records: list[DlqRecord] = []
        if start:
            consumer.assign(start)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise OpsError(f"could not read {topic} to its end within {timeout:.0f}s")
            for message in consumer.consume(500, 0.5):
                problem = message.error()
                if problem is not None:
                    if problem.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise OpsError(f"reading {topic} failed: {problem.str()}")
                record = _record(message)
                records.append(record)
                if record.offset + 1 >= ends.get(record.partition, 0):
                    ends.pop(record.partition, None)
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.timestamp or datetime.min.replace(tzinfo=UTC), r.where))
    return records


async def annotate(engine: AsyncEngine, records: list[DlqRecord]) -> None:
    """Fill in each record's ledger state and error code and how often it was replayed."""
    states = await deliveries.states_of(engine, sorted({r.event_id for r in records if r.event_id}))
    counts = await dlq_replays.replay_counts(engine, sorted({r.topic for r in records}))
    for record in records:
        if record.event_id in states:
            record.state, record.error_code = states[record.event_id]
        record.replays = counts.get((record.topic, record.partition, record.offset), 0)
