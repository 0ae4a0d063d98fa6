"""Every event kind by name: the one list a new kind is added to."""

from __future__ import annotations

from collections.abc import Iterable

from sms_relay.errors import ConfigurationError
from sms_relay.kinds.appointment_reminder import APPOINTMENT_REMINDER, CANCELLED
from sms_relay.kinds.event_kind import EventKind
from sms_relay.kinds.incident_alert import INCIDENT_ALERT
from sms_relay.kinds.order_shipped import ORDER_SHIPPED
from sms_relay.kinds.support_ticket_created import SUPPORT_TICKET_CREATED

EVENT_KINDS: dict[str, EventKind] = {
    kind.name: kind
    for kind in (ORDER_SHIPPED, SUPPORT_TICKET_CREATED, APPOINTMENT_REMINDER, INCIDENT_ALERT)
}

# Topics read with a kind that carry no SMS of their own (its cancels), by kind.
COMPANION_TOPICS: dict[str, tuple[str, ...]] = {APPOINTMENT_REMINDER.name: (CANCELLED,)}


def unknown_kinds(names: Iterable[str]) -> str | None:
    """One line naming the unknown kinds and the known ones, or None when all are known."""
    unknown = [name for name in names if name not in EVENT_KINDS]
    if not unknown:
        return None
    return f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(EVENT_KINDS)}"


def check_kinds(names: Iterable[str]) -> None:
    """Raises ConfigurationError (one line) on an unknown kind or a broken template."""
    names = list(names)
    problem = unknown_kinds(names)
    if problem is not None:
        raise ConfigurationError(problem)
    for name in names:
        EVENT_KINDS[name].check()
