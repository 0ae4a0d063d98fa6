"""The projection's Kafka side: read delivery-status in its own group, apply, then commit."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from schemas.events import DeliveryStatusChanged
from sms_relay.adapters.kafka.clients import create_consumer, position
from sms_relay.errors import DatabaseUnavailableError
from sms_relay.settings import KafkaSettings
from sms_relay.status.status_projection import StatusProjection

log = logging.getLogger(__name__)


def projection_group(settings: KafkaSettings) -> str:
    return f"{settings.consumer_group}-projection"


class ProjectionRunner:
    """At-least-once: offsets are committed only after the batch's transaction, and the
    projection is idempotent, so a replay after a crash changes nothing."""

    def __init__(
        self,
        settings: KafkaSettings,
        projection: StatusProjection,
        *,
        batch_size: int = 500,
        retry_seconds: float = 1.0,
    ) -> None:
        self._settings = settings
        self._projection = projection
        self._batch_size = batch_size
        self._retry_seconds = retry_seconds
        # librdkafka calls block: one thread of their own, never the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projection")

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        consumer = await loop.run_in_executor(self._executor, self._open)
        try:
            while not stop.is_set():
                messages = await loop.run_in_executor(
                    self._executor, consumer.consume, self._batch_size, 0.5
                )
                fetched = [m for m in messages if m.error() is None]
                for message in messages:
                    if message.error() is not None:
                        log.warning("projection fetch error", extra={"error": str(message.error())})
                if fetched:
                    await self._apply(fetched, stop)
                    await self._commit(consumer, fetched)
        finally:
            await loop.run_in_executor(self._executor, consumer.close)
            self._executor.shutdown(wait=False)

    def _open(self) -> Consumer:
        consumer = create_consumer(self._settings, **{"group.id": projection_group(self._settings)})
        consumer.subscribe([self._settings.topic_delivery_status])
        return consumer

    async def _apply(self, messages: list[Message], stop: asyncio.Event) -> None:
        records = []
        for message in messages:
            try:
                records.append(DeliveryStatusChanged.model_validate_json(message.value() or b""))
            except ValidationError:
                topic, partition, offset = position(message)
                log.error(
                    "unreadable delivery-status record skipped",
                    extra={"topic": topic, "partition": partition, "offset": offset},
                )
        # Retry the same batch until PostgreSQL takes it: skipping would lose statuses.
        while True:
            try:
                await self._projection.apply(records)
                return
            except DatabaseUnavailableError as error:
                log.warning("projection failed; retrying", extra={"error": repr(error)})
                if stop.is_set():
                    raise
                await asyncio.sleep(self._retry_seconds)

    async def _commit(self, consumer: Consumer, messages: list[Message]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            topic, partition, offset = position(message)
            offsets[(topic, partition)] = max(offsets.get((topic, partition), -1), offset + 1)
        commit = partial(
            consumer.commit,
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=False,
        )
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, commit)
        except KafkaException as error:
            # A rebalance moved the partition: its next owner replays, idempotently.
            log.warning("projection commit failed", extra={"error": str(error)})
