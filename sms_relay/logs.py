"""JSON logs, one object per line, with every line redacted before it is written.

Redaction covers the whole line, third-party messages included: E.164-looking numbers
(also URL-encoded, double-encoded and spaced), configured secrets (also URL-encoded and
inside HTTP basic credentials), and the values of keys that carry message bodies or
one-time codes.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from sms_relay.masking import mask_phone, redact

if TYPE_CHECKING:
    from sms_relay.settings import Settings

# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Loggers that print request parameters (the twilio SDK logs a list's `To` at INFO).
NOISY_LOGGERS = ("twilio.http_client", "twilio.async_http_client")

_REDACTED = "[redacted]"
# Spaced or punctuated (`+1 212-555-0123`) and double-encoded (`%252B1212...`) numbers;
# the plain and `%2B` forms are handled by `masking.redact`.
_LOOSE_PHONE = re.compile(r"(?:\+|%252[Bb])[1-9](?:[ .()\-]{0,2}[0-9]){6,14}(?![0-9])")
# Values of keys that hold message bodies, Verify codes or credentials, in JSON, Python
# reprs (`'Body': '...'`) and form or query strings (`Body=...&`).
_SENSITIVE_KEYS = r"body|code|otp|password|passwd|auth_?token|authorization|secret"
_QUOTED_VALUE = re.compile(
    rf"""(?ix)
    (?P<key>\\?["']?\b(?:{_SENSITIVE_KEYS})\\?["']?\s*[:=]\s*)  # maybe quoted or escaped
    (?P<q>\\?["'])                         # opening quote
    (?P<value>(?:\\.|(?!(?P=q)).)*?)       # value, escapes allowed
    (?P=q)
    """
)
_FORM_VALUE = re.compile(
    rf"""(?i)(?P<key>(?:^|[?&\s"'(,;])(?:{_SENSITIVE_KEYS})=)(?P<value>[^&\s\\"']+)"""
)
# Basic or bearer credentials (base64 of `ACxxx:token` is far longer than 20 characters).
_BASIC_AUTH = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/._~-]{20,}=*")
# Words each pattern above needs to find (in lower case) before it can match anything:
# most lines (an access line, a batch summary) have none and skip the costly patterns.
_SENSITIVE_WORDS = ("body", "code", "otp", "passw", "auth", "secret")
_AUTH_WORDS = ("basic", "bearer")


def _mask_loose(match: re.Match[str]) -> str:
    text = match.group(0)
    prefix = "+" if text.startswith("+") else text[:5]
    digits = re.sub(r"[^0-9]", "", text[len(prefix) :])
    return prefix + mask_phone(digits)[1:]


def _secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """Each secret as it may appear: plain, URL-encoded and JSON-escaped."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        forms.add(quote(secret, safe=""))
        forms.add(json.dumps(secret)[1:-1])
    # Longest first, so a secret is never half-replaced by a shorter form of itself;
    # values under 4 characters cannot be told apart from ordinary text.
    return tuple(sorted((f for f in forms if len(f) >= 4), key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Everything the log formatter applies to a line; usable on any free text."""
    return _scrub(text, _secret_forms(secrets))


def _scrub(text: str, secret_forms: tuple[str, ...]) -> str:
    text = redact(text, secret_forms)
    text = _LOOSE_PHONE.sub(_mask_loose, text)
    lowered = text.lower()
    if any(word in lowered for word in _AUTH_WORDS):
        text = _BASIC_AUTH.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
    if not any(word in lowered for word in _SENSITIVE_WORDS):
        return text
    text = _QUOTED_VALUE.sub(
        lambda m: (
            f"{m.group('key')}{m.group('q')}{_REDACTED}{m.group('q')}"
            if m.group("value")
            else m.group(0)
        ),
        text,
    )
    return _FORM_VALUE.sub(lambda m: f"{m.group('key')}{_REDACTED}", text)


class RedactingJsonFormatter(logging.Formatter):
    """Formats as JSON and redacts the whole line, third-party messages included."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = _secret_forms(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _scrub(json.dumps(entry, default=str), self._secrets)


def quiet_noisy_loggers() -> None:
    """Third-party loggers that log request parameters only speak from WARNING up."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(
    level: str = "INFO", secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> None:
    """Install the redacting JSON handler on the root logger (replacing any other)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingJsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_noisy_loggers()


def secrets_of(settings: Settings) -> list[str]:
    """The configured values no log line may contain."""
    secrets = [
        settings.twilio.auth_token.get_secret_value(),
        settings.phone_hash_key.get_secret_value(),
    ]
    password = urlsplit(settings.database_url.get_secret_value()).password
    if password:
        secrets.extend({password, unquote(password)})
    return [s for s in secrets if s]
