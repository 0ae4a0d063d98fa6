"""The dedupe horizon against the topics' retention, as the consumer checks it at start-up."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType

from consumer.app import check_dedupe_horizon
from sms_relay.adapters.kafka.topic_retention import retention_ms
from sms_relay.settings import Settings
from tests.ops.test_startup_errors import run_cli
from tests.support import eventually_sync

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def set_retention(settings: Settings, topic: str, retention_ms_wanted: int) -> None:
    entry = ConfigEntry(
        "retention.ms", str(retention_ms_wanted), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    admin.incremental_alter_configs([resource], request_timeout=30)[resource].result()
    # The brokers apply a topic config a moment after they acknowledge it.
    eventually_sync(
        lambda: retention_ms(settings.kafka, [topic])[topic] == retention_ms_wanted,
        interval=0.2,
        what=f"{topic} to report retention.ms={retention_ms_wanted}",
    )


def test_consumer_refuses_a_horizon_shorter_than_a_topics_retention(settings: Settings) -> None:
    set_retention(settings, settings.kafka.topic_order_shipped, DAY_MS)
    for tier in settings.retry_topics(settings.kafka.topic_order_shipped):
        set_retention(settings, tier, DAY_MS)
    tier = settings.retry_topics(settings.kafka.topic_order_shipped)[0]
    set_retention(settings, tier, 3 * DAY_MS)
    code, err, _ = run_cli("consumer", settings, SMS_LEDGER_RETENTION_DAYS="2")
    assert code == 2
    assert err.count("\n") == 1, err
    assert "SMS_LEDGER_RETENTION_DAYS=2" in err
    assert f"retention.ms of {tier} (3 days)" in err
    assert "at least 3" in err


def test_a_topic_kept_forever_is_a_warning_that_names_replays(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = settings.kafka.topic_order_shipped
    set_retention(settings, topic, -1)
    short = settings.model_copy(
        update={"retention": settings.retention.model_copy(update={"ledger_retention_days": 30})}
    )
    for tier in settings.retry_topics(settings.kafka.topic_order_shipped):
        set_retention(settings, tier, 7 * DAY_MS)
    with caplog.at_level(logging.WARNING, logger="consumer.app"):
        check_dedupe_horizon(short)
    warnings = [r.getMessage() for r in caplog.records if r.name == "consumer.app"]
    assert len(warnings) == 1, warnings
    assert f"{topic} keeps its records forever" in warnings[0]
    assert "sent again" in warnings[0]
