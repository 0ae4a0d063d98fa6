"""Helpers of the operations tests: dead-letter an event, seed a DLQ, read rows, count SMS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from sqlalchemy import create_engine, text

from sms_relay.adapters.kafka.headers import (
    ATTEMPT,
    DLQ_REASON,
    ERROR,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    encode_headers,
)
from sms_relay.settings import KafkaSettings, Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import eventually, produce, running_consumer


def one_attempt_per_tier(settings: Settings) -> Settings:
    """The test's settings with one send per tier: a few 429s dead-letter an event."""
    sending = settings.sending.model_copy(update={"max_attempts": 1})
    return settings.model_copy(update={"sending": sending})


def query(settings: Settings, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        with engine.begin() as connection:
            result = connection.execute(text(sql), params)
            return [dict(row) for row in result.mappings()] if result.returns_rows else []
    finally:
        engine.dispose()


def state_of(settings: Settings, event_id: str) -> str | None:
    rows = query(settings, "SELECT state FROM deliveries WHERE event_id = :e", e=event_id)
    return rows[0]["state"] if rows else None


def created_to(simulator: SimulatorServer, phone: str) -> list[dict[str, Any]]:
    """Messages the simulator created (what a handset would receive) for `phone`."""
    return [m for m in simulator.messages() if m.get("created") and m.get("to") == phone]


async def dead_letter(
    settings: Settings, simulator: SimulatorServer, events: list[dict[str, Any]]
) -> None:
    """Run the consumer until every event is dead-lettered (Twilio answers 429 throughout).

    Three tiers of one attempt each: main topic, then the test's two retry tiers.
    """
    fast = one_attempt_per_tier(settings)
    phones = [event["phone"] for event in events]
    for phone in set(phones):
        await simulator.aclient.script(phone, ["429"] * 3 * phones.count(phone))
    produce(fast, fast.kafka.topic_order_shipped, list(events))
    async with running_consumer(fast):
        await eventually(
            lambda: all(state_of(fast, e["eventId"]) == "dead_lettered" for e in events),
            timeout=30,
            what="events dead-lettered",
        )


def seed_dlq(
    kafka: KafkaSettings,
    count: int,
    *,
    prefix: str = "seed",
    reason: Callable[[int], str] = lambda _i: "retries_exhausted",
    timestamp_ms: Callable[[int], int] | None = None,
) -> list[str]:
    """`count` dead-lettered order-shipped events straight onto the DLQ, with the headers
    the consumer writes (fast: one producer, one flush); returns their eventIds in order.
    Keyed by orderId, so they spread over the partitions."""
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "acks": "all",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    refused: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            refused.append(str(error))

    event_ids = []
    for i in range(count):
        event_id = f"order_{prefix}_{i}_shipped_v1"
        event_ids.append(event_id)
        value = _SEED_VALUE % (event_id, i, i)
        headers = encode_headers(
            {
                ATTEMPT: 3,
                ERROR: "twilio 20429: too many requests",
                DLQ_REASON: reason(i),
                ORIGINAL_TOPIC: kafka.topic_order_shipped,
                ORIGINAL_PARTITION: 0,
                ORIGINAL_OFFSET: i,
            }
        )
        while True:
            try:
                producer.produce(
                    kafka.dlq_topic(kafka.topic_order_shipped),
                    value=value.encode(),
                    key=str(i).encode(),
                    headers=headers,
                    on_delivery=delivered,
                    timestamp=0 if timestamp_ms is None else timestamp_ms(i),  # 0: now
                )
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let it drain
    assert producer.flush(60) == 0
    assert refused == [], f"records refused by the DLQ: {refused}"
    return event_ids


_SEED_VALUE = (
    '{"eventId": "%s", "phone": "+12125550123", "orderId": "%d", '
    '"trackingUrl": "https://example.com/track/%d", "consentAt": "2026-06-01T09:00:00.000Z"}'
)
