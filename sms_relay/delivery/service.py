"""The use case: claim → check suppression → send → settle, for a batch of events.

It decides and records; the consumer loop turns the results into Kafka records and
commits. Only a 429 is known never to have been processed by Twilio: after any other
uncertain send the ledger remembers the doubt, and every later attempt, by whichever
process, reconciles with Twilio's message list before it may send again.

Nothing a send raises escapes it: an unexpected exception is one more way of not knowing
whether Twilio created the message. A batch therefore ends only when all its sends have,
and an event whose send still runs here is never claimed again by this process.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from urllib.parse import quote

from schemas.events import SmsRequested, Status
from sms_relay.clock import SYSTEM_CLOCK, Clock
from sms_relay.delivery.in_doubt import Doubt, Reconciler, Verdict
from sms_relay.delivery.leases import LeaseKeeper
from sms_relay.delivery.pacing import Lane, RateLimiter, Slots
from sms_relay.delivery.ports import (
    Claim,
    ClaimOutcome,
    ClaimRequest,
    Ledger,
    SentMessage,
    Settlement,
    SmsSender,
)
from sms_relay.domain.kinds import EventKind
from sms_relay.domain.retry import RetryPolicy, TierPlan
from sms_relay.domain.states import CONSUMER_SETTLED, DeliveryState
from sms_relay.domain.twilio_codes import OPT_OUT_ERROR
from sms_relay.errors import (
    LeaseTooShortError,
    ProviderAccountError,
    ProviderError,
    ProviderRejectedError,
    ProviderThrottledError,
)
from sms_relay.masking import body_hash, mask_phone, phone_hash
from sms_relay.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

S = DeliveryState


class InDoubtResend(StrEnum):
    """What to do when Twilio lists no match after the reconciliation horizon."""

    AFTER_HORIZON = "after_horizon"  # send again (counted): Twilio's list is trusted
    NEVER = "never"  # dead-letter it (counted, alerted); an operator decides


class Outcome(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"
    SUPPRESSED = "suppressed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"
    BUSY = "busy"  # another live lease holds it: claim again once that lease runs out
    LEASE_LOST = "lease_lost"  # our lease ran short or was taken: claim again later
    RECHECK = "recheck"  # in doubt, not listed yet: reconcile again at the horizon
    THROTTLED = "throttled"  # Twilio answered 429: send again after the backoff


# Outcomes whose record the loop keeps back (its offset uncommitted) and offers again
# after `wait_seconds`: waiting neither climbs the retry tiers nor stalls the partition.
# A throttled event waits the same way, so its backoff never holds up the rest of its
# batch (and the batches behind it) the way a sleep inside the batch did.
WAITING = frozenset({Outcome.BUSY, Outcome.LEASE_LOST, Outcome.RECHECK, Outcome.THROTTLED})
# A recheck further off than this goes to the next retry tier instead of being held.
MAX_HELD_RECHECK_SECONDS = 60.0


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
    dlq_reason: str = "retries_exhausted"
    republished: bool = False  # settled earlier; only its records are published again
    wait_seconds: float = 0.0  # WAITING outcomes: when to offer the record again


@dataclass(frozen=True)
class _Attempted:
    """Where one claim's sends ended. `transient` goes to the next retry tier."""

    # accepted | failed | suppressed | transient | recheck | throttled | unresolved
    # | handed_on
    state: str
    attempts: int
    sid: str | None = None
    code: int | None = None
    error: str | None = None
    doubt: datetime | None = None  # a message may exist unmatched (end of that attempt)
    backoff: float = 0.0  # throttled: seconds until the next send


# What each settled state comes to.
_OUTCOME_OF = {
    S.ACCEPTED: Outcome.SENT,
    S.FAILED: Outcome.FAILED,
    S.SUPPRESSED: Outcome.SUPPRESSED,
    S.RETRY_SCHEDULED: Outcome.RETRY_SCHEDULED,
    S.DEAD_LETTERED: Outcome.DEAD_LETTERED,
}


