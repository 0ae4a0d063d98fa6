"""The simulator's in-memory state: messages, verifications, scripts, logs, clock and RNGs."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from .config import SimulatorConfig
from .scheduling import DEFAULT_VALIDITY_SECONDS, DeliveryOptions
from .wire import new_sid, num_segments

# What a scripted create can do; see `POST /_simulator/script`.
OUTCOMES = frozenset(
    {
        "ok",
        "429",
        "500",
        "503",
        "500_after_create",
        "drop_after_create",
        "drop_before_create",
        "timeout",
        "timeout_after_create",
        "html",
    }
)
# What a scripted list call (`"on": "list"`, keyed by its `To` filter) can do.
LIST_OUTCOMES = frozenset({"ok", "429", "500", "503", "timeout"})
# The API calls a script can target, with their outcomes.
SCRIPTABLE = {"create": OUTCOMES, "list": LIST_OUTCOMES}


@dataclass
class Message:
    """One created message, as Twilio would keep it."""

    sid: str
    seq: int
    account_sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    status_callback: str | None
    status: str
    date_created: datetime
    date_updated: datetime
    num_segments: int
    num_media: int
    date_sent: datetime | None = None
    # Monotonic time at which the sender's queue lets the message go (status `sending`).
    release_at: float = 0.0
    error_code: int | None = None
    error_message: str | None = None
    price: str | None = None
    direction: str = "outbound-api"
    validity_seconds: int = DEFAULT_VALIDITY_SECONDS
    send_at: datetime | None = None  # a scheduled message's due time (simulator clock)
    # Monotonic time at which it dies in the queue (ValidityPeriod), if it would outwait it.
    expires_at: float | None = None


@dataclass
class Verification:
    """One Verify v2 verification; `sends` are the times its code was (re)sent."""

    sid: str
    service_sid: str
    account_sid: str
    to: str
    channel: str
    code: str
    status: str
    date_created: datetime
    date_updated: datetime
    checks: int = 0
    sends: list[tuple[str, str, datetime]] = field(default_factory=list)


class RateLimiter:
    """A token bucket holding one second of `rate`; 0 means unlimited."""

    def __init__(self) -> None:
        self._tokens: float | None = None
        self._last = 0.0

    def allow(self, rate: float) -> bool:
        if rate <= 0:
            return True
        now = time.monotonic()
        capacity = max(rate, 1.0)
        if self._tokens is None:
            self._tokens = capacity
        else:
            self._tokens = min(capacity, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Store:
    """Everything the simulator remembers; touched only from its event loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        seed = self.config.seed
        # Separate generators, so enabling callback faults does not shift create faults.
        self.fault_rng = random.Random(seed)
        self.callback_rng = random.Random(None if seed is None else seed + 1)
        self.code_rng = random.Random(None if seed is None else seed + 2)
        self.latency_rng = random.Random(None if seed is None else seed + 3)
        self.list_rng = random.Random(None if seed is None else seed + 4)
        self.messages: dict[str, Message] = {}
        self.requests: list[dict[str, Any]] = []
        self.list_requests: list[dict[str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []
        self.scripts: dict[tuple[str, str], deque[str]] = {}
        # Sender -> monotonic time its queue is free again (`sender_mps`).
        self.sender_free: dict[str, float] = {}
        self.verifications: list[Verification] = []
        self.verify_sends: dict[tuple[str, str], list[datetime]] = {}
        self.limiter = RateLimiter()
        self.clock_offset = timedelta(0)
        self._seq = 0

    def now(self) -> datetime:
        """Wall-clock UTC time, shifted by `POST /_simulator/clock` (for expiry tests)."""
        return datetime.now(UTC) + self.clock_offset

    # --- scripts -------------------------------------------------------------------

    def set_script(self, to: str, outcomes: list[str], on: str = "create") -> None:
        if outcomes:
            self.scripts[(on, to)] = deque(outcomes)
        else:
            self.scripts.pop((on, to), None)

    def take_scripted(self, to: str, on: str = "create") -> str | None:
        """The next scripted outcome of an `on` call for `to`, or None when none is left."""
        queue = self.scripts.get((on, to))
        if not queue:
            return None
        outcome = queue.popleft()
        if not queue:
            del self.scripts[(on, to)]
        return outcome

    # --- messages ------------------------------------------------------------------

    def log_request(self, params: dict[str, str]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": iso8601_ms(self.now()),
            "params": params,
            "to": params.get("To"),
            "status": None,
            "error_code": None,
            "sid": None,
            "created": False,
            "outcome": None,
            "source": None,
        }
        self.requests.append(entry)
        return entry

    def create_message(
        self,
        params: dict[str, str],
        num_segments: int,
        num_media: int,
        options: DeliveryOptions | None = None,
    ) -> Message:
        self._seq += 1
        now = self.now()
        service = params.get("MessagingServiceSid") or None
        message = Message(
            sid=new_sid("SM"),
            seq=self._seq,
            account_sid=self.config.account_sid,
            to=params["To"],
            from_=params.get("From") or None,
            body=params.get("Body", ""),
            messaging_service_sid=service,
            status_callback=params.get("StatusCallback") or None,
            status="accepted" if service else "queued",
            date_created=now,
            date_updated=now,
            num_segments=num_segments,
            num_media=num_media,
        )
        if options is not None:
            message.validity_seconds = options.validity_seconds
            message.send_at = options.send_at
        if message.send_at is not None:
            message.status = "scheduled"  # queued only once due: `release`
        else:
            message.release_at = self._enqueue(message)
        self.messages[message.sid] = message
        return message

    def release(self, message: Message) -> None:
        """A scheduled message that is due enters its sender's queue."""
        message.status = "accepted" if message.messaging_service_sid else "queued"
        message.date_updated = self.now()
        message.release_at = self._enqueue(message)

    def _enqueue(self, message: Message) -> float:
        """When the sender's queue lets `message` go: after `queue_hold_ms`, and after the
        segments queued before it at `sender_mps` (Twilio queues per sender). One that would
        wait longer than its validity period expires instead and takes no sending time."""
        now = time.monotonic()
        release = now + self.config.queue_hold_ms / 1000
        rate = self.config.sender_mps
        sender = message.from_ or message.messaging_service_sid or ""
        if rate > 0:
            release = max(release, self.sender_free.get(sender, now))
        if release - now > message.validity_seconds:
            message.expires_at = now + message.validity_seconds
        elif rate > 0:
            self.sender_free[sender] = release + message.num_segments / rate
        return release

    def listed(self, message: Message, now: datetime) -> bool:
        """Whether list results show `message` yet (`list_lag_ms` after its creation)."""
        return now - message.date_created >= timedelta(milliseconds=self.config.list_lag_ms)

    def receive_message(self, sender: str, to: str, body: str, service: str | None) -> Message:
        """An inbound SMS: Twilio keeps it as a Message too (fetchable by its SID)."""
        self._seq += 1
        now = self.now()
        message = Message(
            sid=new_sid("SM"),
            seq=self._seq,
            account_sid=self.config.account_sid,
            to=to,
            from_=sender,
            body=body,
            messaging_service_sid=service,
            status_callback=None,
            status="received",
            date_created=now,
            date_updated=now,
            date_sent=now,
            num_segments=num_segments(body),
            num_media=0,
            direction="inbound",
        )
        self.messages[message.sid] = message
        return message

    def request_log(self) -> list[dict[str, Any]]:
        """The create log, each entry with the current status of the message it created."""
        result = []
        for entry in self.requests:
            message = self.messages.get(entry["sid"] or "")
            result.append({**entry, "message_status": message.status if message else None})
        return result

    # --- verifications -------------------------------------------------------------

    def latest_verification(self, to: str, service_sid: str | None = None) -> Verification | None:
        for verification in reversed(self.verifications):
            if verification.to == to and service_sid in (None, verification.service_sid):
                return verification
        return None

    def find_verification(self, sid: str) -> Verification | None:
        for verification in self.verifications:
            if verification.sid == sid:
                return verification
        return None

    def new_code(self) -> str:
        return f"{self.code_rng.randrange(1_000_000):06d}"


def iso8601_ms(moment: datetime) -> str:
    """ISO 8601 with milliseconds, for the introspection logs."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


STORE = web.AppKey("simulator_store", Store)
