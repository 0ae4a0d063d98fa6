"""Helpers of the operations tests: dead-letter an event, read rows, count SMS."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text

from sms_relay.settings import Settings
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
