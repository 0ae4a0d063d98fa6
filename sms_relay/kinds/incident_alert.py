"""`incident-alert`: on-call texts that don't flood (a window per alert key, a cap per
hour), never stale (a maximum age, and Twilio's ValidityPeriod), blind to quiet hours."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from schemas.events import IncidentAlert
from sms_relay.domain.collapse import CollapseRule
from sms_relay.kinds.event_kind import EventKind, KindPolicy, policy_config
from sms_relay.kinds.templates import Template

NAME = "incident-alert"
DAY_SECONDS = 86400  # the alert windows' retention: no window or age may be longer


class IncidentAlertPolicy(KindPolicy):
    """`SMS_INCIDENT_ALERT_*`."""

    model_config = policy_config(NAME)

    collapse_seconds: float = Field(
        default=900.0,
        gt=0,
        le=DAY_SECONDS,
        description="One SMS per (number, `alertKey`) per this many seconds (Alertmanager's "
        "`repeat_interval`); the repeats inside it end `collapsed`.",
    )
    max_per_hour: int = Field(
        default=10,
        ge=1,
        description="At most this many alerts per number in any hour, whatever their keys; "
        "those over it end `collapsed` with the reason `max_per_hour`.",
    )
    max_age_seconds: float = Field(
        default=600.0,
        gt=0,
        le=DAY_SECONDS,
        description="An alert older than this (since its `occurredAt`) when it would be sent "
        "ends `expired` and is not sent.",
    )
    validity_seconds: int = Field(
        default=600,
        ge=1,
        le=36000,
        description="Twilio's ValidityPeriod on each alert: a message still queued at Twilio "
        "after this long is dropped instead of arriving late (Twilio allows 1..36000).",
    )

    def collapse_rule(self, event: Any) -> CollapseRule | None:
        return CollapseRule(event.alertKey, self.collapse_seconds, self.max_per_hour)

    def expires_at(self, event: Any) -> datetime | None:
        occurred: datetime = event.occurredAt
        return occurred + timedelta(seconds=self.max_age_seconds)

    def message_validity(self) -> int | None:
        return self.validity_seconds


INCIDENT_ALERT = EventKind(
    name=NAME,
    model=IncidentAlert,
    templates={
        "en": Template("Alert ({severity}): {summary}"),
        "de": Template("Alarm ({severity}): {summary}"),
    },
    key_field="alertKey",
    policy_type=IncidentAlertPolicy,
    consent_purposes=frozenset({"alerts", "operations"}),
    example={
        "alertKey": "db-primary/disk-full",
        "severity": "critical",
        "summary": "db-primary: disk 95% full on /var/lib/postgresql, writes failing since 14:02",
        "occurredAt": "2026-12-03T14:02:00Z",
    },
)
