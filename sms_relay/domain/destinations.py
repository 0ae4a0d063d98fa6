"""Where an SMS may go: allowed destination countries and tracking-link hosts.

One rule for every source: the consumer applies it when it validates a record (so events
put on Kafka directly are held to it too) and the HTTP ingestion route applies the same
`EventKind`, so a refused event is refused the same way everywhere. A refusal is a
validation error whose type is the machine reason (`country_not_allowed`,
`link_host_not_allowed`), which the consumer turns into a DLQ record and a `rejected`
status carrying that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import phonenumbers
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.events import SmsRequested

log = logging.getLogger(__name__)

COUNTRY_NOT_ALLOWED = "country_not_allowed"
LINK_HOST_NOT_ALLOWED = "link_host_not_allowed"
REASONS = frozenset({COUNTRY_NOT_ALLOWED, LINK_HOST_NOT_ALLOWED})


class DestinationScope(Protocol):
    """Where SMS may go, as configured (`SMS_ALLOWED_COUNTRIES`, `SMS_ALLOWED_LINK_HOSTS`)."""

    @property
    def allowed_countries(self) -> tuple[str, ...] | None: ...

    @property
    def allowed_link_hosts(self) -> tuple[str, ...] | None: ...


@dataclass(frozen=True)
class DestinationPolicy:
    """None means "any"; `on_refusal` counts refusals by reason (a metric)."""

    countries: frozenset[str] | None = None
    link_hosts: frozenset[str] | None = None
    on_refusal: Callable[[str], None] = lambda _reason: None

    @classmethod
    def from_settings(
        cls, settings: DestinationScope, on_refusal: Callable[[str], None]
    ) -> DestinationPolicy:
        countries = settings.allowed_countries
        hosts = settings.allowed_link_hosts
        return cls(
            countries=None if countries in (None, ("*",)) else frozenset(countries or ()),
            link_hosts=None if hosts is None else frozenset(hosts),
            on_refusal=on_refusal,
        )

    def enforce(self, event: SmsRequested) -> None:
        """Raises pydantic.ValidationError (type = the reason, never the value)."""
        refusal = self._refusal(event)
        if refusal is None:
            return
        self.on_refusal(refusal.reason)
        raise refuse(event, refusal)

    def refusal(self, event: SmsRequested) -> Refusal | None:
        """Why the event may not go where it would, or None (nothing counted)."""
        return self._refusal(event)

    def _refusal(self, event: SmsRequested) -> Refusal | None:
        if self.countries is not None and region_of(event.phone) not in self.countries:
            return Refusal(COUNTRY_NOT_ALLOWED, "phone", "SMS to this country is not allowed")
        if self.link_hosts is not None:
            return link_refusal(event, self.link_hosts)
        return None


ANYWHERE = DestinationPolicy()


@dataclass(frozen=True)
class Refusal:
    """Why a valid event may not be sent: the reason (a validation error's type), the
    field, and a message that never repeats the value."""

    reason: str
    field: str
    message: str


def refuse(event: SmsRequested, refusal: Refusal) -> ValidationError:
    """The validation error that carries a refusal, as the consumer and ingestion read it."""
    error = PydanticCustomError(refusal.reason, refusal.message)
    detail = InitErrorDetails(type=error, loc=(refusal.field,), input=None)
    return ValidationError.from_exception_data(type(event).__name__, [detail])


def link_refusal(event: SmsRequested, allowed: frozenset[str]) -> Refusal | None:
    """The first link of the event to a host outside `allowed`."""
    for field, host in event.link_hosts():
        if not host_allowed(host, allowed):
            return Refusal(LINK_HOST_NOT_ALLOWED, field, "links to this host are not allowed")
    return None


def region_of(phone: str) -> str:
    """ISO 3166 region of a validated E.164 number (`001` for non-geographic ones)."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(phone, None)) or "ZZ"


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """`example.com` allows that host only; `*.example.com` allows its subdomains."""
    host = host.lower().rstrip(".")
    if host in allowed:
        return True
    parts = host.split(".")
    return any("*." + ".".join(parts[i:]) in allowed for i in range(1, len(parts)))


def log_scope(settings: DestinationScope) -> None:
    """Once at start-up: say when destinations are not restricted at all."""
    if settings.allowed_countries is None:
        log.warning(
            "SMS_ALLOWED_COUNTRIES is not set: SMS may go to every country "
            "(set it, or * to allow all explicitly; production requires it)"
        )
    elif settings.allowed_countries == ("*",):
        log.info("SMS_ALLOWED_COUNTRIES=*: SMS may go to every country")
    else:
        log.info(
            "SMS destinations restricted",
            extra={"countries": ",".join(sorted(settings.allowed_countries))},
        )
