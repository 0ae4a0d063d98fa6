"""How long the brokers keep each topic's records (`retention.ms`), as they report it."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# Exported by confluent_kafka.admin without a re-export mypy recognises.
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from sms_relay.settings import KafkaSettings


def retention_ms(
    settings: KafkaSettings, topics: Sequence[str], timeout: float = 10.0
) -> dict[str, int | None]:
    """Each topic's `retention.ms` (-1: forever); None where the brokers did not say (no
    DescribeConfigs permission, no answer in time)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 0})
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
    found: dict[str, int | None] = dict.fromkeys(topics)
    futures = admin.describe_configs(resources, request_timeout=timeout)
    for resource, future in futures.items():
        try:
            entry = future.result(timeout=timeout).get("retention.ms")
        except (KafkaException, TimeoutError):
            continue
        if entry is not None and entry.value is not None:
            found[resource.name] = int(entry.value)
    return found
