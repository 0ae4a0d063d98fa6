"""What the delivery core's steps come to: a claim, a claim's sends, a reconciliation, an event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sms_relay.domain.states import RESUMABLE, DeliveryState


class ClaimOutcome(StrEnum):
    """What a claim found in the ledger."""

    NEW = "new"
    RESUMED = "resumed"  # an earlier claim ended before sending, or scheduled a retry
    IN_DOUBT = "in_doubt"  # a message may exist already: ask Twilio before any send
    DUPLICATE = "duplicate"  # already done
    BUSY = "busy"  # another live lease holds it


def claim_outcome(
    lease_token: int | None,
    prior: DeliveryState | None,
    doubt_since: datetime | None,
    *,
    erased: bool = False,
) -> ClaimOutcome:
    """What a claim found; shared by both ledgers so they cannot disagree. An erased
    number's tombstone is never claimed, and is a duplicate whatever its state."""
    if lease_token is None:
        # No prior state but no claim either: a concurrent claimer inserted it just now.
        busy = (prior is None or prior in RESUMABLE) and not erased
        return ClaimOutcome.BUSY if busy else ClaimOutcome.DUPLICATE
    if prior is None:
        return ClaimOutcome.NEW
    if doubt_since is not None:
        return ClaimOutcome.IN_DOUBT
    return ClaimOutcome.RESUMED


class Verdict(StrEnum):
    """What Twilio's message list says about a send in doubt."""

    FOUND = "found"
    NOT_YET = "not_yet"  # nothing listed, but the horizon has not passed: ask again later
    ABSENT = "absent"  # nothing listed after the horizon: no message exists


class AttemptEnd(StrEnum):
    """Where one claim's sends ended (before the ledger settles it)."""

    ACCEPTED = "accepted"  # created, or found by reconciliation
    FAILED = "failed"  # a permanent error of the recipient
    SUPPRESSED = "suppressed"  # opted out while in doubt: what was not sent never will be
    TRANSIENT = "transient"  # to the next retry tier (or the DLQ past the last)
    RECHECK = "recheck"  # in doubt, not listed yet: reconcile again soon, held back
    THROTTLED = "throttled"  # Twilio answered 429: send again after the backoff, held back
    UNRESOLVED = "unresolved"  # in doubt past the horizon, resending not allowed
    HANDED_ON = "handed_on"  # the lease ran short or was taken: nothing is settled
    EXPIRED = "expired"  # too old to be sent by the time a create was due (an alert)
    NOT_NOW = "not_now"  # right before a create, the event was no longer due (a reminder)


class Outcome(StrEnum):
    """What became of one event's record in a batch (the label of the outcomes metric)."""

    SENT = "sent"
    DUPLICATE = "duplicate"
    SUPPRESSED = "suppressed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"
    COLLAPSED = "collapsed"  # an alert's repeat inside its window, or over the hourly cap
    EXPIRED = "expired"  # too old to be sent
    BUSY = "busy"  # another live lease holds it: claim again once that lease runs out
    LEASE_LOST = "lease_lost"  # our lease ran short or was taken: claim again later
    RECHECK = "recheck"  # in doubt, not listed yet: reconcile again at the horizon
    THROTTLED = "throttled"  # Twilio answered 429: send again after the backoff
    SCHEDULED = "scheduled"  # stored; the scheduler sends it when due
    CANCELED = "canceled"  # not sent: cancelled before it was due


# Outcomes whose record the loop keeps back (its offset uncommitted) and offers again
# after `wait_seconds`: waiting neither climbs the retry tiers nor stalls the partition.
# A throttled event waits the same way, so its backoff never holds up the rest of its
# batch (and the batches behind it) the way a sleep inside the batch did.
WAITING = frozenset({Outcome.BUSY, Outcome.LEASE_LOST, Outcome.RECHECK, Outcome.THROTTLED})

# What each settled state comes to.
OUTCOME_OF_SETTLED = {
    DeliveryState.ACCEPTED: Outcome.SENT,
    DeliveryState.FAILED: Outcome.FAILED,
    DeliveryState.SUPPRESSED: Outcome.SUPPRESSED,
    DeliveryState.RETRY_SCHEDULED: Outcome.RETRY_SCHEDULED,
    DeliveryState.DEAD_LETTERED: Outcome.DEAD_LETTERED,
    DeliveryState.COLLAPSED: Outcome.COLLAPSED,
    DeliveryState.SCHEDULED: Outcome.SCHEDULED,
    DeliveryState.EXPIRED: Outcome.EXPIRED,
    DeliveryState.CANCELED: Outcome.CANCELED,
}

# What each end of a claim's sends is settled as; a transient end goes to the next retry
# tier, or is dead-lettered past the last.
SETTLED_AS = {
    AttemptEnd.ACCEPTED: DeliveryState.ACCEPTED,
    AttemptEnd.FAILED: DeliveryState.FAILED,
    AttemptEnd.SUPPRESSED: DeliveryState.SUPPRESSED,
    # Resumable, any doubt kept; no tier is used: the loop holds the record back.
    AttemptEnd.RECHECK: DeliveryState.RETRY_SCHEDULED,
    AttemptEnd.THROTTLED: DeliveryState.RETRY_SCHEDULED,
    AttemptEnd.UNRESOLVED: DeliveryState.DEAD_LETTERED,
    AttemptEnd.EXPIRED: DeliveryState.EXPIRED,
}


@dataclass(frozen=True)
class Attempted:
    """Where one claim's sends ended."""

    end: AttemptEnd
    attempts: int
    sid: str | None = None
    code: int | None = None
    error: str | None = None
    doubt: datetime | None = None  # a message may exist unmatched (end of that attempt)
    backoff: float = 0.0  # throttled: seconds until the next send


# Ends whose record the loop holds back (a WAITING outcome) rather than hand to a tier.
HELD_BACK = frozenset({AttemptEnd.RECHECK, AttemptEnd.THROTTLED})
