"""Kafka: the one place producers, consumers and topics are configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

# Exported by confluent_kafka.admin without a re-export mypy recognises.
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from sms_relay.errors import ConfigurationError, ServiceUnavailableError
from sms_relay.settings import KafkaSettings

log = logging.getLogger(__name__)

HEADER_PREFIX = "sms-relay-"
# How long start-up waits for a broker's answer before saying that none answers.
STARTUP_DEADLINE_SECONDS = 10.0
Headers = dict[str, str]
KafkaHeaders = list[tuple[str, str | bytes | None]]


def producer_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        # Idempotence implies acks=all and no reordering or duplicates on producer retries.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "logger": logging.getLogger("confluent_kafka.producer"),
        **overrides,
    }


def create_producer(settings: KafkaSettings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def create_consumer(settings: KafkaSettings, **overrides: Any) -> Consumer:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": settings.consumer_group,
        "group.protocol": settings.group_protocol,
        # Offsets are committed by hand, only once each record's effect is durable.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "logger": logging.getLogger("confluent_kafka.consumer"),
        **overrides,
    }
    if settings.group_protocol == "consumer":
        # Range splits every topic among the members, so each consumer gets a share of
        # the main topic (the broker's default, uniform, may hand one only retry tiers).
        config.setdefault("group.remote.assignor", "range")
    if settings.group_protocol == "classic":
        config.setdefault("partition.assignment.strategy", "cooperative-sticky")
        config.setdefault("session.timeout.ms", settings.group_session_timeout_ms or 10000)
        if settings.group_heartbeat_interval_ms:
            config.setdefault("heartbeat.interval.ms", settings.group_heartbeat_interval_ms)
    return Consumer(config)


# KIP-848 per-group configs on the brokers (kafka-configs --entity-type groups).
GROUP_CONFIGS = ("consumer.session.timeout.ms", "consumer.heartbeat.interval.ms")


def group_configs(settings: KafkaSettings) -> dict[str, int]:
    """The group configs KAFKA_GROUP_SESSION_TIMEOUT_MS and
    KAFKA_GROUP_HEARTBEAT_INTERVAL_MS ask for (only those that are set)."""
    values = (settings.group_session_timeout_ms, settings.group_heartbeat_interval_ms)
    return {name: v for name, v in zip(GROUP_CONFIGS, values, strict=True) if v is not None}


def configure_group(settings: KafkaSettings, timeout: float = 30) -> dict[str, int]:
    """Set the group's session timeout and heartbeat interval on the brokers (the group
    need not exist yet); returns what was set. Safe to run twice.

    Raises ConfigurationError when the brokers refuse (a value outside their
    group.consumer.min/max.* bounds, or no permission to alter the group).
    """
    configs = group_configs(settings)
    if not configs or settings.group_protocol != "consumer":
        return {}
    entries = [
        ConfigEntry(name, str(value), incremental_operation=AlterConfigOpType.SET)
        for name, value in configs.items()
    ]
    group = ConfigResource(ResourceType.GROUP, settings.consumer_group, incremental_configs=entries)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 0})
    try:
        admin.incremental_alter_configs([group], request_timeout=timeout)[group].result()
    except KafkaException as error:
        raise ConfigurationError(
            f"group {settings.consumer_group}: the brokers refused "
            f"{', '.join(f'{n}={v}' for n, v in configs.items())} ({error.args[0].str()}); "
            "allow it with the brokers' group.consumer.min.* settings, or unset "
            "KAFKA_GROUP_SESSION_TIMEOUT_MS and KAFKA_GROUP_HEARTBEAT_INTERVAL_MS"
        ) from None
    return configs


def topic_names(settings: KafkaSettings, retry_tiers: Sequence[str]) -> list[str]:
    return [
        settings.topic_order_shipped,
        *(settings.retry_topic(tier) for tier in retry_tiers),
        settings.dlq_topic,
        settings.topic_delivery_status,
        settings.topic_phone_verified,
    ]


def ensure_topics(
    settings: KafkaSettings, retry_tiers: Sequence[str], timeout: float = 30
) -> list[str]:
    """Create the missing topics; returns the names created. Safe to run twice."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(name, settings.partitions, settings.replication_factor)
        for name in topic_names(settings, retry_tiers)
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as error:
            # Made a moment ago (by us or another process): the metadata lags behind.
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


