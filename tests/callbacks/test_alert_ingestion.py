"""POST /api/events/incident-alert: ingested over HTTP, keyed by alertKey, sent once; its
repeat collapsed."""

from __future__ import annotations

import json

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.callbacks.conftest import callbacks_settings, running_callbacks
from tests.integration.test_incident_alerts import ALERTS, alert_event, serving_alerts
from tests.support import created_bodies, deliveries, eventually, read_to_end, running_consumer

pytestmark = pytest.mark.integration


async def test_an_alert_over_http_is_sent_once_and_its_repeat_collapsed(
    settings: Settings, simulator: SimulatorServer
) -> None:
    alerts = callbacks_settings(serving_alerts(settings))
    first = alert_event("+12125550154", "api/latency", severity="warning", locale="de")
    repeat = alert_event("+12125550154", "api/latency", severity="warning")
    async with running_callbacks(alerts) as callbacks:
        key = await callbacks.new_key("alertmanager", kinds=(ALERTS,))
        for event in (first, repeat):
            status, body, _ = await callbacks.post_json(
                f"/api/events/{ALERTS}", event, Authorization=f"Bearer {key}"
            )
            assert (status, body) == (202, {"eventId": event["eventId"], "status": "queued"})
        async with running_consumer(alerts):
            await eventually(
                lambda: deliveries(alerts).get(repeat["eventId"], {}).get("state") == "collapsed"
            )

    assert created_bodies(simulator.messages()) == ["Alarm (warning): api/latency is failing"]
    records = read_to_end(alerts, alerts.kafka.topic_of(ALERTS))
    assert [r.key() for r in records] == [b"api/latency"] * 2
    assert [json.loads(r.value() or b"{}") for r in records] == [first, repeat]
