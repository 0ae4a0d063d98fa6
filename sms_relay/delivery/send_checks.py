"""What every claim checks before a send: cancelled, expired, not due yet, refused now.

An event may be claimed long after it was read (a scheduled reminder, a retry tier), and
the clock, a cancel or the allowlists may have moved meanwhile: the answer is never
cached from the first read.
"""

from __future__ import annotations

from datetime import datetime

from sms_relay.clock import Clock
from sms_relay.delivery.delivery_ports import (
    Claim,
    ClaimRequest,
    Job,
    ScheduledSend,
    Settlement,
)
from sms_relay.delivery.refusals import TOO_LATE, collapse_rule, expired
from sms_relay.domain.outcomes import ClaimOutcome
from sms_relay.domain.states import DeliveryState
from sms_relay.kinds.event_kind import CONSENT_PURPOSE_MISMATCH
from sms_relay.masking import mask_phone, phone_hash

S = DeliveryState
APPOINTMENT_CANCELLED = "appointment_cancelled"


class SendChecks:
    def __init__(self, clock: Clock, phone_hash_key: str) -> None:
        self._clock = clock
        self._hash_key = phone_hash_key

    def claim_request(self, job: Job) -> ClaimRequest:
        event = job.event
        return ClaimRequest(
            event_id=event.eventId,
            event_type=job.kind.name,
            phone_hash=phone_hash(self._hash_key, event.phone),
            phone_masked=mask_phone(event.phone),
            consent_at=event.consentAt,
            consent_purpose=event.consentPurpose,
            consent_source=event.consentSource,
            cancel_key=job.kind.cancel_key(event),
            collapse=collapse_rule(job, self._clock.now(), self._hash_key),
        )

    def sends_at_once(self, job: Job, request: ClaimRequest) -> bool:
        """Whether a first claim of this event is sent at once unless the ledger knows a STOP
        or a cancel: `before_send` with nothing stored yet. A rule the ledger decides with
        the claim (an alert's collapse) leaves it to `before_send` after the claim."""
        return (
            request.collapse is None
            and job.kind.accepts_purpose(job.event.consentPurpose)
            and not expired(job, self._clock.now())
            and self.due_now(job)
            and job.kind.refusal_now(job.event) is None
        )

    def before_send(self, job: Job, claim: Claim) -> Settlement | None:
        """How a claimed event settles without a send now, or None to send it. A claim in
        doubt that is suppressed is reconciled first (never resent), as before."""
        if claim.suppressed or not job.kind.accepts_purpose(job.event.consentPurpose):
            if claim.outcome is ClaimOutcome.IN_DOUBT:
                return None
            # A STOP, or consent given for a purpose this kind does not serve.
            reason = None if claim.suppressed else CONSENT_PURPOSE_MISMATCH
            return self._settled(job, claim, S.SUPPRESSED, reason)
        if claim.canceled:
            return self._settled(job, claim, S.CANCELED, APPOINTMENT_CANCELLED)
        ended = self._alert_refusal(job, claim) or self.timing(job, claim)
        if ended is not None:
            return ended
        refused = job.kind.refusal_now(job.event)
        return None if refused is None else self._settled(job, claim, S.SUPPRESSED, refused)

    def _alert_refusal(self, job: Job, claim: Claim) -> Settlement | None:
        """An alert's repeat, or too old: never while in doubt (reconciled first; the
        attempt checks the age again right before any create)."""
        if claim.outcome is ClaimOutcome.IN_DOUBT:
            return None
        if claim.collapsed is not None:
            return self._settled(job, claim, S.COLLAPSED, claim.collapsed)
        if expired(job, self._clock.now()):
            return self._settled(job, claim, S.EXPIRED, TOO_LATE)
        return None

    def timing(self, job: Job, claim: Claim) -> Settlement | None:
        """`expired` when it can no longer be sent in time, `scheduled` when not due yet."""
        now = self._clock.now()
        timing = job.kind.timing(job.event, now)
        if timing.expires_at is not None and max(now, timing.due_at) >= timing.expires_at:
            return self._settled(job, claim, S.EXPIRED, timing.expiry_reason)
        if timing.due_at > now:
            return self._settled(job, claim, S.SCHEDULED, None, self._stored(job, timing.due_at))
        return None

    def due_now(self, job: Job) -> bool:
        """Whether the event may be created this instant (checked again right before it)."""
        now = self._clock.now()
        timing = job.kind.timing(job.event, now)
        return timing.due_at <= now and (timing.expires_at is None or now < timing.expires_at)

    def _stored(self, job: Job, due_at: datetime) -> ScheduledSend:
        event = job.event
        return ScheduledSend(
            event_id=event.eventId,
            kind=job.kind.name,
            payload=event.model_dump_json(),
            due_at=due_at,
            phone_hash=phone_hash(self._hash_key, event.phone),
            cancel_key=job.kind.cancel_key(event),
        )

    @staticmethod
    def _settled(
        job: Job,
        claim: Claim,
        state: DeliveryState,
        reason: str | None,
        scheduled: ScheduledSend | None = None,
    ) -> Settlement:
        attempts = max(job.attempts, claim.attempts)
        # Scheduled, cancelled or expired while in doubt: the doubt stays with the row.
        return Settlement(
            job.event.eventId,
            claim.held_token(),
            state,
            attempts,
            error=reason,
            doubt_since=claim.doubt_since,
            scheduled=scheduled,
        )


class NotDueError(Exception):
    """Raised right before a create that the event's timing no longer allows."""

    def __init__(self, attempts: int, doubt: datetime | None) -> None:
        super().__init__("no longer due")
        self.attempts, self.doubt = attempts, doubt
