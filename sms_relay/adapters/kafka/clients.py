"""Kafka clients: how producers and consumers are configured, and the consumer's calls.

The consumer's own calls (consume, commit, seek) go through the functions at the end,
so a caller sees BrokerUnavailableError, never confluent-kafka's exceptions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

# Exported by confluent_kafka.admin without a re-export mypy recognises.
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType

from sms_relay.errors import BrokerUnavailableError, ConfigurationError
from sms_relay.settings import KafkaSettings


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


def broker_unavailable(error: KafkaException | KafkaError) -> BrokerUnavailableError:
    """Our error for one of confluent-kafka's, with librdkafka's reason."""
    return BrokerUnavailableError(f"Kafka: {kafka_reason(error)}")


def kafka_reason(error: KafkaException | KafkaError) -> str:
    """librdkafka's own words for what went wrong."""
    detail = error.args[0] if isinstance(error, KafkaException) and error.args else error
    return detail.str() if isinstance(detail, KafkaError) else str(detail)


def position(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a fetched (non-error) record."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("an error event has no position")
    return topic, partition, offset


def consume(consumer: Consumer, count: int, timeout: float) -> list[Message]:
    """Up to `count` records (and error events), waiting up to `timeout` for the first.
    Raises BrokerUnavailableError when librdkafka fails the call."""
    try:
        return consumer.consume(count, timeout)
    except KafkaException as error:
        raise broker_unavailable(error) from error


def commit(consumer: Consumer, offsets: Sequence[TopicPartition]) -> None:
    """Commit `offsets` and wait for the broker's answer. Raises BrokerUnavailableError
    when it refused (the partitions moved on, the member was fenced) or did not answer."""
    try:
        consumer.commit(offsets=list(offsets), asynchronous=False)
    except KafkaException as error:
        raise broker_unavailable(error) from error


def seek(consumer: Consumer, partition: TopicPartition) -> None:
    """Read `partition` again from its offset. Raises BrokerUnavailableError when the
    partition is no longer assigned."""
    try:
        consumer.seek(partition)
    except KafkaException as error:
        raise broker_unavailable(error) from error
