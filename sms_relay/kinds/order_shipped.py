"""`order-shipped`: "Your order 1001 has shipped." with an optional tracking link."""

from __future__ import annotations

from schemas.events import OrderShipped
from sms_relay.kinds.event_kind import EventKind, KindPolicy, policy_config
from sms_relay.kinds.templates import Template

NAME = "order-shipped"


class OrderShippedPolicy(KindPolicy):
    """`SMS_ORDER_SHIPPED_*`: none yet; today's behaviour (no quiet hours, any purpose)."""

    model_config = policy_config(NAME)


ORDER_SHIPPED = EventKind(
    name=NAME,
    model=OrderShipped,
    templates={
        "en": Template(
            "Your order {orderId} has shipped.", {"trackingUrl": " Tracking: {trackingUrl}"}
        ),
        "de": Template(
            "Ihre Bestellung {orderId} wurde versandt.",
            {"trackingUrl": " Sendungsverfolgung: {trackingUrl}"},
        ),
    },
    key_field="orderId",
    policy_type=OrderShippedPolicy,
    # Not checked: events from before consent purposes existed carry none.
    consent_purposes=None,
    example={
        "orderId": "100234567",
        "trackingUrl": "https://track.example.com/parcels/1Z999AA10123456784",
    },
)
