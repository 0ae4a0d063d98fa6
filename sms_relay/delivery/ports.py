"""The delivery core's ports: the ledger it claims and settles through, and what it passes.

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
from enum import StrEnum
from typing import Protocol

from sms_relay.domain.states import RESUMABLE, DeliveryState

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
    async def send(self, to: str, body: str, status_callback: str | None) -> SentMessage: ...


# ---- The ledger.


class ClaimOutcome(StrEnum):
    NEW = "new"
    RESUMED = "resumed"  # an earlier claim ended before sending, or scheduled a retry
    IN_DOUBT = "in_doubt"  # a message may exist already: ask Twilio before any send
    DUPLICATE = "duplicate"  # already done
    BUSY = "busy"  # another live lease holds it


@dataclass(frozen=True)
class ClaimRequest:
    event_id: str
    event_type: str
    phone_hash: str
    phone_masked: str
    consent_at: datetime | None
    consent_purpose: str | None


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
        """These settled steps' status records are on Kafka; replays need not repeat them."""

    async def owned_sids(self, sids: Sequence[str], event_id: str) -> set[str]:
        """Those of `sids` that the ledger records for an event other than `event_id`."""

    async def suppress(self, phone_hash: str, phone_masked: str, reason: str) -> None: ...


def claim_outcome(
    lease_token: int | None, prior: DeliveryState | None, doubt_since: datetime | None
) -> ClaimOutcome:
    """What a claim found; shared by both ledgers so they cannot disagree."""
    if lease_token is None:
        # No prior state but no claim either: a concurrent claimer inserted it just now.
        busy = prior is None or prior in RESUMABLE
        return ClaimOutcome.BUSY if busy else ClaimOutcome.DUPLICATE
    if prior is None:
        return ClaimOutcome.NEW
    if doubt_since is not None:
        return ClaimOutcome.IN_DOUBT
    return ClaimOutcome.RESUMED
