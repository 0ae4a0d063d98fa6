"""POST /api/order-shipped-sms: the first ingestion route, now an alias of
`POST /api/events/order-shipped`."""

from __future__ import annotations

from aiohttp import web

from callbacks.routes.event_ingestion import ingest
from sms_relay.kinds.order_shipped import ORDER_SHIPPED


async def order_shipped_sms(request: web.Request) -> web.Response:
    return await ingest(request, ORDER_SHIPPED.name)
