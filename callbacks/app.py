"""Composition root of the callbacks process: the aiohttp app, its resources, its tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

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
    TWILIO_CLIENT,
    VERIFY,
)
from callbacks.http import route_name
from callbacks.jobs.background import background_jobs
from callbacks.routes import event_ingestion, health, orders
from callbacks.routes import inbound_sms as inbound
from callbacks.routes import status_callback as status
from callbacks.routes import verify_endpoints as verify
from callbacks.signature_check import twilio_signature
from sms_relay.adapters.kafka.clients import create_producer
from sms_relay.adapters.kafka.producer import AsyncProducer
from sms_relay.adapters.kafka.topics import require_topics
from sms_relay.adapters.postgres.api_key_rows import PostgresApiKeys
from sms_relay.adapters.postgres.callback_outbox import PostgresOutboxRows
from sms_relay.adapters.postgres.engine import create_engine
from sms_relay.adapters.postgres.rate_windows import PostgresRateWindows
from sms_relay.adapters.postgres.suppressions import PostgresKeywordStore
from sms_relay.adapters.postgres.verifications import PostgresVerifications
from sms_relay.adapters.twilio.sms_sender import message_created_at
from sms_relay.adapters.twilio.twilio_client import close_client, create_client
from sms_relay.adapters.twilio.verifier import TwilioVerifier
from sms_relay.domain.destinations import DestinationPolicy, log_scope
from sms_relay.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    ProviderUnavailableError,
)
from sms_relay.listen import listening_socket
from sms_relay.logs import configure_logging, secrets_of
from sms_relay.metrics import CallbackMetrics, PolicyMetrics
from sms_relay.settings import Settings
from sms_relay.status.api_keys import ApiKeys
from sms_relay.status.opt_out import OptOutKeywords
from sms_relay.status.outbox import Outbox
from sms_relay.status.phone_verification import VerifyLimits, VerifyService

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Served on the ingest listener when INGEST_PORT is set; the probes and metrics on both.
INGEST_ROUTES = frozenset({"/api/order-shipped-sms", "/api/events/{kind}"})
SHARED_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
STATUS_CALLBACK_PATH = "/twilio/status-callback"


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> web.Application:
    """The callbacks service; resources open on start-up and close on clean-up.

    Raises ConfigurationError when signatures are required but TWILIO_AUTH_TOKEN is empty,
    or when a served kind's template names no field of its model.
    """
    settings.served_kinds()  # checks the templates before anything starts
    if settings.require_twilio_signature and not settings.twilio.auth_token.get_secret_value():
        raise ConfigurationError("TWILIO_AUTH_TOKEN is required to check webhook signatures")
    app = web.Application(
        client_max_size=settings.callbacks_max_body_bytes,
        middlewares=[_observe, _listener, twilio_signature],
    )
    app[SETTINGS] = settings
    app[METRICS] = CallbackMetrics(registry or CollectorRegistry())
    app.cleanup_ctx.extend([_database, _kafka, _twilio, background_jobs])
    app.router.add_post(STATUS_CALLBACK_PATH, status.status_callback)
    app.router.add_post("/twilio/inbound", inbound.inbound_message)
    app.router.add_post("/api/verify/start", verify.verify_start)
    app.router.add_post("/api/verify/check", verify.verify_check)
    app.router.add_post("/api/order-shipped-sms", orders.order_shipped_sms)
    app.router.add_post("/api/events/{kind}", event_ingestion.kind_event)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    return app


class PrivacyAccessLogger(AbstractAccessLogger):
    """Method, path (never the query string), status and time; the formatter masks numbers.

    A status callback answered 2xx gets no line: Twilio posts them by the thousand, the
    line cost an eighth of the service's CPU under load, and
    `sms_relay_http_requests_total` counts each by route and status code anyway.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status < 300 and request.path == STATUS_CALLBACK_PATH:
            return
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
    served = [kafka.topic_of(kind) for kind in settings.sending.kinds]
    topics = [kafka.topic_delivery_status, kafka.topic_phone_verified, *served]
    try:
        require_topics(kafka, topics, timeout=settings.callbacks_kafka_deadline_seconds)
    except BrokerUnavailableError as error:
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
    if ingest_port is None:  # one listener serves every route
        return await handler(request)
    route = route_name(request)
    if route not in SHARED_ROUTES:
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
    hash_key = settings.phone_hash_key.get_secret_value()
    app[SUPPRESSIONS] = OptOutKeywords(PostgresKeywordStore(engine), hash_key)
    app[API_KEYS] = ApiKeys(PostgresApiKeys(engine))
    refused = PolicyMetrics(app[METRICS].registry).refused
    policy = DestinationPolicy.from_settings(
        settings.destinations, lambda reason: refused.labels(reason).inc()
    )
    app[KINDS] = settings.served_kinds(policy)
    yield
    await engine.dispose()


async def _kafka(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    message_timeout = settings.callbacks_kafka_message_timeout_seconds
    timeouts = {"message.timeout.ms": int(message_timeout * 1000)}
    producer = AsyncProducer(create_producer(settings.kafka, **timeouts))
    # Connect and learn the topic before the first callback: cold, its publish paid for
    # the connection, the metadata and the producer id (0.1-0.5 s here, 6 ms warm), and
    # on a busy host missed its deadline. Kafka away is the outbox's case, not an error.
    with contextlib.suppress(BrokerUnavailableError):
        deadline = settings.callbacks_kafka_deadline_seconds
        topic = settings.kafka.topic_delivery_status
        await asyncio.to_thread(producer.request_metadata, topic, deadline)

    async def kafka_answers(timeout: float) -> bool:
        try:
            await asyncio.to_thread(producer.request_metadata, None, timeout)
        except BrokerUnavailableError:
            return False
        return True

    app[PRODUCER] = producer
    app[KAFKA_PROBE] = kafka_answers
    app[OUTBOX] = Outbox(
        PostgresOutboxRows(app[ENGINE]),
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
    app[TWILIO_CLIENT] = client

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
        PostgresRateWindows(app[ENGINE]),
        PostgresVerifications(),
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
