"""Settings of the Twilio simulator: credentials, latency, faults, queueing and callbacks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The one set of development credentials: the simulator's defaults, and what
# scripts/stack (and docker-compose.yml) give the simulator and our services. Fixed and
# obviously fake, shaped like real ones (a prefix and 32 hex digits); they guard nothing.
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "0" * 32
DEFAULT_VERIFY_SERVICE_SID = "VA" + "0" * 32
# Twilio's magic test sender: a create from it succeeds.
DEFAULT_FROM_NUMBER = "+15005550006"


def development_credentials() -> str:
    """The four values, space-separated, for scripts/stack to read into its variables."""
    return " ".join(
        (DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, DEFAULT_VERIFY_SERVICE_SID, DEFAULT_FROM_NUMBER)
    )


# Fields a running simulator lets the control API change; credentials stay fixed.
FROZEN_FIELDS = frozenset({"account_sid", "auth_token"})

# Twilio's webhook retry policies (`rp`): connect failure or timeout, read timeout, 4xx, 5xx.
RETRY_POLICIES = frozenset({"ct", "rt", "4xx", "5xx", "all"})
# Twilio retries a callback at most 5 times (`rc`).
MAX_RETRY_COUNT = 5

# The create faults: random draws among them (their rates add up to at most 1).
CREATE_FAULTS = (
    "rate_429",
    "rate_500",
    "rate_503",
    "rate_timeout",
    "rate_500_after_create",
    "rate_drop_after_create",
    "rate_timeout_after_create",
)
# The list faults, likewise.
LIST_FAULTS = ("rate_list_500", "rate_list_503", "rate_list_timeout")


@dataclass
class SimulatorConfig:
    """How the simulator behaves. Rates are probabilities in [0, 1]; times in milliseconds.

    Faults of a create: `rate_429`, `rate_500`, `rate_503` and `rate_timeout` create nothing;
    `rate_500_after_create`, `rate_drop_after_create` and `rate_timeout_after_create` create
    the message, then answer 500, close the connection, or hold the request for
    `timeout_hold_s` and close it (the client times out first). Faults of a list:
    `rate_list_500`, `rate_list_503`, `rate_list_timeout`.

    Twilio's realism, off by default: `queue_hold_ms` and `sender_mps` keep a created
    message `queued` (no `date_sent`) before it is sent; `list_lag_ms` hides a new message
    from list results for a while (fetch by SID sees it at once).
    """

    account_sid: str
    auth_token: str
    latency_ms: float = 0
    latency_jitter_ms: float = 0
    rate_429: float = 0
    rate_500: float = 0
    rate_503: float = 0
    # Nothing is created; the request is held for `timeout_hold_s`, then closed.
    rate_timeout: float = 0
    # The message is created (and delivered), yet the API answers 500.
    rate_500_after_create: float = 0
    # The message is created, then the connection is closed without an answer.
    rate_drop_after_create: float = 0
    # The message is created, then the request is held for `timeout_hold_s` and closed.
    rate_timeout_after_create: float = 0
    rate_list_500: float = 0
    rate_list_503: float = 0
    # The list request is held for `timeout_hold_s`, then closed without an answer.
    rate_list_timeout: float = 0
    # Creates per second before answering 429 code 20429; 0 means unlimited.
    max_mps: float = 0
    # Every created message waits this long in the sender's queue (`queued`, no date_sent).
    queue_hold_ms: float = 0
    # Message segments each sender (From, or Messaging Service) sends per second, like a
    # long code's 1; messages beyond it wait in the queue. 0 means unlimited.
    sender_mps: float = 0
    # A created message shows in list results only this long after its creation.
    list_lag_ms: float = 0
    # Delay between the steps sending -> sent -> delivered (and their callbacks).
    callback_delay_ms: float = 50
    # To number -> error code; the message ends `undelivered` (or `failed`) with that code.
    fail_numbers: dict[str, int] = field(default_factory=dict)
    duplicate_callbacks: float = 0
    reorder_callbacks: bool = False
    drop_callbacks: float = 0
    # Where `POST /_simulator/inbound` delivers inbound SMS unless the request names a URL.
    inbound_url: str | None = None
    seed: int | None = None
    # Twilio's webhook connection defaults (`rc`, `rp`, `ct`, `rt`, `tt`); a StatusCallback
    # URL's `#rc=..&rp=..` fragment overrides them for its callbacks.
    callback_retry_count: int = 1
    callback_retry_policy: str = "ct"
    callback_connect_timeout_ms: float = 5000
    # Read timeout: how long an answer may take once connected.
    callback_timeout_ms: float = 15000
    # Time for all attempts of one callback, retries included.
    callback_total_timeout_ms: float = 15000
    # Backoff before retry n is callback_retry_backoff_ms * 2 ** (n - 1).
    callback_retry_backoff_ms: float = 100
    # How long a timeout fault holds the request before closing the connection.
    timeout_hold_s: float = 30

    def validate(self) -> None:
        """Raise ValueError when a value is out of range."""
        rates = {name: getattr(self, name) for name in (*CREATE_FAULTS, *LIST_FAULTS)}
        rates["duplicate_callbacks"] = self.duplicate_callbacks
        rates["drop_callbacks"] = self.drop_callbacks
        for name, value in rates.items():
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        for kind, names in (("create", CREATE_FAULTS), ("list", LIST_FAULTS)):
            total = sum(rates[name] for name in names)
            if total > 1:
                raise ValueError(f"the {kind} fault rates add up to {total:.3f}, more than 1")
        non_negative = (
            "latency_ms",
            "latency_jitter_ms",
            "max_mps",
            "queue_hold_ms",
            "sender_mps",
            "list_lag_ms",
            "callback_delay_ms",
            "callback_retry_backoff_ms",
            "timeout_hold_s",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in (
            "callback_connect_timeout_ms",
            "callback_timeout_ms",
            "callback_total_timeout_ms",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.callback_retry_count <= MAX_RETRY_COUNT:
            raise ValueError(f"callback_retry_count must be between 0 and {MAX_RETRY_COUNT}")
        if parse_retry_policy(self.callback_retry_policy) is None:
            raise ValueError(
                f"callback_retry_policy must be a comma-separated list of {sorted(RETRY_POLICIES)}"
            )

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


def parse_retry_policy(text: str) -> frozenset[str] | None:
    """`ct,5xx` -> {"ct", "5xx"} (`all` is every policy); None when a part is unknown."""
    parts = {part.strip() for part in text.split(",")}
    if not parts <= RETRY_POLICIES:
        return None
    return RETRY_POLICIES - {"all"} if "all" in parts else frozenset(parts)


def _coerce(name: str, current: object, value: object) -> object:
    """Check a JSON value against the type of the field's current value."""
    if name == "fail_numbers":
        if not isinstance(value, dict):
            raise ValueError("fail_numbers must be an object of number -> error code")
        return {str(k): int(v) for k, v in value.items()}
    if name in {"inbound_url", "seed"} and value is None:
        return None
    if name in {"inbound_url", "callback_retry_policy"}:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if isinstance(current, bool) or name == "reorder_callbacks":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if name in {"seed", "callback_retry_count"}:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer")
        return value
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    return float(value)
