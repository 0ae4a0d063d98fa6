"""JSON logs, one object per line, every value that can carry data redacted before it is written.

Redacted by field: the line's structure (time, level, logger name, field names) is set
by code and stays readable; the message, error texts and `extra=` values, third-party
ones included, lose E.164-looking numbers (also URL-encoded, double-encoded and spaced),
configured secrets (also URL-encoded and inside HTTP basic credentials), and the values
of keys that carry message bodies, one-time codes or credentials.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
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
_SENSITIVE_FIELD = re.compile(rf"(?i)(?:{_SENSITIVE_KEYS})")
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


# A secret this long is removed wherever it appears. A shorter one (a weak local
# password such as `relay`) only where it stands alone: removed inside words it would
# gut ordinary text (`relayed`), and a secret that short is no real protection anyway.
_WHOLE_WORD_BELOW = 8


@dataclass(frozen=True)
class _Secrets:
    anywhere: tuple[str, ...]  # longest first: never half-replaced by a shorter form
    alone: re.Pattern[str] | None  # the short ones, not inside a longer word


def _secret_forms(secrets: Iterable[str]) -> _Secrets:
    """Each secret as it may appear: plain, URL-encoded and JSON-escaped."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        forms.add(quote(secret, safe=""))
        forms.add(json.dumps(secret)[1:-1])
    # Values under 4 characters cannot be told apart from ordinary text.
    forms = {f for f in forms if len(f) >= 4}
    long = sorted((f for f in forms if len(f) >= _WHOLE_WORD_BELOW), key=len, reverse=True)
    short = sorted((f for f in forms if len(f) < _WHOLE_WORD_BELOW), key=len, reverse=True)
    alone = None
    if short:
        either = "|".join(re.escape(f) for f in short)
        alone = re.compile(rf"(?<![A-Za-z0-9])(?:{either})(?![A-Za-z0-9])")
    return _Secrets(tuple(long), alone)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Everything the log formatter applies to a value; usable on any free text."""
    return _scrub(text, _secret_forms(secrets))


def _scrub(text: str, secrets: _Secrets) -> str:
    if secrets.alone is not None:
        text = secrets.alone.sub(_REDACTED, text)
    text = redact(text, secrets.anywhere)
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
    """Formats as JSON; redacts every value that can carry data, third-party ones included.

    The time, level and logger name are written as they are: code sets them, and a
    secret that happens to be part of a module name (a database password `sms_relay`)
    must not turn every logger into `[redacted].policy`.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = _secret_forms(secrets)

    def format(self, record: logging.LogRecord) -> str:
        structure = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        values: dict[str, Any] = {"msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD:
                values[key] = value
        if record.exc_info:
            values["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            values["stack"] = self.formatStack(record.stack_info)
        fields = [
            f"{json.dumps(key)}: {json.dumps(value)}"
            for key, value in structure.items()
            if key not in values  # an `extra=` field of the same name wins, as a value
        ]
        fields.extend(
            f"{json.dumps(key)}: {self._value(key, value)}" for key, value in values.items()
        )
        return "{" + ", ".join(fields) + "}"

    def _value(self, key: str, value: object) -> str:
        """One value as JSON, redacted: wholly under a key that names a body, a code or a
        credential (a number there is an error code, kept), else scrubbed as text."""
        if _SENSITIVE_FIELD.fullmatch(key) and not isinstance(value, int | float | None):
            return json.dumps(_REDACTED)
        return _scrub(json.dumps(value, default=str), self._secrets)


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
