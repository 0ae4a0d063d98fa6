"""The Verify use case: rate-limited code sends and checks; an approval is recorded and published.

The answers never tell whether a number is known: a start is `pending` whatever Twilio
thought of the number (short of a limit or an outage), and a check is `approved` or
`rejected`, a wrong code and "no verification pending" alike. Codes are never logged.

The limits are sliding windows kept in memory, so they hold per process: N replicas
behind a load balancer allow up to N times the configured counts. Twilio's own limits
(5 sends per number per 10 minutes: 60203, 5 checks per verification: 60202) still
bound the total.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import PhoneVerified, utc_now
from sms_relay.errors import ProviderError, ProviderUnavailableError
from sms_relay.masking import mask_phone, phone_hash
from sms_relay.metrics import CallbackMetrics
from sms_relay.outbox import OutboundRecord, Outbox, OutboxUnavailableError

log = logging.getLogger(__name__)

MAX_CHECKS_REACHED = 60202
MAX_SENDS_REACHED = 60203
# Twilio's Verify windows are ten minutes; its 429s last that long at most.
TWILIO_WINDOW_SECONDS = 600.0

_UPSERT = text(
    "INSERT INTO phone_verifications (phone_hash, phone_masked, verified_at) "
    "VALUES (:h, :m, :at) ON CONFLICT (phone_hash) DO UPDATE "
    "SET phone_masked = excluded.phone_masked, verified_at = excluded.verified_at"
)


class Verifier(Protocol):
    async def start(self, to: str, channel: str = "sms") -> str: ...

    async def check(self, to: str, code: str) -> bool: ...


class SlidingWindowLimiter:
    """At most `limit` hits per key within any `window` seconds; memory bounded by `max_keys`."""

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may hit again, or None when it may now."""
        hits = self._current(key)
        if len(hits) < self._limit:
            return None
        return max(hits[0] + self._window - self._clock(), 0.001)

    def hit(self, key: str) -> None:
        self._current(key).append(self._clock())
        self._hits.move_to_end(key)
        while len(self._hits) > self._max_keys:
            self._hits.popitem(last=False)  # the least recently hit key

    def _current(self, key: str) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        horizon = self._clock() - self._window
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits


@dataclass(frozen=True)
class VerifyLimits:
    starts_per_number: int
    starts_per_ip: int
    checks_per_number: int
    window_seconds: float


class VerifyResult(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    RATE_LIMITED = "rate_limited"  # our own limits
    TOO_MANY_CHECKS = "too_many_checks"  # Twilio 60202
    TOO_MANY_SENDS = "too_many_sends"  # Twilio 60203
    UNAVAILABLE = "unavailable"
    NOT_CONFIGURED = "not_configured"


@dataclass(frozen=True)
class VerifyOutcome:
    result: VerifyResult
    retry_after: float | None = None

    @property
    def retry_after_seconds(self) -> int | None:
        return None if self.retry_after is None else max(1, math.ceil(self.retry_after))


class VerifyService:
    def __init__(
        self,
        verifier: Verifier | None,
        outbox: Outbox,
        metrics: CallbackMetrics,
        *,
        limits: VerifyLimits,
        hash_key: str,
        topic: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verifier = verifier
        self._outbox = outbox
        self._metrics = metrics
        self._hash_key = hash_key
        self._topic = topic
        window = limits.window_seconds
        self._starts_by_number = SlidingWindowLimiter(limits.starts_per_number, window, clock)
        self._starts_by_ip = SlidingWindowLimiter(limits.starts_per_ip, window, clock)
        self._checks_by_number = SlidingWindowLimiter(limits.checks_per_number, window, clock)

    async def start(self, phone: str, client_ip: str) -> VerifyOutcome:
        """Send a code to `phone` (E.164, validated by the caller)."""
        outcome = await self._start(phone, client_ip)
        self._metrics.verify.labels("start", outcome.result.value).inc()
        return outcome

    async def check(self, phone: str, code: str) -> VerifyOutcome:
        """Check `code`; an approval is stored and published on phone-verified."""
        outcome = await self._check(phone, code)
        self._metrics.verify.labels("check", outcome.result.value).inc()
        return outcome

    async def _start(self, phone: str, client_ip: str) -> VerifyOutcome:
        if self._verifier is None:
            return VerifyOutcome(VerifyResult.NOT_CONFIGURED)
        number_key = phone_hash(self._hash_key, phone)
        waits = [
            self._starts_by_number.retry_after(number_key),
            self._starts_by_ip.retry_after(client_ip),
        ]
        if any(wait is not None for wait in waits):
            return VerifyOutcome(VerifyResult.RATE_LIMITED, max(w for w in waits if w))
        self._starts_by_number.hit(number_key)
        self._starts_by_ip.hit(client_ip)
        try:
            await self._verifier.start(phone)
        except ProviderError as error:
            return self._provider_error("start", error, VerifyResult.PENDING)
        return VerifyOutcome(VerifyResult.PENDING)

    async def _check(self, phone: str, code: str) -> VerifyOutcome:
        if self._verifier is None:
            return VerifyOutcome(VerifyResult.NOT_CONFIGURED)
        number_key = phone_hash(self._hash_key, phone)
        wait = self._checks_by_number.retry_after(number_key)
        if wait is not None:
            return VerifyOutcome(VerifyResult.RATE_LIMITED, wait)
        self._checks_by_number.hit(number_key)
        try:
            approved = await self._verifier.check(phone, code)
        except ProviderError as error:
            return self._provider_error("check", error, VerifyResult.REJECTED)
        if not approved:
            return VerifyOutcome(VerifyResult.REJECTED)
        try:
            await self._record(phone)
        except OutboxUnavailableError:
            log.error("an approved verification could not be recorded")
            return VerifyOutcome(VerifyResult.UNAVAILABLE)
        return VerifyOutcome(VerifyResult.APPROVED)

    def _provider_error(
        self, operation: str, error: ProviderError, same_as_unknown: VerifyResult
    ) -> VerifyOutcome:
        """Twilio's answers mapped; a refusal about the number looks like any other answer."""
        if error.code == MAX_CHECKS_REACHED:
            return VerifyOutcome(VerifyResult.TOO_MANY_CHECKS, TWILIO_WINDOW_SECONDS)
        if error.code == MAX_SENDS_REACHED:
            return VerifyOutcome(VerifyResult.TOO_MANY_SENDS, TWILIO_WINDOW_SECONDS)
        if isinstance(error, ProviderUnavailableError) or error.status in (401, 403, 404, 429):
            # Our credentials, our service SID or Twilio itself: not the caller's doing.
            log.error(
                "twilio verify unavailable",
                extra={"operation": operation, "status": error.status, "code": error.code},
            )
            return VerifyOutcome(VerifyResult.UNAVAILABLE)
        log.warning(
            "twilio verify refused the number",
            extra={"operation": operation, "status": error.status, "code": error.code},
        )
        return VerifyOutcome(same_as_unknown)

    async def _record(self, phone: str) -> None:
        hashed = phone_hash(self._hash_key, phone)
        event = PhoneVerified(phoneHash=hashed, phone=mask_phone(phone), verifiedAt=utc_now())

        async def upsert(connection: AsyncConnection) -> None:
            await connection.execute(
                _UPSERT, {"h": hashed, "m": event.phone, "at": event.verifiedAt}
            )

        await self._outbox.publish(
            OutboundRecord(
                topic=self._topic,
                key=hashed.encode(),
                value=event.model_dump_json().encode(),
                token=f"phone-verified:{hashed}:{event.verifiedAt.isoformat()}",
            ),
            also=upsert,
        )
