"""Composition root of the consumer process: builds the adapters, runs the loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import Sequence

import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from consumer.cancellations import CancelReader
from consumer.effects import Effects
from consumer.gauges import STATS_INTERVAL_MS, LagRecorder, watch_stuck_claims
from consumer.loop import ConsumeLoop
from sms_relay.adapters.kafka.clients import create_consumer, create_producer
from sms_relay.adapters.kafka.producer import AsyncProducer
from sms_relay.adapters.kafka.topic_retention import retention_ms
from sms_relay.adapters.kafka.topics import require_topics
from sms_relay.adapters.postgres.deliveries import PostgresLedger
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.adapters.twilio.sms_sender import TwilioSmsSender
from sms_relay.adapters.twilio.twilio_client import close_client, create_client
from sms_relay.delivery.delivery_ports import Ledger, Result, SmsSender
from sms_relay.delivery.in_doubt import InDoubtResend
from sms_relay.delivery.pacing import RateLimiter
from sms_relay.delivery.scheduler import Scheduler
from sms_relay.delivery.service import DeliveryService
from sms_relay.domain.destinations import DestinationPolicy, log_scope
from sms_relay.domain.retry import RetryPolicy, TierPlan, delay_named_tiers
from sms_relay.errors import BrokerUnavailableError, DatabaseUnavailableError, SmsRelayError
from sms_relay.kinds.event_kind import EventKind
from sms_relay.kinds.registry import COMPANION_TOPICS
from sms_relay.kinds.typical_length import warn_long_templates
from sms_relay.listen import cannot_listen
from sms_relay.logs import configure_logging, secrets_of
from sms_relay.metrics import ConsumerMetrics, PolicyMetrics
from sms_relay.periodic import every
from sms_relay.retention.horizon import check_horizon
from sms_relay.settings import Settings

log = logging.getLogger(__name__)


def topics_used(settings: Settings) -> list[str]:
    """Every topic the consumer reads or writes: each served kind's input topic, retry
    tiers and DLQ, and the status topic."""
    kafka = settings.kafka
    topics = []
    for name in settings.sending.kinds:
        topic = kafka.topic_of(name)
        topics += [topic, *settings.retry_topics(topic), kafka.dlq_topic(topic)]
        topics += [kafka.topic_of(companion) for companion in COMPANION_TOPICS.get(name, ())]
    return [*topics, kafka.topic_delivery_status]


def delay_named_topics(settings: Settings, existing: set[str]) -> list[str]:
    """The served kinds' retry topics still named after a delay (`.retry.30s`, before tiers
    were named by position) among `existing`: the consumer drains them too (see
    `consumer.batch.routes`), so an upgrade strands nothing. Logged once, with what to do."""
    delays = settings.sending.tier_delays()
    found = sorted(
        topic
        for name in settings.sending.kinds
        for topic in delay_named_tiers(settings.kafka.topic_of(name), existing, delays)
    )
    if found:
        log.warning(
            "retry topics named after their delay found: draining them too; delete each "
            "once the group has no lag on it (kafka-topics.sh --delete --topic NAME)",
            extra={"topics": found},
        )
    return found


def topics_read(settings: Settings) -> list[str]:
    """The topics whose records the consumer claims: the dedupe horizon must outlast them."""
    topics = [settings.kafka.topic_of(name) for name in settings.sending.kinds]
    return [read for topic in topics for read in (topic, *settings.retry_topics(topic))]


def check_dedupe_horizon(settings: Settings) -> None:
    """Raises ConfigurationError when a topic read keeps records longer than the ledger
    remembers eventIds; warns when the brokers do not say, or keep them forever."""
    kept = retention_ms(settings.kafka, topics_read(settings))
    for warning in check_horizon(settings.retention.ledger_retention_days, kept):
        log.warning(warning)


def delivery_service(
    settings: Settings, ledger: Ledger, sender: SmsSender, metrics: ConsumerMetrics
) -> DeliveryService:
    """The delivery core as `SMS_*` and the Twilio settings configure it."""
    sending = settings.sending
    return DeliveryService(
        ledger,
        sender,
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
        horizon_seconds=sending.reconcile_horizon_seconds,
        request_timeout_seconds=settings.twilio.request_timeout_seconds,
        in_doubt_resend=InDoubtResend(sending.in_doubt_resend),
    )


def scheduling(
    settings: Settings,
    service: DeliveryService,
    ledger: Ledger,
    producer: AsyncProducer,
    kinds: list[EventKind],
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """The scheduler (scheduled sends when due) and, with a kind that has them, the cancel
    readers: tasks that end when `stop` is set."""
    effects = Effects(producer, settings.kafka)

    async def publish(results: Sequence[Result]) -> None:
        await asyncio.gather(*(ack for result in results for ack in effects.report(result)))

    scheduler = Scheduler(ledger, service, {kind.name: kind for kind in kinds}, publish)
    survives = (DatabaseUnavailableError, BrokerUnavailableError)
    interval = settings.sending.scheduler_interval_seconds
    tasks = [
        asyncio.create_task(
            every(interval, scheduler.run_once, stop, what="scheduler", survives=survives)
        )
    ]
    for kind in kinds:
        for name in COMPANION_TOPICS.get(kind.name, ()):
            group = f"{settings.kafka.consumer_group}.cancellations"
            consumer = create_consumer(settings.kafka, **{"group.id": group})
            reader = CancelReader(consumer, ledger, settings.kafka.topic_of(name))
            tasks.append(asyncio.create_task(reader.run(stop)))
    return tasks


async def serve(settings: Settings, stop: asyncio.Event, registry: CollectorRegistry) -> None:
    """Consume until `stop` is set, then finish the batch in hand, commit and leave.

    Raises ConfigurationError when a topic is missing or keeps records longer than
    SMS_LEDGER_RETENTION_DAYS, BrokerUnavailableError when Kafka does not answer at start-up.
    """
    kinds_served = settings.served_kinds()  # a broken template stops start-up first
    warn_long_templates(kinds_served.values())
    existing = await asyncio.to_thread(require_topics, settings.kafka, topics_used(settings))
    await asyncio.to_thread(check_dedupe_horizon, settings)
    drained = delay_named_topics(settings, existing)
    log_scope(settings.destinations)  # once the start-up checks passed
    sending = settings.sending
    metrics = ConsumerMetrics(registry)
    engine = create_engine(settings.database_url.get_secret_value())
    client = create_client(settings.twilio)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    ledger = PostgresLedger(engine, owner, sending.lease_seconds)
    service = delivery_service(settings, ledger, TwilioSmsSender(client, settings.twilio), metrics)
    producer = AsyncProducer(create_producer(settings.kafka))
    # Lag per partition comes from librdkafka's own statistics: no extra broker calls,
    # and it keeps moving while a batch is stuck.
    consumer = create_consumer(
        settings.kafka,
        stats_cb=LagRecorder(metrics.consumer_lag),
        **{"statistics.interval.ms": STATS_INTERVAL_MS},
    )
    refused = PolicyMetrics(registry).refused
    policy = DestinationPolicy.from_settings(
        settings.destinations, lambda reason: refused.labels(reason).inc()
    )
    kinds = [kind.configured(destinations=policy) for kind in kinds_served.values()]
    loop = ConsumeLoop(consumer, producer, service, settings, metrics, kinds, drained)
    log.info(
        "consumer started",
        extra={"owner": owner, "kinds": ",".join(kinds_served), "topics": loop.topics},
    )
    task = asyncio.create_task(loop.run(stop))
    heartbeat = asyncio.create_task(service.leases.heartbeat(stop))
    background = scheduling(settings, service, ledger, producer, kinds, stop)
    stuck = asyncio.create_task(
        watch_stuck_claims(engine, metrics, sending.stuck_after_seconds, stop)
    )
    try:
        await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when="FIRST_COMPLETED")
        if task.done():
            # The loop died by itself: leave non-zero, so an orchestrator restarts us and
            # an alert sees it (the metrics endpoint alone would look healthy).
            task.result()
            raise RuntimeError("the consume loop stopped without being asked to")
        # Let the batch in hand finish and commit within the grace period.
        await asyncio.wait_for(task, sending.shutdown_grace_seconds)
    except TimeoutError:
        log.warning("shutdown grace period over; abandoning the batch uncommitted")
    finally:
        stop.set()
        task.cancel()
        stuck.cancel()
        await asyncio.gather(task, stuck, heartbeat, *background, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, consumer.close)
        producer.close()
        await close_client(client)
        await engine.dispose()
        log.info("consumer stopped")


def run(settings: Settings) -> int:
    """Consume until SIGTERM/SIGINT. Raises ConfigurationError when METRICS_PORT cannot be
    bound or a topic is missing, BrokerUnavailableError when Kafka does not answer."""
    configure_logging(settings.log_level, secrets=secrets_of(settings))
    registry = CollectorRegistry()
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
        except OSError as error:
            port = settings.metrics_port
            raise cannot_listen("METRICS_PORT", settings.host, port, error) from None

    async def main() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await serve(settings, stop, registry)

    try:
        # uvloop: the asyncio event loop on libuv, a drop-in that takes a measurable share
        # off the consumer's CPU per event (BENCHMARKS.md).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except SmsRelayError:
        raise  # one line on stderr, from the CLI
    except Exception:
        log.critical("the consumer stopped on an unexpected error", exc_info=True)
        return 1
    return 0
