"""The Verify use case: rate-limited code sends and checks; an approval is recorded and published.

The answers never tell whether a number is known: a start is `pending` whatever Twilio
thought of the number (short of a limit or an outage), and a check is `approved` or
`rejected`, a wrong code and "no verification pending" alike. Codes are never logged.

The limits are sliding windows kept in PostgreSQL (a `RateWindows` store), so every
replica shares them. Starts are limited per number and per client network (an
IPv4 address, or an IPv6 /64: one subscriber's whole prefix), checks per number. Twilio's own
limits (5 sends per number per 10 minutes: 60203, 5 checks per verification: 60202)
still apply behind ours.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Protocol

from schemas.events import PhoneVerified, utc_now
from sms_relay.errors import (
    DatabaseUnavailableError,
    OutboxUnavailableError,
    ProviderError,
    ProviderUnavailableError,
)
from sms_relay.masking import mask_phone, phone_hash
from sms_relay.metrics import CallbackMetrics
from sms_relay.status.outbox import OutboundRecord, Outbox
from sms_relay.status.status_ports import Limit, RateWindows, Transaction, Verifications

log = logging.getLogger(__name__)

MAX_CHECKS_REACHED = 60202
MAX_SENDS_REACHED = 60203
# Twilio's Verify windows are ten minutes; its 429s last that long at most.
TWILIO_WINDOW_SECONDS = 600.0


class Verifier(Protocol):
    async def start(self, to: str, channel: str = "sms") -> str: ...

    async def check(self, to: str, code: str) -> bool: ...


def number_limit_keys(number_hash: str) -> list[str]:
    """The rate-limit keys of one number (Verify starts, Verify checks), by its hash."""
    return [f"verify-start:number:{number_hash}", f"verify-check:number:{number_hash}"]


def client_network(address: str) -> str:
    """The unit of the per-client limit: an IPv4 address, or the /64 of an IPv6 one (a
    subscriber usually gets a whole /64 and can pick any address in it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # "unknown" or a unix socket: one shared budget
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


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
        windows: RateWindows,
        verifications: Verifications,
        *,
        limits: VerifyLimits,
        hash_key: str,
        topic: str,
    ) -> None:
        self._verifier = verifier
        self._outbox = outbox
        self._metrics = metrics
        self._windows = windows
        self._verifications = verifications
        self._limits = limits
        self._hash_key = hash_key
        self._topic = topic

    async def start(self, phone: str, client_ip: str) -> VerifyOutcome:
        """Send a code to `phone` (E.164, validated by the caller)."""
        number, limits = phone_hash(self._hash_key, phone), self._limits
        return await self._limited(
            "start",
            [
                Limit(
                    number_limit_keys(number)[0], limits.starts_per_number, limits.window_seconds
                ),
                Limit(
                    f"verify-start:net:{client_network(client_ip)}",
                    limits.starts_per_ip,
                    limits.window_seconds,
                ),
            ],
            partial(self._send_code, phone),
        )

    async def check(self, phone: str, code: str) -> VerifyOutcome:
        """Check `code`; an approval is stored and published on phone-verified."""
        number, limits = phone_hash(self._hash_key, phone), self._limits
        return await self._limited(
            "check",
            [Limit(number_limit_keys(number)[1], limits.checks_per_number, limits.window_seconds)],
            partial(self._check_code, phone, code),
        )

    async def _limited(
        self,
        operation: str,
        limits: list[Limit],
        then: Callable[[Verifier], Awaitable[VerifyOutcome]],
    ) -> VerifyOutcome:
        """`then` once every limit allows one more (and counts it); the outcome counted."""
        outcome = await self._within(limits, then)
        self._metrics.verify.labels(operation, outcome.result.value).inc()
        return outcome

    async def _within(
        self, limits: list[Limit], then: Callable[[Verifier], Awaitable[VerifyOutcome]]
    ) -> VerifyOutcome:
        if self._verifier is None:
            return VerifyOutcome(VerifyResult.NOT_CONFIGURED)
        try:
            wait = await self._windows.hit(limits)
        except DatabaseUnavailableError as error:
            # Without the shared counters there is no limit to trust: refuse, do not open up.
            log.error("verify limits unavailable", extra={"error": repr(error)})
            return VerifyOutcome(VerifyResult.UNAVAILABLE)
        if wait is not None:
            return VerifyOutcome(VerifyResult.RATE_LIMITED, wait)
        return await then(self._verifier)

    async def _send_code(self, phone: str, verifier: Verifier) -> VerifyOutcome:
        try:
            await verifier.start(phone)
        except ProviderError as error:
            return self._provider_error("start", error, VerifyResult.PENDING)
        return VerifyOutcome(VerifyResult.PENDING)

    async def _check_code(self, phone: str, code: str, verifier: Verifier) -> VerifyOutcome:
        try:
            approved = await verifier.check(phone, code)
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

        async def upsert(transaction: Transaction) -> None:
            await self._verifications.record_verified(
                transaction, hashed, event.phone, event.verifiedAt
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
