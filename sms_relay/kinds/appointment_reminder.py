"""`appointment-reminder`: sent at `sendAt` (or at once) outside the recipient's quiet
hours, never at or after `startsAt`, and cancelled by `appointment-cancelled`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from schemas.events import AppointmentReminder
from sms_relay.domain.quiet_hours import NoSendTimeError, earliest_send_time, parse_quiet_window
from sms_relay.domain.recipient_zones import recipient_zones
from sms_relay.kinds.event_kind import EventKind, KindPolicy, SendTiming, policy_config
from sms_relay.kinds.templates import Template

NAME = "appointment-reminder"
# Read with it: `appointment-cancelled` events (`KAFKA_TOPIC_APPOINTMENT_CANCELLED`).
CANCELLED = "appointment-cancelled"
# Why an `expired` reminder was not sent.
STARTED = "appointment_started"  # its start had come when it was due
NO_SEND_TIME = "no_send_time_before_start"  # quiet hours last until (or past) its start


class AppointmentReminderPolicy(KindPolicy):
    """`SMS_APPOINTMENT_REMINDER_*`."""

    model_config = policy_config(NAME)

    quiet_hours: str = Field(
        default="21:00-08:00",
        description="No reminder is sent between these local times (`HH:MM-HH:MM`, may wrap "
        "midnight) in the recipient's zone: the event's `timeZone`, else every zone of the "
        "number; one due inside them waits for their end. `none`: no quiet hours.",
    )

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_quiet_window(value)  # raises ValueError with the expected format
        return value

    def timing(self, event: Any, now: datetime) -> SendTiming:
        start = max(now, event.sendAt) if event.sendAt is not None else now
        zones = recipient_zones(event.phone, event.timeZone)
        try:
            due = earliest_send_time(start, parse_quiet_window(self.quiet_hours), zones)
        except NoSendTimeError:
            return SendTiming(event.startsAt, event.startsAt, NO_SEND_TIME)
        reason = STARTED if start >= event.startsAt else NO_SEND_TIME
        return SendTiming(due, event.startsAt, reason)

    def cancel_key(self, event: Any) -> str | None:
        return str(event.appointmentId)


APPOINTMENT_REMINDER = EventKind(
    name=NAME,
    model=AppointmentReminder,
    templates={
        "en": Template("Reminder: you have an appointment (ref. {appointmentId}) coming up."),
        "de": Template("Erinnerung: Sie haben demnächst einen Termin (Ref. {appointmentId})."),
    },
    key_field="appointmentId",
    policy_type=AppointmentReminderPolicy,
    consent_purposes=frozenset({"appointments", "transactional"}),
    example={
        "appointmentId": "A-20417",
        "startsAt": "2026-12-10T09:30:00+01:00",
        "timeZone": "Europe/Berlin",
    },
)
