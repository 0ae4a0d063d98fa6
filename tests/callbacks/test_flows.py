"""End to end: consumer sends, the simulator calls back, the projection and reconciler record."""

from __future__ import annotations

from typing import Any

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.callbacks.conftest import query_rows, running_callbacks
from tests.support import (
    eventually,
    order_event,
    produce,
    read_values_to_end,
    running_consumer,
    topic_reader,
)

pytestmark = pytest.mark.integration


def statuses_of(records: list[dict[str, Any]], event_id: str) -> list[tuple[str, str]]:
    return [(r["source"], r["status"]) for r in records if r["eventId"] == event_id]


def state_of(database_url: str, event_id: str) -> str | None:
    rows = query_rows(database_url, "SELECT state FROM deliveries WHERE event_id = :e", e=event_id)
    return str(rows[0]["state"]) if rows else None


async def test_full_flow_ends_delivered_on_the_topic_and_in_postgres(
    app_settings: Settings, simulator: SimulatorServer, database_url: str
) -> None:
    event = order_event()
    event_id = event["eventId"]
    with topic_reader(app_settings, app_settings.kafka.topic_delivery_status) as statuses:
        async with running_callbacks(app_settings) as callbacks, running_consumer(app_settings):
            produce(app_settings, app_settings.kafka.topic_order_shipped, [event])
            await eventually(
                lambda: ("callbacks", "delivered") in statuses_of(statuses.values(), event_id),
                what="delivered on delivery-status",
            )
            await eventually(
                lambda: state_of(database_url, event_id) == "delivered",
                what="delivered in PostgreSQL",
            )
            latency = callbacks.sample("sms_relay_accepted_to_delivered_seconds_count")
    # Both services have stopped: read to its end, the topic holds all they published.
    seen = statuses_of(read_values_to_end(app_settings, statuses.topic), event_id)
    steps = [("consumer", "accepted"), ("callbacks", "sent"), ("callbacks", "delivered")]
    # Each step once. Two processes publish them: the consumer's `accepted` (after its
    # ledger write) and the callback's `sent` (20 ms after the create) race on a busy
    # host, so only each source's own order is fixed.
    assert sorted(seen) == sorted(steps)
    assert [step for step in seen if step[0] == "callbacks"] == steps[1:]
    history = query_rows(
        database_url,
        "SELECT status, source FROM status_history WHERE event_id = :e ORDER BY id",
        e=event_id,
    )
    recorded = [(h["source"], h["status"]) for h in history]
    assert sorted(recorded) == sorted(steps)
    assert [step for step in recorded if step[0] == "callbacks"] == steps[1:]
    answered = [c["status"] for c in simulator.callbacks()]
    assert answered == [200, 200]
    assert latency == 1


async def test_missing_callbacks_are_found_by_the_reconciler(
    app_settings: Settings, simulator: SimulatorServer, database_url: str
) -> None:
    await simulator.aclient.configure(drop_callbacks=1.0)
    sending = app_settings.sending.model_copy(update={"stuck_after_seconds": 0.5})
    app = app_settings.model_copy(update={"sending": sending})
    event = order_event()
    event_id = event["eventId"]
    with topic_reader(app, app.kafka.topic_delivery_status) as statuses:
        async with running_callbacks(app) as callbacks, running_consumer(app):
            produce(app, app.kafka.topic_order_shipped, [event])
            await eventually(
                lambda: ("reconciler", "delivered") in statuses_of(statuses.values(), event_id),
                what="the reconciler's delivered on delivery-status",
            )
            await eventually(
                lambda: state_of(database_url, event_id) == "delivered",
                what="the reconciler's delivered in PostgreSQL",
            )
            changed = callbacks.sample("sms_relay_reconciler_checks_total", {"result": "changed"})
    seen = statuses_of(read_values_to_end(app, statuses.topic), event_id)
    assert seen == [("consumer", "accepted"), ("reconciler", "delivered")]
    assert all(c["dropped"] for c in simulator.callbacks())
    # A second round may look again before the projection moves the row; the record it
    # publishes is deduplicated (`seen` above holds one delivered).
    assert changed is not None
    assert changed >= 1


async def test_stop_then_an_order_event_for_that_number_sends_no_sms(
    app_settings: Settings, simulator: SimulatorServer
) -> None:
    phone = "+12125550147"
    with topic_reader(app_settings, app_settings.kafka.topic_delivery_status) as statuses:
        async with running_callbacks(app_settings) as callbacks:
            answer = await simulator.aclient.send_inbound(
                phone, "  Stop ", url=callbacks.base_url + "/twilio/inbound"
            )
            assert (answer.status, answer.content_type) == (200, "text/xml")
            assert answer.body.endswith("<Response/>")
            event = order_event(phone=phone)
            async with running_consumer(app_settings):
                produce(app_settings, app_settings.kafka.topic_order_shipped, [event])
                await eventually(
                    lambda: (
                        ("consumer", "suppressed")
                        in statuses_of(statuses.values(), event["eventId"])
                    ),
                    what="the suppressed status",
                )
            opted_out = callbacks.sample("sms_relay_inbound_messages_total", {"action": "opt_out"})
    assert simulator.messages() == []  # not even an attempt reached Twilio
    assert opted_out == 1
