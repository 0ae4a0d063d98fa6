"""The retention policy's pure rules: the horizon check, the prunable states, the periods."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sms_relay.domain.states import DeliveryState
from sms_relay.errors import ConfigurationError
from sms_relay.retention.horizon import check_horizon
from sms_relay.retention.pruning import KEPT_FOREVER, PRUNABLE_STATES, retention_periods
from sms_relay.settings import Settings

DAY_MS = 86_400_000


def test_a_topic_kept_longer_than_the_horizon_stops_start_up_in_one_line() -> None:
    with pytest.raises(ConfigurationError) as raised:
        check_horizon(7, {"order-shipped": 7 * DAY_MS, "order-shipped.retry.1": 14 * DAY_MS})
    message = str(raised.value)
    assert "\n" not in message
    assert "SMS_LEDGER_RETENTION_DAYS=7" in message
    assert "order-shipped.retry.1 (14 days)" in message


def test_topics_within_the_horizon_pass_and_unknown_or_infinite_ones_warn() -> None:
    assert check_horizon(90, {"a": 7 * DAY_MS, "b": 90 * DAY_MS}) == []
    warnings = check_horizon(90, {"a": None, "b": -1})
    assert len(warnings) == 2
    assert "did not report the retention.ms of a" in warnings[0]
    assert "b keeps its records forever" in warnings[1]


def test_only_settled_deliveries_are_prunable() -> None:
    in_flight = {
        DeliveryState.CLAIMED,
        DeliveryState.SENDING,
        DeliveryState.RETRY_SCHEDULED,
        DeliveryState.SCHEDULED,  # waiting for its due time
    }
    assert set(DeliveryState) - in_flight == PRUNABLE_STATES


def test_every_table_has_a_stated_retention() -> None:
    from sms_relay.adapters.postgres.tables import metadata

    periods = retention_periods(Settings())
    assert set(periods) | set(KEPT_FOREVER) == set(metadata.tables)
    assert periods["deliveries"] == timedelta(days=90)
    assert periods["status_history"] == periods["deliveries"]
