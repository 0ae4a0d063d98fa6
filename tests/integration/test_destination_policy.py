"""SMS_ALLOWED_COUNTRIES / SMS_ALLOWED_LINK_HOSTS hold for events put on Kafka directly."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sms_relay.adapters.kafka.headers import decode_headers
from sms_relay.settings import DestinationSettings, Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import (
    committed_to_end,
    created_bodies,
    deliveries,
    eventually,
    order_event,
    produce,
    read_to_end,
    read_values_to_end,
    running_consumer,
    topic_reader,
)

pytestmark = pytest.mark.integration


async def test_destinations_outside_the_allowlists_end_rejected_and_counted(
    settings: Settings, simulator: SimulatorServer
) -> None:
    restricted = settings.model_copy(
        update={
            "destinations": DestinationSettings(
                allowed_countries=("US",), allowed_link_hosts=("example.com",)
            )
        }
    )
    good = order_event()
    canada = order_event(phone="+14165550123")
    phishing = order_event(trackingUrl="https://example.com.evil.test/track")
    produce(restricted, restricted.kafka.topic_order_shipped, [canada, good, phishing])

    with (
        topic_reader(
            restricted, restricted.kafka.dlq_topic(restricted.kafka.topic_order_shipped)
        ) as dlq,
        topic_reader(restricted, restricted.kafka.topic_delivery_status) as statuses,
    ):
        async with running_consumer(restricted) as registry:
            await eventually(lambda: len(dlq.poll()) == 2)
            await eventually(
                lambda: deliveries(restricted).get(good["eventId"], {}).get("state") == "accepted"
            )
            await eventually(lambda: sum(s["status"] == "rejected" for s in statuses.values()) == 2)
            # Every record processed: nothing more is decided after the counts below.
            await committed_to_end(restricted, restricted.kafka.topic_order_shipped)
            refused = {
                reason: registry.get_sample_value(
                    "sms_relay_policy_refusals_total", {"reason": reason}
                )
                for reason in ("country_not_allowed", "link_host_not_allowed")
            }
    # The consumer has stopped: read to their ends, the topics hold all it published.
    reasons = {
        json.loads(r.value() or b"{}")["eventId"]: decode_headers(r)["sms-relay-dlq-reason"]
        for r in read_to_end(
            restricted, restricted.kafka.dlq_topic(restricted.kafka.topic_order_shipped)
        )
    }
    published = read_values_to_end(restricted, restricted.kafka.topic_delivery_status)
    rejected = Counter(s["reason"] for s in published if s["status"] == "rejected")

    assert reasons == {
        canada["eventId"]: "country_not_allowed",
        phishing["eventId"]: "link_host_not_allowed",
    }
    assert rejected == {"country_not_allowed": 1, "link_host_not_allowed": 1}
    assert refused == {"country_not_allowed": 1.0, "link_host_not_allowed": 1.0}
    assert list(created_bodies(simulator.messages())) == [
        f"Your order 1001 has shipped. Tracking: {good['trackingUrl']}"
    ]