TOPIC_LOOKS = 12  # times 0.25 s: how long a new topic may take to show in the metadata


def require_topics(
    settings: KafkaSettings, names: Sequence[str], timeout: float = STARTUP_DEADLINE_SECONDS
) -> None:
    """Check with one metadata request that every topic in `names` exists.

    The broker creates no topics, and a consumer subscribed to a missing one only finds
    out when every publish times out; so start-up asks first.

    Raises ConfigurationError naming the missing topics, ServiceUnavailableError when no
    broker answers within `timeout`.
    """
    # Quiet: a broker that does not answer is reported in one line below, not in dozens.
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 0})
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as error:
        raise ServiceUnavailableError(
            f"Kafka did not answer within {timeout:g}s at KAFKA_BOOTSTRAP_SERVERS="
            f"{settings.bootstrap_servers} ({error.args[0].str()})"
        ) from None
    missing = [name for name in names if name not in existing]
    # A topic created a moment ago may not be in every broker's metadata yet: look again
    # for a few seconds before calling it missing.
    looks = 0
    while missing and looks < TOPIC_LOOKS:
        looks += 1
        time.sleep(0.25)
        existing = admin.list_topics(timeout=timeout).topics
        missing = [name for name in names if name not in existing]
    if missing:
        raise ConfigurationError(
            f"Kafka topics missing: {', '.join(missing)}; create them with `sms-relay topics`"
        )


def encode_headers(headers: Mapping[str, str | int]) -> KafkaHeaders:
    return [(HEADER_PREFIX + name, str(value).encode()) for name, value in headers.items()]


def position(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a fetched (non-error) record."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("an error event has no position")
    return topic, partition, offset


def decode_headers(message: Message) -> Headers:
    """Our own `sms-relay-*` headers, prefix removed; others are ignored."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    decoded: Headers = {}
    for name, value in pairs:
        if name.startswith(HEADER_PREFIX) and value is not None:
            text = value if isinstance(value, str) else value.decode(errors="replace")
            decoded[name.removeprefix(HEADER_PREFIX)] = text
    return decoded


_Report = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", KafkaError | None]


def _settle(reports: list[_Report]) -> None:
    for _loop, done, error in reports:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(KafkaException(error))


class AsyncProducer:
    """An idempotent producer whose deliveries are awaitable futures.

    A background thread serves librdkafka's delivery reports, so awaiting a record costs
    the event loop nothing; the future fails with KafkaException if the broker refused it.
    The reports of one poll reach the event loop together (one wake-up, not one each).
    """

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._running = True
        self._reports: list[_Report] = []  # only touched by the thread calling poll/flush
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            self._producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._reports:
            return
        reports, self._reports = self._reports, []
        by_loop: dict[asyncio.AbstractEventLoop, list[_Report]] = {}
        for report in reports:
            by_loop.setdefault(report[0], []).append(report)
        for loop, some in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, some)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: KafkaHeaders | None = None,
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            self._reports.append((loop, done, error))  # called inside poll() or flush()

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
                return done
            except BufferError:  # local queue full: let the serving thread drain it
                time.sleep(0.01)

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: KafkaHeaders | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Produce one record and return once the broker acknowledged it (acks=all).

        Raises KafkaException when delivery failed, TimeoutError past `timeout`.
        """
        async with asyncio.timeout(timeout):
            await asyncio.shield(self.produce(topic, value, key, headers))

    def close(self, timeout: float = 10.0) -> int:
        """Flush and stop; returns how many records were still undelivered."""
        self._running = False
        self._thread.join()
        undelivered = int(self._producer.flush(timeout))
        self._hand_over()
        return undelivered
