"""What a kind is: its model, templates, consent purposes and policy, and its checks.

A kind's policy is a table of settings with documented defaults, each read from the
environment as `SMS_<KIND>_<SETTING>` (a `KindPolicy` subclass in the kind's module).
Composition roots give every served kind its topic, its policy and the destination
policy (`configured`); the pipeline then only calls `parse`, `render` and
`accepts_purpose`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import SmsRequested
from sms_relay.domain.collapse import CollapseRule
from sms_relay.domain.destinations import ANYWHERE, DestinationPolicy, Refusal, refuse
from sms_relay.kinds.templates import Template, check_templates, pick

CONSENT_PURPOSE_MISMATCH = "consent_purpose_mismatch"


def setting_name(kind: str) -> str:
    """`support-ticket-created` -> `SUPPORT_TICKET_CREATED`, as in its variables' names."""
    return kind.replace("-", "_").upper()


def policy_config(kind: str) -> SettingsConfigDict:
    """The settings config of a kind's policy: `SMS_<KIND>_<SETTING>`."""
    return SettingsConfigDict(
        env_prefix=f"SMS_{setting_name(kind)}_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
        frozen=True,
    )


@dataclass(frozen=True)
class SendTiming:
    """When an event may be sent: not before `due_at`, never at or after `expires_at`."""

    due_at: datetime
    expires_at: datetime | None = None
    expiry_reason: str = "expired"  # the reason an `expired` status carries


class KindPolicy(BaseSettings):
    """A kind's policy: no settings here; each kind's subclass declares its own, each a
    `Field(description=...)` with a default (see docs/adding-a-kind.md)."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", hide_input_in_errors=True, frozen=True
    )

    def refusal(self, event: Any) -> Refusal | None:
        """Why the policy refuses a valid event (a reason, the field, a message), or None."""
        return None

    def collapse_rule(self, event: Any) -> CollapseRule | None:
        """The flood control an event is under (decided with its claim), or None."""
        return None

    def expires_at(self, event: Any) -> datetime | None:
        """The instant after which the event is never sent (it ends `expired`), or None."""
        return None

    def message_validity(self) -> int | None:
        """Twilio's ValidityPeriod for the kind's messages (seconds), or None (Twilio's)."""
        return None

    def timing(self, event: Any, now: datetime) -> SendTiming:
        """When the event may be sent (read again at every claim: the clock moves on).
        Default: at once, without expiry."""
        return SendTiming(now)

    def cancel_key(self, event: Any) -> str | None:
        """The key a cancel event names to cancel this event (an appointment id), or None."""
        return None

    def sources(self) -> dict[str, str]:
        """Each setting and where its value came from: `env` (or `.env`) or `default`."""
        return {
            name: "env" if name in self.model_fields_set else "default"
            for name in type(self).model_fields
        }


@dataclass(frozen=True)
class EventKind:
    name: str
    model: type[SmsRequested]
    templates: Mapping[str, Template]  # by locale; `en` is the default
    key_field: str  # the field that keys its records on Kafka (HTTP ingestion sets it)
    policy_type: type[KindPolicy]
    # The consent purposes it accepts; None: any purpose, or none (the event is not checked).
    consent_purposes: frozenset[str] | None = None
    # Typical values of its own fields (optional ones set): the start-up check renders
    # every template with them and warns when a text takes more than two segments.
    example: Mapping[str, Any] = field(default_factory=dict)
    # Set by the composition roots from the settings (`configured`).
    topic: str = ""
    policy: KindPolicy | None = None
    destinations: DestinationPolicy = ANYWHERE

    def parse(self, raw: bytes) -> SmsRequested:
        """Raises pydantic.ValidationError (which never repeats the input); a destination
        or a policy refusal is one too, its type the reason (`country_not_allowed`, ...)."""
        event = self.model.model_validate_json(raw)
        self.destinations.enforce(event)
        refusal = self.effective_policy.refusal(event)
        if refusal is not None:
            self.destinations.on_refusal(refusal.reason)
            raise refuse(event, refusal)
        return event

    def render(self, event: SmsRequested) -> str:
        """The text of the event's locale (unknown or absent: en)."""
        return pick(self.templates, event.locale).render(event)

    def timing(self, event: SmsRequested, now: datetime) -> SendTiming:
        return self.effective_policy.timing(event, now)

    def cancel_key(self, event: SmsRequested) -> str | None:
        return self.effective_policy.cancel_key(event)

    def refusal_now(self, event: SmsRequested) -> str | None:
        """The reason the destination policy or the kind's policy refuses the event today
        (it may have changed since the event was read), or None."""
        refusal = self.destinations.refusal(event) or self.effective_policy.refusal(event)
        return None if refusal is None else refusal.reason

    def accepts_purpose(self, purpose: str | None) -> bool:
        return self.consent_purposes is None or purpose in self.consent_purposes

    def check(self) -> None:
        """Raises ConfigurationError (one line) when a template names no field of the model."""
        check_templates(self.name, self.model, self.templates)

    @property
    def effective_policy(self) -> KindPolicy:
        """The configured policy, else the defaults (read without the environment)."""
        return self.policy if self.policy is not None else self.policy_type.model_construct()

    @property
    def input_topic(self) -> str:
        return self.topic or self.name

    def configured(
        self,
        *,
        topic: str | None = None,
        policy: KindPolicy | None = None,
        destinations: DestinationPolicy | None = None,
    ) -> EventKind:
        changes: dict[str, Any] = {}
        if topic is not None:
            changes["topic"] = topic
        if policy is not None:
            changes["policy"] = policy
        if destinations is not None:
            changes["destinations"] = destinations
        return replace(self, **changes)
