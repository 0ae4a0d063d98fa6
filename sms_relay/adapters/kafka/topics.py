"""Kafka topics: their names, creating the missing ones, and the start-up check."""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# Exported by confluent_kafka.admin without a re-export mypy recognises.
from confluent_kafka.cimpl import NewTopic

from sms_relay.adapters.kafka.clients import kafka_reason
from sms_relay.errors import BrokerUnavailableError, ConfigurationError
from sms_relay.kinds.registry import COMPANION_TOPICS
from sms_relay.settings import KafkaSettings

# How long start-up waits for a broker's answer before saying that none answers.
STARTUP_DEADLINE_SECONDS = 10.0
TOPIC_LOOKS = 12  # times 0.25 s: how long a new topic may take to show in the metadata


def topic_names(
    settings: KafkaSettings, retry_tiers: Sequence[str], kinds: Sequence[str] = ("order-shipped",)
) -> list[str]:
    """Each kind's input topic, its retry tiers (named by position) and DLQ, then the status
    and Verify topics."""
    names = []
    positions = range(1, len(retry_tiers) + 1)
    for kind in kinds:
        topic = settings.topic_of(kind)
        tiers = [settings.retry_topic(topic, position) for position in positions]
        names += [topic, *tiers, settings.dlq_topic(topic)]
        names += [settings.topic_of(name) for name in COMPANION_TOPICS.get(kind, ())]
    return [*names, settings.topic_delivery_status, settings.topic_phone_verified]


def ensure_topics(
    settings: KafkaSettings,
    retry_tiers: Sequence[str],
    kinds: Sequence[str] = ("order-shipped",),
    timeout: float = 30,
) -> list[str]:
    """Create the missing topics; returns the names created. Safe to run twice.

    Raises BrokerUnavailableError when no broker answers or the brokers refuse a topic.
    """
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    existing = set(_topics_of(admin, settings, timeout))
    wanted = [
        NewTopic(name, settings.partitions, settings.replication_factor)
        for name in topic_names(settings, retry_tiers, kinds)
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
                raise BrokerUnavailableError(
                    f"Kafka did not create {name}: {kafka_reason(error)}"
                ) from error
    return created


def require_topics(
    settings: KafkaSettings, names: Sequence[str], timeout: float = STARTUP_DEADLINE_SECONDS
) -> set[str]:
    """Check with one metadata request that every topic in `names` exists; returns the
    names of all the cluster's topics.

    The broker creates no topics, and a consumer subscribed to a missing one only finds
    out when every publish times out; so start-up asks first.

    Raises ConfigurationError naming the missing topics, BrokerUnavailableError when no
    broker answers within `timeout`.
    """
    # Quiet: a broker that does not answer is reported in one line below, not in dozens.
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 0})
    existing = _topics_of(admin, settings, timeout)
    missing = [name for name in names if name not in existing]
    # A topic created a moment ago may not be in every broker's metadata yet: look again
    # for a few seconds before calling it missing.
    looks = 0
    while missing and looks < TOPIC_LOOKS:
        looks += 1
        time.sleep(0.25)
        existing = _topics_of(admin, settings, timeout)
        missing = [name for name in names if name not in existing]
    if missing:
        raise ConfigurationError(
            f"Kafka topics missing: {', '.join(missing)}; create them with `sms-relay topics`"
        )
    return existing


def cluster_topics(settings: KafkaSettings, timeout: float = 30) -> set[str]:
    """The names of the cluster's topics. Raises BrokerUnavailableError when no broker
    answers within `timeout`."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    return _topics_of(admin, settings, timeout)


def _topics_of(admin: AdminClient, settings: KafkaSettings, timeout: float) -> set[str]:
    """The names of the cluster's topics. Raises BrokerUnavailableError when no broker
    answers within `timeout`."""
    try:
        return set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as error:
        raise BrokerUnavailableError(
            f"Kafka did not answer within {timeout:g}s at KAFKA_BOOTSTRAP_SERVERS="
            f"{settings.bootstrap_servers} ({kafka_reason(error)})"
        ) from None
