"""Event kinds: the model that validates an event and the text it becomes.

The next kind (appointment reminder, incident alert) is a model in `schemas.events`
and one `EventKind` here; the pipeline stays the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.events import OrderShipped, SmsRequested


@dataclass(frozen=True)
class EventKind:
    name: str
    model: type[SmsRequested]
    render: Callable[[Any], str]

    def parse(self, raw: bytes) -> SmsRequested:
        """Raises pydantic.ValidationError (which never repeats the input)."""
        return self.model.model_validate_json(raw)


def _order_shipped_text(event: OrderShipped) -> str:
    tracking = f" Tracking: {event.trackingUrl}" if event.trackingUrl else ""
    return f"Your order {event.orderId} has shipped.{tracking}"


ORDER_SHIPPED = EventKind("order-shipped", OrderShipped, _order_shipped_text)
