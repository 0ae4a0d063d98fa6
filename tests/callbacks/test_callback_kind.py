"""The kind on status callbacks: the consumer signs it into the StatusCallback URL, the
callbacks service copies it to the record; an old URL without it still works, an unknown
kind is a 400."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.callbacks.conftest import (
    Callbacks,
    callback_form,
    callbacks_settings,
    new_event_id,
    new_sid,
    running_callbacks,
)
from tests.integration.test_kinds_flow import TICKETS, serving_both, ticket_event
from tests.support import (
    eventually,
    produce,
    read_to_end,
    read_values_to_end,
    running_consumer,
    topic_reader,
)

pytestmark = pytest.mark.integration


def steps_of(records: list[dict[str, Any]], event_id: str) -> list[tuple[str, str, str | None]]:
    return [(r["source"], r["status"], r["kind"]) for r in records if r["eventId"] == event_id]


async def test_a_ticket_sent_end_to_end_has_its_kind_on_every_status_record(
    settings: Settings, simulator: SimulatorServer
) -> None:
    both = callbacks_settings(serving_both(settings))
    event = ticket_event()
    event_id = event["eventId"]
    topic = both.kafka.topic_delivery_status
    with topic_reader(both, topic) as statuses:
        async with running_callbacks(both), running_consumer(both):
            produce(both, both.kafka.topic_of(TICKETS), [event])
            await eventually(
                lambda: (
                    ("callbacks", "delivered", TICKETS) in steps_of(statuses.values(), event_id)
                ),
                what="the ticket's delivered on delivery-status",
            )
    # Both services have stopped: the topic holds all they published.
    seen = steps_of(read_values_to_end(both, topic), event_id)
    assert sorted(seen) == sorted(
        [
            ("consumer", "accepted", TICKETS),
            ("callbacks", "sent", TICKETS),
            ("callbacks", "delivered", TICKETS),
        ]
    )
    (message,) = [m for m in simulator.messages() if m.get("created")]
    query = parse_qs(urlsplit(message["params"]["StatusCallback"]).query)
    assert query == {"kind": [TICKETS], "eventId": [event_id]}
    assert [c["status"] for c in simulator.callbacks()] == [200, 200]


async def test_an_old_url_without_kind_is_answered_and_its_record_has_no_kind(
    callbacks: Callbacks,
) -> None:
    settings = callbacks.settings
    event_id, sid = new_event_id(), new_sid()
    form = callback_form(sid, "delivered", account_sid=settings.twilio.account_sid)
    status, body = await callbacks.post_signed(f"/twilio/status-callback?eventId={event_id}", form)
    assert (status, body) == (200, {"result": "published"})
    # Published (not outboxed): on the topic before the 200.
    (record,) = read_values_to_end(settings, settings.kafka.topic_delivery_status)
    assert (record["eventId"], record["kind"], record["status"]) == (event_id, None, "delivered")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("kind=parcel-delivered&eventId={e}", "the kind query parameter is not a known kind"),
        ("kind=&eventId={e}", "the kind query parameter is not a known kind"),
        ("kind=ORDER-SHIPPED&eventId={e}", "the kind query parameter is not a known kind"),
        ("kind=order-shipped&kind=order-shipped&eventId={e}", "only the eventId and kind"),
        ("kind=order-shipped&eventId={e}&eventId={e}", "only the eventId and kind"),
        ("kind=order-shipped&eventId={e}&lang=en", "only the eventId and kind"),
    ],
)
async def test_a_bad_kind_or_another_parameter_is_400_and_nothing_is_published(
    callbacks: Callbacks, query: str, message: str
) -> None:
    settings = callbacks.settings
    path = "/twilio/status-callback?" + query.format(e=new_event_id())
    form = callback_form(new_sid(), "sent", account_sid=settings.twilio.account_sid)
    status, body = await callbacks.post_signed(path, form)  # signed: only the query is wrong
    assert status == 400
    assert body["error"] == "invalid_request"
    assert body["message"].startswith(message)
    # A good one afterwards, with its kind: the topic holds it alone.
    event_id = new_event_id()
    good = f"/twilio/status-callback?kind=order-shipped&eventId={event_id}"
    assert (await callbacks.post_signed(good, form))[0] == 200
    records = [
        json.loads(m.value() or b"null")
        for m in read_to_end(settings, settings.kafka.topic_delivery_status)
    ]
    assert [(r["eventId"], r["kind"]) for r in records] == [(event_id, "order-shipped")]
    assert callbacks.sample("sms_relay_callbacks_total", {"result": "invalid"}) == 1
