"""Twilio's wire formats: SIDs, dates, error bodies, magic test numbers and error texts."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import web

from sms_relay.domain.segments import count_segments

API_VERSION = "2010-04-01"
SIGNATURE_HEADER = "X-Twilio-Signature"
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
USER_AGENT = "TwilioProxy/1.1"

_E164 = re.compile(r"\A\+[1-9][0-9]{6,14}\Z")

# Twilio's test credentials' magic numbers (https://www.twilio.com/docs/iam/test-credentials).
MAGIC_FROM_ERRORS: dict[str, int] = {
    "+15005550001": 21212,
    "+15005550007": 21606,
    "+15005550008": 21611,
}
MAGIC_TO_ERRORS: dict[str, int] = {
    "+15005550001": 21211,
    "+15005550002": 21612,
    "+15005550003": 21408,
    "+15005550004": 21610,
    "+15005550009": 21614,
}
# The sender a Messaging Service "picks" once its message is sent.
SERVICE_SENDER = "+15005550006"
# The number inbound SMS are sent to unless the control request names one.
DEFAULT_INBOUND_TO = "+15005550006"

ERROR_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "The 'To' number {number} is not a valid phone number.",
    21212: "The 'From' number {number} is not a valid phone number, shortcode, "
    "or alphanumeric sender ID.",
    21408: "Permission to send an SMS has not been enabled for the region indicated "
    "by the 'To' number: {number}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio "
    "phone number for this destination.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21612: "The 'To' phone number: {number}, is not currently reachable using the 'From' "
    "phone number via SMS.",
    21614: "'To' number {number} is not a valid mobile number",
    21624: "Invalid validity period value",
    30409: "This message cannot be canceled",
    35111: "SendAt timestamp is missing",
    35114: "Scheduling does not support this timestamp",
    35126: "The ScheduleType value provided is not supported for this channel",
    60200: "Invalid parameter: {param}",
    60202: "Max check attempts reached",
    60203: "Max send attempts reached",
}

# Delivery errors Twilio reports as `failed` (never handed to a carrier); others `undelivered`.
FAILED_CODES = frozenset({30001, 30002, 30032, 30034, 30036})
DELIVERY_ERROR_MESSAGES: dict[int, str] = {
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    30032: "Toll-Free Number Has Not Been Verified",
    30034: "Message from an Unregistered Number",
    30036: "Validity Period Expired",
}


def new_sid(prefix: str) -> str:
    """A fresh SID: two-letter prefix and 32 hex digits."""
    return prefix + uuid.uuid4().hex


def is_e164(number: str) -> bool:
    return bool(_E164.match(number))


def mask_number(number: str | None) -> str:
    """Keep the last four digits only, e.g. +*******0123, for anything that is logged."""
    if not number:
        return "<none>"
    visible = number[-4:]
    return "+" + "*" * max(len(number) - 5, 0) + visible


def rfc2822(moment: datetime | None) -> str | None:
    """The date format of the Messages API, e.g. 'Thu, 30 Jul 2015 20:12:31 +0000'."""
    if moment is None:
        return None
    return format_datetime(moment.astimezone(UTC)).replace("-0000", "+0000")


def iso8601(moment: datetime | None) -> str | None:
    """The date format of the Verify API, e.g. '2015-07-30T20:12:31Z'."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def num_segments(body: str) -> int:
    """SMS segments a body needs (GSM-7 160/153 septets, UCS-2 70/67 units)."""
    return count_segments(body).segments


def error_message(code: int, **details: str) -> str:
    template = ERROR_MESSAGES.get(code, "Error {code}")
    return template.format(code=code, **details)


def error_response(status: int, code: int, message: str | None = None) -> web.Response:
    """Twilio's JSON error body: code, message, more_info, status."""
    body = {
        "code": code,
        "message": message if message is not None else error_message(code),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


def not_found(path: str) -> web.Response:
    return error_response(404, 20404, error_message(20404, path=path))
