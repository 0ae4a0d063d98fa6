"""An appointment reminder posted over HTTP (`POST /api/events/appointment-reminder`, an
API key scoped to the kind) is scheduled, its offset committed, and sent when due."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.callbacks.conftest import callbacks_settings, running_callbacks
from tests.integration.test_appointment_flow import (
    BODY,
    KIND,
    reminder,
    scheduled_sends,
    serving,
    state,
    steps,
)
from tests.support import (
    committed_to_end,
    created_bodies,
    eventually,
    read_to_end,
    running_consumer,
)

pytestmark = pytest.mark.integration


async def test_a_reminder_posted_over_http_is_scheduled_then_sent_when_due(
    settings: Settings, simulator: SimulatorServer
) -> None:
    served = callbacks_settings(serving(settings))
    topic = served.kafka.topic_of(KIND)
    due = datetime.now(UTC) + timedelta(seconds=6)
    event = reminder(phone="+12125550156", sendAt=due)
    async with running_callbacks(served) as callbacks:
        key = await callbacks.new_key("clinic", kinds=(KIND,))
        status, body, _ = await callbacks.post_json(
            f"/api/events/{KIND}", event, Authorization=f"Bearer {key}"
        )
        assert (status, body) == (202, {"eventId": event["eventId"], "status": "queued"})
        async with running_consumer(served):
            await eventually(lambda: state(served, event["eventId"]) == "scheduled")
            await committed_to_end(served, topic)  # nothing holds the partition meanwhile
            assert created_bodies(simulator.messages()) == []
            await eventually(
                lambda: state(served, event["eventId"]) == "accepted", timeout=60, what="sent"
            )
            await eventually(lambda: scheduled_sends(served) == 0, what="the stored event gone")
    assert datetime.now(UTC) >= due
    assert created_bodies(simulator.messages()) == [BODY.format(event["appointmentId"])]
    (record,) = read_to_end(served, topic)
    assert record.key() == event["appointmentId"].encode()  # keyed by the kind's own id
    assert json.loads(record.value() or b"{}") == event
    records = steps(served, event["eventId"])
    assert datetime.fromisoformat(records["scheduled"]["dueAt"]) == due
    assert records["accepted"]["kind"] == KIND
