"""POST /api/order-shipped-sms: the HTTP way onto `order-shipped`, for upstreams without Kafka."""

from __future__ import annotations

import logging

from aiohttp import web
from confluent_kafka import KafkaException
from pydantic import ValidationError
from sqlalchemy import text

from callbacks.http import invalid, json_error
from callbacks.keys import ENGINE, METRICS, PRODUCER, SETTINGS
from schemas.events import OrderShipped
from sms_relay.outbox import DATABASE_ERRORS
from sms_relay.templates import ORDER_SHIPPED

log = logging.getLogger(__name__)


async def order_shipped_sms(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    raw = await request.read()
    try:
        event = ORDER_SHIPPED.parse(raw)
    except ValidationError as error:
        metrics.orders.labels("invalid").inc()
        return invalid(error, "event")
    assert isinstance(event, OrderShipped)
    try:
        async with request.app[ENGINE].connect() as connection:
            state = (
                await connection.execute(
                    text("SELECT state FROM deliveries WHERE event_id = :id"), {"id": event.eventId}
                )
            ).scalar_one_or_none()
    except DATABASE_ERRORS as error:
        # The consumer dedupes by eventId anyway: not knowing only costs the 200 answer.
        log.warning("duplicate check skipped", extra={"error": repr(error)})
        state = None
    if state is not None:
        metrics.orders.labels("duplicate").inc()
        return web.json_response({"eventId": event.eventId, "duplicate": True, "status": state})
    settings = request.app[SETTINGS]
    try:
        await request.app[PRODUCER].send(
            settings.kafka.topic_order_shipped,
            raw,
            key=event.orderId,
            timeout=settings.callbacks_kafka_deadline_seconds * 2,
        )
    except (TimeoutError, KafkaException):
        metrics.orders.labels("unavailable").inc()
        return json_error(503, "unavailable", "the event could not be queued; retry later")
    metrics.orders.labels("queued").inc()
    return web.json_response({"eventId": event.eventId, "status": "queued"}, status=202)
