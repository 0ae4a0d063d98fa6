"""Appointment reminders end to end on the real stack: scheduled and committed, sent when
due by the scheduler, cancelled (also by a cancel read first), suppressed by a STOP that
came meanwhile, expired at the start, deferred out of the quiet hours."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text

from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.domain.quiet_hours import earliest_send_time, parse_quiet_window
from sms_relay.kinds.appointment_reminder import CANCELLED, AppointmentReminderPolicy
from sms_relay.masking import phone_hash
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import (
    committed_to_end,
    created_bodies,
    deliveries,
    eventually,
    produce,
    read_values_to_end,
    running_consumer,
    wait_for_topics,
)

pytestmark = pytest.mark.integration

KIND = "appointment-reminder"
BODY = "Reminder: you have an appointment (ref. {}) coming up."


def reminder(phone: str = "+12125550151", **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "eventId": f"appt_{uuid.uuid4().hex[:12]}_reminder_v1",
        "phone": phone,
        "appointmentId": f"a{uuid.uuid4().hex[:10]}",
        "startsAt": (now + timedelta(days=1)).isoformat(),
        "timeZone": "America/New_York",
        "consentAt": (now - timedelta(days=3)).isoformat(),
        "consentPurpose": "appointments",
        **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in extra.items()},
    }


def serving(settings: Settings, quiet_hours: str = "none") -> Settings:
    served = settings.model_copy(
        update={
            "sending": settings.sending.model_copy(
                update={"kinds": (KIND,), "scheduler_interval_seconds": 0.2}
            )
        }
    ).with_kind_policy(KIND, AppointmentReminderPolicy(quiet_hours=quiet_hours))
    created = ensure_topics(served.kafka, served.sending.retry_tiers, (KIND,))
    wait_for_topics(served.kafka, created)
    return served


def state(settings: Settings, event_id: str) -> str | None:
    return deliveries(settings).get(event_id, {}).get("state")


def scheduled_sends(settings: Settings) -> int:
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(text("SELECT count(*) FROM scheduled_sends")).scalar_one()
            )
    finally:
        engine.dispose()


def steps(settings: Settings, event_id: str) -> dict[str, dict[str, Any]]:
    return {
        s["status"]: s
        for s in read_values_to_end(settings, settings.kafka.topic_delivery_status)
        if s["eventId"] == event_id and s["source"] == "consumer"
    }


async def test_a_future_reminder_is_committed_then_sent_when_due(
    settings: Settings, simulator: SimulatorServer
) -> None:
    served = serving(settings)
    due = datetime.now(UTC) + timedelta(seconds=4)
    event = reminder(sendAt=due)
    produce(served, served.kafka.topic_of(KIND), [event])
    async with running_consumer(served):
        await eventually(lambda: state(served, event["eventId"]) == "scheduled")
        # Its offset is committed while it waits: nothing holds the partition.
        await committed_to_end(served, served.kafka.topic_of(KIND))
        assert created_bodies(simulator.messages()) == []
        await eventually(lambda: state(served, event["eventId"]) == "accepted", timeout=30)
    sent_at = datetime.now(UTC)
    assert created_bodies(simulator.messages()) == [BODY.format(event["appointmentId"])]
    assert sent_at >= due
    assert scheduled_sends(served) == 0, "the stored event goes once it is sent"
    records = steps(served, event["eventId"])
    assert datetime.fromisoformat(records["scheduled"]["dueAt"]) == due
    assert records["scheduled"]["kind"] == KIND
    assert "accepted" in records


async def test_a_cancel_before_the_due_time_and_one_before_the_reminder_give_no_sms(
    settings: Settings, simulator: SimulatorServer
) -> None:
    served = serving(settings)
    later = reminder(sendAt=datetime.now(UTC) + timedelta(minutes=10))
    early_cancelled = reminder(phone="+12125550152")
    cancels = served.kafka.topic_of(CANCELLED)
    # The second reminder's cancel is read before the reminder itself.
    produce(
        served,
        cancels,
        [{"eventId": "cancel_1_v1", "appointmentId": early_cancelled["appointmentId"]}],
    )
    produce(served, served.kafka.topic_of(KIND), [later])
    async with running_consumer(served):
        await eventually(lambda: state(served, later["eventId"]) == "scheduled")
        produce(
            served, cancels, [{"eventId": "cancel_2_v1", "appointmentId": later["appointmentId"]}]
        )
        await eventually(lambda: state(served, later["eventId"]) == "canceled")
        group = f"{served.kafka.consumer_group}.cancellations"
        readers = served.model_copy(
            update={"kafka": served.kafka.model_copy(update={"consumer_group": group})}
        )
        await committed_to_end(readers, cancels)
        produce(served, served.kafka.topic_of(KIND), [early_cancelled])
        await eventually(lambda: state(served, early_cancelled["eventId"]) == "canceled")
        await committed_to_end(served, served.kafka.topic_of(KIND))
    assert created_bodies(simulator.messages()) == []
    assert scheduled_sends(served) == 0
    assert steps(served, later["eventId"])["canceled"]["reason"] == "appointment_cancelled"
    assert "canceled" in steps(served, early_cancelled["eventId"])


async def test_a_stop_between_scheduling_and_the_due_time_gives_no_sms(
    settings: Settings, simulator: SimulatorServer
) -> None:
    served = serving(settings)
    event = reminder(phone="+12125550153", sendAt=datetime.now(UTC) + timedelta(seconds=3))
    produce(served, served.kafka.topic_of(KIND), [event])
    async with running_consumer(served):
        await eventually(lambda: state(served, event["eventId"]) == "scheduled")
        engine = create_engine(served.database_url.get_secret_value())
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO suppressions (phone_hash, phone_masked, reason) "
                    "VALUES (:h, '+*******0153', 'stop')"
                ),
                {"h": phone_hash(served.phone_hash_key.get_secret_value(), event["phone"])},
            )
        engine.dispose()
        await eventually(lambda: state(served, event["eventId"]) == "suppressed", timeout=30)
    assert created_bodies(simulator.messages()) == []
    assert scheduled_sends(served) == 0


async def test_reminders_too_late_expire_and_the_quiet_hours_defer_one(
    settings: Settings, simulator: SimulatorServer
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    local = datetime.now(berlin)
    # Quiet hours that hold now in Berlin and end a few minutes from now.
    start, end = local - timedelta(hours=1), local + timedelta(minutes=3)
    window = f"{start:%H:%M}-{end:%H:%M}"
    served = serving(settings, quiet_hours=window)
    now = datetime.now(UTC)
    started = reminder(startsAt=now - timedelta(minutes=1))
    night = reminder(phone="+12125550154", timeZone="Europe/Berlin")
    no_time = reminder(
        phone="+12125550155", timeZone="Europe/Berlin", startsAt=now + timedelta(minutes=1)
    )
    produce(served, served.kafka.topic_of(KIND), [started, night, no_time])
    async with running_consumer(served):
        await eventually(lambda: state(served, started["eventId"]) == "expired")
        await eventually(lambda: state(served, no_time["eventId"]) == "expired")
        await eventually(lambda: state(served, night["eventId"]) == "scheduled")
        await committed_to_end(served, served.kafka.topic_of(KIND))
    assert created_bodies(simulator.messages()) == []
    assert steps(served, started["eventId"])["expired"]["reason"] == "appointment_started"
    assert steps(served, no_time["eventId"])["expired"]["reason"] == "no_send_time_before_start"
    due = datetime.fromisoformat(steps(served, night["eventId"])["scheduled"]["dueAt"])
    expected = earliest_send_time(now, parse_quiet_window(window), (berlin,))
    assert due == expected
    assert due.astimezone(berlin).strftime("%H:%M") == f"{end:%H:%M}"


async def test_two_consumer_processes_send_a_scheduled_reminder_once(
    settings: Settings, simulator: SimulatorServer
) -> None:
    served = serving(settings)
    events = [
        reminder(phone=f"+121255501{60 + i}", sendAt=datetime.now(UTC) + timedelta(seconds=3))
        for i in range(6)
    ]
    produce(served, served.kafka.topic_of(KIND), events)
    async with running_consumer(served), running_consumer(served):
        await eventually(
            lambda: all(state(served, e["eventId"]) == "accepted" for e in events), timeout=40
        )
    bodies = created_bodies(simulator.messages())
    assert sorted(bodies) == sorted(BODY.format(e["appointmentId"]) for e in events)
