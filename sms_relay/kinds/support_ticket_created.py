"""`support-ticket-created`: the ticket number and, when allowed, a link; nothing of the
ticket itself (its subject or text may hold anything)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from schemas.events import SupportTicketCreated
from sms_relay.domain.destinations import Refusal, link_refusal
from sms_relay.kinds.event_kind import EventKind, KindPolicy, policy_config
from sms_relay.kinds.templates import Template

NAME = "support-ticket-created"
HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class SupportTicketCreatedPolicy(KindPolicy):
    """`SMS_SUPPORT_TICKET_CREATED_*`."""

    model_config = policy_config(NAME)

    link_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Hosts a `link` may point to: `example.com` (that host only), "
        "`*.example.com` (its subdomains); empty: no link is allowed.",
    )

    @field_validator("link_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower().rstrip(".") for h in value.split(",") if h.strip())
        return value

    @field_validator("link_hosts")
    @classmethod
    def _hosts_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [host for host in value if not HOST.match(host)]
        if bad:
            raise ValueError("hosts only, e.g. example.com or *.example.com (no scheme or path)")
        return value

    def refusal(self, event: Any) -> Refusal | None:
        return link_refusal(event, frozenset(self.link_hosts))


SUPPORT_TICKET_CREATED = EventKind(
    name=NAME,
    model=SupportTicketCreated,
    templates={
        "en": Template(
            "We received your support request. Your ticket number is {ticketId}.",
            {"link": " Details: {link}"},
        ),
        "de": Template(
            "Wir haben Ihre Anfrage erhalten. Ihre Ticketnummer ist {ticketId}.",
            {"link": " Details: {link}"},
        ),
    },
    key_field="ticketId",
    policy_type=SupportTicketCreatedPolicy,
    consent_purposes=frozenset({"support", "transactional"}),
    example={"ticketId": "CS-482113", "link": "https://help.example.com/tickets/CS-482113"},
)
