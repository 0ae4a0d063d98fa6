"""Composition root of the callbacks process: the aiohttp app, its resources, its tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from callbacks.app_keys import (
    API_KEYS,
    ENGINE,
    KAFKA_PROBE,
    KINDS,
    METRICS,
    OUTBOX,
    PRODUCER,
    RECEIVED_AT,
    SETTINGS,
    SUPPRESSIONS,
    VERIFY,
)
from callbacks.http import route_name
from callbacks.jobs.missing_callbacks import MissingCallbacksReconciler
from callbacks.jobs.projection_runner import ProjectionRunner
from callbacks.routes import health, orders
from callbacks.routes import inbound_sms as inbound
from callbacks.routes import status_callback as status
from callbacks.routes import verify_endpoints as verify
from callbacks.signature_check import twilio_signature
from sms_relay.adapters.kafka.clients import AsyncProducer, create_producer, require_topics
from sms_relay.adapters.postgres.rate_windows import prune
from sms_relay.adapters.postgres.tables import create_engine
from sms_relay.adapters.twilio.sms_sender import fetch_message, message_created_at
from sms_relay.adapters.twilio.twilio_client import close_client, create_client
from sms_relay.adapters.twilio.verifier import TwilioVerifier
from sms_relay.domain.destinations import DestinationPolicy, log_scope
from sms_relay.domain.kinds import EVENT_KINDS
from sms_relay.errors import ConfigurationError, ProviderUnavailableError, ServiceUnavailableError
from sms_relay.listen import listening_socket
from sms_relay.logs import configure_logging, secrets_of
from sms_relay.metrics import CallbackMetrics, PolicyMetrics
from sms_relay.periodic import every
from sms_relay.settings import Settings
from sms_relay.status.api_keys import ApiKeys
from sms_relay.status.opt_out import PostgresSuppressions
from sms_relay.status.outbox import DATABASE_ERRORS, Outbox, OutboxRelay
from sms_relay.status.phone_verification import VerifyLimits, VerifyService
from sms_relay.status.status_projection import StatusProjection

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TWILIO_CLIENT: web.AppKey[Any] = web.AppKey("twilio_client")
_STOP_GRACE_SECONDS = 10.0
_PRUNE_INTERVAL_SECONDS = 60.0
# Served on the ingest listener when INGEST_PORT is set; the probes and metrics on both.
INGEST_ROUTES = frozenset({"/api/order-shipped-sms"})
SHARED_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    """The callbacks service; resources open on start-up and close on clean-up.

    Raises ConfigurationError when signatures are required but TWILIO_AUTH_TOKEN is empty.
    """
    if settings.require_twilio_signature and not settings.twilio.auth_token.get_secret_value():
        raise ConfigurationError("TWILIO_AUTH_TOKEN is required to check webhook signatures")
    app = web.Application(
        client_max_size=settings.callbacks_max_body_bytes,
        middlewares=[_observe, _listener, twilio_signature],
    )
    app[SETTINGS] = settings
    app[METRICS] = CallbackMetrics(registry or CollectorRegistry())
    app.cleanup_ctx.extend([_database, _kafka, _twilio, _background])
    app.router.add_post("/twilio/status-callback", status.status_callback)
    app.router.add_post("/twilio/inbound", inbound.inbound_message)
    app.router.add_post("/api/verify/start", verify.verify_start)
    app.router.add_post("/api/verify/check", verify.verify_check)
    app.router.add_post("/api/order-shipped-sms", orders.order_shipped_sms)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    return app


class PrivacyAccessLogger(AbstractAccessLogger):
    """Method, path (never the query string), status and time; the formatter masks numbers."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.1fms", request.method, request.path, response.status, time * 1000
        )


def run(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM.

    Raises ConfigurationError on unusable settings, when PORT cannot be bound or when a
    topic is missing. Kafka not answering is no reason to refuse: the outbox is for that.
    """
    configure_logging(settings.log_level, secrets=secrets_of(settings))
    if not settings.require_twilio_signature:
        log.warning(
            "REQUIRE_TWILIO_SIGNATURE=false: webhooks are NOT authenticated; "
            "development only (refused when APP_ENV=production)"
        )
    app = create_app(settings)
    # Bound before the app starts its resources, so a taken port fails at once.
    sockets = [listening_socket(settings.host, settings.port, "PORT")]
    ingest = settings.ingest_listener
    if ingest is not None:
        sockets.append(listening_socket(*ingest, "INGEST_PORT"))
    kafka = settings.kafka
    topics = [kafka.topic_delivery_status, kafka.topic_phone_verified, kafka.topic_order_shipped]
    try:
        require_topics(kafka, topics, timeout=settings.callbacks_kafka_deadline_seconds)
    except ServiceUnavailableError as error:
        log.warning(
            "starting without Kafka: the outbox takes callbacks", extra={"error": str(error)}
        )
    log_scope(settings.destinations)  # once the start-up checks passed
    log.info(
        "callbacks service starting",
        extra={
            "host": settings.host,
            "port": settings.port,
            "ingest": f"{ingest[0]}:{ingest[1]}" if ingest else "same listener",
        },
    )
    web.run_app(
        app,
        sock=sockets,
        access_log_class=PrivacyAccessLogger,
        print=None,
        shutdown_timeout=settings.sending.shutdown_grace_seconds,
    )
    return 0


@web.middleware
async def _listener(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With INGEST_PORT set, ingestion answers only there and the rest only on PORT."""
    ingest_port = request.app[SETTINGS].ingest_port
    route = route_name(request)
    if ingest_port is not None and route not in SHARED_ROUTES:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        on_ingest = isinstance(sockname, tuple) and sockname[1] == ingest_port
        if (route in INGEST_ROUTES) != on_ingest:
            raise web.HTTPNotFound()
    return await handler(request)


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as error:
        code = error.status
        raise
    finally:
        metrics = request.app[METRICS]
        route = route_name(request)
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.http_requests.labels(route, method, str(code)).inc()
        metrics.http_latency.labels(route).observe(time.perf_counter() - started)


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Webhooks arrive by the dozen at once; each holds a connection for one short
    # transaction. 20 kept open (no connection churn), 10 more at peaks.
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=20, max_overflow=10)
    app[ENGINE] = engine
    app[SUPPRESSIONS] = PostgresSuppressions(engine, settings.phone_hash_key.get_secret_value())
    app[API_KEYS] = ApiKeys(engine)
    refused = PolicyMetrics(app[METRICS].registry).refused
    policy = DestinationPolicy.from_settings(
        settings.destinations, lambda reason: refused.labels(reason).inc()
    )
    app[KINDS] = {name: kind.with_policy(policy) for name, kind in EVENT_KINDS.items()}
    yield
    await engine.dispose()


