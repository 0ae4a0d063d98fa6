"""Retry topics named by position: a changed delay and an old delay-named topic strand
nothing (real Kafka, PostgreSQL and the simulator)."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from sms_relay.adapters.kafka.headers import (
    ATTEMPT,
    NOT_BEFORE,
    ORIGINAL_TOPIC,
    decode_headers,
    encode_headers,
)
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import (
    committed_to_end,
    created_bodies,
    deliveries,
    eventually,
    order_event,
    produce,
    read_to_end,
    running_consumer,
    topic_reader,
    wait_for_topics,
)

pytestmark = pytest.mark.integration

PHONES = ("+12125550163", "+12125550164", "+12125550165")
OLD_NAME_FOUND = "retry topics named after their delay found"


def with_tiers(settings: Settings, *tiers: str) -> Settings:
    sending = settings.sending.model_copy(update={"retry_tiers": tiers})
    return settings.model_copy(update={"sending": sending})


def accepted(settings: Settings, events: list[dict[str, str]]) -> bool:
    rows = deliveries(settings)
    return all(rows.get(e["eventId"], {}).get("state") == "accepted" for e in events)


def sent_at_ms(simulator: SimulatorServer, phone: str) -> int:
    """When the one message to `phone` was created (epoch ms)."""
    (message,) = [m for m in simulator.messages() if m.get("created") and m["to"] == phone]
    return int(datetime.fromisoformat(message["time"]).timestamp() * 1000)


@pytest.mark.slow
async def test_changing_a_tiers_delay_strands_nothing_waiting_in_it(
    settings: Settings, simulator: SimulatorServer
) -> None:
    # Three 429s (SMS_MAX_ATTEMPTS) route each event to tier 1, due in 8 s; then the
    # consumer is redeployed with tier 1 at one hour. Under delay-named topics the second
    # run would read `.retry.1h` and the records in `.retry.8s` would wait forever.
    first, second = with_tiers(settings, "8s", "2s"), with_tiers(settings, "1h", "2s")
    events = [order_event(phone=phone, order_id=f"70{i}") for i, phone in enumerate(PHONES)]
    for phone in PHONES:
        simulator.script(phone, ["429", "429", "429", "ok"])
    produce(settings, settings.kafka.topic_order_shipped, events)
    tier_1 = settings.kafka.retry_topic(settings.kafka.topic_order_shipped, 1)

    with topic_reader(settings, tier_1) as waiting:
        async with running_consumer(first):
            await eventually(lambda: len(waiting.poll()) == len(events), what="tier 1 records")
    assert created_bodies(simulator.messages()) == []
    due = [int(decode_headers(m)[NOT_BEFORE]) for m in read_to_end(settings, tier_1)]
    assert len(due) == len(events)

    async with running_consumer(second):
        await eventually(lambda: accepted(second, events), timeout=40, what="all accepted")
        await committed_to_end(second, tier_1)

    assert len(created_bodies(simulator.messages())) == len(events)
    # Each was sent once, at the due time it was given (8 s), not at the new delay's (1 h).
    not_before = min(due)
    for phone in PHONES:
        assert not_before <= sent_at_ms(simulator, phone) < not_before + 60_000
    # Nothing went on past tier 1: the consumers have stopped, so these are final.
    assert (
        read_to_end(settings, settings.kafka.retry_topic(settings.kafka.topic_order_shipped, 2))
        == []
    )
    assert read_to_end(settings, settings.kafka.dlq_topic(settings.kafka.topic_order_shipped)) == []


async def test_old_delay_named_retry_topics_are_drained_and_continue_in_their_tier(
    settings: Settings, simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A deployment from before tiers were named by position: records wait in
    # `<topic>.retry.30s`. With tiers 1s,30s,2s that topic is tier 2's old name: its
    # records are sent from there, and one that fails again goes on to tier 3.
    run = with_tiers(settings, "1s", "30s", "2s")
    wait_for_topics(run.kafka, ensure_topics(run.kafka, run.sending.retry_tiers))
    old = f"{settings.kafka.topic_order_shipped}.retry.30s"
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    admin.create_topics([NewTopic(old, 2, 1)])[old].result(30)
    wait_for_topics(run.kafka, [old])
    fine, failing_again = (order_event(phone=PHONES[0]), order_event(phone=PHONES[1]))
    simulator.script(PHONES[1], ["429", "429", "429", "ok"])
    headers = encode_headers(
        {ATTEMPT: 3, NOT_BEFORE: 0, ORIGINAL_TOPIC: settings.kafka.topic_order_shipped}
    )
    produce(run, old, [fine, failing_again], headers)

    with topic_reader(run, run.kafka.retry_topic(run.kafka.topic_order_shipped, 3)) as tier_3:
        with caplog.at_level(logging.WARNING, logger="consumer.app"):
            async with running_consumer(run):
                await eventually(
                    lambda: accepted(run, [fine, failing_again]), timeout=40, what="both sent"
                )
                await committed_to_end(run, old)
        await eventually(lambda: len(tier_3.poll()) == 1, what="the tier 3 record")
        (moved_on,) = tier_3.records

    assert len(created_bodies(simulator.messages())) == 2
    for phone in PHONES[:2]:
        sent_at_ms(simulator, phone)  # exactly one message each
    assert decode_headers(moved_on)[ATTEMPT] == "6"  # 3 before, 3 more from the old topic
    found = [r for r in caplog.records if r.getMessage().startswith(OLD_NAME_FOUND)]
    assert len(found) == 1
    assert found[0].__dict__["topics"] == [old]
    assert read_to_end(run, run.kafka.dlq_topic(run.kafka.topic_order_shipped)) == []
