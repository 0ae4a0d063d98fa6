"""Why a claimed event ends without any send: decided before one, never while in doubt."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sms_relay.delivery.delivery_ports import Claim, Job
from sms_relay.domain.collapse import CollapseRule
from sms_relay.domain.outcomes import ClaimOutcome
from sms_relay.domain.states import DeliveryState
from sms_relay.kinds.event_kind import CONSENT_PURPOSE_MISMATCH
from sms_relay.masking import alert_key_hash

S = DeliveryState
# The reason of an event that ends `expired`: past the instant it may be sent.
TOO_LATE = "too_late"


def expired(job: Job, now: datetime) -> bool:
    return job.expires_at is not None and now >= job.expires_at


def collapse_rule(job: Job, now: datetime, hash_key: str) -> CollapseRule | None:
    """The flood control to decide with the claim. An event that will not send (consent
    for another purpose, too old already) asks none, so it never holds a window."""
    rule = job.kind.effective_policy.collapse_rule(job.event)
    if rule is None or expired(job, now) or not job.kind.accepts_purpose(job.event.consentPurpose):
        return None
    return replace(rule, key=alert_key_hash(hash_key, rule.key))


def refusal(job: Job, claim: Claim, now: datetime) -> tuple[DeliveryState, str | None] | None:
    """The state (and reason) a claim settles in without sending: a STOP, consent given
    for another purpose, an alert's repeat, too old. None when it may send, and always for
    a claim in doubt: a message may exist, so it is reconciled first."""
    if claim.outcome is ClaimOutcome.IN_DOUBT:
        return None
    if claim.suppressed:
        return S.SUPPRESSED, None
    if not job.kind.accepts_purpose(job.event.consentPurpose):
        return S.SUPPRESSED, CONSENT_PURPOSE_MISMATCH
    if claim.collapsed is not None:
        return S.COLLAPSED, claim.collapsed
    if expired(job, now):
        return S.EXPIRED, TOO_LATE
    return None
