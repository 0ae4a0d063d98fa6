"""The ledger in memory, for the deterministic simulation of the delivery core.

It implements `sms_relay.delivery.delivery_ports.Ledger` with the same rules as
`PostgresLedger`'s SQL; the contract suite in tests/contract runs against both, so the two
cannot drift. Several `InMemoryLedger`s (one per simulated consumer) share one
`MemoryDatabase`, as several processes share one PostgreSQL. Time comes from an injected clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sms_relay.delivery.delivery_ports import (
    Claim,
    ClaimRequest,
    ScheduledSend,
    Settlement,
    SettleResult,
)
from sms_relay.domain.collapse import AlertWindow, CollapseAsk, collapse
from sms_relay.domain.outcomes import claim_outcome
from sms_relay.domain.segments import SegmentCount
from sms_relay.domain.states import CONSUMER_SETTLED, RESUMABLE, DeliveryState, may_move


@dataclass
class Row:
    event_id: str
    event_type: str
    state: DeliveryState
    phone_hash: str
    lease_owner: str
    lease_token: int
    lease_until: datetime
    attempts: int = 0
    message_sid: str | None = None
    error_code: int | None = None
    last_error: str | None = None
    settled_state: DeliveryState | None = None
    reported: bool = False
    doubt_since: datetime | None = None
    sending_started_at: datetime | None = None
    sent_body_hashes: list[str] = field(default_factory=list)
    segments: SegmentCount | None = None


@dataclass
class MemoryDatabase:
    """What PostgreSQL holds for the ledger: rows, suppressions, the token sequence."""

    clock: Callable[[], datetime]
    rows: dict[str, Row] = field(default_factory=dict)
    suppressions: dict[str, str] = field(default_factory=dict)  # phone hash -> reason
    history: list[tuple[str, DeliveryState, int]] = field(default_factory=list)
    tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    alert_windows: list[AlertWindow] = field(default_factory=list)  # never pruned here
    # scheduled_sends: the send, and until when a scheduler has taken it.
    scheduled: dict[str, tuple[ScheduledSend, datetime]] = field(default_factory=dict)
    cancellations: dict[str, str] = field(default_factory=dict)  # cancel key -> event id

    def sid_owner(self, sid: str) -> str | None:
        for row in self.rows.values():
            if row.message_sid == sid:
                return row.event_id
        return None


class InMemoryLedger:
    def __init__(self, database: MemoryDatabase, owner: str, lease_seconds: float) -> None:
        self._db = database
        self._owner = owner
        self._lease = timedelta(seconds=lease_seconds)
        self._lease_seconds = lease_seconds

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    async def claim(self, requests: Sequence[ClaimRequest]) -> dict[str, Claim]:
        now = self._db.clock()
        claims = {}
        asks = []
        for request in requests:
            row = self._db.rows.get(request.event_id)
            before = replace(row) if row is not None else None
            token: int | None = None
            suppressed = request.phone_hash in self._db.suppressions
            canceled = request.cancel_key in self._db.cancellations
            marked = False
            if row is None:
                token = next(self._db.tokens)
                # As the SQL: a first claim nothing stops is marked `sending` at once.
                marked = request.send_hash is not None and not suppressed and not canceled
                row = Row(
                    request.event_id,
                    request.event_type,
                    DeliveryState.SENDING if marked else DeliveryState.CLAIMED,
                    request.phone_hash,
                    self._owner,
                    token,
                    now + self._lease,
                    sending_started_at=now if marked else None,
                    sent_body_hashes=[request.send_hash] if request.send_hash and marked else [],
                )
                self._db.rows[request.event_id] = row
            elif row.state in RESUMABLE and (
                row.lease_until <= now or row.lease_owner == self._owner
            ):
                token = next(self._db.tokens)
                if row.state is DeliveryState.SENDING:  # see the SQL: from the lease's end
                    ended = min(row.lease_until, now)
                    row.doubt_since = max(row.doubt_since or ended, ended)
                    row.state = DeliveryState.RETRY_SCHEDULED
                row.lease_owner, row.lease_token, row.lease_until = (
                    self._owner,
                    token,
                    now + self._lease,
                )
            if request.collapse is not None and token is not None and not suppressed:
                asks.append(CollapseAsk(request.event_id, request.phone_hash, request.collapse))
            prior = before.state if before is not None else None
            doubt = row.doubt_since if token is not None else None
            claims[request.event_id] = Claim(
                event_id=request.event_id,
                outcome=claim_outcome(token, prior, doubt),
                lease_token=token,
                suppressed=suppressed,
                prior_state=prior,
                attempts=before.attempts if before else 0,
                message_sid=before.message_sid if before else None,
                error_code=before.error_code if before else None,
                settled_state=before.settled_state if before else None,
                reported=before.reported if before else False,
                doubt_since=doubt,
                window_start=row.sending_started_at
                if marked
                else (before.sending_started_at if before else None),
                sent_body_hashes=tuple(
                    row.sent_body_hashes if marked else (before.sent_body_hashes if before else ())
                ),
                busy_for=max((before.lease_until - now).total_seconds(), 0.0) if before else 0.0,
                canceled=canceled,
                marked=marked,
            )
        # As PostgreSQL decides it, under its lock per number: here nothing interleaves.
        reasons, opened = collapse(asks, self._db.alert_windows, now)
        self._db.alert_windows.extend(opened)
        return {e: replace(c, collapsed=reasons.get(e)) for e, c in claims.items()}

    async def mark_sending(self, items: Sequence[tuple[str, int, str]]) -> dict[str, datetime]:
        now = self._db.clock()
        started = {}
        for event_id, token, body_hash in items:
            row = self._held(event_id, token)
            if row is None:
                continue
            assert may_move(row.state, DeliveryState.SENDING), (row.state, "sending")
            row.state = DeliveryState.SENDING
            if body_hash not in row.sent_body_hashes:
                row.sent_body_hashes.append(body_hash)
            row.sending_started_at = row.sending_started_at or now
            started[event_id] = row.sending_started_at
        return started

    async def renew(self, leases: Mapping[str, int]) -> set[str]:
        now = self._db.clock()
        renewed = set()
        for event_id, token in leases.items():
            row = self._held(event_id, token)
            if row is not None and row.lease_until > now:  # released or run out: never
                row.lease_until = now + self._lease
                renewed.add(event_id)
        return renewed

    async def settle(self, settlements: Sequence[Settlement]) -> SettleResult:
        now = self._db.clock()
        written, taken = set(), set()
        for s in settlements:
            row = self._held(s.event_id, s.lease_token)
            if row is None:
                continue
            if s.message_sid is not None and self._db.sid_owner(s.message_sid) not in (
                None,
                s.event_id,
            ):
                taken.add(s.event_id)
                continue
            assert may_move(row.state, s.state), (row.state, s.state)
            row.state, row.attempts = s.state, s.attempt
            row.message_sid = s.message_sid or row.message_sid
            row.error_code, row.last_error, row.doubt_since = s.error_code, s.error, s.doubt_since
            row.segments = s.segments or row.segments
            if s.state in CONSUMER_SETTLED:
                row.settled_state, row.reported = s.state, False
            row.lease_until = now
            if s.scheduled is not None:
                self._db.scheduled[s.event_id] = (s.scheduled, now)
            self._db.history.append((s.event_id, s.state, s.attempt))
            written.add(s.event_id)
        return SettleResult(frozenset(written), frozenset(taken))

    async def mark_reported(self, steps: Sequence[tuple[str, DeliveryState]]) -> None:
        for event_id, state in steps:
            row = self._db.rows.get(event_id)
            if row is not None and row.settled_state == state:
                row.reported = True
                if state not in RESUMABLE:  # its final step is on Kafka: nothing to redo
                    self._db.scheduled.pop(event_id, None)

    async def owned_sids(self, sids: Sequence[str], event_id: str) -> set[str]:
        return {sid for sid in sids if self._db.sid_owner(sid) not in (None, event_id)}

    async def suppress(self, phone_hash: str, phone_masked: str, reason: str) -> None:
        self._db.suppressions.setdefault(phone_hash, reason)

    async def take_due(self, limit: int) -> list[ScheduledSend]:
        now = self._db.clock()
        due = sorted(
            (
                send
                for send, taken in self._db.scheduled.values()
                if send.due_at <= now and taken <= now
            ),
            key=lambda send: send.due_at,
        )[:limit]
        for send in due:
            self._db.scheduled[send.event_id] = (send, now + self._lease)
        return due

    async def put_back(self, not_before: Mapping[str, datetime]) -> None:
        for event_id, at in not_before.items():
            if event_id in self._db.scheduled:
                self._db.scheduled[event_id] = (self._db.scheduled[event_id][0], at)

    async def cancel(self, cancels: Sequence[tuple[str, str]]) -> int:
        now = self._db.clock()
        for key, event_id in cancels:
            self._db.cancellations.setdefault(key, event_id)
        keys = {key for key, _ in cancels}
        found = 0
        for event_id, (send, taken) in list(self._db.scheduled.items()):
            if send.cancel_key in keys:
                due = replace(send, due_at=min(send.due_at, now))
                self._db.scheduled[event_id] = (due, min(taken, now))
                found += 1
        return found

    def _held(self, event_id: str, token: int) -> Row | None:
        row = self._db.rows.get(event_id)
        return row if row is not None and row.lease_token == token else None
