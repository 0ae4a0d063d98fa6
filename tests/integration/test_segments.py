"""Segments on the real stack: each sent message's parts and encoding in the ledger and in
the consumer's metrics, counted once per message however often its event comes."""

from __future__ import annotations

import pytest

from sms_relay.domain.segments import count_segments
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import (
    committed_to_end,
    created_bodies,
    deliveries,
    eventually,
    order_event,
    produce,
    running_consumer,
)

pytestmark = pytest.mark.integration

KIND = {"kind": "order-shipped"}


async def test_sent_messages_count_their_segments_in_the_ledger_and_the_metrics(
    settings: Settings, simulator: SimulatorServer
) -> None:
    short = order_event(order_id="2001")
    # A tracking link long enough to need a second part (160 GSM-7 characters in one).
    long_url = "https://example.com/track/2002?" + "&".join(f"leg{i}=ok" for i in range(16))
    long = order_event(phone="+12125550124", order_id="2002", trackingUrl=long_url)
    # Refused by the simulator (21211, as Twilio's magic number): recorded, not counted.
    refused = order_event(phone="+15005550001", order_id="2003")
    topic = settings.kafka.topic_order_shipped
    produce(settings, topic, [short, long, refused, short])  # the repeat must not count again

    async with running_consumer(settings) as registry:
        await eventually(lambda: len(created_bodies(simulator.messages())) == 2)
        await eventually(
            lambda: deliveries(settings).get(refused["eventId"], {}).get("state") == "failed"
        )
        await committed_to_end(settings, topic)

        bodies = sorted(created_bodies(simulator.messages()), key=len)
        assert [count_segments(b).segments for b in bodies] == [1, 2]
        rows = deliveries(settings)
        assert (rows[short["eventId"]]["segments"], rows[short["eventId"]]["encoding"]) == (
            1,
            "GSM-7",
        )
        assert (rows[long["eventId"]]["segments"], rows[long["eventId"]]["encoding"]) == (
            2,
            "GSM-7",
        )
        assert rows[refused["eventId"]]["segments"] == 1

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {**KIND, **labels})

        assert sample("sms_relay_segments_total", encoding="GSM-7") == 3
        assert sample("sms_relay_segments_total", encoding="UCS-2") is None
        assert sample("sms_relay_message_segments_count") == 2
        assert sample("sms_relay_message_segments_sum") == 3
        assert sample("sms_relay_message_segments_bucket", le="1.0") == 1
        assert sample("sms_relay_message_segments_bucket", le="2.0") == 2