class DeliveryService:
    def __init__(
        self,
        ledger: Ledger,
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
        horizon_seconds: float,
        request_timeout_seconds: float,
        in_doubt_resend: InDoubtResend = InDoubtResend.AFTER_HORIZON,
        clock: Clock = SYSTEM_CLOCK,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self._ledger = ledger
        self._sender = sender
        self._limiter = limiter
        self._slots = Slots(concurrency)
        self._policy = policy
        self._tiers = tiers
        self._metrics = metrics
        self._hash_key = phone_hash_key
        self._callback_base = public_base_url.rstrip("/") + "/twilio/status-callback?eventId="
        self._clock = clock
        self._uniform = uniform
        self._call_deadline = request_timeout_seconds
        self._in_doubt_resend = in_doubt_resend
        self._horizon = horizon_seconds
        self.leases = LeaseKeeper(ledger, clock, metrics)
        self._reconciler = Reconciler(
            sender,
            ledger,
            metrics,
            clock,
            settle_seconds=settle_seconds,
            horizon_seconds=horizon_seconds,
        )
        self._running: set[str] = set()  # event ids whose claim is being worked on here

    async def process(self, jobs: Sequence[Job]) -> list[Result]:
        """Each job's event id must be unique within `jobs`. Raises only what the ledger
        raises (then no send of this call is still running)."""
        results: list[Result] = []
        mine: list[Job] = []
        for job in jobs:
            if job.event.eventId in self._running:
                # Still being sent by another batch of ours: look again shortly.
                results.append(
                    Result(job, Outcome.BUSY, job.attempts, wait_seconds=self._jitter(1))
                )
            else:
                mine.append(job)
        ids = [job.event.eventId for job in mine]
        self._running.update(ids)
        try:
            results.extend(await self._process(mine))
        finally:
            self._running.difference_update(ids)
            for event_id in ids:
                self.leases.release(event_id)
        for result in results:
            counted = Outcome.DUPLICATE if result.republished else result.outcome
            self._metrics.outcomes.labels(counted.value).inc()
        return results

    async def _process(self, jobs: Sequence[Job]) -> list[Result]:
        claimed_at = self._clock.monotonic()
        claims = await self._ledger.claim([self._claim_request(job) for job in jobs])
        self.leases.hold(
            {e: c.lease_token for e, c in claims.items() if c.lease_token is not None}, claimed_at
        )
        results: list[Result] = []
        sendable: list[tuple[Job, Claim]] = []
        settlements: dict[str, tuple[Job, Settlement]] = {}
        for job in jobs:
            claim = claims[job.event.eventId]
            if claim.outcome is ClaimOutcome.IN_DOUBT:
                # Rare (after a crash or an uncertain send); the trace of a slow recovery.
                log.info(
                    "claimed an event in doubt",
                    extra={
                        "eventId": job.event.eventId,
                        "priorState": claim.prior_state,
                        "doubtSince": claim.doubt_since.isoformat() if claim.doubt_since else None,
                    },
                )
            if claim.outcome in (ClaimOutcome.DUPLICATE, ClaimOutcome.BUSY):
                results.append(self._not_ours(job, claim))
            elif claim.suppressed and claim.outcome is not ClaimOutcome.IN_DOUBT:
                attempts = max(job.attempts, claim.attempts)
                settlement = Settlement(job.event.eventId, _token(claim), S.SUPPRESSED, attempts)
                settlements[job.event.eventId] = (job, settlement)
            else:
                sendable.append((job, claim))

        bodies = {job.event.eventId: job.kind.render(job.event) for job, _ in sendable}
        hashes = {event_id: body_hash(body) for event_id, body in bodies.items()}
        # A claim in doubt reconciles first: it is marked `sending` only right before it
        # creates again (in `_attempt`). The others are marked now, in one round trip.
        later = {job.event.eventId for job, claim in sendable if _reconciles_first(claim)}
        started = await self._ledger.mark_sending(
            [
                (job.event.eventId, _token(claim), hashes[job.event.eventId])
                for job, claim in sendable
                if job.event.eventId not in later
            ]
        )
        deliveries = []
        for job, claim in sendable:
            event_id = job.event.eventId
            window = claim.window_start if event_id in later else started.get(event_id)
            if window is None:
                results.append(self._lost(job))
                continue
            marked = replace(
                claim,
                window_start=window,
                sent_body_hashes=tuple(dict.fromkeys((*claim.sent_body_hashes, hashes[event_id]))),
            )
            unmarked = hashes[event_id] if event_id in later else None
            deliveries.append(self._deliver(job, marked, bodies[event_id], unmarked))
        waits: dict[str, _Attempted] = {}  # held back, not handed to a tier
        for job, claim, attempted in await asyncio.gather(*deliveries):
            if attempted.state == "handed_on":
                results.append(self._lost(job, claim))
                continue
            settlements[job.event.eventId] = (job, self._settlement(job, claim, attempted))
            if attempted.state in ("recheck", "throttled"):
                waits[job.event.eventId] = attempted
        results.extend(await self._settle(settlements, waits))
        return results

    async def _settle(
        self, settlements: dict[str, tuple[Job, Settlement]], waits: dict[str, _Attempted]
    ) -> list[Result]:
        results: list[Result] = []
        outcome = await self._ledger.settle([s for _, s in settlements.values()])
        if outcome.sid_taken:
            # Reconciliation matched a message the ledger records for another event (two
            # events, one number, one body): ours is not found yet; the doubt stays.
            again = {}
            for event_id in sorted(outcome.sid_taken):
                job, settlement = settlements[event_id]
                again[event_id] = (job, self._not_yet(job, settlement))
            retried = await self._ledger.settle([s for _, s in again.values()])
            settlements.update(again)
            outcome = replace(outcome, written=outcome.written | retried.written)
        for event_id, (job, settlement) in settlements.items():
            if event_id not in outcome.written:
                results.append(self._lost(job))
                continue
            if settlement.error_code == OPT_OUT_ERROR:
                await self._ledger.suppress(
                    phone_hash(self._hash_key, job.event.phone),
                    mask_phone(job.event.phone),
                    f"error_{OPT_OUT_ERROR}",
                )
            results.append(self._result(job, settlement, waits.get(event_id)))
        return results

    async def mark_reported(self, steps: Sequence[tuple[str, Status]]) -> None:
        """These status records are on Kafka; replays need not repeat them."""
        settled = [(event_id, S(status.value)) for event_id, status in steps]
        await self._ledger.mark_reported([step for step in settled if step[1] in CONSUMER_SETTLED])

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

    def _jitter(self, seconds: float) -> float:
        # Enough to spread a herd of records waiting on one lease; small next to the wait.
        return seconds + self._uniform() * min(0.25, self._ledger.lease_seconds / 20)

    def _lost(self, job: Job, claim: Claim | None = None) -> Result:
        """Our lease ran short or was taken: offer the record again once it has run out."""
        left = self.leases.remaining(job.event.eventId) if claim is not None else 0.0
        return Result(
            job, Outcome.LEASE_LOST, job.attempts, wait_seconds=self._jitter(max(left, 0))
        )

    def _not_ours(self, job: Job, claim: Claim) -> Result:
        if claim.outcome is ClaimOutcome.BUSY:
            return Result(
                job, Outcome.BUSY, job.attempts, wait_seconds=self._jitter(claim.busy_for)
            )
        settled = claim.settled_state
        if settled in CONSUMER_SETTLED and not claim.reported:
            # Settled, but its records never reached Kafka (a crash or a failed publish in
            # between; the row may have moved on by callback since): publish them now.
            return Result(
                job,
                _OUTCOME_OF[settled],
                claim.attempts,
                report=Status(settled.value),
                message_sid=claim.message_sid,
                error_code=claim.error_code,
                republished=True,
            )
        return Result(job, Outcome.DUPLICATE, claim.attempts, message_sid=claim.message_sid)

    def _settlement(self, job: Job, claim: Claim, attempted: _Attempted) -> Settlement:
        state = {
            "accepted": S.ACCEPTED,
            "failed": S.FAILED,
            "suppressed": S.SUPPRESSED,
        }.get(attempted.state)
        error = attempted.error
        if attempted.state in ("recheck", "throttled"):
            state = S.RETRY_SCHEDULED  # resumable, any doubt kept; no tier is used
        elif attempted.state == "unresolved":
            state, error = S.DEAD_LETTERED, "in_doubt_unresolved"
        elif state is None:  # transient: the next tier, or the end of the line
            state = S.RETRY_SCHEDULED if self._tiers.after(job.tier_index) else S.DEAD_LETTERED
        return Settlement(
            job.event.eventId,
            _token(claim),
            state,
            attempted.attempts,
            message_sid=attempted.sid,
            error_code=attempted.code,
            error=error,
            doubt_since=attempted.doubt,
        )

    def _not_yet(self, job: Job, settlement: Settlement) -> Settlement:
        state = S.RETRY_SCHEDULED if self._tiers.after(job.tier_index) else S.DEAD_LETTERED
        doubt = settlement.doubt_since or self._clock.now()
        return replace(settlement, state=state, message_sid=None, doubt_since=doubt)

    def _recheck_in(self, doubt_since: datetime) -> float:
        return max((doubt_since - self._clock.now()).total_seconds() + self._horizon, 0.0)

    def _result(self, job: Job, settlement: Settlement, held: _Attempted | None = None) -> Result:
        if held is not None and held.state == "throttled":
            return Result(job, Outcome.THROTTLED, settlement.attempt, wait_seconds=held.backoff)
        if held is not None:
            assert settlement.doubt_since is not None
            wait = self._jitter(self._recheck_in(settlement.doubt_since))
            return Result(job, Outcome.RECHECK, settlement.attempt, wait_seconds=wait)
        outcome = _OUTCOME_OF[settlement.state]
        report = None if outcome is Outcome.RETRY_SCHEDULED else Status(settlement.state.value)
        unresolved = settlement.error == "in_doubt_unresolved"
        return Result(
            job,
            outcome,
            settlement.attempt,
            report=report,
            message_sid=settlement.message_sid,
            error_code=settlement.error_code,
            error=settlement.error,
            retry_tier=self._tiers.after(job.tier_index),
            dlq_reason="in_doubt_unresolved" if unresolved else "retries_exhausted",
        )

    async def _deliver(
        self, job: Job, claim: Claim, body: str, unmarked: str | None
    ) -> tuple[Job, Claim, _Attempted]:
        """`unmarked`: the body's hash, when the claim is not marked `sending` yet."""
        attempts = max(job.attempts, claim.attempts)
        try:
            return job, claim, await self._attempt(job, claim, body, attempts, unmarked)
        except LeaseTooShortError:
            return job, claim, _Attempted("handed_on", attempts)
        except Exception as error:  # contained: see the module's docstring
            log.exception(
                "unexpected error while sending; the event is in doubt",
                extra={"eventId": job.event.eventId, "error": type(error).__name__},
            )
            doubt = claim.doubt_since or self._clock.now()
            return (
                job,
                claim,
                _Attempted("transient", attempts, error=type(error).__name__, doubt=doubt),
            )

    async def _attempt(
        self, job: Job, claim: Claim, body: str, attempts: int, unmarked: str | None
    ) -> _Attempted:
        event_id, to = job.event.eventId, job.event.phone
        doubt = claim.doubt_since
        assert claim.window_start is not None, "marked sending before any attempt"

        async def before_call() -> None:
            await self.leases.ensure(event_id, self._call_deadline)

        # Creates since this record entered its topic (a held record comes back with the
        # same attempt count): after max_attempts of them the event moves a tier on.
        tries = max(attempts - job.attempts, 0)
        # Held back, taken over, or back from a tier: it has waited, so it goes first.
        lane = Lane.FIRST if claim.outcome is ClaimOutcome.NEW else Lane.OVERDUE
        while True:
            if doubt is not None:
                pending = Doubt(event_id, to, claim.sent_body_hashes, claim.window_start, doubt)
                resolved = await self._resolve(pending, claim.suppressed, attempts, before_call)
                if resolved is not None:
                    return resolved
            if tries >= self._policy.max_attempts:
                return _Attempted("transient", attempts, error="attempts exhausted", doubt=doubt)
            if unmarked is not None:  # from now on a message of ours may exist
                marking = [(event_id, _token(claim), unmarked)]
                if event_id not in await self._ledger.mark_sending(marking):
                    raise LeaseTooShortError("taken over before the send")
                unmarked = None
            tries += 1
            attempts += 1
            try:
                sent = await self._send(to, body, event_id, before_call, lane)
                return _Attempted("accepted", attempts, sid=sent.sid)
            except ProviderThrottledError as error:
                delay = self._policy.next_delay(tries, error)
                if delay is None:
                    # Keep Twilio's last code, so `dlq list --error-code` can find the event.
                    return _transient(attempts, error, doubt)
                # Not created: settle it resumable and hold its record for the backoff.
                return _Attempted(
                    "throttled",
                    attempts,
                    code=error.code,
                    error=str(error),
                    doubt=doubt,
                    backoff=delay,
                )
            except ProviderRejectedError as error:
                return self._rejected(event_id, attempts, error, doubt)
            except LeaseTooShortError:
                raise
            except Exception as error:  # 5xx, timeout, dropped connection, or the unknown
                if not isinstance(error, ProviderError):
                    log.exception("unexpected error from a send", extra={"eventId": event_id})
                # The message may exist: from now on, only reconciliation may resend.
                doubt = self._clock.now()

    async def _resolve(
        self,
        doubt: Doubt,
        suppressed: bool,
        attempts: int,
        before_call: Callable[[], Awaitable[None]],
    ) -> _Attempted | None:
        """Ask Twilio about a send in doubt; None when a resend is allowed."""
        try:
            verdict = await self._reconciler.reconcile(doubt, before_call)
        except ProviderError as error:
            return _transient(attempts, error, doubt.since)
        if verdict.verdict is Verdict.FOUND:
            return _Attempted("accepted", attempts, sid=verdict.sid)
        if suppressed:  # opted out since: what was not sent never will be
            return _Attempted("suppressed", attempts, doubt=doubt.since)
        if verdict.verdict is Verdict.NOT_YET:
            # Never resend now: ask again once the horizon has passed, held back here when
            # that is soon, from the next retry tier otherwise.
            soon = self._recheck_in(doubt.since) <= MAX_HELD_RECHECK_SECONDS
            held = "recheck" if soon else "transient"
            return _Attempted(held, attempts, error="in doubt: not listed yet", doubt=doubt.since)
        if self._in_doubt_resend is InDoubtResend.NEVER:
            log.error("in doubt past the horizon; not resending", extra={"eventId": doubt.event_id})
            return _Attempted("unresolved", attempts, doubt=doubt.since)
        self._metrics.in_doubt_resends.inc()
        log.warning("in doubt past the horizon; sending again", extra={"eventId": doubt.event_id})
        return None

    def _rejected(
        self, event_id: str, attempts: int, error: ProviderRejectedError, doubt: datetime | None
    ) -> _Attempted:
        if isinstance(error, ProviderAccountError):
            self._metrics.account_errors.labels(str(error.code or error.status)).inc()
            log.error(
                "Twilio refused the send for our account or settings; retrying later",
                extra={"eventId": event_id, "errorCode": error.code, "status": error.status},
            )
            return _transient(attempts, error, doubt)
        return _Attempted("failed", attempts, code=error.code, error=str(error))

    async def _send(
        self,
        to: str,
        body: str,
        event_id: str,
        before_call: Callable[[], Awaitable[None]],
        lane: Lane,
    ) -> SentMessage:
        async with self._slots.held(lane):
            await self._limiter.acquire(lane)
            await before_call()
            self._metrics.sends_in_flight.inc()
            try:
                async with self._metrics.twilio_call("create", ok_status="201"):
                    return await self._sender.send(to, body, self._callback_base + quote(event_id))
            finally:
                self._metrics.sends_in_flight.dec()


def _transient(attempts: int, error: ProviderError, doubt: datetime | None) -> _Attempted:
    return _Attempted("transient", attempts, code=error.code, error=str(error), doubt=doubt)


def _reconciles_first(claim: Claim) -> bool:
    """In doubt, with a window to search: its claim left the row `retry_scheduled`."""
    return claim.outcome is ClaimOutcome.IN_DOUBT and claim.window_start is not None


def _token(claim: Claim) -> int:
    assert claim.lease_token is not None, "only claimed events are settled"
    return claim.lease_token
