"""POST /twilio/status-callback: a signed status step becomes one durable delivery-status record."""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web
from pydantic import ValidationError

from callbacks.app_keys import METRICS, OUTBOX, SETTINGS
from callbacks.http import invalid, json_error, read_form
from schemas.events import DeliveryStatusChanged, Status
from schemas.twilio import TwilioStatusCallback
from sms_relay.errors import OutboxUnavailableError
from sms_relay.masking import mask_phone
from sms_relay.status.outbox import Durability, OutboundRecord
from sms_relay.status.status_projection import step_token

log = logging.getLogger(__name__)

# The consumer puts `?eventId=<eventId>` on the StatusCallback URL; the signature covers it.
_EVENT_ID = re.compile(r"\A[\x21-\x7e]{6,120}\Z")
# Encoded once: the answer is one of a handful, and the handler runs thousands of times a second.
_ANSWERS = {d: json.dumps({"result": d.value}).encode() for d in Durability}


async def status_callback(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    form = await read_form(request)
    try:
        callback = TwilioStatusCallback.model_validate({k: form[k] for k in form})
    except ValidationError as error:
        metrics.callbacks.labels("invalid").inc()
        return invalid(error, "status callback form")
    event_id = request.query.get("eventId")
    # The consumer's StatusCallback URL carries eventId and nothing else.
    if set(request.query) - {"eventId"} or len(request.query.getall("eventId", [])) > 1:
        metrics.callbacks.labels("invalid").inc()
        return json_error(400, "invalid_request", "only an eventId query parameter is expected")
    if event_id is not None and not _EVENT_ID.match(event_id):
        metrics.callbacks.labels("invalid").inc()
        return json_error(400, "invalid_request", "the eventId query parameter is not valid")
    if not TwilioStatusCallback.is_known_status(callback.MessageStatus):
        # A status we do not report (scheduled, partially_delivered, ...): nothing to publish.
        metrics.callbacks.labels("ignored").inc()
        return web.json_response({"result": "ignored"})
    # What the signature covers identifies the step, not Twilio's unsigned token: a retry
    # and a replay with a fresh token carry the same token, and readers drop the copy.
    token = step_token("callbacks", callback.MessageSid, callback.MessageStatus, callback.ErrorCode)
    record = DeliveryStatusChanged(
        eventId=event_id,
        messageSid=callback.MessageSid,
        status=Status(callback.MessageStatus),
        errorCode=callback.ErrorCode,
        source="callbacks",
        to=mask_phone(callback.To) if callback.To else None,
        idempotencyToken=token,
    )
    settings = request.app[SETTINGS]
    try:
        durability = await request.app[OUTBOX].publish_kafka_first(
            OutboundRecord(
                topic=settings.kafka.topic_delivery_status,
                key=(event_id or callback.MessageSid).encode(),
                value=record.model_dump_json().encode(),
                token=token,
                content_key=f"{callback.MessageSid}:{callback.MessageStatus}:"
                f"{callback.ErrorCode if callback.ErrorCode is not None else ''}",
            )
        )
    except OutboxUnavailableError:
        metrics.callbacks.labels("unavailable").inc()
        log.error("status callback not taken: Kafka and PostgreSQL are both unavailable")
        return json_error(503, "unavailable", "the status could not be stored; retry later")
    metrics.callbacks.labels(durability.value).inc()
    return web.Response(body=_ANSWERS[durability], content_type="application/json")
