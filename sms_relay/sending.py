"""The use case: claim → check suppression → send → settle, for a batch of events.

It decides and records; the consumer loop turns the results into Kafka records and
commits. Only a 429 is known never to have been processed by Twilio: any other
uncertain send is reconciled against Twilio's message list before it is sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote

from schemas.events import SmsRequested, Status
from sms_relay.adapters.twilio import SentMessage
from sms_relay.errors import (
    ProviderError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
)
from sms_relay.ledger import Claim, ClaimOutcome, ClaimRequest, PostgresLedger, Settlement
from sms_relay.masking import body_hash, mask_phone, phone_hash
from sms_relay.metrics import ConsumerMetrics
from sms_relay.ratelimit import RateLimiter
from sms_relay.reconcile import MessageFinder, Reconciler
from sms_relay.retry import RetryPolicy, TierPlan
from sms_relay.templates import EventKind

log = logging.getLogger(__name__)

OPT_OUT_ERROR = 21610  # "Attempt to send to unsubscribed recipient"


class SmsSender(MessageFinder, Protocol):
    async def send(self, to: str, body: str, status_callback: str | None) -> SentMessage: ...


class Outcome(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"
    SUPPRESSED = "suppressed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"
    BUSY = "busy"  # claimed elsewhere right now; look again later via a retry tier
    LEASE_LOST = "lease_lost"  # another consumer took over; it reports


@dataclass(frozen=True)
class Job:
    kind: EventKind
    event: SmsRequested
    attempts: int  # sends made before this record (from its retry headers)
    tier_index: int  # -1 for the main topic


@dataclass(frozen=True)
class Result:
    job: Job
    outcome: Outcome
    attempts: int
    report: Status | None = None  # what to publish on delivery-status, if anything
    message_sid: str | None = None
    error_code: int | None = None
    error: str | None = None
    retry_tier: tuple[str, float] | None = None
    republished: bool = False  # settled earlier; only its records are published again


@dataclass(frozen=True)
class _Attempted:
    state: str  # accepted | failed | transient
    attempts: int
    sid: str | None = None
    code: int | None = None
    error: str | None = None


# Settled states whose records the consumer publishes, and the outcome that publishes them.
_REPEATABLE = {
    "accepted": Outcome.SENT,
    "failed": Outcome.FAILED,
    "suppressed": Outcome.SUPPRESSED,
    "dead_lettered": Outcome.DEAD_LETTERED,
}


class DeliveryService:
    def __init__(
        self,
        ledger: PostgresLedger,
        sender: SmsSender,
        *,
        limiter: RateLimiter,
        concurrency: int,
        policy: RetryPolicy,
        tiers: TierPlan,
        metrics: ConsumerMetrics,
        phone_hash_key: str,
        public_base_url: str,
        settle_seconds: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ledger = ledger
        self._sender = sender
        self._limiter = limiter
        self._slots = asyncio.Semaphore(concurrency)
        self._policy = policy
        self._tiers = tiers
        self._metrics = metrics
        self._hash_key = phone_hash_key
        self._callback_base = public_base_url.rstrip("/") + "/twilio/status-callback?eventId="
        self._reconciler = Reconciler(sender, metrics, settle_seconds, sleep)
        self._sleep = sleep

    async def process(self, jobs: Sequence[Job]) -> list[Result]:
        """Each job's event id must be unique within `jobs`."""
        claims = await self._ledger.claim([self._claim_request(job) for job in jobs])
        results: list[Result] = []
        sendable: list[tuple[Job, Claim]] = []
        settlements: dict[str, tuple[Job, Settlement]] = {}
        for job in jobs:
            claim = claims[job.event.eventId]
            if claim.outcome in (ClaimOutcome.DUPLICATE, ClaimOutcome.BUSY):
                results.append(self._not_ours(job, claim))
            elif claim.suppressed and claim.outcome is not ClaimOutcome.IN_DOUBT:
                attempts = max(job.attempts, claim.attempts)
                settlement = Settlement(job.event.eventId, _token(claim), "suppressed", attempts)
                settlements[job.event.eventId] = (job, settlement)
            else:
                sendable.append((job, claim))

        bodies = {job.event.eventId: job.kind.render(job.event) for job, _ in sendable}
        started = await self._ledger.mark_sending(
            [
                (job.event.eventId, _token(claim), body_hash(bodies[job.event.eventId]))
                for job, claim in sendable
            ]
        )
        deliveries = []
        for job, claim in sendable:
            event_id = job.event.eventId
            if event_id in started:
                deliveries.append(self._deliver(job, claim, bodies[event_id], started[event_id]))
            else:
                results.append(Result(job, Outcome.LEASE_LOST, job.attempts))
        for job, claim, attempted in await asyncio.gather(*deliveries):
            settlements[job.event.eventId] = (job, self._settlement(job, claim, attempted))

        written = await self._ledger.settle([s for _, s in settlements.values()])
        for event_id, (job, settlement) in settlements.items():
            if event_id not in written:
                results.append(Result(job, Outcome.LEASE_LOST, settlement.attempt))
                continue
            if settlement.error_code == OPT_OUT_ERROR:
                await self._ledger.suppress(
                    phone_hash(self._hash_key, job.event.phone),
                    mask_phone(job.event.phone),
                    f"error_{OPT_OUT_ERROR}",
                )
            results.append(self._result(job, settlement))
        for result in results:
            counted = Outcome.DUPLICATE if result.republished else result.outcome
            self._metrics.outcomes.labels(counted.value).inc()
        return results

    async def mark_reported(self, event_ids: Sequence[str]) -> None:
        """The status records of these events are on Kafka; replays need not repeat them."""
        await self._ledger.mark_reported(event_ids)

    def _claim_request(self, job: Job) -> ClaimRequest:
        event = job.event
        return ClaimRequest(
            event_id=event.eventId,
            event_type=job.kind.name,
            phone_hash=phone_hash(self._hash_key, event.phone),
            phone_masked=mask_phone(event.phone),
            consent_at=event.consentAt,
            consent_purpose=event.consentPurpose,
        )

    def _not_ours(self, job: Job, claim: Claim) -> Result:
        if claim.outcome is ClaimOutcome.BUSY:
            tier = self._tiers.after(job.tier_index) or self._tiers.tiers[-1]
            return Result(job, Outcome.BUSY, job.attempts, retry_tier=tier)
        if claim.prior_state in _REPEATABLE and not claim.reported:
            # Settled, but its records never reached Kafka (a crash or a failed publish in
            # between): publish them now, DLQ record included.
            return Result(
                job,
                _REPEATABLE[claim.prior_state],
                claim.attempts,
                report=Status(claim.prior_state),
                message_sid=claim.message_sid,
                error_code=claim.error_code,
                republished=True,
            )
        return Result(job, Outcome.DUPLICATE, claim.attempts, message_sid=claim.message_sid)

    def _settlement(self, job: Job, claim: Claim, attempted: _Attempted) -> Settlement:
        state = attempted.state
        if state == "transient":
            state = "retry_scheduled" if self._tiers.after(job.tier_index) else "dead_lettered"
        return Settlement(
            job.event.eventId,
            _token(claim),
            state,
            attempted.attempts,
            message_sid=attempted.sid,
            error_code=attempted.code,
            error=attempted.error,
        )

    def _result(self, job: Job, settlement: Settlement) -> Result:
        outcome = {
            "accepted": Outcome.SENT,
            "failed": Outcome.FAILED,
            "suppressed": Outcome.SUPPRESSED,
            "retry_scheduled": Outcome.RETRY_SCHEDULED,
            "dead_lettered": Outcome.DEAD_LETTERED,
        }[settlement.state]
        report = None if outcome is Outcome.RETRY_SCHEDULED else Status(settlement.state)
        return Result(
            job,
            outcome,
            settlement.attempt,
            report=report,
            message_sid=settlement.message_sid,
            error_code=settlement.error_code,
            error=settlement.error,
            retry_tier=self._tiers.after(job.tier_index),
        )

    async def _deliver(
        self, job: Job, claim: Claim, body: str, since: datetime
    ) -> tuple[Job, Claim, _Attempted]:
        attempts = max(job.attempts, claim.attempts)
        if claim.outcome is ClaimOutcome.IN_DOUBT:
            # The previous holder died mid-send: the message may exist already.
            try:
                found = await self._reconciler.find(job.event.phone, body, since)
            except ProviderError as error:
                return job, claim, _unreachable(attempts, error)
            if found is not None:
                return job, claim, _Attempted("accepted", attempts, sid=found.sid)
            if claim.suppressed:  # opted out since: what was not sent never will be
                return job, claim, _Attempted("suppressed", attempts)
        return job, claim, await self._send_with_retries(job, body, since, attempts)

    async def _send_with_retries(
        self, job: Job, body: str, since: datetime, attempts: int
    ) -> _Attempted:
        to = job.event.phone
        tries = 0
        last: ProviderError
        while True:
            tries += 1
            attempts += 1
            try:
                sent = await self._send(to, body, job.event.eventId)
                return _Attempted("accepted", attempts, sid=sent.sid)
            except ProviderRejectedError as error:
                return _Attempted("failed", attempts, code=error.code, error=str(error))
            except ProviderUnavailableError as error:
                try:
                    found = await self._reconciler.find(to, body, since)
                except ProviderError as unreachable:
                    return _unreachable(attempts, unreachable)
                if found is not None:
                    return _Attempted("accepted", attempts, sid=found.sid)
                last, delay = error, self._policy.next_delay(tries, error)
            except ProviderThrottledError as error:
                last, delay = error, self._policy.next_delay(tries, error)
            if delay is None:
                # Keep Twilio's last code, so `dlq list --error-code` can find the event.
                return _Attempted("transient", attempts, code=last.code, error=str(last))
            await self._sleep(delay)

    async def _send(self, to: str, body: str, event_id: str) -> SentMessage:
        async with self._slots:
            await self._limiter.acquire()
            self._metrics.sends_in_flight.inc()
            try:
                async with self._metrics.twilio_call("create", ok_status="201"):
                    return await self._sender.send(to, body, self._callback_base + quote(event_id))
            finally:
                self._metrics.sends_in_flight.dec()


def _unreachable(attempts: int, error: ProviderError) -> _Attempted:
    """Reconciliation itself could not reach Twilio: try again from a retry tier."""
    return _Attempted("transient", attempts, code=error.code, error=str(error))


def _token(claim: Claim) -> int:
    assert claim.lease_token is not None, "only claimed events are settled"
    return claim.lease_token
