"""The callbacks' use cases' ports: what they need of PostgreSQL, Kafka and Twilio."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sms_relay.domain.states import DeliveryState

if TYPE_CHECKING:
    from sms_relay.status.api_keys import ApiKey
    from sms_relay.status.outbox import OutboundRecord


@dataclass(frozen=True)
class FetchedMessage:
    sid: str
    status: str
    error_code: int | None


# ---- PostgreSQL (`sms_relay.adapters.postgres`). Every method raises
# DatabaseUnavailableError when the database is away or failed the statement.


class Transaction(Protocol):
    """An open transaction of one store, opaque here: another store of the same database
    writes in it, so both writes commit together or not at all."""


# A use case's own write, run inside the outbox row's transaction.
AlsoInTransaction = Callable[[Transaction], Awaitable[None]]


@dataclass(frozen=True)
class UnpublishedRow:
    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]


class UnpublishedBatch(Protocol):
    """Outbox rows taken (locked) for publishing; the lock holds until the batch ends."""

    @property
    def rows(self) -> Sequence[UnpublishedRow]: ...

    async def mark_published(self, ids: Sequence[int]) -> None: ...


class OutboxRows(Protocol):
    """The outbox's rows: a record is inserted once by its token (or content key)."""

    async def insert_many(self, records: Sequence[OutboundRecord]) -> dict[str, int]:
        """The new rows' ids by token, in one autocommit statement; a record whose
        token or content key was taken before has no entry."""
        ...

    async def insert_with(self, record: OutboundRecord, also: AlsoInTransaction) -> int | None:
        """Insert `record` and run `also` in one transaction (not run for a duplicate)."""
        ...

    async def mark_published(self, ids: Sequence[int]) -> None: ...

    def take_unpublished(
        self, grace_seconds: float, limit: int
    ) -> AbstractAsyncContextManager[UnpublishedBatch]: ...

    async def pending(self) -> int: ...


@dataclass(frozen=True)
class StatusStep:
    """A Twilio status of one message, recorded once by its token."""

    event_id: str | None
    message_sid: str | None
    status: str
    error_code: int | None
    source: str
    token: str
    occurred_at: datetime


@dataclass(frozen=True)
class RecordedStep:
    token: str
    event_id: str | None
    known: bool  # a delivery has this event id or Message SID
    error_code: int | None
    new: bool  # first time this token was seen


@dataclass(frozen=True)
class Moved:
    event_id: str
    state: DeliveryState
    occurred_at: datetime | None
    accepted_at: datetime | None


class ProjectionWrites(Protocol):
    """The projection's writes inside one transaction."""

    async def record_steps(self, steps: Sequence[StatusStep]) -> list[RecordedStep]: ...

    async def derive_twilio_states(
        self, event_ids: Sequence[str], sources: Sequence[str]
    ) -> list[Moved]:
        """Move each delivery at `accepted` or past it to the highest-ranked Twilio status
        (`sms_relay.domain.states.TWILIO_RANK`) among its steps from `sources`."""
        ...

    async def suppress_recipients(self, event_ids: Sequence[str], reason: str) -> None: ...


class ProjectionStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[ProjectionWrites]: ...


class KeywordWrites(Protocol):
    """An inbound keyword's writes inside one transaction."""

    async def first_sight(
        self, message_sid: str, phone_hash: str, action: str, received_at: datetime
    ) -> bool:
        """Record the inbound message; False when its MessageSid was seen before."""
        ...

    async def newest_for_number(
        self, message_sid: str, phone_hash: str, action: str, received_at: datetime
    ) -> bool:
        """Make it the number's last keyword when it is newer than the last (or as old
        and an opt-out); False when it is older."""
        ...

    async def suppress(self, phone_hash: str, phone_masked: str, reason: str) -> None: ...

    async def lift(self, phone_hash: str) -> None: ...

    async def mark_applied(self, message_sid: str) -> None: ...


class KeywordStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[KeywordWrites]: ...


@dataclass(frozen=True)
class Limit:
    """At most `count` hits of `key` within any `window` seconds."""

    key: str
    count: int
    window: float


class RateWindows(Protocol):
    async def hit(self, limits: Sequence[Limit]) -> float | None:
        """Count one hit against every limit when all allow it, else none; None when
        allowed, else the seconds until all would allow it."""
        ...


class Verifications(Protocol):
    async def record_verified(
        self, transaction: Transaction, phone_hash: str, phone_masked: str, at: datetime
    ) -> None: ...


@dataclass(frozen=True)
class StoredApiKey:
    key: ApiKey
    secret_hash: str


class ApiKeyStore(Protocol):
    async def insert(self, key: ApiKey, secret_hash: str) -> ApiKey: ...

    async def list(self, *, include_revoked: bool) -> list[ApiKey]: ...

    async def revoke(self, key_id: str) -> ApiKey | None: ...

    async def find(self, key_id: str) -> StoredApiKey | None: ...


# A record's headers: (name, value) pairs, in the order they are written.
RecordHeaders = list[tuple[str, str | bytes | None]]


class Publisher(Protocol):
    """Kafka as the outbox sees it: records out, acknowledged by the broker (acks=all)."""

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: RecordHeaders | None = None,
    ) -> asyncio.Future[None]:
        """Queue one record; the future settles with the broker's acknowledgement and
        fails with BrokerUnavailableError when it refused the record. Raises
        BrokerUnavailableError when the record cannot even be queued."""
        ...

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: RecordHeaders | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Produce one record and wait for the broker's acknowledgement. Raises
        BrokerUnavailableError when it refused the record or did not answer in `timeout`."""
        ...
