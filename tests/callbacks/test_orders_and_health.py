"""POST /api/order-shipped-sms, and the operations endpoints: healthz, readyz, metrics, logs."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from sms_relay.settings import Settings
from tests.callbacks.conftest import (
    Callbacks,
    callback_form,
    callbacks_settings,
    insert_delivery,
    new_event_id,
    new_sid,
    running_callbacks,
)
from tests.callbacks.test_outbox import kafka_away
from tests.support import eventually, order_event, read_to_end, topic_reader

pytestmark = pytest.mark.integration


async def test_an_order_event_is_published_unchanged_and_answered_202(
    callbacks: Callbacks,
) -> None:
    settings = callbacks.settings
    key = await callbacks.new_key()
    event = order_event(order_id="4242", extraField={"kept": True})
    raw = json.dumps(event).encode()
    with topic_reader(settings, settings.kafka.topic_order_shipped) as orders:
        status, body, _ = await callbacks.post_event(raw, key)
        assert (status, body) == (202, {"eventId": event["eventId"], "status": "queued"})
        await eventually(lambda: len(orders.poll()) == 1, what="the order-shipped record")
        (record,) = orders.records
    assert record.value() == raw
    assert record.key() == b"4242"


async def test_an_event_the_client_sent_answers_200_with_its_status(
    callbacks: Callbacks, database_url: str
) -> None:
    key = await callbacks.new_key()
    event = order_event()
    assert (await callbacks.post_event(event, key))[0] == 202
    assert (await callbacks.post_event(event, key))[:2] == (
        200,
        {"eventId": event["eventId"], "duplicate": True, "status": "queued"},
    )
    insert_delivery(database_url, event["eventId"], state="delivered", sid=new_sid())
    settings = callbacks.settings
    with topic_reader(settings, settings.kafka.topic_order_shipped) as orders:
        status, body, _ = await callbacks.post_event(event, key)
        await eventually(lambda: len(orders.poll()) == 1, what="the first record")
    assert (status, body) == (
        200,
        {"eventId": event["eventId"], "duplicate": True, "status": "delivered"},
    )
    # Each 202 came after Kafka's ack: read to its end, the topic holds all there is.
    assert len(read_to_end(settings, orders.topic)) == 1  # the repeats were not produced


async def test_an_invalid_event_is_400_with_field_errors_that_never_echo_values(
    callbacks: Callbacks,
) -> None:
    key = await callbacks.new_key()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    event = order_event(phone="+15558675310", consentAt=future, trackingUrl="ftp://secret-host")
    status, body, _ = await callbacks.post_event(event, key)
    assert status == 400
    assert sorted(f["field"] for f in body["fields"]) == ["consentAt", "phone", "trackingUrl"]
    text = json.dumps(body)
    assert "5558675310" not in text
    assert "secret-host" not in text
    assert future not in text
    status, body, _ = await callbacks.post_event(b"{not json", key)
    assert status == 400
    status, body, _ = await callbacks.post_event(order_event(order_id="evil.example/x"), key)
    assert (status, [f["field"] for f in body["fields"]]) == (400, ["orderId"])


async def test_an_order_event_is_503_when_kafka_does_not_answer(settings: Settings) -> None:
    away = callbacks_settings(settings, kafka=kafka_away(settings), callbacks_run_projection=False)
    async with running_callbacks(away) as callbacks:
        key = await callbacks.new_key()
        status, body, _ = await callbacks.post_event(order_event(), key)
    assert (status, body["error"]) == (503, "unavailable")


async def test_health_readiness_and_metrics(callbacks: Callbacks) -> None:
    assert await callbacks.get("/healthz") == (200, {"status": "ok"})
    assert await callbacks.get("/readyz") == (
        200,
        {"status": "ready", "checks": {"kafka": "ok", "database": "ok"}},
    )
    status, text = await callbacks.get("/metrics")
    assert status == 200
    assert 'sms_relay_http_requests_total{method="GET",route="/readyz",status="200"} 1.0' in text


async def test_readyz_is_503_when_kafka_does_not_answer(settings: Settings) -> None:
    away = callbacks_settings(settings, kafka=kafka_away(settings), callbacks_run_projection=False)
    async with running_callbacks(away) as callbacks:
        status, body = await callbacks.get("/readyz")
    assert status == 503
    assert body["checks"] == {"kafka": "down", "database": "ok"}


async def test_the_access_log_shows_no_query_strings_or_numbers(
    callbacks: Callbacks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    event_id = new_event_id()
    form = callback_form(new_sid(), "sent", account_sid=callbacks.settings.twilio.account_sid)
    path = f"/twilio/status-callback?eventId={event_id}"
    accepted, _ = await callbacks.post_signed(path, form)
    refused, _ = await callbacks.post_signed(path, form, signature="forged")
    await callbacks.get("/healthz?phone=%2B12125550123")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert (accepted, refused) == (200, 403)
    # A status callback answered 2xx has no line (the metrics count it); any other answer has.
    assert not any(line.startswith("POST /twilio/status-callback 200") for line in lines)
    assert any(line.startswith("POST /twilio/status-callback 403") for line in lines)
    assert any(line.startswith("GET /healthz 200") for line in lines)
    assert not any(event_id in line or "2125550123" in line or "?" in line for line in lines)
