"""The intake against a real broker: a partition that arrives late is read at once,
whatever backlog the others have; a pause of ours never outlives its reason."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from consumer.intake import Intake
from sms_relay.adapters.kafka.clients import create_consumer, create_producer, position
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.settings import KafkaSettings
from tests.support import eventually_sync

pytestmark = pytest.mark.integration

BATCH = 10
FULL = 2 * BATCH  # per partition before a pause: small, so the pauses are exercised
BACKLOG = 300  # per partition: 30 batches each


@pytest.fixture
def topic(kafka_settings: KafkaSettings) -> str:
    """The order topic (3 partitions) with BACKLOG records in each, produced the way our
    producer does (lz4, in large record batches: one fetch brings a partition's all)."""
    ensure_topics(kafka_settings, ())
    name = kafka_settings.topic_order_shipped
    producer = create_producer(kafka_settings)
    for partition in range(3):
        for i in range(BACKLOG):
            producer.produce(name, value=f"{partition}:{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    return name


@pytest.fixture
def consumer(kafka_settings: KafkaSettings) -> Iterator[Consumer]:
    consumer = create_consumer(kafka_settings)
    yield consumer
    consumer.close()


def assign(consumer: Consumer, intake: Intake, topic: str, *partitions: int) -> None:
    """What the rebalance callback and librdkafka do, in that order."""
    intake.assign((topic, p) for p in partitions)
    consumer.incremental_assign([TopicPartition(topic, p, 0) for p in partitions])


def fetched(consumer: Consumer, topic: str, *partitions: int) -> None:
    """Until a fetch of each partition is in: librdkafka caches a partition's high water
    mark from each fetch, and one fetch brings a partition's whole backlog here."""

    def answered() -> bool:
        marks = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            for p in partitions
        ]
        return all(mark is not None and mark[1] >= 0 for mark in marks)

    eventually_sync(answered, what=f"a fetch of partitions {partitions}")


def offsets(batch: list[Message], partition: int) -> list[int]:
    return [position(m)[2] for m in batch if position(m)[1] == partition]


def poll_until(intake: Intake, partition: int, seconds: float = 10) -> tuple[int, list[int]]:
    """Records taken before the first of `partition`, and its offsets in that batch."""
    before, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = intake.poll(0.2)
        found = offsets(batch, partition)
        if found:
            return before + [position(m)[1] for m in batch].index(partition), found
        before += len(batch)
    raise AssertionError(f"partition {partition} was never read ({before} records of others)")


def test_a_partition_assigned_late_is_read_in_the_next_batches_despite_the_others_backlog(
    topic: str, consumer: Consumer
) -> None:
    """librdkafka alone delivers the late partition after all 2 x 300 records fetched for
    the others (30 s at 20 sends/s): the events a dead member held waited in that line."""
    intake = Intake(consumer, BATCH, per_partition=FULL)
    assign(consumer, intake, topic, 0, 1)
    first = intake.poll(10)
    assert first, "the backlog is read"
    fetched(consumer, topic, 0, 1)  # every record of partitions 0 and 1
    intake.poll(0)

    assign(consumer, intake, topic, 2)
    fetched(consumer, topic, 2)  # what is counted is the order, not its fetch's latency
    before, found = poll_until(intake, 2)
    assert before <= 4 * BATCH, f"{before} records were read before the late partition's first"
    assert found[0] == 0, "from its start, in order"
    # What is fetched ahead stays bounded: two batches a partition, and one fetch round.
    assert intake.buffered <= 3 * (FULL + BATCH)


def test_every_record_comes_once_and_in_order_through_pauses_and_resumes(
    topic: str, consumer: Consumer
) -> None:
    intake = Intake(consumer, BATCH, per_partition=FULL)
    assign(consumer, intake, topic, 0, 1, 2)
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    deadline = time.monotonic() + 30
    while sum(map(len, seen.values())) < 3 * BACKLOG and time.monotonic() < deadline:
        batch = intake.poll(0.5)
        assert len(batch) <= BATCH
        for message in batch:
            _, partition, offset = position(message)
            seen[partition].append(offset)
    for partition, got in seen.items():
        assert got == list(range(BACKLOG)), f"partition {partition}: gaps, repeats or disorder"


def test_a_partition_paused_when_it_was_lost_is_read_again_once_assigned_back(
    topic: str, consumer: Consumer
) -> None:
    """librdkafka keeps a partition's pause across an unassign and a new assignment: a
    retry tier paused for its wait, or a full buffer, then lost and regained, was never
    read again."""
    intake = Intake(consumer, BATCH, per_partition=FULL)
    assign(consumer, intake, topic, 0)
    poll_until(intake, 0)
    for _ in range(5):  # fills its buffer: paused by the intake
        intake.poll(0.2)
    consumer.pause([TopicPartition(topic, 0)])  # and by a retry tier's wait, say
    intake.revoke([(topic, 0)])
    consumer.incremental_unassign([TopicPartition(topic, 0)])

    assign(consumer, intake, topic, 0)
    _, found = poll_until(intake, 0)
    assert found[0] == 0, "read again from the committed offset (none: the start)"


def test_a_rewound_partition_is_read_again_from_the_rewind_even_when_paused(
    topic: str, consumer: Consumer
) -> None:
    intake = Intake(consumer, BATCH, per_partition=FULL)
    assign(consumer, intake, topic, 0)
    taken: list[int] = []
    while len(taken) < 3 * BATCH:  # its buffer full (paused) by now
        taken += offsets(intake.poll(1), 0)
    rewind_to = taken[BATCH]
    intake.drop((topic, 0), resume=True)
    consumer.seek(TopicPartition(topic, 0, rewind_to))
    _, found = poll_until(intake, 0)
    assert found[0] == rewind_to
