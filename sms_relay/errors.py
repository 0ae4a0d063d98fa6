"""One error root for sms-relay; each class says whether trying again can help.

    SmsRelayError
    ├── ConfigurationError          bad settings; the process refuses to start
    ├── ServiceUnavailableError     an outside system did not answer; trying later can help
    │   ├── DatabaseUnavailableError  PostgreSQL is away: refused, dropped or timed out
    │   ├── BrokerUnavailableError    Kafka did not take or give a record in time
    │   └── OutboxUnavailableError    neither PostgreSQL nor Kafka took a status record
    ├── DatabaseStatementError      PostgreSQL refused a statement: a missing table (run
    │                               `sms-relay migrate`), a bug; trying again cannot help
    ├── LeaseTooShortError          the lease would not outlive the next Twilio call
    ├── OpsError                    an on-call command cannot do what was asked (exit code)
    │   └── NotFoundError           ... because what it names does not exist
    └── ProviderError               Twilio said no, or could not be asked
        ├── ProviderRejectedError   a 4xx other than 429: permanent, carries Twilio's code
        │   └── ProviderAccountError  ... but our account's or settings' fault (401/403,
        │                             sender, geo permissions: `sms_relay.domain.twilio_codes`):
        │                             transient across retry tiers, and alerted at once
        ├── ProviderThrottledError  429: Twilio did not process it; safe to resend
        └── ProviderUnavailableError  5xx, timeout, dropped connection: may have been
                                      processed, so reconcile before any resend

Library exceptions stop at the adapters: SQLAlchemy's and psycopg's in
`sms_relay.adapters.postgres`, confluent-kafka's in `sms_relay.adapters.kafka`, twilio's
and aiohttp's in `sms_relay.adapters.twilio`. The use cases (`sms_relay.delivery`,
`sms_relay.status`) never see them.
"""

from __future__ import annotations


class SmsRelayError(Exception):
    retriable = False


class ConfigurationError(SmsRelayError):
    """Raised at start-up by `load_settings` and the composition roots."""


class ServiceUnavailableError(SmsRelayError):
    """Raised when a service the process needs does not answer in time."""

    retriable = True


class DatabaseUnavailableError(ServiceUnavailableError):
    """Raised by the PostgreSQL adapters when PostgreSQL did not answer, dropped the
    connection, ran out of pool or time, or rolled back for a conflict (a retry helps)."""


class DatabaseStatementError(SmsRelayError):
    """Raised by the PostgreSQL adapters when PostgreSQL answered but refused a statement."""


class BrokerUnavailableError(ServiceUnavailableError):
    """Raised by the Kafka adapters when the broker did not answer or refused a record."""


class OutboxUnavailableError(ServiceUnavailableError):
    """Raised by `Outbox.publish` when neither PostgreSQL nor Kafka took the record."""


class LeaseTooShortError(SmsRelayError):
    """The lease would not outlive the next Twilio call: stop before making it."""


class OpsError(SmsRelayError):
    """An on-call command cannot do what was asked; the message is the one line shown."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotFoundError(OpsError):
    """What the command names (an event, a key, a number) does not exist (exit status 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


class ProviderError(SmsRelayError):
    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class ProviderRejectedError(ProviderError):
    retriable = False


class ProviderAccountError(ProviderRejectedError):
    """Twilio refused because of our credentials, sender or account settings: nothing
    was sent, and a fix in the console makes the same request succeed."""


class ProviderThrottledError(ProviderError):
    retriable = True


class ProviderUnavailableError(ProviderError):
    """The request may or may not have created a message."""

    retriable = True
