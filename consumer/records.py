"""Kafka records in and out of the consumer: decode and validate, build the replies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Message
from pydantic import ValidationError

from schemas.events import DeliveryStatusChanged, SmsRequested, Status, event_id_of
from sms_relay.adapters.kafka.clients import position
from sms_relay.adapters.kafka.headers import (
    ATTEMPT,
    DLQ_REASON,
    ERROR,
    KIND,
    NOT_BEFORE,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    Headers,
    KafkaHeaders,
    decode_headers,
    encode_headers,
)
from sms_relay.domain.destinations import REASONS as POLICY_REASONS
from sms_relay.kinds.event_kind import EventKind
from sms_relay.masking import mask_phone


@dataclass(frozen=True)
class Rejected:
    """A record that can never become an SMS: it goes to the DLQ as it came."""

    reason: str  # invalid_json | schema_violation | country_not_allowed | link_host_not_allowed
    error: str  # field and error type; never the value
    event_id: str | None
    kind: EventKind  # the kind of the topic it came from


def now_ms() -> int:
    return int(time.time() * 1000)


def origin(message: Message, headers: Headers) -> dict[str, str | int]:
    """Where the event first entered: kept across retry tiers for `trace` and replays."""
    topic, partition, offset = position(message)
    return {
        ORIGINAL_TOPIC: headers.get(ORIGINAL_TOPIC, topic),
        ORIGINAL_PARTITION: headers.get(ORIGINAL_PARTITION, partition),
        ORIGINAL_OFFSET: headers.get(ORIGINAL_OFFSET, offset),
    }


def parse(kind: EventKind, message: Message) -> SmsRequested | Rejected:
    raw = message.value() or b""
    try:
        return kind.parse(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "value"
        reason = "invalid_json" if first["type"] == "json_invalid" else "schema_violation"
        if first["type"] in POLICY_REASONS:
            reason = first["type"]
        return Rejected(reason, f"{where}: {first['type']}", event_id_of(raw), kind)


def retry_headers(
    message: Message, kind: str, attempts: int, not_before_ms: int, error: str | None
) -> KafkaHeaders:
    headers = decode_headers(message)
    return encode_headers(
        {
            KIND: kind,
            ATTEMPT: attempts,
            NOT_BEFORE: not_before_ms,
            ERROR: (error or "transient")[:200],
            **origin(message, headers),
        }
    )


def dlq_headers(
    message: Message, kind: str, reason: str, attempts: int, error: str | None
) -> KafkaHeaders:
    headers = decode_headers(message)
    return encode_headers(
        {
            KIND: kind,
            ATTEMPT: attempts,
            NOT_BEFORE: 0,
            ERROR: (error or reason)[:200],
            DLQ_REASON: reason,
            **origin(message, headers),
        }
    )


def status_record(
    status: Status,
    event_id: str | None,
    *,
    kind: str,
    phone: str | None,
    attempt: int,
    message_sid: str | None = None,
    error_code: int | None = None,
    reason: str | None = None,
    due_at: datetime | None = None,
) -> bytes:
    record = DeliveryStatusChanged(
        eventId=event_id,
        kind=kind,
        messageSid=message_sid,
        status=status,
        errorCode=error_code,
        attempt=attempt,
        source="consumer",
        to=mask_phone(phone) if phone else None,
        reason=reason,
        dueAt=due_at,
    )
    return record.model_dump_json().encode()
