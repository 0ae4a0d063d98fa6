"""A reminder that expires while it waits `scheduled`: its start comes before it can be
sent, so it ends `expired` with its reason, and no SMS, on the real stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sms_relay.kinds.appointment_reminder import NO_SEND_TIME, STARTED, AppointmentReminderPolicy
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.integration.test_appointment_flow import (
    KIND,
    reminder,
    scheduled_sends,
    serving,
    state,
    steps,
)
from tests.support import committed_to_end, created_bodies, eventually, produce, running_consumer

pytestmark = pytest.mark.integration


async def schedule_and_stop(served: Settings, event: dict[str, object]) -> None:
    """One consumer reads the reminder, stores it `scheduled`, commits and stops."""
    produce(served, served.kafka.topic_of(KIND), [event])
    async with running_consumer(served):
        await eventually(lambda: state(served, str(event["eventId"])) == "scheduled")
        await committed_to_end(served, served.kafka.topic_of(KIND))


async def test_quiet_hours_that_reach_past_the_start_expire_a_waiting_reminder(
    settings: Settings, simulator: SimulatorServer
) -> None:
    served = serving(settings)  # no quiet hours when it is read: due at its sendAt
    now = datetime.now(UTC)
    event = reminder(
        phone="+12125550157",
        timeZone="Europe/Berlin",
        sendAt=now + timedelta(seconds=15),
        startsAt=now + timedelta(minutes=40),
    )
    await schedule_and_stop(served, event)
    # Redeployed with quiet hours that hold from before its due time to after its start.
    local = now.astimezone(ZoneInfo("Europe/Berlin"))
    window = f"{local - timedelta(hours=1):%H:%M}-{local + timedelta(hours=2):%H:%M}"
    quiet = served.with_kind_policy(KIND, AppointmentReminderPolicy(quiet_hours=window))
    async with running_consumer(quiet):
        await eventually(lambda: state(quiet, event["eventId"]) == "expired", timeout=40)
        await eventually(lambda: scheduled_sends(quiet) == 0, what="the stored event gone")
    assert created_bodies(simulator.messages()) == []
    records = steps(quiet, event["eventId"])
    assert "scheduled" in records
    assert records["expired"]["reason"] == NO_SEND_TIME
    assert records["expired"]["kind"] == KIND


async def test_a_reminder_whose_start_passes_while_no_consumer_runs_expires(
    settings: Settings, simulator: SimulatorServer
) -> None:
    served = serving(settings)
    now = datetime.now(UTC)
    starts = now + timedelta(seconds=8)
    event = reminder(phone="+12125550158", sendAt=now + timedelta(seconds=5), startsAt=starts)
    await schedule_and_stop(served, event)
    await eventually(lambda: datetime.now(UTC) > starts, interval=0.1, what="its start")
    async with running_consumer(served):
        await eventually(lambda: state(served, event["eventId"]) == "expired", timeout=30)
        await eventually(lambda: scheduled_sends(served) == 0, what="the stored event gone")
    assert created_bodies(simulator.messages()) == []
    assert steps(served, event["eventId"])["expired"]["reason"] == STARTED
