"""The consumer end to end: real Kafka, real PostgreSQL, the Twilio simulator."""

from __future__ import annotations

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import (
    committed_to_end,
    eventually,
    order_event,
    produce,
    read_values_to_end,
    running_consumer,
    topic_reader,
)

pytestmark = pytest.mark.integration


def created(simulator: SimulatorServer) -> list[dict[str, object]]:
    return [m for m in simulator.messages() if m.get("created")]


async def test_each_event_sends_once_and_reports_accepted(
    settings: Settings, simulator: SimulatorServer
) -> None:
    events = [order_event(order_id=str(1000 + i)) for i in range(10)]
    produce(settings, settings.kafka.topic_order_shipped, [*events, *events[:4]])

    with topic_reader(settings, settings.kafka.topic_delivery_status) as statuses:
        async with running_consumer(settings):
            await eventually(
                lambda: len([s for s in statuses.values() if s["status"] == "accepted"]) >= 10,
                what="10 accepted statuses",
            )
            # The repeats processed too, not only the first ten records.
            await committed_to_end(settings, settings.kafka.topic_order_shipped)
    # The consumer has stopped: read to its end, the topic holds all it published.
    published = read_values_to_end(settings, settings.kafka.topic_delivery_status)
    accepted = [s for s in published if s["status"] == "accepted"]

    assert sorted(s["eventId"] for s in accepted) == sorted(e["eventId"] for e in events)
    assert len(created(simulator)) == 10
    assert all(s["to"] == "+*******0123" and s["messageSid"].startswith("SM") for s in accepted)
