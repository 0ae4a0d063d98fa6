"""GET /healthz (the process answers), /readyz (Kafka and PostgreSQL answer), /metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callbacks.app_keys import ENGINE, KAFKA_PROBE, METRICS
from sms_relay.adapters.postgres.engine import answers
from sms_relay.errors import DatabaseUnavailableError

PROBE_TIMEOUT_SECONDS = 2.0


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    kafka, database = await asyncio.gather(
        request.app[KAFKA_PROBE](PROBE_TIMEOUT_SECONDS), _database_ok(request)
    )
    checks = {"kafka": "ok" if kafka else "down", "database": "ok" if database else "down"}
    ready = kafka and database
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _database_ok(request: web.Request) -> bool:
    try:
        return await answers(request.app[ENGINE], PROBE_TIMEOUT_SECONDS)
    except DatabaseUnavailableError:
        return False
