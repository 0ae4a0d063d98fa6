"""Two kinds served by one consumer, end to end: each on its own topic, its own text, its
own DLQ, status records that say the kind, consent purpose and source in the ledger."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sms_relay.adapters.kafka.headers import decode_headers
from sms_relay.adapters.kafka.topics import ensure_topics
from sms_relay.kinds.support_ticket_created import SupportTicketCreatedPolicy
from sms_relay.settings import Settings
from sms_relay.simulator.server import SimulatorServer
from tests.support import (
    committed_to_end,
    created_bodies,
    deliveries,
    eventually,
    order_event,
    produce,
    read_to_end,
    read_values_to_end,
    running_consumer,
    wait_for_topics,
)

pytestmark = pytest.mark.integration

TICKETS = "support-ticket-created"


def ticket_event(**extra: Any) -> dict[str, Any]:
    return {
        "eventId": f"ticket_{uuid.uuid4().hex[:12]}_created_v1",
        "phone": "+12125550142",
        "ticketId": "5521",
        "consentAt": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
        "consentPurpose": "support",
        **extra,
    }


def serving_both(settings: Settings) -> Settings:
    """Both kinds served, ticket links allowed to help.example.com, every topic made."""
    both = settings.model_copy(
        update={
            "sending": settings.sending.model_copy(update={"kinds": ("order-shipped", TICKETS)})
        }
    ).with_kind_policy(TICKETS, SupportTicketCreatedPolicy(link_hosts=("help.example.com",)))
    created = ensure_topics(both.kafka, both.sending.retry_tiers, (TICKETS,))
    wait_for_topics(both.kafka, created)
    return both


async def test_each_served_kind_is_read_from_its_topic_and_sent_in_its_own_words(
    settings: Settings, simulator: SimulatorServer
) -> None:
    both = serving_both(settings)
    kafka = both.kafka
    tickets = kafka.topic_of(TICKETS)
    order = order_event(phone="+12125550141", consentSource="checkout")
    german = ticket_event(locale="de", consentSource="help-center-form")
    linked = ticket_event(phone="+12125550143", link="https://help.example.com/t/5521")
    phishing = ticket_event(phone="+12125550144", link="https://help.example.com.evil.test/t")
    marketing = ticket_event(phone="+12125550145", consentPurpose="marketing")
    produce(both, kafka.topic_order_shipped, [order])
    produce(both, tickets, [german, linked, phishing, marketing])

    async with running_consumer(both):
        await eventually(lambda: len(created_bodies(simulator.messages())) == 3, timeout=30)
        await eventually(
            lambda: deliveries(both).get(marketing["eventId"], {}).get("state") == "suppressed"
        )
        await committed_to_end(both, tickets)
        await committed_to_end(both, kafka.topic_order_shipped)

    assert sorted(created_bodies(simulator.messages())) == sorted(
        [
            f"Your order 1001 has shipped. Tracking: {order['trackingUrl']}",
            "Wir haben Ihre Anfrage erhalten. Ihre Ticketnummer ist 5521.",
            "We received your support request. Your ticket number is 5521. "
            "Details: https://help.example.com/t/5521",
        ]
    )
    rows = deliveries(both)
    assert rows[german["eventId"]]["event_type"] == TICKETS
    assert rows[german["eventId"]]["consent_purpose"] == "support"
    assert rows[german["eventId"]]["consent_source"] == "help-center-form"
    assert rows[order["eventId"]]["consent_source"] == "checkout"
    assert rows[marketing["eventId"]]["last_error"] == "consent_purpose_mismatch"
    assert phishing["eventId"] not in rows

    # The refused link went to the tickets' own DLQ, marked with its kind.
    (dead,) = read_to_end(both, kafka.dlq_topic(tickets))
    assert json.loads(dead.value() or b"{}")["eventId"] == phishing["eventId"]
    headers = decode_headers(dead)
    assert headers["sms-relay-kind"] == TICKETS
    assert headers["sms-relay-dlq-reason"] == "link_host_not_allowed"
    assert read_to_end(both, kafka.dlq_topic(kafka.topic_order_shipped)) == []

    steps = {
        (s["eventId"], s["status"]): s
        for s in read_values_to_end(both, kafka.topic_delivery_status)
        if s["source"] == "consumer"
    }
    assert steps[(order["eventId"], "accepted")]["kind"] == "order-shipped"
    assert steps[(german["eventId"], "accepted")]["kind"] == TICKETS
    assert steps[(phishing["eventId"], "rejected")]["kind"] == TICKETS
    mismatch = steps[(marketing["eventId"], "suppressed")]
    assert (mismatch["kind"], mismatch["reason"]) == (TICKETS, "consent_purpose_mismatch")
