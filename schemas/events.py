"""Kafka values: what upstream sends us and what we report back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, field_validator

from schemas.phone import E164Phone


def utc_now() -> datetime:
    return datetime.now(UTC)


def event_id_of(raw: bytes) -> str | None:
    """The eventId of a record that failed validation, when it has a plausible one."""
    try:
        value = json.loads(raw).get("eventId")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 120 else None


class SmsRequested(BaseModel):
    """What every event that becomes an SMS carries: who, with which consent, once."""

    # Unknown fields are kept (upstream evolves); errors never echo the offending value.
    model_config = ConfigDict(extra="allow", hide_input_in_errors=True, frozen=True)

    eventId: str = Field(min_length=6, max_length=120, pattern=r"^[\x21-\x7e]+$")
    phone: E164Phone
    consentAt: AwareDatetime
    consentPurpose: str | None = Field(default=None, max_length=64)
    # Where consent was given (a form, a checkout, a keyword): a label, never personal data.
    consentSource: str | None = Field(
        default=None, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$"
    )
    # Picks the text's language (`de`, `de-AT`); unknown or absent: English.
    locale: str | None = Field(
        default=None, max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8}){0,3}$"
    )

    @field_validator("consentAt", mode="before")
    @classmethod
    def _consent_is_text(cls, value: object) -> object:
        # Lax mode would read a number as seconds since 1970: the contract is ISO-8601.
        if not isinstance(value, str | datetime):
            raise ValueError("consentAt must be an ISO-8601 instant with a zone")
        return value

    @field_validator("consentAt")
    @classmethod
    def _consent_not_in_future(cls, value: datetime) -> datetime:
        if value > utc_now():
            raise ValueError("consentAt is in the future")
        return value

    def link_hosts(self) -> tuple[tuple[str, str], ...]:
        """(field, host) of every link the text will carry: SMS_ALLOWED_LINK_HOSTS applies."""
        return ()


class OrderShipped(SmsRequested):
    """Input on `order-shipped`; field names as upstream sends them."""

    # Letters, digits, `-` and `_` only: it is put into the text, and phones turn anything
    # that looks like a domain or a URL (a dot, a slash, a colon) into a link.
    orderId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    trackingUrl: HttpUrl | None = None

    def link_hosts(self) -> tuple[tuple[str, str], ...]:
        if self.trackingUrl is None:
            return ()
        return (("trackingUrl", self.trackingUrl.host or ""),)


class SupportTicketCreated(SmsRequested):
    """Input on `support-ticket-created`: the text says the ticket number, nothing of the
    ticket itself."""

    # As orderId: it goes into the text, so nothing a phone would turn into a link.
    ticketId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    link: HttpUrl | None = None

    def link_hosts(self) -> tuple[tuple[str, str], ...]:
        if self.link is None:
            return ()
        return (("link", self.link.host or ""),)


class IncidentAlert(SmsRequested):
    """Input on `incident-alert`: one SMS per (number, alertKey) per collapse window."""

    # The dedup key (PagerDuty's `dedup_key`): never in the text, stored only hashed.
    alertKey: str = Field(min_length=1, max_length=255)
    severity: Literal["critical", "warning", "info"]
    # Goes into the text: printable, one line.
    summary: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    occurredAt: AwareDatetime

    @field_validator("occurredAt", mode="before")
    @classmethod
    def _occurred_is_text(cls, value: object) -> object:
        if not isinstance(value, str | datetime):
            raise ValueError("occurredAt must be an ISO-8601 instant with a zone")
        return value


# How far ahead a reminder may ask to be sent (the scheduler keeps it until then).
MAX_SEND_AHEAD_DAYS = 35


class AppointmentReminder(SmsRequested):
    """Input on `appointment-reminder`: sent at `sendAt` (or at once), outside the quiet
    hours of the recipient's zone, never at or after `startsAt`."""

    # As orderId: it goes into the text, so nothing a phone would turn into a link.
    appointmentId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    startsAt: AwareDatetime
    sendAt: AwareDatetime | None = None
    # An IANA zone (`Europe/Berlin`); absent: the zones of the number.
    timeZone: str | None = Field(default=None, max_length=64)

    @field_validator("timeZone")
    @classmethod
    def _iana_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError("timeZone must be an IANA zone name, e.g. Europe/Berlin") from None
        return value

    @field_validator("sendAt")
    @classmethod
    def _send_at_within_reach(cls, value: datetime | None) -> datetime | None:
        if value is not None and value > utc_now() + timedelta(days=MAX_SEND_AHEAD_DAYS):
            raise ValueError(f"sendAt is more than {MAX_SEND_AHEAD_DAYS} days ahead")
        return value


class AppointmentCancelled(BaseModel):
    """Input on `appointment-cancelled`: every reminder of the appointment not yet sent,
    and every one that arrives later, ends `canceled`."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True, frozen=True)

    eventId: str = Field(min_length=6, max_length=120, pattern=r"^[\x21-\x7e]+$")
    appointmentId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class Status(StrEnum):
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    READ = "read"
    CANCELED = "canceled"
    SUPPRESSED = "suppressed"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"
    COLLAPSED = "collapsed"  # not sent: an alert's repeat inside its window, or over the cap
    SCHEDULED = "scheduled"  # stored to be sent at `dueAt`
    EXPIRED = "expired"  # not sent: too late (an alert past its age, a reminder at its start)


class DeliveryStatusChanged(BaseModel):
    """Output on `delivery-status`, one record per step of a message's life."""

    model_config = ConfigDict(frozen=True)

    schemaVersion: Literal[1] = 1
    eventId: str | None
    kind: str | None = Field(
        default=None, description="the event kind (`order-shipped`, ...); unset when unknown"
    )
    messageSid: str | None = None
    status: Status
    errorCode: int | None = None
    attempt: int = 0
    source: Literal["consumer", "callbacks", "reconciler"]
    occurredAt: AwareDatetime = Field(default_factory=utc_now)
    to: str | None = Field(default=None, description="always masked, e.g. +*******0123")
    reason: str | None = Field(default=None, description="short machine reason, never PII")
    idempotencyToken: str | None = Field(
        default=None,
        description="the same on every copy of one step (callbacks: from the signed MessageSid, "
        "status and error code): readers drop copies by it",
    )
    dueAt: AwareDatetime | None = Field(
        default=None, description="`scheduled` only: when the message is due to be sent"
    )


class PhoneVerified(BaseModel):
    """Output on `phone-verified` after an approved Verify check."""

    model_config = ConfigDict(frozen=True)

    schemaVersion: Literal[1] = 1
    phoneHash: str
    phone: str = Field(description="masked")
    verifiedAt: AwareDatetime = Field(default_factory=utc_now)
