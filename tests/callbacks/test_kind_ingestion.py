"""POST /api/events/{kind}: every served kind over HTTP, end to end to the SMS; keys scoped
by kind; an unknown kind is a 404 naming the served ones."""

from __future__ import annotations

import json

import pytest

from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.callbacks.conftest import callbacks_settings, query_rows, running_callbacks
from tests.integration.test_kinds_flow import TICKETS, serving_both, ticket_event
from tests.support import (
    created_bodies,
    deliveries,
    eventually,
    order_event,
    read_to_end,
    running_consumer,
)

pytestmark = pytest.mark.integration


async def test_every_served_kind_is_ingested_over_http_and_sent(
    settings: Settings, simulator: SimulatorServer
) -> None:
    both = callbacks_settings(serving_both(settings))
    kafka = both.kafka
    ticket = ticket_event(consentSource="help-center-form")
    order = order_event(phone="+12125550146")
    async with running_callbacks(both) as callbacks:
        tickets_only = await callbacks.new_key("helpdesk", kinds=(TICKETS,))
        orders_only = await callbacks.new_key("shop", kinds=("order-shipped",))
        bearer = {"Authorization": f"Bearer {tickets_only}"}

        status, body, _ = await callbacks.post_json(f"/api/events/{TICKETS}", ticket, **bearer)
        assert (status, body) == (202, {"eventId": ticket["eventId"], "status": "queued"})
        # The key is scoped to its kinds, whichever route is asked.
        status, body, _ = await callbacks.post_json("/api/events/order-shipped", order, **bearer)
        assert (status, body["error"]) == (403, "forbidden")
        status, _, _ = await callbacks.post_json(
            "/api/events/order-shipped", order, Authorization=f"Bearer {orders_only}"
        )
        assert status == 202

        async with running_consumer(both):
            await eventually(lambda: len(created_bodies(simulator.messages())) == 2, timeout=30)

    assert sorted(created_bodies(simulator.messages())) == sorted(
        [
            "We received your support request. Your ticket number is 5521.",
            f"Your order 1001 has shipped. Tracking: {order['trackingUrl']}",
        ]
    )
    (record,) = read_to_end(both, kafka.topic_of(TICKETS))
    assert record.key() == b"5521"  # keyed by the kind's own id
    assert json.loads(record.value() or b"{}") == ticket
    audit = query_rows(
        both.database_url.get_secret_value(),
        "SELECT client, topic FROM ingestions WHERE event_id = :id",
        id=ticket["eventId"],
    )
    assert audit == [{"client": "helpdesk", "topic": kafka.topic_of(TICKETS)}]
    assert deliveries(both)[ticket["eventId"]]["consent_source"] == "help-center-form"


async def test_an_unknown_or_unserved_kind_is_a_404_naming_the_served_kinds(
    settings: Settings,
) -> None:
    app_settings = callbacks_settings(settings)  # serves order-shipped only (the default)
    async with running_callbacks(app_settings) as callbacks:
        key = await callbacks.new_key("helpdesk", kinds=(TICKETS, "order-shipped"))
        for kind in (TICKETS, "appointment-reminder"):
            status, body, _ = await callbacks.post_json(
                f"/api/events/{kind}", ticket_event(), Authorization=f"Bearer {key}"
            )
            assert status == 404
            assert body["error"] == "unknown_kind"
            assert body["servedKinds"] == ["order-shipped"]
        # The alias and the kind's own route are the same ingestion.
        for path in ("/api/order-shipped-sms", "/api/events/order-shipped"):
            status, _, _ = await callbacks.post_json(
                path, order_event(), Authorization=f"Bearer {key}"
            )
            assert status == 202, path


async def test_a_ticket_link_outside_the_kinds_allowlist_is_refused_over_http(
    settings: Settings,
) -> None:
    both = callbacks_settings(serving_both(settings))
    async with running_callbacks(both) as callbacks:
        key = await callbacks.new_key("helpdesk", kinds=(TICKETS,))
        phishing = ticket_event(link="https://help.example.com.evil.test/t/1")
        status, body, _ = await callbacks.post_json(
            f"/api/events/{TICKETS}", phishing, Authorization=f"Bearer {key}"
        )
    assert status == 400
    assert [(f["field"], f["type"]) for f in body["fields"]] == [("link", "link_host_not_allowed")]
    assert "evil" not in json.dumps(body)
    assert read_to_end(both, both.kafka.topic_of(TICKETS)) == []
