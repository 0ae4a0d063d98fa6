"""Settings of the Twilio simulator: credentials, latency, fault rates and callback behaviour."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# "AC" + "simulator" + hex padding: 34 characters, shaped like a real Account SID.
DEFAULT_ACCOUNT_SID = "ACsimulator" + "0" * 23
# A fixed development token: the simulator guards nothing real.
DEFAULT_AUTH_TOKEN = "simulator0dev0auth0token00000000"  # noqa: S105 - public dev-only token

# Fields a running simulator lets the control API change; credentials stay fixed.
FROZEN_FIELDS = frozenset({"account_sid", "auth_token"})


@dataclass
class SimulatorConfig:
    """How the simulator behaves. Rates are probabilities in [0, 1]; times in milliseconds."""

    account_sid: str
    auth_token: str
    latency_ms: float = 0
    latency_jitter_ms: float = 0
    rate_429: float = 0
    rate_500: float = 0
    rate_503: float = 0
    # The message is created (and delivered), yet the API answers 500.
    rate_500_after_create: float = 0
    # The message is created, then the connection is closed without an answer.
    rate_drop_after_create: float = 0
    # Creates per second before answering 429 code 20429; 0 means unlimited.
    max_mps: float = 0
    # Delay between the steps queued -> sent -> delivered (and their callbacks).
    callback_delay_ms: float = 50
    # To number -> error code; the message ends `undelivered` (or `failed`) with that code.
    fail_numbers: dict[str, int] = field(default_factory=dict)
    duplicate_callbacks: float = 0
    reorder_callbacks: bool = False
    drop_callbacks: float = 0
    # Where `POST /_simulator/inbound` delivers inbound SMS unless the request names a URL.
    inbound_url: str | None = None
    seed: int | None = None
    # Attempts per callback event (answers >= 500 and connection errors are retried).
    callback_attempts: int = 3
    # Backoff before retry n is callback_retry_backoff_ms * 2 ** (n - 1).
    callback_retry_backoff_ms: float = 100
    callback_timeout_ms: float = 5000
    # How long a scripted `timeout` holds the request before closing the connection.
    timeout_hold_s: float = 30

    def validate(self) -> None:
        """Raise ValueError when a value is out of range."""
        rates = {
            "rate_429": self.rate_429,
            "rate_500": self.rate_500,
            "rate_503": self.rate_503,
            "rate_500_after_create": self.rate_500_after_create,
            "rate_drop_after_create": self.rate_drop_after_create,
            "duplicate_callbacks": self.duplicate_callbacks,
            "drop_callbacks": self.drop_callbacks,
        }
        for name, value in rates.items():
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        fault_sum = sum(list(rates.values())[:5])
        if fault_sum > 1:
            raise ValueError(f"the create fault rates add up to {fault_sum:.3f}, more than 1")
        non_negative = {
            "latency_ms": self.latency_ms,
            "latency_jitter_ms": self.latency_jitter_ms,
            "max_mps": self.max_mps,
            "callback_delay_ms": self.callback_delay_ms,
            "callback_retry_backoff_ms": self.callback_retry_backoff_ms,
            "timeout_hold_s": self.timeout_hold_s,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.callback_attempts < 1:
            raise ValueError("callback_attempts must be at least 1")
        if self.callback_timeout_ms <= 0:
            raise ValueError("callback_timeout_ms must be positive")

    def public_dict(self) -> dict[str, Any]:
        """The settings without the auth token, for the control API."""
        values = dataclasses.asdict(self)
        values.pop("auth_token")
        return values

    def apply(self, changes: dict[str, Any]) -> None:
        """Change settings in place from JSON values; raise ValueError on an unknown or bad one."""
        known = {f.name: f for f in dataclasses.fields(self)}
        updated = dataclasses.replace(self)
        for name, value in changes.items():
            if name not in known or name in FROZEN_FIELDS:
                raise ValueError(f"cannot change setting {name!r}")
            setattr(updated, name, _coerce(name, getattr(self, name), value))
        updated.validate()
        for name in changes:
            setattr(self, name, getattr(updated, name))


def _coerce(name: str, current: object, value: object) -> object:
    """Check a JSON value against the type of the field's current value."""
    if name == "fail_numbers":
        if not isinstance(value, dict):
            raise ValueError("fail_numbers must be an object of number -> error code")
        return {str(k): int(v) for k, v in value.items()}
    if name in {"inbound_url", "seed"} and value is None:
        return None
    if name == "inbound_url":
        if not isinstance(value, str):
            raise ValueError("inbound_url must be a string or null")
        return value
    if isinstance(current, bool) or name == "reorder_callbacks":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if name in {"seed", "callback_attempts"}:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer")
        return value
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    return float(value)
