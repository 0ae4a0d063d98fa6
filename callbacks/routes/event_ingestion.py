"""Ingestion over HTTP: API keys, their scopes and rate limits, the audit trail.

Every ingestion route (`POST /api/events/{kind}` for each served kind, and its alias
`POST /api/order-shipped-sms`) runs the same steps before it produces anything: a kind
this process serves (404 naming them otherwise), a valid, live key (401), a key scoped
to that kind (403), the key's own rate limit, shared by every replica (429), then the
event's validation by its `EventKind` (with the destination and kind policies), exactly
as the consumer validates it (400).

Duplicates: a client learns that an eventId is known, and its state, only for events
that it (the same client name, whatever its key) ingested itself. Any other known eventId
gets the answer a new one gets (202 `queued`) and nothing is produced, since the consumer
would skip it anyway: no caller can probe for other clients' eventIds or their states.
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import ValidationError

from callbacks.app_keys import API_KEYS, ENGINE, KINDS, METRICS, PRODUCER, SETTINGS
from callbacks.http import invalid, json_error
from sms_relay.adapters.kafka.headers import API_KEY_ID, CLIENT, encode_headers
from sms_relay.adapters.postgres import ingestions
from sms_relay.adapters.postgres.rate_windows import Limit, hit
from sms_relay.errors import BrokerUnavailableError, DatabaseUnavailableError
from sms_relay.kinds.event_kind import EventKind
from sms_relay.status.api_keys import ApiKey

log = logging.getLogger(__name__)

BEARER = "Bearer "


async def kind_event(request: web.Request) -> web.Response:
    """POST /api/events/{kind}."""
    return await ingest(request, request.match_info["kind"])


async def ingest(request: web.Request, kind_name: str) -> web.Response:
    """Authorize, validate, dedupe, produce the bytes unchanged to the kind's topic (record
    key: the kind's key field), record who sent it. 404 for a kind not served here, 503
    when PostgreSQL or Kafka cannot take part."""
    served_kinds: dict[str, EventKind] = request.app[KINDS]
    kind = served_kinds.get(kind_name)
    if kind is None:
        served = sorted(served_kinds)
        return json_error(
            404,
            "unknown_kind",
            f"this service ingests only these event kinds: {', '.join(served)}",
            servedKinds=served,
        )
    try:
        answer, result = await _ingest(request, kind)
    except DatabaseUnavailableError as error:
        log.error("ingestion unavailable: PostgreSQL", extra={"error": repr(error)})
        answer = json_error(503, "unavailable", "the service cannot take events now; retry later")
        result = "unavailable"
    request.app[METRICS].orders.labels(result).inc()
    return answer


async def _ingest(request: web.Request, kind: EventKind) -> tuple[web.Response, str]:
    """The answer and its result label (a metric)."""
    client = await _authorize(request, kind.name)
    if isinstance(client, web.Response):
        return client, _RESULTS[client.status]
    raw = await request.read()
    try:
        event = kind.parse(raw)
    except ValidationError as error:
        return invalid(error, "event"), "invalid"
    earlier = await ingestions.earlier(request.app[ENGINE], event.eventId, client.client)
    if earlier.own:
        state = earlier.state or "queued"
        body = {"eventId": event.eventId, "duplicate": True, "status": state}
        return web.json_response(body), "duplicate"
    if earlier.ingested or earlier.state is not None:
        # Someone else's event (or one from Kafka): answered like a new one, not produced.
        return _queued(event.eventId), "duplicate_hidden"
    settings = request.app[SETTINGS]
    try:
        await request.app[PRODUCER].send(
            kind.input_topic,
            raw,
            key=str(getattr(event, kind.key_field)),
            headers=encode_headers({API_KEY_ID: client.key_id, CLIENT: client.client}),
            timeout=settings.callbacks_kafka_deadline_seconds * 2,
        )
    except BrokerUnavailableError:
        answer = json_error(503, "unavailable", "the event could not be queued; retry later")
        return answer, "unavailable"
    await _audit(request, event.eventId, kind.name, client, kind.input_topic)
    return _queued(event.eventId), "queued"


_RESULTS = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}


def _queued(event_id: str) -> web.Response:
    return web.json_response({"eventId": event_id, "status": "queued"}, status=202)


async def _authorize(request: web.Request, kind_name: str) -> ApiKey | web.Response:
    header = request.headers.get("Authorization", "")
    presented = header[len(BEARER) :].strip() if header.startswith(BEARER) else ""
    key = await request.app[API_KEYS].authenticate(presented) if presented else None
    if key is None:
        return json_error(
            401,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": 'Bearer realm="sms-relay"'},
        )
    if not key.may_send(kind_name):
        return json_error(403, "forbidden", f"this API key may not send {kind_name} events")
    wait = await hit(
        request.app[ENGINE], [Limit(key.limit_key, key.rate_limit, key.rate_window_seconds)]
    )
    if wait is not None:
        seconds = max(1, int(wait + 0.999))
        return json_error(
            429,
            "rate_limited",
            "this API key's request rate is exceeded; retry after the delay",
            headers={"Retry-After": str(seconds)},
            retryAfterSeconds=seconds,
        )
    return key


async def _audit(
    request: web.Request, event_id: str, kind_name: str, key: ApiKey, topic: str
) -> None:
    """Which client put the event on the topic (key id and client name, never the key)."""
    try:
        await ingestions.record(
            request.app[ENGINE], event_id, kind_name, key.key_id, key.client, topic
        )
    except DatabaseUnavailableError as error:
        # The record is on Kafka (with the key id in its headers); only the row is missing.
        log.error(
            "ingestion audit row not stored", extra={"eventId": event_id, "error": repr(error)}
        )
