"""Erasure: forget one number everywhere we can, and say where we cannot."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sms_relay.masking import mask_phone, phone_hash
from sms_relay.retention.retention_ports import ErasureStore
from sms_relay.settings import Settings
from sms_relay.status.phone_verification import number_limit_keys

log = logging.getLogger(__name__)

# Twilio keeps its own message log (number and body). Its Message resource takes a DELETE
# (the record and its media go), or an update with an empty Body (the body alone goes):
# https://www.twilio.com/docs/messaging/api/message-resource#delete-a-message-resource and
# https://help.twilio.com/articles/223133687 ("Deleting messages, message media or
# message bodies").
TWILIO_STEP = (
    "Twilio's message log still holds the number and the bodies: delete each message listed "
    "above with `DELETE /2010-04-01/Accounts/<AccountSid>/Messages/<MessageSid>.json` "
    "(twilio-cli: `twilio api:core:messages:remove --sid <MessageSid>`), or redact only its "
    "body with a POST to the same URL with an empty `Body`"
)

# A delivery in flight may be held by a consumer, or have a message at Twilio that is not
# matched yet: erasing it under them would let the event be sent a second time.
IN_FLIGHT_STEP = (
    "deliveries still in flight (claimed, sending, scheduled for retry, in doubt, leased, "
    "or their status not yet reported) were kept: run forget again once they have "
    "settled, and it erases them. To stop their pending sends now, "
    "`sms-relay suppress add <phone>` first (the suppression outlives erasure)"
)


@dataclass(frozen=True)
class Erased:
    """What one erasure did: rows removed by table (deliveries made tombstones), the
    deliveries in flight it kept, and the SIDs for Twilio's log."""

    masked: str
    removed: dict[str, int]
    message_sids: list[str] = field(default_factory=list)
    in_flight: int = 0


def kafka_step(settings: Settings) -> str:
    """Where the number may still stand on Kafka, and how an operator removes it."""
    kafka = settings.kafka
    inputs = [kafka.topic_of(kind) for kind in settings.sending.kinds]
    topics = [
        name
        for topic in inputs
        for name in (topic, *settings.retry_topics(topic), kafka.dlq_topic(topic))
    ]
    return (
        f"Kafka records are not erased: {', '.join(topics)} hold original events (with the "
        "number) until their retention.ms deletes them (the DLQ included). Sooner: "
        "`kafka-delete-records --bootstrap-server <brokers> --offset-json-file <file>` "
        "deletes every record of a partition below an offset, or lower the topic's "
        "retention.ms for a while (`kafka-configs --alter --entity-type topics "
        "--entity-name <topic> --add-config retention.ms=<ms>`). "
        f"{kafka.topic_delivery_status} holds masked numbers only"
    )


class Eraser:
    """`sms-relay forget`: every row of a number goes but its suppression (a STOP must
    outlive erasure) and its deliveries in flight; a settled delivery stays as a tombstone
    without the number, so a replay of its event is still a duplicate. An audit row
    records that it happened, without the number."""

    def __init__(self, store: ErasureStore, hash_key: str) -> None:
        self._store = store
        self._hash_key = hash_key

    async def forget(self, number: str, operator: str) -> Erased:
        """Raises DatabaseUnavailableError; a second call finds nothing but the deliveries
        still in flight (and erases those that have settled since)."""
        hashed = phone_hash(self._hash_key, number)
        removed = await self._store.erase(hashed, number_limit_keys(hashed), operator)
        log.info("erased a number", extra={"removed": removed.rows, "in_flight": removed.in_flight})
        return Erased(
            mask_phone(number), removed.rows, sorted(removed.message_sids), removed.in_flight
        )

    async def forget_all(self, numbers: Sequence[str], operator: str) -> list[Erased]:
        return [await self.forget(number, operator) for number in numbers]
