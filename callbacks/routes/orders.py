"""POST /api/order-shipped-sms: the HTTP way onto `order-shipped`, for upstreams without Kafka."""

from __future__ import annotations

from aiohttp import web

from callbacks.app_keys import SETTINGS
from callbacks.routes.event_ingestion import ingest
from sms_relay.domain.kinds import ORDER_SHIPPED


async def order_shipped_sms(request: web.Request) -> web.Response:
    topic = request.app[SETTINGS].kafka.topic_order_shipped
    return await ingest(request, ORDER_SHIPPED.name, topic, key_of="orderId")
