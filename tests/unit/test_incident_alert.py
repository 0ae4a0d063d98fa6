"""The `incident-alert` kind and its flood-control rule, without any service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import IncidentAlert
from sms_relay.domain.collapse import (
    HOURLY_CAP,
    REPEAT,
    AlertWindow,
    CollapseAsk,
    CollapseRule,
    collapse,
)
from sms_relay.kinds.incident_alert import INCIDENT_ALERT, IncidentAlertPolicy

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def alert(**extra: Any) -> IncidentAlert:
    return IncidentAlert.model_validate(
        {
            "eventId": "alert_000001",
            "phone": "+12125550123",
            "consentAt": "2026-06-02T09:00:00Z",
            "alertKey": "db-primary/disk-full",
            "severity": "critical",
            "summary": "db-primary disk 95% full",
            "occurredAt": "2026-12-03T11:58:00Z",
            **extra,
        }
    )


def test_an_alert_says_its_severity_and_summary_in_english_and_german() -> None:
    assert INCIDENT_ALERT.render(alert()) == "Alert (critical): db-primary disk 95% full"
    german = alert(locale="de-AT", severity="warning")
    assert INCIDENT_ALERT.render(german) == "Alarm (warning): db-primary disk 95% full"
    assert "db-primary/disk-full" not in INCIDENT_ALERT.render(alert()), "the key stays out"


@pytest.mark.parametrize(
    "change",
    [
        {"severity": "major"},
        {"summary": "x" * 101},
        {"summary": "two\nlines"},
        {"summary": ""},
        {"alertKey": "k" * 256},
        {"alertKey": ""},
        {"occurredAt": 1764763080},
        {"occurredAt": "2026-12-03T11:58:00"},
    ],
)
def test_what_an_alert_may_not_carry(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        alert(**change)


def test_the_longest_key_and_summary_are_accepted() -> None:
    assert len(alert(alertKey="k" * 255, summary="s" * 100).alertKey) == 255


def test_the_policy_defaults_and_what_it_tells_the_pipeline() -> None:
    policy = IncidentAlertPolicy()
    assert (policy.collapse_seconds, policy.max_per_hour) == (900, 10)
    assert (policy.max_age_seconds, policy.validity_seconds) == (600, 600)
    event = alert()
    assert policy.expires_at(event) == event.occurredAt + timedelta(seconds=600)
    assert policy.collapse_rule(event) == CollapseRule("db-primary/disk-full", 900, 10)
    assert policy.message_validity() == 600
    assert INCIDENT_ALERT.accepts_purpose("alerts")
    assert not INCIDENT_ALERT.accepts_purpose("marketing")


def test_the_policy_reads_its_variables_and_keeps_validity_in_twilios_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMS_INCIDENT_ALERT_COLLAPSE_SECONDS", "60")
    monkeypatch.setenv("SMS_INCIDENT_ALERT_MAX_PER_HOUR", "3")
    assert (IncidentAlertPolicy().collapse_seconds, IncidentAlertPolicy().max_per_hour) == (60, 3)
    for bad in ("0", "36001"):
        monkeypatch.setenv("SMS_INCIDENT_ALERT_VALIDITY_SECONDS", bad)
        with pytest.raises(ValidationError):
            IncidentAlertPolicy()


def ask(event_id: str, key: str = "disk", number: str = "n1", window: float = 60) -> CollapseAsk:
    return CollapseAsk(event_id, number, CollapseRule(key, window, 3))


def test_the_first_opens_a_window_and_its_repeats_collapse_in_order() -> None:
    reasons, opened = collapse([ask("a"), ask("b"), ask("c", "cpu")], [], NOW)
    assert reasons == {"a": None, "b": REPEAT, "c": None}
    assert [w.event_id for w in opened] == ["a", "c"]


def test_the_holder_of_a_window_sends_again_after_a_crash_and_no_one_else_does() -> None:
    held = [AlertWindow("a", "n1", "disk", NOW - timedelta(seconds=30))]
    reasons, opened = collapse([ask("b"), ask("a")], held, NOW)
    assert reasons == {"b": REPEAT, "a": None}
    assert opened == []


def test_a_window_closes_after_its_length_and_the_cap_counts_the_hour() -> None:
    old = [AlertWindow("a", "n1", "disk", NOW - timedelta(seconds=60))]
    assert collapse([ask("b")], old, NOW)[0] == {"b": None}
    hour = [AlertWindow(f"w{i}", "n1", f"k{i}", NOW - timedelta(minutes=50)) for i in range(3)]
    assert collapse([ask("b"), ask("c", number="n2")], hour, NOW)[0] == {
        "b": HOURLY_CAP,
        "c": None,
    }
    past_hour = [replace_opened(w, NOW - timedelta(minutes=61)) for w in hour]
    assert collapse([ask("b")], past_hour, NOW)[0] == {"b": None}


def replace_opened(window: AlertWindow, at: datetime) -> AlertWindow:
    return AlertWindow(window.event_id, window.phone_hash, window.key_hash, at)
