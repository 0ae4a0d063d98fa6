"""Sample events of any kind for `sms-relay produce`: its example, fresh ids, fictional numbers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from sms_relay.domain.destinations import DestinationPolicy
from sms_relay.errors import OpsError
from sms_relay.kinds.event_kind import EventKind
from sms_relay.settings import Settings

# Fictional numbers: the 555-0100..0199 block is reserved for fiction in real area codes.
SAMPLE_NUMBERS = tuple(f"+1212555{n:04d}" for n in range(100, 200))


def sample_events(kind: EventKind, count: int, settings: Settings) -> list[dict[str, Any]]:
    """`count` events of `kind` made from its example, each with its own eventId and key
    (the kind's key field), consent 30 days ago and the kind's first consent purpose.

    What the settings refuse of the example is left out when the field is optional (a
    link to a host not allowed), so every sample is one the consumer sends. Raises
    OpsError (one line) when they refuse the example itself (its number's country).
    """
    run = uuid.uuid4().hex[:8]
    consent = (datetime.now(UTC) - timedelta(days=30)).isoformat(timespec="milliseconds")
    common: dict[str, Any] = {
        "phone": SAMPLE_NUMBERS[0],
        **{name: _ahead(value) for name, value in kind.example.items()},
        "consentAt": consent.replace("+00:00", "Z"),
    }
    if kind.consent_purposes is not None:
        common["consentPurpose"] = sorted(kind.consent_purposes)[0]
    common = _accepted(kind, {"eventId": f"{kind.name}_{run}_0", **common}, settings)
    key = str(common.get(kind.key_field, kind.name))
    return [
        {
            **common,
            "eventId": f"{kind.name}_{run}_{i + 1}",
            "phone": SAMPLE_NUMBERS[i % len(SAMPLE_NUMBERS)],
            kind.key_field: f"{key}-{i + 1}",
        }
        for i in range(count)
    ]


def _ahead(value: Any) -> Any:
    """An instant of the example that has passed, moved on by whole weeks (same weekday and
    time of day) until it lies ahead: an appointment must still be to come."""
    if not isinstance(value, str):
        return value
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return value
    now = datetime.now(UTC)
    if instant.tzinfo is None or instant > now:
        return value
    return (instant + timedelta(weeks=(now - instant) // timedelta(weeks=1) + 1)).isoformat()


def _accepted(kind: EventKind, event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """`event` without the optional fields the settings refuse."""
    destinations = DestinationPolicy.from_settings(settings.destinations, lambda _reason: None)
    configured = kind.configured(policy=settings.kind_policy(kind.name), destinations=destinations)
    while True:
        try:
            model = kind.model.model_validate(event)
        except ValidationError as error:  # an example that no longer fits its model
            problem = error.errors()[0]["msg"]
            raise OpsError(f"the {kind.name} example is not valid: {problem}") from None
        refusal = configured.destinations.refusal(model) or configured.effective_policy.refusal(
            model
        )
        if refusal is None:
            return event
        field = kind.model.model_fields.get(refusal.field)
        if refusal.field not in event or (field is not None and field.is_required()):
            raise OpsError(f"the settings refuse every sample {kind.name} event: {refusal.message}")
        event = {name: value for name, value in event.items() if name != refusal.field}
