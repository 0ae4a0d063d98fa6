"""The one place that turns personal data and secrets into something safe to show."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

# E.164-looking runs, also URL-encoded (%2B) as the twilio SDK and access logs print them.
_PHONE = re.compile(r"(?:\+|%2[Bb])[1-9][0-9]{6,14}(?![0-9])")


def mask_phone(number: str) -> str:
    """`+12125550123` -> `+*******0123`: keeps the last four digits for support calls."""
    digits = number.lstrip("+")
    if len(digits) <= 4:
        return "+" + "*" * len(digits)
    return "+" + "*" * (len(digits) - 4) + digits[-4:]


def phone_hash(key: str, number: str) -> str:
    """A keyed hash, so a leaked table cannot be reversed by hashing every number."""
    return hmac.new(key.encode(), number.encode(), hashlib.sha256).hexdigest()


def alert_key_hash(key: str, alert_key: str) -> str:
    """An alert's dedup key, keyed like a number (it may name a host or a customer)."""
    return phone_hash(key, "alert-key:" + alert_key)


def body_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _mask_match(match: re.Match[str]) -> str:
    text = match.group(0)
    prefix = "%2B" if text[0] == "%" else "+"
    return prefix + mask_phone(text[len(prefix) :])[1:]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask phone numbers and remove the given secret values from free text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _PHONE.sub(_mask_match, text)
