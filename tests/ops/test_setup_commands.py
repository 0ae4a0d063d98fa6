"""`sms-relay migrate` and `sms-relay topics` against the real services: safe to run twice;
`topics` also sets the consumer group's session timeout when asked."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource, ConfigSource
from confluent_kafka.admin._resource import ResourceType

from sms_relay.adapters.kafka.topics import topic_names
from sms_relay.settings import Settings
from tests.ops.conftest import Cli
from tests.support import delete_group_configs, eventually_sync

pytestmark = pytest.mark.integration


def test_migrate_twice_leaves_the_schema_at_head(cli: Cli) -> None:
    first, second = cli("migrate"), cli("migrate")
    assert (first.code, second.code) == (0, 0)
    assert "up to date" in second.out


def test_topics_creates_what_is_missing_and_then_nothing(
    settings: Settings, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_ORDER_SHIPPED", settings.kafka.topic_order_shipped + "-new")
    first = cli("topics")
    second = cli("topics")
    assert (first.code, second.code) == (0, 0)
    assert f"{settings.kafka.topic_order_shipped}-new: created" in first.out
    assert "created" not in second.out
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    renamed = settings.kafka.model_copy(
        update={"topic_order_shipped": settings.kafka.topic_order_shipped + "-new"}
    )
    wanted = set(topic_names(renamed, settings.sending.retry_tiers))
    # A topic just created reaches every broker's metadata a moment later (the second
    # `topics` run above already saw them): wait for the broker we ask, not a fixed time.
    eventually_sync(
        lambda: wanted <= set(admin.list_topics(timeout=10).topics),
        what="the new topics in the broker's metadata",
    )


def test_a_bad_setting_fails_with_one_line_naming_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMS_MESSAGES_PER_SECOND", "-3")
    result = cli("migrate")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "SMS_MESSAGES_PER_SECOND" in result.err


def group_config(settings: Settings) -> dict[str, str]:
    group = ConfigResource(ResourceType.GROUP, settings.kafka.consumer_group)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    described = admin.describe_configs([group])[group].result()
    return {
        name: entry.value
        for name, entry in described.items()
        if entry.source == ConfigSource.GROUP_CONFIG.value
    }


def test_topics_sets_the_groups_session_timeout_when_asked(
    settings: Settings, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_GROUP_SESSION_TIMEOUT_MS", "10000")
    monkeypatch.setenv("KAFKA_GROUP_HEARTBEAT_INTERVAL_MS", "1000")
    try:
        first, second = cli("topics"), cli("topics")
        assert (first.code, second.code) == (0, 0)
        assert (
            f"group {settings.kafka.consumer_group}: consumer.session.timeout.ms=10000, "
            "consumer.heartbeat.interval.ms=1000"
        ) in second.out
        assert group_config(settings) == {
            "consumer.session.timeout.ms": "10000",
            "consumer.heartbeat.interval.ms": "1000",
        }
    finally:
        delete_group_configs(settings.kafka)


def test_a_session_timeout_the_brokers_refuse_fails_in_one_line(
    settings: Settings, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_GROUP_SESSION_TIMEOUT_MS", "1")  # below any broker's minimum
    result = cli("topics")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "KAFKA_GROUP_SESSION_TIMEOUT_MS" in result.err
    assert "group.consumer.min" in result.err
    assert group_config(settings) == {}