async def _kafka(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    message_timeout = settings.callbacks_kafka_message_timeout_seconds
    raw = create_producer(settings.kafka, **{"message.timeout.ms": int(message_timeout * 1000)})
    producer = AsyncProducer(raw)
    # Connect and learn the topic before the first callback: cold, its publish paid for
    # the connection, the metadata and the producer id (0.1-0.5 s here, 6 ms warm), and
    # on a busy host missed its deadline. Kafka away is the outbox's case, not an error.
    with contextlib.suppress(KafkaException):
        deadline = settings.callbacks_kafka_deadline_seconds
        await asyncio.to_thread(raw.list_topics, settings.kafka.topic_delivery_status, deadline)

    async def kafka_answers(timeout: float) -> bool:
        try:
            await asyncio.to_thread(raw.list_topics, None, timeout)
        except KafkaException:
            return False
        return True

    app[PRODUCER] = producer
    app[KAFKA_PROBE] = kafka_answers
    app[OUTBOX] = Outbox(
        app[ENGINE],
        producer,
        app[METRICS],
        deadline_seconds=settings.callbacks_kafka_deadline_seconds,
        message_timeout_seconds=message_timeout,
    )
    yield
    undelivered = await asyncio.to_thread(producer.close, message_timeout + 1)
    if undelivered:
        log.warning("records left undelivered at shutdown", extra={"records": undelivered})
    await app[OUTBOX].close()


async def _twilio(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = create_client(settings.twilio) if settings.twilio.configured else None
    app[_TWILIO_CLIENT] = client

    async def received_at(sid: str) -> datetime:
        if client is None:
            raise ProviderUnavailableError("no Twilio credentials to ask")
        return await message_created_at(client, settings.twilio, sid)

    app[RECEIVED_AT] = received_at
    verifier = None
    if client is not None and settings.twilio.verify_service_sid:
        verifier = TwilioVerifier(client, settings.twilio)
    app[VERIFY] = VerifyService(
        verifier,
        app[OUTBOX],
        app[METRICS],
        app[ENGINE],
        limits=VerifyLimits(
            starts_per_number=settings.verify_max_starts_per_number,
            starts_per_ip=settings.verify_max_starts_per_ip,
            checks_per_number=settings.verify_max_checks_per_number,
            window_seconds=settings.verify_window_seconds,
        ),
        hash_key=settings.phone_hash_key.get_secret_value(),
        topic=settings.kafka.topic_phone_verified,
    )
    yield
    if client is not None:
        await close_client(client)


async def _background(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine, metrics, outbox = app[ENGINE], app[METRICS], app[OUTBOX]
    message_timeout = settings.callbacks_kafka_message_timeout_seconds
    relay = OutboxRelay(
        engine,
        app[PRODUCER],
        metrics,
        grace_seconds=max(message_timeout, settings.callbacks_kafka_deadline_seconds) + 1.0,
        message_timeout_seconds=message_timeout,
        retention_seconds=settings.callbacks_outbox_retention_seconds,
        on_published=outbox.kafka_answered,
    )
    stop = asyncio.Event()
    jobs: list[Coroutine[Any, Any, None]] = [
        relay.run(settings.callbacks_relay_interval_seconds, stop),
        _prune_limits(engine, stop),
    ]
    if settings.callbacks_run_projection:
        runner = ProjectionRunner(settings.kafka, StatusProjection(engine, metrics))
        jobs.append(runner.run(stop))
    client = app[_TWILIO_CLIENT]
    if settings.callbacks_run_reconciler and client is not None:
        reconciler = MissingCallbacksReconciler(
            engine,
            partial(fetch_message, client, settings.twilio),
            outbox,
            metrics,
            topic=settings.kafka.topic_delivery_status,
            stuck_after_seconds=settings.sending.stuck_after_seconds,
        )
        jobs.append(reconciler.run(settings.callbacks_reconcile_interval_seconds, stop))
    tasks = [asyncio.create_task(job) for job in jobs]
    for task in tasks:
        task.add_done_callback(_report_crash)
    yield
    stop.set()
    _done, pending = await asyncio.wait(tasks, timeout=_STOP_GRACE_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _prune_limits(engine: AsyncEngine, stop: asyncio.Event) -> None:
    """Forget rate-limit rows whose every hit has left its window (never earlier)."""
    await every(
        _PRUNE_INTERVAL_SECONDS,
        partial(prune, engine),
        stop,
        what="rate-limit pruning",
        survives=DATABASE_ERRORS,
    )


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task stopped", exc_info=task.exception())
