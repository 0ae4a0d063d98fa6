"""The create's delivery options as Twilio documents them: `ValidityPeriod`, and `SendAt` with
`ScheduleType=fixed` (Messaging Services only); their validation errors.

ValidityPeriod: whole seconds, 1 to 36,000, default 36,000 (error 21624); a message that
waits in the sender's queue longer fails with 30036 and is never sent. SendAt: ISO 8601
in UTC, from 15 minutes to 35 days after the request, inclusive (35114); ScheduleType
`fixed` needs it (35111), no other type exists (35126); without a Messaging Service
Twilio drops both and sends at once (https://www.twilio.com/docs/messaging/features/message-scheduling).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_VALIDITY_SECONDS = 36_000
MAX_VALIDITY_SECONDS = 36_000
EARLIEST_SEND_AT = timedelta(seconds=900)
LATEST_SEND_AT = timedelta(days=35)


@dataclass(frozen=True)
class DeliveryOptions:
    validity_seconds: int
    send_at: datetime | None  # set: the message is created `scheduled`


def delivery_options(params: dict[str, str]) -> DeliveryOptions:
    """The options of a create that passed `option_problems`."""
    raw = params.get("ValidityPeriod", "")
    validity = int(raw) if raw else DEFAULT_VALIDITY_SECONDS
    send_at = _send_at(params["SendAt"]) if _scheduling(params) else None
    return DeliveryOptions(validity, send_at)


def option_problems(params: dict[str, str], now: datetime) -> Iterator[int]:
    """Twilio's error codes for bad delivery options, in the order it checks them."""
    raw = params.get("ValidityPeriod")
    if raw is not None and not _validity_ok(raw):
        yield 21624
    if not _scheduling(params):
        return
    if params["ScheduleType"] != "fixed":
        yield 35126
        return
    if not params.get("SendAt"):
        yield 35111
        return
    send_at = _send_at(params["SendAt"])
    if send_at is None or not EARLIEST_SEND_AT <= send_at - now <= LATEST_SEND_AT:
        yield 35114


def _scheduling(params: dict[str, str]) -> bool:
    return bool(params.get("ScheduleType")) and bool(params.get("MessagingServiceSid"))


def _validity_ok(raw: str) -> bool:
    return raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_VALIDITY_SECONDS


def _send_at(raw: str) -> datetime | None:
    """An ISO 8601 instant with its zone (the SDK sends `2026-06-01T09:00:00Z`), or None."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
