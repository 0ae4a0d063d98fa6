"""Writes the JSON Schema of every wire format into `schemas/` (`python -m schemas.export`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.events import (
    AppointmentCancelled,
    AppointmentReminder,
    DeliveryStatusChanged,
    IncidentAlert,
    OrderShipped,
    PhoneVerified,
    SupportTicketCreated,
)
from schemas.twilio import TwilioInboundMessage, TwilioStatusCallback

HERE = Path(__file__).parent
MODELS: dict[str, type[BaseModel]] = {
    "order-shipped": OrderShipped,
    "support-ticket-created": SupportTicketCreated,
    "incident-alert": IncidentAlert,
    "appointment-reminder": AppointmentReminder,
    "appointment-cancelled": AppointmentCancelled,
    "delivery-status": DeliveryStatusChanged,
    "phone-verified": PhoneVerified,
    "twilio-status-callback": TwilioStatusCallback,
    "twilio-inbound-message": TwilioInboundMessage,
}


def render(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(mode="validation"), indent=2, sort_keys=True) + "\n"


def main() -> None:
    for name, model in MODELS.items():
        (HERE / f"{name}.schema.json").write_text(render(model))


if __name__ == "__main__":
    main()
