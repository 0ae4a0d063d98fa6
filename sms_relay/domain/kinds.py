"""Event kinds: the model that validates an event and the text it becomes.

The next kind (appointment reminder, incident alert) is a model in `schemas.events`
and one `EventKind` here; the pipeline stays the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from schemas.events import OrderShipped, SmsRequested
from sms_relay.domain.destinations import ANYWHERE, DestinationPolicy


@dataclass(frozen=True)
class EventKind:
    name: str
    model: type[SmsRequested]
    render: Callable[[Any], str]
    # Where its SMS may go; composition roots set it from the settings.
    policy: DestinationPolicy = ANYWHERE

    def parse(self, raw: bytes) -> SmsRequested:
        """Raises pydantic.ValidationError (which never repeats the input); a destination
        the policy refuses is one too, its type the reason (`country_not_allowed`, ...)."""
        event = self.model.model_validate_json(raw)
        self.policy.enforce(event)
        return event

    def with_policy(self, policy: DestinationPolicy) -> EventKind:
        return replace(self, policy=policy)


def _order_shipped_text(event: OrderShipped) -> str:
    tracking = f" Tracking: {event.trackingUrl}" if event.trackingUrl else ""
    return f"Your order {event.orderId} has shipped.{tracking}"


ORDER_SHIPPED = EventKind("order-shipped", OrderShipped, _order_shipped_text)

# Every kind by name: API keys are scoped to these.
EVENT_KINDS = {kind.name: kind for kind in (ORDER_SHIPPED,)}
