"""The states of a delivery, who may write each, and the moves between them.

    claimed ──► sending ──► accepted ──► queued/sent/delivered/... (Twilio, by callback)
       │           ├──► failed (permanent error of the recipient)
       │           ├──► retry_scheduled ──► sending (claimed again, e.g. from a retry topic)
       │           ├──► dead_lettered ──► retry_scheduled (`dlq replay`)
       │           ├──► suppressed (opted out while in doubt)
       │           └──► expired (an alert too old by the time a send was due)
       └──► suppressed, collapsed (an alert's repeat), expired (an alert too old)

A claim that takes over a `sending` row whose lease ran out records the doubt (from that
lease's end) and moves the row to `retry_scheduled`: `sending` always means that the
lease holder may have called Twilio. The new holder reconciles from `retry_scheduled`
and marks the row `sending` only right before it creates again, so a holder that dies
while it only reconciles leaves the doubt where it was; a holder that settles without
creating again does so from `retry_scheduled` (accepted when found, retry_scheduled when
not listed yet, dead_lettered when given up, suppressed when opted out).

The ledger (`sms_relay.adapters.postgres.deliveries`, and its twin in memory) owns every
write; this module only names and orders. A settled state reaches Kafka as the status
`wire_status` names.
"""

from __future__ import annotations

from enum import StrEnum

from schemas.events import Status


class DeliveryState(StrEnum):
    CLAIMED = "claimed"
    SENDING = "sending"  # a send of ours may be in flight (not Twilio's `sending`)
    RETRY_SCHEDULED = "retry_scheduled"
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    CANCELED = "canceled"
    READ = "read"
    SUPPRESSED = "suppressed"
    DEAD_LETTERED = "dead_lettered"
    COLLAPSED = "collapsed"  # a repeat of an alert inside its window, or over the hourly cap
    SCHEDULED = "scheduled"  # stored with its due time; the scheduler claims it then
    EXPIRED = "expired"  # never sent: too late (an alert past its maximum age, a reminder's start)


S = DeliveryState

# A new claim may take these over once their lease has run out.
RESUMABLE = frozenset({S.CLAIMED, S.SENDING, S.RETRY_SCHEDULED, S.SCHEDULED})

# The consumer's settled steps that it publishes a status record for (the consumer also
# settles as retry_scheduled, which publishes none).
CONSUMER_SETTLED = frozenset(
    {S.ACCEPTED, S.FAILED, S.SUPPRESSED, S.DEAD_LETTERED}
    | {S.COLLAPSED, S.SCHEDULED, S.EXPIRED, S.CANCELED}
)

# Not sent, and never will be: what a send-time check ends, possibly while in doubt (an
# alert's `collapsed` never is: it is not decided for a claim in doubt).
WITHHELD = frozenset({S.EXPIRED, S.CANCELED})

# Twilio's statuses as they may stand in `deliveries.state`, by rank: the projection
# moves a row only upwards, so a late `sent` never overwrites `delivered`. Twilio's own
# `sending` is kept in the history only (in `deliveries.state` it would mean ours).
TWILIO_RANK: dict[str, int] = {
    S.ACCEPTED: 0,
    S.QUEUED: 1,
    S.SENT: 3,
    S.DELIVERED: 4,
    S.UNDELIVERED: 4,
    S.FAILED: 4,
    S.CANCELED: 4,
    S.READ: 5,
}

# Twilio's statuses a later one may still follow: the missing-callbacks reconciler asks
# Twilio about deliveries that stay at one of them too long.
AWAITING_TWILIO = frozenset({S.ACCEPTED, S.QUEUED, S.SENT})

# Every move the ledger makes. The status projection's moves are the rank order above.
TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    S.CLAIMED: frozenset(
        {S.SENDING, S.SUPPRESSED, S.COLLAPSED, S.SCHEDULED, S.EXPIRED, S.CANCELED}
    ),
    # Due (or claimed early, from a replay): sent, or checked again at its claim.
    S.SCHEDULED: frozenset(
        {S.SENDING, S.SUPPRESSED, S.SCHEDULED, S.EXPIRED, S.CANCELED}
        | {S.ACCEPTED, S.DEAD_LETTERED}  # kept in doubt: reconciled (found, or given up)
    ),
    # A holder in doubt that only reconciled settles from here (found, not yet, given up).
    S.RETRY_SCHEDULED: frozenset(
        {S.SENDING, S.SUPPRESSED, S.ACCEPTED, S.RETRY_SCHEDULED, S.DEAD_LETTERED}
        | {S.COLLAPSED, S.EXPIRED}  # an alert's claim: a repeat, or too old
        | {S.SCHEDULED, S.CANCELED}  # send-time checks of a scheduled reminder
    ),
    S.SENDING: frozenset(  # retry_scheduled also when a claim takes it over in doubt
        {S.SENDING, S.ACCEPTED, S.FAILED, S.SUPPRESSED, S.RETRY_SCHEDULED, S.DEAD_LETTERED}
        | {S.SCHEDULED, S.EXPIRED, S.CANCELED}  # no message found, and none may be sent now
    ),
    S.DEAD_LETTERED: frozenset({S.RETRY_SCHEDULED}),  # `dlq replay`
}


def may_move(source: DeliveryState, target: DeliveryState) -> bool:
    """True when the ledger may write `target` over `source`. A claim is no such move: it
    takes the lease (a new row starts `claimed`, or `sending` when nothing stops its send:
    no STOP, no cancel, due, no collapse rule; a `sending` row it takes over becomes
    `retry_scheduled`, in doubt)."""
    if target in TRANSITIONS.get(source, frozenset()):
        return True
    return source in TWILIO_RANK and TWILIO_RANK.get(target, -1) > TWILIO_RANK[source]


# The ledger's own states: no status record carries them. Ours `sending` is not Twilio's
# `sending` (that one stands in the status history only).
LEDGER_ONLY = frozenset({S.CLAIMED, S.SENDING, S.RETRY_SCHEDULED})


def wire_status(state: DeliveryState) -> Status | None:
    """The status a delivery-status record gives for `state`; None for the ledger's own
    states. The one mapping between the two vocabularies."""
    return None if state in LEDGER_ONLY else Status(state.value)
