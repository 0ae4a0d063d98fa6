"""An alert's refusals: its flood control asked with the claim, and its maximum age."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sms_relay.delivery.delivery_ports import Job
from sms_relay.domain.collapse import CollapseRule
from sms_relay.masking import alert_key_hash

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
