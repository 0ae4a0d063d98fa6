"""`sms-relay migrate` and `sms-relay topics` against the real services: safe to run twice."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from sms_relay.adapters.kafka import topic_names
from sms_relay.settings import Settings
from tests.ops.conftest import Cli

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
    existing = set(admin.list_topics(timeout=10).topics)
    renamed = settings.kafka.model_copy(
        update={"topic_order_shipped": settings.kafka.topic_order_shipped + "-new"}
    )
    assert set(topic_names(renamed, settings.sending.retry_tiers)) <= existing


def test_a_bad_setting_fails_with_one_line_naming_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMS_MESSAGES_PER_SECOND", "-3")
    result = cli("migrate")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "SMS_MESSAGES_PER_SECOND" in result.err
