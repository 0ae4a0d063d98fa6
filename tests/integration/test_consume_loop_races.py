"""Interleavings of the consume loop that scenario runs rarely hit, driven step by step
against real Kafka, PostgreSQL and the simulator (the loop's parts called in order)."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumer.app import delivery_service
from consumer.batch import decode
from consumer.loop import ConsumeLoop
from consumer.offsets import Held
from sms_relay.adapters.kafka.clients import create_consumer, create_producer, position
from sms_relay.adapters.kafka.producer import AsyncProducer
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.adapters.twilio.sms_sender import TwilioSmsSender
from sms_relay.adapters.twilio.twilio_client import close_client, create_client
from sms_relay.metrics import ConsumerMetrics
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import deliveries, eventually, order_event, produce, topic_reader

pytestmark = pytest.mark.integration


async def test_a_late_offer_leaves_the_newer_mark_on_its_offset_alone(
    settings: Settings, simulator: SimulatorServer
) -> None:
    """A held record is being offered (its send slow) when its partition is lost and
    regained; newer work then marks the same offset. The late offer must not remove that
    mark when it ends, or a commit could pass a record still being worked on."""
    # Slow enough that the offer is surely still running when the test has seen the row
    # `sending` (a database round trip on a busy host) and acts.
    simulator.configure(latency_ms=4000)
    event = order_event(phone="+12125550161")
    produce(settings, settings.kafka.topic_order_shipped, [event])
    metrics = ConsumerMetrics(CollectorRegistry())
    engine = create_engine(settings.database_url.get_secret_value())
    client = create_client(settings.twilio)
    producer = AsyncProducer(create_producer(settings.kafka))
    consumer = create_consumer(settings.kafka)
    ledger = PostgresLedger(engine, "race-test", settings.sending.lease_seconds)
    service = delivery_service(settings, ledger, TwilioSmsSender(client, settings.twilio), metrics)
    kinds = settings.served_kinds().values()
    loop = ConsumeLoop(consumer, producer, service, settings, metrics, kinds)
    try:
        with topic_reader(settings, settings.kafka.topic_order_shipped) as reader:
            await eventually(lambda: len(reader.poll()) == 1)
            message = reader.records[0]
        batch = decode([message], loop._routes, lambda _m, _d: None, metrics)
        ((job, _),) = batch.jobs.values()
        topic, partition, offset = position(message)
        key = ((topic, partition), offset)
        loop._offsets.held[key] = Held(time.monotonic() - 1, job, message, generation=0)

        loop._offer_due()  # the offer starts; its create takes 4 s at the simulator
        (offer,) = loop._offering
        await eventually(
            lambda: deliveries(settings).get(event["eventId"], {}).get("state") == "sending",
            timeout=10,
            interval=0.05,
        )
        assert not offer.done()
        # Meanwhile the partition is lost and regained, and newer work marks the offset.
        loop._on_lost(consumer, [TopicPartition(topic, partition)])
        newer = Held(float("inf"), job, message, generation=loop._offsets.generation)
        loop._offsets.held[key] = newer

        await asyncio.wait_for(offer, 30)
        assert loop._offsets.held.get(key) is newer, "the late offer removed newer work's mark"
    finally:
        await close_client(client)
        producer.close()
        consumer.close()
        await engine.dispose()
