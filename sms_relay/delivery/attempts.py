"""One claim's sends: create the message, and after an uncertain send reconcile first.

Only a 429 is known never to have been processed by Twilio: after any other uncertain
send the ledger remembers the doubt, and every later attempt, by whichever process,
reconciles with Twilio's message list (`in_doubt.Reconciler`) before it may send again.

Nothing a send raises escapes `SendAttempts.run`: an unexpected exception is one more way
of not knowing whether Twilio created the message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from urllib.parse import quote

from sms_relay.clock import Clock
from sms_relay.delivery.delivery_ports import Claim, Job, Ledger, SentMessage, SmsSender
from sms_relay.delivery.in_doubt import Doubt, InDoubtResend, Reconciler
from sms_relay.delivery.leases import LeaseKeeper
from sms_relay.delivery.pacing import Lane, RateLimiter, Slots
from sms_relay.delivery.refusals import TOO_LATE, expired
from sms_relay.delivery.send_checks import NotDueError
from sms_relay.domain.outcomes import Attempted, AttemptEnd, ClaimOutcome, Verdict
from sms_relay.domain.retry import RetryPolicy
from sms_relay.errors import (
    LeaseTooShortError,
    ProviderAccountError,
    ProviderError,
    ProviderRejectedError,
    ProviderThrottledError,
)
from sms_relay.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

# The error (and the dead-letter reason) of an event given up in doubt.
IN_DOUBT_UNRESOLVED = "in_doubt_unresolved"
# A recheck further off than this goes to the next retry tier instead of being held.
MAX_HELD_RECHECK_SECONDS = 60.0


def _reconciles_first(claim: Claim) -> bool:
    """In doubt, with a window to search: its claim left the row `retry_scheduled`, and
    it is marked `sending` only right before it creates again (so a holder that dies
    while it only reconciles leaves the doubt where it was)."""
    return claim.outcome is ClaimOutcome.IN_DOUBT and claim.window_start is not None


class SendAttempts:
    """The sends of claimed events, within the rate limit and the concurrency slots."""

    def __init__(
        self,
        ledger: Ledger,
        sender: SmsSender,
        leases: LeaseKeeper,
        *,
        limiter: RateLimiter,
        concurrency: int,
        policy: RetryPolicy,
        metrics: ConsumerMetrics,
        callback_base: str,
        settle_seconds: float,
        horizon_seconds: float,
        request_timeout_seconds: float,
        in_doubt_resend: InDoubtResend,
        clock: Clock,
        due_now: Callable[[Job], bool] = lambda _job: True,
    ) -> None:
        self._ledger = ledger
        self._sender = sender
        self._leases = leases
        self._limiter = limiter
        self._slots = Slots(concurrency)
        self._policy = policy
        self._metrics = metrics
        self._callback_base = callback_base
        self._horizon = horizon_seconds
        self._call_deadline = request_timeout_seconds
        self._in_doubt_resend = in_doubt_resend
        self._clock = clock
        self._due_now = due_now
        self._reconciler = Reconciler(
            sender,
            ledger,
            metrics,
            clock,
            settle_seconds=settle_seconds,
            horizon_seconds=horizon_seconds,
        )

    async def mark_sending(
        self, claims: Sequence[tuple[Claim, str]]
    ) -> dict[str, tuple[Claim, str | None]]:
        """Marks `sending`, in one round trip, the claims (each with its body's hash) that
        may create at once and that their claim did not mark already. Returns those still
        held, by event id, ready for `run`: with their window start, and with the hash when
        not marked yet (a claim in doubt)."""
        for claim, _ in claims:
            if claim.outcome is ClaimOutcome.IN_DOUBT:
                # Rare (after a crash or an uncertain send); the trace of a slow recovery.
                log.info(
                    "claimed an event in doubt",
                    extra={
                        "eventId": claim.event_id,
                        "priorState": claim.prior_state,
                        "doubtSince": claim.doubt_since.isoformat() if claim.doubt_since else None,
                    },
                )
        later = {claim.event_id for claim, _ in claims if _reconciles_first(claim)}
        started = await self._ledger.mark_sending(
            [
                (c.event_id, c.held_token(), hash_)
                for c, hash_ in claims
                if c.event_id not in later and not c.marked  # marked: by its claim
            ]
        )
        ready: dict[str, tuple[Claim, str | None]] = {}
        for claim, hash_ in claims:
            event_id = claim.event_id
            kept = event_id in later or claim.marked
            window = claim.window_start if kept else started.get(event_id)
            if window is None:
                continue  # taken over, or our lease ran short
            sent = tuple(dict.fromkeys((*claim.sent_body_hashes, hash_)))
            marked = replace(claim, window_start=window, sent_body_hashes=sent)
            ready[event_id] = (marked, hash_ if event_id in later else None)
        return ready

    async def run(self, claim: Claim, job: Job, body: str, unmarked: str | None) -> Attempted:
        """`job.attempts`: the sends counted in the record's headers. `unmarked`: the
        body's hash, when the claim is not marked `sending` yet."""
        attempts = max(job.attempts, claim.attempts)
        try:
            return await self._attempt(claim, job, body, attempts, unmarked)
        except NotDueError as error:  # nothing was created: settled by the timing
            return Attempted(AttemptEnd.NOT_NOW, error.attempts, doubt=error.doubt)
        except LeaseTooShortError:
            return Attempted(AttemptEnd.HANDED_ON, attempts)
        except Exception as error:  # contained: see the module's docstring
            log.exception(
                "unexpected error while sending; the event is in doubt",
                extra={"eventId": claim.event_id, "error": type(error).__name__},
            )
            doubt = claim.doubt_since or self._clock.now()
            return Attempted(
                AttemptEnd.TRANSIENT, attempts, error=type(error).__name__, doubt=doubt
            )

    def recheck_in(self, doubt_since: datetime) -> float:
        """Seconds until the horizon has passed since `doubt_since`."""
        return max((doubt_since - self._clock.now()).total_seconds() + self._horizon, 0.0)

    async def _attempt(
        self,
        claim: Claim,
        job: Job,
        body: str,
        attempts: int,
        unmarked: str | None,
    ) -> Attempted:
        # A scheduled send has no record headers: its creates count from this claim.
        to, record_attempts = job.event.phone, attempts if job.from_schedule else job.attempts
        event_id = claim.event_id
        callback = f"{self._callback_base}kind={quote(job.kind.name)}&eventId={quote(event_id)}"
        doubt = claim.doubt_since
        assert claim.window_start is not None, "mark_sending gives every claim its window"

        async def before_call() -> None:
            await self._leases.ensure(event_id, self._call_deadline)

        async def before_create() -> None:  # quiet hours or the start may have come since
            await before_call()  # may wait on a renewal: the timing is checked after it
            if not self._due_now(job):
                raise NotDueError(attempts - 1, doubt)  # counted before the create

        # Creates since this record entered its topic (a held record comes back with the
        # same attempt count): after max_attempts of them the event moves a tier on.
        tries = max(attempts - record_attempts, 0)
        # Held back, taken over, or back from a tier: it has waited, so it goes first.
        lane = Lane.FIRST if claim.outcome is ClaimOutcome.NEW else Lane.OVERDUE
        while True:
            if doubt is not None:
                pending = Doubt(event_id, to, claim.sent_body_hashes, claim.window_start, doubt)
                resolved = await self._resolve(pending, claim.suppressed, attempts, before_call)
                if resolved is not None:
                    return resolved
            if (ended := self._no_create(job, tries, attempts, doubt)) is not None:
                return ended
            if unmarked is not None:  # from now on a message of ours may exist
                marking = [(event_id, claim.held_token(), unmarked)]
                if event_id not in await self._ledger.mark_sending(marking):
                    raise LeaseTooShortError("taken over before the send")
                unmarked = None
            tries += 1
            attempts += 1
            try:
                sent = await self._send(
                    to, body, callback, before_create, lane, job.validity_seconds
                )
                return Attempted(AttemptEnd.ACCEPTED, attempts, sid=sent.sid)
            except ProviderThrottledError as error:
                delay = self._policy.next_delay(tries, error)
                if delay is None:
                    # Keep Twilio's last code, so `dlq list --error-code` can find the event.
                    return _transient(attempts, error, doubt)
                # Not created: settle it resumable and hold its record for the backoff.
                return Attempted(
                    AttemptEnd.THROTTLED,
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

    def _no_create(
        self, job: Job, tries: int, attempts: int, doubt: datetime | None
    ) -> Attempted | None:
        """Why no create may follow: the record's tries used up, or too late (reconciled
        first when in doubt, so no message exists)."""
        if tries >= self._policy.max_attempts:
            return Attempted(
                AttemptEnd.TRANSIENT, attempts, error="attempts exhausted", doubt=doubt
            )
        if expired(job, self._clock.now()):
            return Attempted(AttemptEnd.EXPIRED, attempts, error=TOO_LATE)
        return None

    async def _resolve(
        self,
        doubt: Doubt,
        suppressed: bool,
        attempts: int,
        before_call: Callable[[], Awaitable[None]],
    ) -> Attempted | None:
        """Ask Twilio about a send in doubt; None when a resend is allowed."""
        try:
            verdict = await self._reconciler.reconcile(doubt, before_call)
        except ProviderError as error:
            return _transient(attempts, error, doubt.since)
        if verdict.verdict is Verdict.FOUND:
            return Attempted(AttemptEnd.ACCEPTED, attempts, sid=verdict.sid)
        if suppressed:  # opted out since: what was not sent never will be
            return Attempted(AttemptEnd.SUPPRESSED, attempts, doubt=doubt.since)
        if verdict.verdict is Verdict.NOT_YET:
            # Never resend now: ask again once the horizon has passed, held back here when
            # that is soon, from the next retry tier otherwise.
            soon = self.recheck_in(doubt.since) <= MAX_HELD_RECHECK_SECONDS
            end = AttemptEnd.RECHECK if soon else AttemptEnd.TRANSIENT
            return Attempted(end, attempts, error="in doubt: not listed yet", doubt=doubt.since)
        if self._in_doubt_resend is InDoubtResend.NEVER:
            log.error("in doubt past the horizon; not resending", extra={"eventId": doubt.event_id})
            return Attempted(
                AttemptEnd.UNRESOLVED, attempts, error=IN_DOUBT_UNRESOLVED, doubt=doubt.since
            )
        self._metrics.in_doubt_resends.inc()
        log.warning("in doubt past the horizon; sending again", extra={"eventId": doubt.event_id})
        return None

    def _rejected(
        self, event_id: str, attempts: int, error: ProviderRejectedError, doubt: datetime | None
    ) -> Attempted:
        if isinstance(error, ProviderAccountError):
            self._metrics.account_errors.labels(str(error.code or error.status)).inc()
            log.error(
                "Twilio refused the send for our account or settings; retrying later",
                extra={"eventId": event_id, "errorCode": error.code, "status": error.status},
            )
            return _transient(attempts, error, doubt)
        return Attempted(AttemptEnd.FAILED, attempts, code=error.code, error=str(error))

    async def _send(
        self,
        to: str,
        body: str,
        callback: str,
        before_call: Callable[[], Awaitable[None]],
        lane: Lane,
        validity_seconds: int | None,
    ) -> SentMessage:
        async with self._slots.held(lane):
            await self._limiter.acquire(lane)
            await before_call()
            self._metrics.sends_in_flight.inc()
            try:
                async with self._metrics.twilio_call("create", ok_status="201"):
                    return await self._sender.send(to, body, callback, validity_seconds)
            finally:
                self._metrics.sends_in_flight.dec()


def _transient(attempts: int, error: ProviderError, doubt: datetime | None) -> Attempted:
    return Attempted(AttemptEnd.TRANSIENT, attempts, code=error.code, error=str(error), doubt=doubt)
