"""The use case: claim → check suppression → send → settle, for a batch of events.

It decides and records; the consumer loop turns the results into Kafka records and
commits. `SendAttempts` (`sms_relay.delivery.attempts`) makes the sends, and reconciles
an event in doubt with Twilio before any resend; nothing a send raises escapes it. A
batch therefore ends only when all its sends have, and an event whose send still runs
here is never claimed again by this process.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import replace

from schemas.events import Status
from sms_relay.clock import SYSTEM_CLOCK, Clock
from sms_relay.delivery.attempts import IN_DOUBT_UNRESOLVED, SendAttempts
from sms_relay.delivery.delivery_ports import (
    Claim,
    ClaimRequest,
    Job,
    Ledger,
    Result,
    Settlement,
    SmsSender,
)
from sms_relay.delivery.in_doubt import InDoubtResend
from sms_relay.delivery.leases import LeaseKeeper
from sms_relay.delivery.pacing import RateLimiter
from sms_relay.delivery.send_checks import SendChecks
from sms_relay.domain.outcomes import (
    HELD_BACK,
    OUTCOME_OF_SETTLED,
    SETTLED_AS,
    Attempted,
    AttemptEnd,
    ClaimOutcome,
    Outcome,
)
from sms_relay.domain.retry import RetryPolicy, TierPlan
from sms_relay.domain.segments import SegmentCount, count_segments
from sms_relay.domain.states import CONSUMER_SETTLED, DeliveryState, wire_status
from sms_relay.domain.twilio_codes import OPT_OUT_ERROR
from sms_relay.masking import body_hash, mask_phone, phone_hash
from sms_relay.metrics import ConsumerMetrics

S = DeliveryState

# The ledger state behind each status record the consumer publishes.
_REPORTED = {wire_status(state): state for state in CONSUMER_SETTLED}


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
        self._tiers = tiers
        self._metrics = metrics
        self._hash_key = phone_hash_key
        self._clock = clock
        self._uniform = uniform
        self.leases = LeaseKeeper(ledger, clock, metrics)
        self._checks = SendChecks(clock, phone_hash_key)
        self._sends = SendAttempts(
            ledger,
            sender,
            self.leases,
            limiter=limiter,
            concurrency=concurrency,
            policy=policy,
            metrics=metrics,
            # SendAttempts adds `kind=<kind>&eventId=<id>`: eventId stays last, as it was.
            callback_base=public_base_url.rstrip("/") + "/twilio/status-callback?",
            settle_seconds=settle_seconds,
            horizon_seconds=horizon_seconds,
            request_timeout_seconds=request_timeout_seconds,
            in_doubt_resend=in_doubt_resend,
            clock=clock,
            due_now=self._checks.due_now,
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
        requests, bodies = self._claim_requests(jobs)
        claims = await self._ledger.claim(requests)
        self.leases.hold(
            {e: c.lease_token for e, c in claims.items() if c.lease_token is not None}, claimed_at
        )
        results: list[Result] = []
        sendable: list[tuple[Job, Claim]] = []
        settlements: dict[str, tuple[Job, Settlement]] = {}
        withheld: dict[str, Settlement] = {}  # in doubt: settled so, unless found listed
        for job in jobs:
            claim = claims[job.event.eventId]
            if claim.outcome in (ClaimOutcome.DUPLICATE, ClaimOutcome.BUSY):
                results.append(self._not_ours(job, claim))
                continue
            # Suppressed, scheduled, cancelled, expired, refused: checked at every claim.
            checked = self._checks.before_send(job, claim)
            if checked is not None and claim.outcome is ClaimOutcome.IN_DOUBT:
                # A message may exist: reconcile, and send nothing anew now.
                withheld[job.event.eventId] = checked
                sendable.append((job, replace(claim, suppressed=True)))
            elif checked is not None:
                settlements[job.event.eventId] = (job, checked)
            else:
                sendable.append((job, claim))

        for job, _ in sendable:
            if job.event.eventId not in bodies:
                bodies[job.event.eventId] = job.kind.render(job.event)
        ready = await self._sends.mark_sending(
            [(claim, body_hash(bodies[claim.event_id])) for _, claim in sendable]
        )
        sending = [
            (job, *ready[job.event.eventId]) for job, _ in sendable if job.event.eventId in ready
        ]
        results.extend(self._lost(job) for job, _ in sendable if job.event.eventId not in ready)
        runs = [
            self._sends.run(claim, job, bodies[claim.event_id], unmarked)
            for job, claim, unmarked in sending
        ]
        held: dict[str, Attempted] = {}  # held back, not handed to a tier
        for (job, claim, _), attempted in zip(sending, await asyncio.gather(*runs), strict=True):
            if attempted.end is AttemptEnd.HANDED_ON:
                results.append(self._lost(job, claim))
                continue
            size = count_segments(bodies[claim.event_id])  # what it costs: metric and ledger
            settlement = self._settlement(job, claim, attempted, size)
            if attempted.end is AttemptEnd.SUPPRESSED and job.event.eventId in withheld:
                settlement = replace(
                    withheld[job.event.eventId],
                    attempt=attempted.attempts,
                    doubt_since=attempted.doubt,
                )
            settlements[job.event.eventId] = (job, settlement)
            if attempted.end is AttemptEnd.ACCEPTED:
                self._metrics.sent(job.kind.name, size)
            if attempted.end in HELD_BACK:
                held[job.event.eventId] = attempted
        results.extend(await self._settle(settlements, held))
        return results

    def _claim_requests(self, jobs: Sequence[Job]) -> tuple[list[ClaimRequest], dict[str, str]]:
        """The claims to make, and the bodies rendered for those sent at once: their claim
        marks them `sending` too (the hot path's one round trip)."""
        requests, bodies = [], {}
        for job in jobs:
            request = self._checks.claim_request(job)
            if self._checks.sends_at_once(job, request):
                body = bodies[job.event.eventId] = job.kind.render(job.event)
                request = replace(request, send_hash=body_hash(body))
            requests.append(request)
        return requests, bodies

    async def _settle(
        self, settlements: dict[str, tuple[Job, Settlement]], held: dict[str, Attempted]
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
            if settlement.state is S.COLLAPSED:
                self._metrics.collapsed.labels(job.kind.name, settlement.error or "").inc()
            if settlement.error_code == OPT_OUT_ERROR:
                await self._ledger.suppress(
                    phone_hash(self._hash_key, job.event.phone),
                    mask_phone(job.event.phone),
                    f"error_{OPT_OUT_ERROR}",
                )
            results.append(self._result(job, settlement, held.get(event_id)))
        return results

    async def mark_reported(self, steps: Sequence[tuple[str, Status]]) -> None:
        """These status records are on Kafka; replays need not repeat them."""
        settled = [
            (event_id, _REPORTED[status]) for event_id, status in steps if status in _REPORTED
        ]
        await self._ledger.mark_reported(settled)

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
                OUTCOME_OF_SETTLED[settled],
                claim.attempts,
                report=wire_status(settled),
                message_sid=claim.message_sid,
                error_code=claim.error_code,
                republished=True,
            )
        return Result(job, Outcome.DUPLICATE, claim.attempts, message_sid=claim.message_sid)

    def _settlement(
        self, job: Job, claim: Claim, attempted: Attempted, size: SegmentCount
    ) -> Settlement:
        if attempted.end is AttemptEnd.NOT_NOW:  # no longer due, or too late, at the create
            checked = self._checks.timing(job, claim)
            assert checked is not None, "NOT_NOW only when the timing says so"
            return replace(checked, attempt=attempted.attempts, doubt_since=attempted.doubt)
        state = SETTLED_AS.get(attempted.end) or self._next_tier_or_dlq(job)
        return Settlement(
            job.event.eventId,
            claim.held_token(),
            state,
            attempted.attempts,
            message_sid=attempted.sid,
            error_code=attempted.code,
            error=attempted.error,
            doubt_since=attempted.doubt,
            segments=size,
        )

    def _next_tier_or_dlq(self, job: Job) -> DeliveryState:
        if job.from_schedule:  # retried by the scheduler until sent or expired
            return S.RETRY_SCHEDULED
        return S.RETRY_SCHEDULED if self._tiers.after(job.tier_index) else S.DEAD_LETTERED

    def _not_yet(self, job: Job, settlement: Settlement) -> Settlement:
        doubt = settlement.doubt_since or self._clock.now()
        state = self._next_tier_or_dlq(job)
        return replace(settlement, state=state, message_sid=None, doubt_since=doubt)

    def _result(self, job: Job, settlement: Settlement, held: Attempted | None = None) -> Result:
        if held is not None and held.end is AttemptEnd.THROTTLED:
            return Result(job, Outcome.THROTTLED, settlement.attempt, wait_seconds=held.backoff)
        if held is not None:
            assert settlement.doubt_since is not None
            wait = self._jitter(self._sends.recheck_in(settlement.doubt_since))
            return Result(job, Outcome.RECHECK, settlement.attempt, wait_seconds=wait)
        unresolved = settlement.error == IN_DOUBT_UNRESOLVED
        return Result(
            job,
            OUTCOME_OF_SETTLED[settlement.state],
            settlement.attempt,
            report=wire_status(settlement.state),
            message_sid=settlement.message_sid,
            error_code=settlement.error_code,
            error=settlement.error,
            due_at=settlement.scheduled.due_at if settlement.scheduled else None,
            retry_tier=self._tiers.after(job.tier_index),
            dlq_reason=IN_DOUBT_UNRESOLVED if unresolved else "retries_exhausted",
        )
