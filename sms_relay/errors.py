"""One error root for sms-relay; each class says whether trying again can help.

    SmsRelayError
    ├── ConfigurationError          bad settings; the process refuses to start
    ├── ServiceUnavailableError     Kafka did not answer at start-up; trying later can help
    ├── LeaseLostError              another consumer took the claim; stop touching it
    └── ProviderError               Twilio said no, or could not be asked
        ├── ProviderRejectedError   a 4xx other than 429: permanent, carries Twilio's code
        │   └── ProviderAccountError  ... but our account's or settings' fault (401/403,
        │                             sender, geo permissions: `sms_relay.domain.twilio_codes`):
        │                             transient across retry tiers, and alerted at once
        ├── ProviderThrottledError  429: Twilio did not process it; safe to resend
        └── ProviderUnavailableError  5xx, timeout, dropped connection: may have been
                                      processed, so reconcile before any resend

Library exceptions (twilio, aiohttp) are translated in `sms_relay.adapters.twilio.twilio_api`;
the core never sees them.
"""

from __future__ import annotations


class SmsRelayError(Exception):
    retriable = False


class ConfigurationError(SmsRelayError):
    """Raised at start-up by `load_settings` and the composition roots."""


class ServiceUnavailableError(SmsRelayError):
    """Raised at start-up when a service the process needs does not answer in time."""

    retriable = True


class LeaseLostError(SmsRelayError):
    """Raised by the ledger when a write's lease token no longer matches (fencing)."""


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


class LeaseTooShortError(SmsRelayError):
    """The lease would not outlive the next Twilio call: stop before making it."""


class ProviderThrottledError(ProviderError):
    retriable = True


class ProviderUnavailableError(ProviderError):
    """The request may or may not have created a message."""

    retriable = True
