"""Composition root of the consumer process: builds the adapters, runs the loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid

import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from consumer.loop import ConsumeLoop
from sms_relay.adapters.kafka import AsyncProducer, create_consumer, create_producer
from sms_relay.adapters.postgres import create_engine
from sms_relay.adapters.twilio import TwilioSmsSender, close_client, create_client
from sms_relay.ledger import PostgresLedger
from sms_relay.logs import configure_logging, secrets_of
from sms_relay.metrics import ConsumerMetrics
from sms_relay.ops.gauges import STATS_INTERVAL_MS, LagRecorder, watch_stuck_claims
from sms_relay.ratelimit import RateLimiter
from sms_relay.retry import RetryPolicy, TierPlan
from sms_relay.sending import DeliveryService
from sms_relay.settings import Settings
from sms_relay.templates import ORDER_SHIPPED

log = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event, registry: CollectorRegistry) -> None:
    """Consume until `stop` is set, then finish the batch in hand, commit and leave."""
    sending = settings.sending
    metrics = ConsumerMetrics(registry)
    engine = create_engine(settings.database_url.get_secret_value())
    client = create_client(settings.twilio)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    service = DeliveryService(
        PostgresLedger(engine, owner, sending.lease_seconds),
        TwilioSmsSender(client, settings.twilio),
        limiter=RateLimiter(sending.messages_per_second, sending.burst),
        concurrency=sending.concurrency,
        policy=RetryPolicy(
            sending.max_attempts, sending.backoff_base_seconds, sending.backoff_max_seconds
        ),
        tiers=TierPlan(sending.tier_delays()),
        metrics=metrics,
        phone_hash_key=settings.phone_hash_key.get_secret_value(),
        public_base_url=str(settings.public_base_url),
        settle_seconds=sending.settle_seconds,
    )
    producer = AsyncProducer(create_producer(settings.kafka))
    # Lag per partition comes from librdkafka's own statistics: no extra broker calls,
    # and it keeps moving while a batch is stuck.
    consumer = create_consumer(
        settings.kafka,
        stats_cb=LagRecorder(metrics.consumer_lag),
        **{"statistics.interval.ms": STATS_INTERVAL_MS},
    )
    loop = ConsumeLoop(consumer, producer, service, settings, metrics, ORDER_SHIPPED)
    log.info("consumer started", extra={"owner": owner, "topics": loop.topics})
    task = asyncio.create_task(loop.run(stop))
    stuck = asyncio.create_task(
        watch_stuck_claims(engine, metrics.stuck_sending_claims, sending.stuck_after_seconds, stop)
    )
    try:
        await stop.wait()
        # Let the batch in hand finish and commit within the grace period.
        await asyncio.wait_for(task, sending.shutdown_grace_seconds)
    except TimeoutError:
        log.warning("shutdown grace period over; abandoning the batch uncommitted")
    finally:
        task.cancel()
        stuck.cancel()
        await asyncio.gather(task, stuck, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, consumer.close)
        producer.close()
        await close_client(client)
        await engine.dispose()
        log.info("consumer stopped")


def run(settings: Settings) -> int:
    configure_logging(settings.log_level, secrets=secrets_of(settings))
    registry = CollectorRegistry()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=registry)

    async def main() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await serve(settings, stop, registry)

    # uvloop: the asyncio event loop on libuv, a drop-in that takes a measurable share off
    # the consumer's CPU per event (BENCHMARKS.md).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0
