"""Metrics move as they should after a flow, read from /metrics with Prometheus' parser;
the ops gauges (lag from librdkafka statistics, stuck claims) against the real services."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from consumer.gauges import LagRecorder, watch_stuck_claims
from sms_relay.adapters.postgres.deliveries import count_stuck_claims
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.metrics import ConsumerMetrics
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.ops.helpers import query, state_of
from tests.support import committed_to_end, eventually, order_event, produce, running_consumer

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@contextmanager
def metrics_endpoint(registry: CollectorRegistry) -> Iterator[str]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own test server
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_move_as_expected_after_a_flow(
    settings: Settings, simulator: SimulatorServer
) -> None:
    events = [order_event(phone=f"+1212555015{i}", order_id=str(1200 + i)) for i in range(4)]
    failed = order_event(phone="+15005550001", order_id="1299")
    produce(
        settings,
        settings.kafka.topic_order_shipped,
        [*events, failed, events[0], b"not json"],
    )
    registry = CollectorRegistry()
    with metrics_endpoint(registry) as url:
        async with running_consumer(settings, registry):
            await eventually(
                lambda: (
                    state_of(settings, failed["eventId"]) == "failed"
                    and all(state_of(settings, e["eventId"]) == "accepted" for e in events)
                ),
                what="all settled",
            )
            await eventually(
                lambda: value(scrape(url), "sms_relay_outcomes_total", outcome="rejected") == 1,
                what="the rejection counted",
            )
            # Every record processed (the duplicate too), not only the ones awaited above.
            await committed_to_end(settings, settings.kafka.topic_order_shipped)
            samples = await asyncio.to_thread(scrape, url)

    topic = settings.kafka.topic_order_shipped
    assert value(samples, "sms_relay_events_consumed_total", topic=topic) == 7
    assert value(samples, "sms_relay_outcomes_total", outcome="sent") == 4
    assert value(samples, "sms_relay_outcomes_total", outcome="failed") == 1
    assert value(samples, "sms_relay_outcomes_total", outcome="duplicate") == 1
    assert value(samples, "sms_relay_outcomes_total", outcome="rejected") == 1
    create = {"operation": "create"}
    assert (
        value(samples, "sms_relay_twilio_requests_total", result="ok", http_status="201", **create)
        == 4
    )
    assert (
        value(
            samples,
            "sms_relay_twilio_requests_total",
            result="rejected",
            http_status="400",
            **create,
        )
        == 1
    )
    assert value(samples, "sms_relay_twilio_request_duration_seconds_count", **create) == 5
    assert value(samples, "sms_relay_sends_in_flight") == 0
    assert value(samples, "sms_relay_batch_duration_seconds_count") >= 1


def test_lag_per_partition_comes_from_librdkafka_statistics(settings: Settings) -> None:
    topic = settings.kafka.topic_order_shipped
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for i in range(10):
        producer.produce(topic, value=b"x", key=str(i), partition=0)
    assert producer.flush(10) == 0

    registry = CollectorRegistry()
    gauge = ConsumerMetrics(registry).consumer_lag
    labels = {"topic": topic, "partition": "0"}

    def lag() -> float | None:
        return registry.get_sample_value("sms_relay_consumer_lag_records", labels)

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"lag-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "statistics.interval.ms": 100,
            "stats_cb": LagRecorder(gauge),
        }
    )

    def lag_becomes(expected: float) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            consumer.poll(0.1)
            if lag() == expected:
                return
        raise AssertionError(f"lag never became {expected}")

    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        consumed = 0
        deadline = time.monotonic() + 20
        while consumed < 10 and time.monotonic() < deadline:
            consumed += len(consumer.consume(10, 0.5))
        consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
        lag_becomes(6)
        consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
        lag_becomes(0)
        consumer.unassign()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and lag() is not None:
            consumer.poll(0.1)
        # An unassigned partition leaves the gauge: another process reports it now.
        assert lag() is None
    finally:
        consumer.close()


async def test_stuck_sending_claims_are_counted_and_published(settings: Settings) -> None:
    query(
        settings,
        """
        INSERT INTO deliveries (event_id, event_type, state, phone_hash, phone_masked,
            lease_until, sending_started_at)
        VALUES ('stuck_1', 'order-shipped', 'sending', 'h1', '+*******0001',
                now() - interval '20 minutes', now() - interval '21 minutes'),
               ('live_1', 'order-shipped', 'sending', 'h2', '+*******0002',
                now() + interval '1 minute', now() - interval '30 minutes'),
               ('recent_1', 'order-shipped', 'sending', 'h3', '+*******0003',
                now() - interval '1 minute', now() - interval '2 minutes'),
               ('done_1', 'order-shipped', 'accepted', 'h4', '+*******0004',
                now() - interval '1 hour', now() - interval '1 hour')
        """,
    )
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        assert await count_stuck_claims(engine, 900) == 1
        registry = CollectorRegistry()
        metrics = ConsumerMetrics(registry)

        def stuck() -> float | None:
            return registry.get_sample_value("sms_relay_stuck_sending_claims")

        def doubts() -> float | None:
            return registry.get_sample_value("sms_relay_unresolved_doubts")

        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_stuck_claims(engine, metrics, 900, stop, 0.05))
        try:
            await eventually(lambda: stuck() == 1 and doubts() == 0, what="the gauges set")
            query(settings, "UPDATE deliveries SET state = 'accepted' WHERE event_id = 'stuck_1'")
            query(settings, "UPDATE deliveries SET doubt_since = now() WHERE event_id = 'live_1'")
            await eventually(lambda: stuck() == 0 and doubts() == 1, what="the gauges moved")
        finally:  # stopped however the test ends, before its engine goes
            stop.set()
            await asyncio.wait_for(watcher, 30)
    finally:
        await engine.dispose()
