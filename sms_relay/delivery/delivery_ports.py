"""The delivery core's ports: the ledger it claims and settles through, and what it passes.

`Job` and `Result` are what the consume loop hands the core and gets back.

`Ledger` is implemented in PostgreSQL (`sms_relay.adapters.postgres.deliveries`) and in
memory (`sms_relay.adapters.memory.memory_ledger`) for the deterministic simulation; one
contract suite (tests/contract) runs against both.

Every write after the claim carries the lease token; a writer whose lease was taken over
matches no row and learns it lost the claim (fencing). A held lease is renewed by a
heartbeat while its work runs (`renew`), so it can be short and still never run out
under a running send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schemas.events import SmsRequested, Status
from sms_relay.domain.collapse import CollapseRule
from sms_relay.domain.outcomes import ClaimOutcome, Outcome
from sms_relay.domain.retry import RetryTier
from sms_relay.domain.segments import SegmentCount
from sms_relay.domain.states import DeliveryState
from sms_relay.kinds.event_kind import EventKind

# ---- The consume loop's side.


@dataclass(frozen=True)
class Job:
    kind: EventKind
    event: SmsRequested
    attempts: int  # sends made before this record (from its retry headers)
    tier_index: int  # -1 for the main topic
    # Twilio's ValidityPeriod: a message still queued after this long is never sent.
    validity_seconds: int | None = None
    # Never created after this instant (the event ends `expired`); None: no limit.
    expires_at: datetime | None = None
    # Taken from the scheduled sends, not from Kafka: its retries stay with the scheduler.
    from_schedule: bool = False

    @classmethod
    def of(
        cls,
        kind: EventKind,
        event: SmsRequested,
        attempts: int,
        tier_index: int,
        *,
        from_schedule: bool = False,
    ) -> Job:
        """A job with what the kind's policy says of this event (validity, expiry): the
        one place a Kafka record or a scheduled send becomes a job."""
        policy = kind.effective_policy
        return cls(
            kind,
            event,
            attempts,
            tier_index,
            validity_seconds=policy.message_validity(),
            expires_at=policy.expires_at(event),
            from_schedule=from_schedule,
        )


@dataclass(frozen=True)
class Result:
    job: Job
    outcome: Outcome
    attempts: int
    report: Status | None = None  # what to publish on delivery-status, if anything
    message_sid: str | None = None
    error_code: int | None = None
    error: str | None = None
    retry_tier: RetryTier | None = None
    dlq_reason: str = "retries_exhausted"
    republished: bool = False  # settled earlier; only its records are published again
    wait_seconds: float = 0.0  # WAITING outcomes: when to offer the record again
    due_at: datetime | None = None  # SCHEDULED: when the scheduler will send it


# ---- Twilio, as the delivery core sees it (`sms_relay.adapters.twilio`).


@dataclass(frozen=True)
class SentMessage:
    sid: str
    status: str


@dataclass(frozen=True)
class ListedMessage:
    """One message of a list page, as reconciliation needs it (the body only hashed)."""

    sid: str
    body_hash: str | None
    created_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class ListedPage:
    messages: list[ListedMessage]
    next_page: str | None  # the next page's URL, None on the last


class MessageLister(Protocol):
    async def list_page(self, to: str, page: str | None) -> ListedPage: ...


class SidOwners(Protocol):
    async def owned_sids(self, sids: Sequence[str], event_id: str) -> set[str]: ...


class SmsSender(MessageLister, Protocol):
    async def send(
        self, to: str, body: str, status_callback: str | None, validity_seconds: int | None = None
    ) -> SentMessage: ...


# ---- The ledger.


@dataclass(frozen=True)
class ClaimRequest:
    event_id: str
    event_type: str
    phone_hash: str
    phone_masked: str
    consent_at: datetime | None
    consent_purpose: str | None
    consent_source: str | None = None  # where consent was given: a label, no personal data
    # Flood control, decided atomically with the claim (the key already hashed).
    collapse: CollapseRule | None = None
    cancel_key: str | None = None  # a cancel naming this key wins (an appointment id)
    # The body's hash when the event may be sent at once: a first claim that is neither
    # suppressed nor cancelled is then marked `sending` by the claim itself (`Claim.marked`).
    send_hash: str | None = None

    def __post_init__(self) -> None:
        # A collapse is decided after the row is written: such a claim is marked later.
        assert self.send_hash is None or self.collapse is None, "collapse first, then mark"


@dataclass(frozen=True)
class Claim:
    event_id: str
    outcome: ClaimOutcome
    lease_token: int | None
    suppressed: bool
    prior_state: DeliveryState | None
    attempts: int = 0
    message_sid: str | None = None
    error_code: int | None = None
    # The consumer's own settled step and whether its status record reached Kafka.
    settled_state: DeliveryState | None = None
    reported: bool = False
    # Set while a message may exist unmatched: the end of the last uncertain attempt.
    doubt_since: datetime | None = None
    # When the first send of this event began: reconciliation looks back to here.
    window_start: datetime | None = None
    sent_body_hashes: tuple[str, ...] = ()
    # BUSY only: seconds until the holder's lease runs out (by the ledger's clock).
    busy_for: float = 0.0
    # Why a claimed alert must not send (`sms_relay.domain.collapse`), or None.
    collapsed: str | None = None
    canceled: bool = False  # a cancel names the request's cancel_key
    # Marked `sending` by this claim (window_start and sent_body_hashes say so).
    marked: bool = False

    def held_token(self) -> int:
        """The lease token of a claim that took the lease (only those are written)."""
        assert self.lease_token is not None, "only claimed events are marked and settled"
        return self.lease_token


@dataclass(frozen=True)
class Settlement:
    """What a claim came to; written under its lease token."""

    event_id: str
    lease_token: int
    state: DeliveryState
    attempt: int
    message_sid: str | None = None
    error_code: int | None = None
    error: str | None = None
    doubt_since: datetime | None = None  # None: no message can exist unmatched
    # The rendered body's parts and encoding; None when none was rendered (kept as it was).
    segments: SegmentCount | None = None
    # `scheduled` only: what the scheduler needs to send it when due.
    scheduled: ScheduledSend | None = None


@dataclass(frozen=True)
class ScheduledSend:
    """An event stored to be sent later: kept until it settles sent, failed, suppressed,
    expired or cancelled and that step is reported (or it is erased); it holds the
    number, so erasure reaches it."""

    event_id: str
    kind: str
    payload: str  # the event as JSON
    due_at: datetime
    phone_hash: str = ""
    cancel_key: str | None = None


@dataclass(frozen=True)
class SettleResult:
    written: frozenset[str]
    # Not written: the message SID belongs to another event (two events, one message).
    sid_taken: frozenset[str] = frozenset()


class Ledger(Protocol):
    """The delivery core's view of the ledger; each call is one round trip."""

    @property
    def lease_seconds(self) -> float: ...

    async def claim(self, requests: Sequence[ClaimRequest]) -> dict[str, Claim]:
        """Claim every event id (each at most once in `requests`)."""

    async def mark_sending(self, items: Sequence[tuple[str, int, str]]) -> dict[str, datetime]:
        """(event_id, lease_token, body_hash) -> `sending`, remembering the body's hash.
        Returns the ids still held, each with its window start (its first send)."""

    async def renew(self, leases: Mapping[str, int]) -> set[str]:
        """Extend the leases (event_id -> token) still held and live; returns their ids.
        A lease released by a settle, or run out, is never extended again."""

    async def settle(self, settlements: Sequence[Settlement]) -> SettleResult:
        """Write outcomes under their leases (the rest were lost) and release them."""

    async def mark_reported(self, steps: Sequence[tuple[str, DeliveryState]]) -> None:
        """These settled steps' status records are on Kafka; replays need not repeat them.
        A final step's scheduled send goes with it (until then a scheduler retakes it)."""

    async def owned_sids(self, sids: Sequence[str], event_id: str) -> set[str]:
        """Those of `sids` that the ledger records for an event other than `event_id`."""

    async def suppress(self, phone_hash: str, phone_masked: str, reason: str) -> None: ...

    async def take_due(self, limit: int) -> list[ScheduledSend]:
        """Up to `limit` scheduled sends now due, each taken for one lease (another
        process skips them); the claim still decides who sends."""

    async def put_back(self, not_before: Mapping[str, datetime]) -> None:
        """Scheduled sends that must wait: taken again from these instants on."""

    async def cancel(self, cancels: Sequence[tuple[str, str]]) -> int:
        """(cancel key, cancel event id): remembered, so a later event with the key ends
        cancelled; the scheduled sends with these keys are due at once (their claims
        settle them `canceled`). Returns how many were found."""
