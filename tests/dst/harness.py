"""Deterministic simulation of the delivery core: one seed, one world, checked invariants.

The real `DeliveryService` (claims, leases and their heartbeat, reconciliation, retries)
runs on a virtual clock against the in-memory ledger (the one the contract suite holds
to PostgreSQL's behaviour), an adversarial Twilio and a small model of Kafka: partitions
with committed offsets, retry tiers, a DLQ and a group coordinator that moves a dead or
frozen member's partitions after a session timeout. Every call a consumer makes to the
outside (ledger, Twilio, Kafka, sleeping) is a checkpoint where the seed may crash it
(nothing of it runs afterwards, as after a SIGKILL) or freeze it (as after a SIGSTOP).
Crashed consumers are replaced; records come back from the last commit.

Twilio here: 429 bursts, 5xx before and after creating, timeouts before and after
creating, creates that land after the client gave up, unexpected exceptions (an HTML
page), account errors (rotated credentials), list failures, list lag, queued messages
without `date_sent`, either list order, and two events with one number and one body.

Half the seeds' worlds also schedule appointment reminders, with cancels and STOPs while
they wait, and the scheduler runs in every consumer (tests/dst/scheduling.py).

After the chaos the faults stop, the world drains, the DLQ is replayed once, and the
invariants are checked. The guarantee holds under its stated assumption: a consumer's
pause between its last lease check and its request reaching Twilio, plus Twilio's list
lag, stays within the lease margin plus the reconciliation horizon (see docs/exactly-once.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from prometheus_client import CollectorRegistry

from schemas.events import IncidentAlert, OrderShipped, SmsRequested
from sms_relay.adapters.memory.memory_ledger import InMemoryLedger, MemoryDatabase
from sms_relay.clock import LoopClock
from sms_relay.delivery.delivery_ports import (
    Claim,
    ClaimRequest,
    ListedMessage,
    ListedPage,
    Result,
    ScheduledSend,
    SentMessage,
    Settlement,
    SettleResult,
)
from sms_relay.delivery.in_doubt import InDoubtResend
from sms_relay.delivery.pacing import RateLimiter
from sms_relay.delivery.service import DeliveryService
from sms_relay.domain.lease_rules import LEASE_MARGIN_SECONDS
from sms_relay.domain.outcomes import WAITING, Outcome
from sms_relay.domain.retry import RetryPolicy, TierPlan
from sms_relay.domain.segments import count_segments
from sms_relay.domain.states import WITHHELD, DeliveryState
from sms_relay.errors import (
    ProviderAccountError,
    ProviderRejectedError,
    ProviderThrottledError,
    ProviderUnavailableError,
)
from sms_relay.kinds.event_kind import EventKind
from sms_relay.kinds.order_shipped import ORDER_SHIPPED
from sms_relay.masking import body_hash, phone_hash
from sms_relay.metrics import ConsumerMetrics
from tests.dst.alerts import BURSTS, alert_burst, check_alerts, expected_ends, job_for
from tests.dst.alerts import kind_of as kind_of_event
from tests.dst.vloop import VirtualTimeLoop

if TYPE_CHECKING:
    from tests.dst.scheduling import SchedulingWorld

T = TypeVar("T")
S = DeliveryState
HASH_KEY = "simulation-hash-key"
EPOCH = datetime(2026, 12, 1, tzinfo=UTC)
FAIL_NUMBER = "+15005550001"  # Twilio's magic "invalid number" (21211)
STOPPED_NUMBER = "+12125550199"  # opted out before the run
NUMBERS = ("+12125550123", "+12125550124", "+13125550142", FAIL_NUMBER, STOPPED_NUMBER)

# The consumer's settings in the simulation: production's defaults, shorter tiers.
LEASE = 13.0
CALL_DEADLINE = 10.0
SETTLE = 3.0
HORIZON = 10.0
TIERS = (30.0, 120.0, 300.0)  # retry tiers 1, 2, 3 (named by position, like the topics)
# Every third seed's replacement consumers run with other delays (a redeploy that changed
# SMS_RETRY_TIERS): records already waiting keep the due time they carry.
REDEPLOYED_TIERS = (120.0, 30.0, 600.0)
SESSION_TIMEOUT = 10.0
MAX_LIST_LAG = 2.0
NETWORK = 0.3  # most a request takes to reach Twilio
# A longer freeze between a lease check and a create could outlast the horizon: that is
# the guarantee's stated assumption, so the simulation stays inside it.
MAX_FREEZE = CALL_DEADLINE + LEASE_MARGIN_SECONDS + HORIZON - MAX_LIST_LAG - NETWORK - 0.5
# A late create lands up to this long after its request: to the next holder, list lag. So
# right after a longer pause it would outlast the horizon too; there Twilio creates at once.
LATE_CREATE = CALL_DEADLINE + 2.0
MAX_PAUSE_BEFORE_LATE_CREATE = MAX_FREEZE - LATE_CREATE
BATCH = 4
IDLE_POLL = 1.0  # an idle consumer looks again after this (virtual) time
CHAOS_SECONDS = 120.0
DRAIN_LIMIT_SECONDS = 6 * 3600.0


class Crashed(BaseException):
    """The consumer was killed here: nothing of it runs afterwards."""


def repro(seed: int) -> str:
    return f"make soak SEED={seed}"


# ----------------------------------------------------------------------------- Twilio


@dataclass
class FakeMessage:
    sid: str
    to: str
    body_hash: str
    event_id: str
    created_at: float
    visible_at: float  # list lag
    sent_at: float  # leaves the sender's queue (no date_sent before)


@dataclass
class Faults:
    rate_429: float
    rate_uncertain: float  # 5xx/timeouts/drops, before or after creating
    rate_list_error: float
    burst_429: tuple[float, float]  # a window of mostly 429s
    account_window: tuple[float, float]  # credentials rotated: every create is 20003
    queue_seconds: float
    list_by_date_sent: bool  # Twilio's list order: by DateSent (queued first) or creation


class AdversarialTwilio:
    def __init__(self, rng: random.Random, clock: LoopClock, faults: Faults) -> None:
        self._rng = rng
        self._clock = clock
        self.faults = faults
        self.faulty = True
        self.messages: list[FakeMessage] = []
        self._pending: set[asyncio.Task[None]] = set()
        # Fates of the next creates to a number, before any drawn (the contract suite's).
        self.scripts: dict[str, list[str]] = {}

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def create(
        self, to: str, body: str, status_callback: str | None, paused: float = 0.0
    ) -> SentMessage:
        """`paused`: how long the client was frozen right before this request."""
        event_id = unquote((status_callback or "").rsplit("=", 1)[-1])
        fate = self._fate(to)
        if fate == "late_create" and paused > MAX_PAUSE_BEFORE_LATE_CREATE:
            fate = "hang_after_create"
        answer: asyncio.Future[SentMessage] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Twilio works on the request whatever becomes of the client that sent it.
        server = asyncio.ensure_future(self._serve(fate, to, body, event_id, answer))
        self._pending.add(server)
        server.add_done_callback(self._pending.discard)
        try:
            async with asyncio.timeout(CALL_DEADLINE):
                return await asyncio.shield(answer)
        except TimeoutError:
            raise ProviderUnavailableError("twilio timeout") from None

    def _fate(self, to: str) -> str:
        if self.scripts.get(to):
            return self.scripts[to].pop(0)
        if to == FAIL_NUMBER:
            return "recipient"
        if not self.faulty:
            return "ok"
        now, f, roll = self.now(), self.faults, self._rng.random()
        in_burst = f.burst_429[0] <= now < f.burst_429[1] and roll < 0.8
        fate = "ok"
        if f.account_window[0] <= now < f.account_window[1]:
            fate = "account"
        elif in_burst or roll < f.rate_429:
            fate = "429"
        elif roll < f.rate_429 + f.rate_uncertain:
            fate = self._rng.choice(
                ["500", "500_after_create", "hang", "hang_after_create", "late_create", "html"]
            )
        return fate

    async def _serve(
        self, fate: str, to: str, body: str, event_id: str, answer: asyncio.Future[SentMessage]
    ) -> None:
        rng = self._rng
        await asyncio.sleep(rng.uniform(0.01, NETWORK))
        errors: dict[str, Exception] = {
            "429": ProviderThrottledError("twilio throttled", code=20429, status=429),
            "500": ProviderUnavailableError("twilio 500", code=20500, status=500),
            "recipient": ProviderRejectedError("twilio 400", code=21211, status=400),
            "account": ProviderAccountError("twilio 401", code=20003, status=401),
        }
        if fate in errors:
            answer.set_exception(errors[fate])
            return
        if fate == "hang":
            return
        if fate == "late_create":  # Twilio still works on it after the client gave up
            await asyncio.sleep(CALL_DEADLINE + rng.uniform(0, LATE_CREATE - CALL_DEADLINE))
        created = self._create(to, body, event_id)
        if fate in ("hang_after_create", "late_create"):
            return
        await asyncio.sleep(rng.uniform(0.01, 0.2))
        if answer.done():
            return
        if fate == "500_after_create":
            answer.set_exception(ProviderUnavailableError("twilio 500", code=20500, status=500))
        elif fate == "html":  # an egress proxy's error page: the SDK raises ValueError
            answer.set_exception(ValueError("Expecting value: line 1 column 1 (char 0)"))
        else:
            answer.set_result(SentMessage(created.sid, "queued"))

    def _create(self, to: str, body: str, event_id: str) -> FakeMessage:
        now = self.now()
        lag = self._rng.uniform(0, MAX_LIST_LAG) if self.faulty else 0.0
        queue = self._rng.uniform(0, self.faults.queue_seconds)
        sid = "SM" + hashlib.sha256(f"{len(self.messages)}:{event_id}".encode()).hexdigest()[:32]
        message = FakeMessage(sid, to, body_hash(body), event_id, now, now + lag, now + queue)
        self.messages.append(message)
        return message

    async def list_page(self, to: str, page: str | None) -> ListedPage:
        await asyncio.sleep(self._rng.uniform(0.01, 0.2))
        if self.faulty and self._rng.random() < self.faults.rate_list_error:
            raise ProviderUnavailableError("twilio 503", code=20503, status=503)
        now = self.now()
        visible = [m for m in self.messages if m.to == to and m.visible_at <= now]
        if self.faults.list_by_date_sent:  # queued (no date_sent) first, then by DateSent
            visible.sort(key=lambda m: (m.sent_at <= now, -m.sent_at, -m.created_at))
        else:
            visible.sort(key=lambda m: -m.created_at)
        start = int(page or 0)
        chunk = visible[start : start + 2]
        listed = [
            ListedMessage(
                m.sid,
                m.body_hash,
                EPOCH + timedelta(seconds=m.created_at),
                EPOCH + timedelta(seconds=m.sent_at) if m.sent_at <= now else None,
            )
            for m in chunk
        ]
        more = start + 2 < len(visible)
        return ListedPage(listed, str(start + 2) if more else None)


# ----------------------------------------------------------------------------- Kafka


@dataclass
class Record:
    event_id: str
    event: SmsRequested
    attempts: int = 0
    tier: int = -1
    not_before: float = 0.0
    kind: EventKind = ORDER_SHIPPED


@dataclass
class Partition:
    name: str
    records: list[Record] = field(default_factory=list)
    committed: int = 0
    owner: Node | None = None
    # Bumped at every assignment: work fetched under an earlier one must neither move
    # the position nor hold records, even when the partition is ours again (the real
    # loop's generations, consumer/loop.py).
    epoch: int = 0

    def assign(self, owner: Node | None) -> None:
        self.owner = owner
        self.epoch += 1


# ----------------------------------------------------------------------------- consumers


class Node:
    """One consumer process."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name
        self.alive = True
        self.frozen_until = 0.0
        self.frozen_for = 0.0  # the length of the last freeze
        self.last_seen = world.now()
        # A list, not a set: a set of tasks iterates in address order, so a crash would
        # cancel them in an order that depends on the process's memory, not the seed.
        self.tasks: list[asyncio.Task[Any]] = []
        self.held: dict[tuple[str, int], tuple[float, Record]] = {}
        self.positions: dict[str, int] = {}
        self.metrics = ConsumerMetrics(CollectorRegistry())
        self.clock = clock = NodeClock(self, world.clock)
        self.ledger = ledger = CheckedLedger(self, InMemoryLedger(world.db, name, LEASE))
        rng = world.rng
        self.service = DeliveryService(
            ledger,
            CheckedTwilio(self, world.twilio),
            limiter=RateLimiter(10.0, 5.0, clock=clock.monotonic, sleep=clock.sleep),
            concurrency=4,
            policy=RetryPolicy(3, 0.5, 8.0, uniform=rng.random),
            tiers=TierPlan(
                REDEPLOYED_TIERS if world.seed % 3 == 0 and len(world.nodes) >= 2 else TIERS
            ),
            metrics=self.metrics,
            phone_hash_key=HASH_KEY,
            public_base_url="http://callbacks.invalid",
            settle_seconds=SETTLE,
            horizon_seconds=HORIZON,
            request_timeout_seconds=CALL_DEADLINE,
            in_doubt_resend=world.resend,
            clock=clock,
            uniform=rng.random,
        )

    def start(self) -> None:
        stop = asyncio.Event()
        scheduler = [self.world.scheduling.scheduler(self)] if self.world.scheduling else []
        for work in (
            self._consume(),
            self._offer_held(),
            self.service.leases.heartbeat(stop),
            *scheduler,
        ):
            task = asyncio.ensure_future(work)
            self.tasks.append(task)

    async def checkpoint(self) -> None:
        world = self.world
        if not self.alive:
            raise Crashed
        if world.chaos and world.rng.random() < world.crash_rate:
            world.crash(self)
            raise Crashed
        if world.chaos and world.rng.random() < world.freeze_rate:
            self.frozen_for = world.rng.uniform(1.0, MAX_FREEZE)
            self.frozen_until = world.now() + self.frozen_for
            world.freezes += 1
            world.log(f"{self.name} frozen until {self.frozen_until:.1f}")
        if world.now() < self.frozen_until - 1e-6:  # float sums may fall just short
            await asyncio.sleep(self.frozen_until - world.now() + 1e-6)
        if not self.alive:
            raise Crashed

    def owned(self) -> list[Partition]:
        return [p for p in self.world.partitions.values() if p.owner is self]

    async def _consume(self) -> None:
        world = self.world
        while True:
            await self.checkpoint()
            batch: list[tuple[Partition, int, Record]] = []
            for partition in self.owned():
                position = self.positions.setdefault(partition.name, partition.committed)
                while position < len(partition.records) and len(batch) < BATCH:
                    record = partition.records[position]
                    if record.not_before > world.now():
                        break  # a retry tier's head not due: the partition waits
                    batch.append((partition, position, record))
                    position += 1
            if not batch:
                await asyncio.sleep(IDLE_POLL if world.chaos else IDLE_POLL * 5)
                continue
            epochs = {p.name: p.epoch for p, _, _ in batch}
            await self._process(batch, epochs)
            for partition in {p.name: p for p, _, _ in batch}.values():
                if self._still_ours(partition, epochs):
                    end = max(o + 1 for p, o, _ in batch if p is partition)
                    self.positions[partition.name] = end
            await self.checkpoint()
            self._commit()

    async def _offer_held(self) -> None:
        world = self.world
        while True:
            await asyncio.sleep(IDLE_POLL if world.chaos else IDLE_POLL * 5)
            due = sorted(
                (key, record)
                for key, (when, record) in self.held.items()
                if when <= world.now() and self.world.partitions[key[0]].owner is self
            )
            if not due:
                continue
            unique: dict[str, tuple[tuple[str, int], Record]] = {}
            for key, record in due:
                unique.setdefault(record.event_id, (key, record))
            marks = {}
            for key, record in unique.values():  # still held (no commit passes) meanwhile
                marks[key] = self.held[key] = (float("inf"), record)
            epochs = {k[0]: world.partitions[k[0]].epoch for k, _ in unique.values()}
            offered = [(world.partitions[k[0]], k[1], r) for k, r in unique.values()]
            await self._process(offered, epochs)
            for key, mark in marks.items():  # settled; what must wait again was held anew
                if self.held.get(key) is mark:  # not newer work's hold of the same offset
                    del self.held[key]
            await self.checkpoint()
            self._commit()

    def _still_ours(self, partition: Partition, epochs: Mapping[str, int]) -> bool:
        return partition.owner is self and partition.epoch == epochs[partition.name]

    async def _process(
        self, batch: Sequence[tuple[Partition, int, Record]], epochs: Mapping[str, int]
    ) -> None:
        jobs: dict[str, tuple[Partition, int, Record]] = {}
        for partition, offset, record in batch:
            jobs.setdefault(record.event_id, (partition, offset, record))
        results = await self.service.process(
            [job_for(r.event, r.attempts, r.tier, r.kind) for _, _, r in jobs.values()]
        )
        reported = []
        for result in results:
            partition, offset, record = jobs[result.job.event.eventId]
            if result.outcome in WAITING:
                if self._still_ours(partition, epochs):  # else the new owner reads it
                    due = self.world.now() + result.wait_seconds
                    self.held[(partition.name, offset)] = (due, record)
                continue
            await self.checkpoint()
            self.world.publish(result, record)
            if result.report is not None:
                reported.append((result.job.event.eventId, result.report))
        await self.service.mark_reported(reported)

    def _commit(self) -> None:
        """Commit what is done, never past a held record; a fenced member commits nothing."""
        for partition in self.owned():
            target = self.positions.get(partition.name, partition.committed)
            held = [o for (name, o) in self.held if name == partition.name]
            target = min([target, *held])
            partition.committed = max(partition.committed, target)


class NodeClock(LoopClock):
    def __init__(self, node: Node, clock: LoopClock) -> None:
        super().__init__(EPOCH)
        self._node = node

    async def sleep(self, seconds: float) -> None:
        await self._node.checkpoint()
        await asyncio.sleep(seconds)
        await self._node.checkpoint()


class CheckedLedger:
    """The ledger as one consumer reaches it: every call is a crash point before and
    after (after: the write happened, the answer never arrived)."""

    def __init__(self, node: Node, ledger: InMemoryLedger) -> None:
        self._node = node
        self._ledger = ledger

    @property
    def lease_seconds(self) -> float:
        return self._ledger.lease_seconds

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        await self._node.checkpoint()
        try:
            result = await work()
        except AssertionError as error:
            # The in-memory ledger asserts every move against TRANSITIONS. The service may
            # take the error for one more uncertain send, or a batch that raises it only
            # stalls its consumer: the world notes it here, so the seed fails by name.
            self._node.world.broken.append(f"a move outside TRANSITIONS: {error}")
            raise
        await self._node.checkpoint()
        return result

    async def claim(self, requests: Sequence[ClaimRequest]) -> dict[str, Claim]:
        async def claim_and_note() -> dict[str, Claim]:
            claims = await self._ledger.claim(requests)
            if self._node.world.scheduling:  # the order of claims, cancels and STOPs
                self._node.world.scheduling.note_claims(self._node, claims)
            return claims

        return await self._call(claim_and_note)

    async def take_due(self, limit: int) -> list[ScheduledSend]:
        return await self._call(lambda: self._ledger.take_due(limit))

    async def put_back(self, not_before: Mapping[str, datetime]) -> None:
        await self._call(lambda: self._ledger.put_back(not_before))

    async def cancel(self, cancels: Sequence[tuple[str, str]]) -> int:
        return await self._call(lambda: self._ledger.cancel(cancels))

    async def mark_sending(self, items: Sequence[tuple[str, int, str]]) -> dict[str, datetime]:
        return await self._call(lambda: self._ledger.mark_sending(items))

    async def renew(self, leases: Mapping[str, int]) -> set[str]:
        async def renew_and_check() -> set[str]:
            renewed = await self._ledger.renew(leases)
            released = self._node.world.released
            for event_id in renewed:
                if (event_id, leases[event_id]) in released:
                    self._node.world.broken.append(
                        f"{event_id}: a heartbeat renewed the lease its settle had released"
                    )
            return renewed

        return await self._call(renew_and_check)

    async def settle(self, settlements: Sequence[Settlement]) -> SettleResult:
        async def settle_and_note() -> SettleResult:
            result = await self._ledger.settle(settlements)
            tokens = {s.event_id: s.lease_token for s in settlements}
            self._node.world.released.update((e, tokens[e]) for e in result.written)
            return result

        return await self._call(settle_and_note)

    async def mark_reported(self, steps: Sequence[tuple[str, DeliveryState]]) -> None:
        await self._call(lambda: self._ledger.mark_reported(steps))

    async def owned_sids(self, sids: Sequence[str], event_id: str) -> set[str]:
        return await self._call(lambda: self._ledger.owned_sids(sids, event_id))

    async def suppress(self, phone_hash: str, phone_masked: str, reason: str) -> None:
        await self._call(lambda: self._ledger.suppress(phone_hash, phone_masked, reason))


class CheckedTwilio:
    def __init__(self, node: Node, twilio: AdversarialTwilio) -> None:
        self._node = node
        self._twilio = twilio

    async def send(
        self, to: str, body: str, status_callback: str | None, validity_seconds: int | None = None
    ) -> SentMessage:
        decided_at = self._node.world.now()  # before a pause, as the process decided it
        await self._node.checkpoint()
        event_id = unquote((status_callback or "").rsplit("=", 1)[-1])
        self._node.world.log(f"{self._node.name} creates for {event_id}")
        if self._node.world.scheduling:
            self._node.world.scheduling.note_create(self._node, event_id, decided_at)
        # Just woken from a freeze: the pause came between its lease check and this request.
        woken = abs(self._node.world.now() - self._node.frozen_until) < 1e-3
        paused = self._node.frozen_for if woken else 0.0
        sent = await self._twilio.create(to, body, status_callback, paused)
        await self._node.checkpoint()
        return sent

    async def list_page(self, to: str, page: str | None) -> ListedPage:
        await self._node.checkpoint()
        listed = await self._twilio.list_page(to, page)
        await self._node.checkpoint()
        return listed


# ----------------------------------------------------------------------------- the world


@dataclass
class Outcomes:
    violations: list[str]
    events: int
    messages: int
    crashes: int
    freezes: int
    virtual_seconds: float


class World:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        rng = self.rng
        self.clock = LoopClock(EPOCH)
        self.db = MemoryDatabase(clock=self.clock.now)
        start_429 = rng.uniform(0, CHAOS_SECONDS)
        start_account = rng.uniform(0, CHAOS_SECONDS) if rng.random() < 0.3 else -1.0
        self.twilio = AdversarialTwilio(
            rng,
            self.clock,
            Faults(
                rate_429=rng.choice([0.0, 0.05, 0.2]),
                rate_uncertain=rng.choice([0.0, 0.1, 0.3, 0.5]),
                rate_list_error=rng.choice([0.0, 0.1, 0.3]),
                burst_429=(start_429, start_429 + rng.uniform(0, 10)),
                account_window=(start_account, start_account + rng.uniform(0, 40)),
                queue_seconds=rng.choice([0.0, 5.0, 60.0]),
                list_by_date_sent=rng.random() < 0.5,
            ),
        )
        self.resend = InDoubtResend.NEVER if seed % 5 == 0 else InDoubtResend.AFTER_HORIZON
        self.crash_rate = rng.choice([0.0, 0.003, 0.01])
        self.freeze_rate = rng.choice([0.0, 0.002])
        self.chaos = True
        self.partitions: dict[str, Partition] = {}
        for i in range(2):
            self.partitions[f"main-{i}"] = Partition(f"main-{i}")
        for position in range(1, len(TIERS) + 1):
            self.partitions[f"retry-{position}"] = Partition(f"retry-{position}")
        self.dlq: list[Record] = []
        self.statuses: list[tuple[str, str]] = []
        self.nodes: list[Node] = []
        self.crashes = 0
        self.freezes = 0
        self.trace: list[str] = []
        self.events: dict[str, SmsRequested] = {}
        self.kinds: dict[str, EventKind] = {}  # the reminders (alerts are known by their type)
        # Some seeds' worlds also schedule appointment reminders (tests/dst/scheduling.py).
        self.scheduling: SchedulingWorld | None = None
        self.virtual_seconds = 0.0
        # Broken while the world ran (checked as it happens, reported by check()).
        self.broken: list[str] = []
        self.released: set[tuple[str, int]] = set()  # (event id, token) a settle released
        from tests.dst import scheduling  # here: it builds on this module

        if scheduling.scheduling_seed(seed):
            self.scheduling = scheduling.SchedulingWorld(self)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def log(self, line: str) -> None:
        self.trace.append(f"{self.now():9.3f} {line}")

    # -- input

    def produce_events(self) -> None:
        rng = self.rng
        count = rng.randint(6, 14)
        consent = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        for i in range(count):
            event_id = f"evt-{self.seed}-{i:03d}"
            phone = rng.choice(NUMBERS)
            # Some events share a number and a body (same order id): reconciliation must
            # not hand one of them the other's message.
            order = str(rng.randint(1, 3)) if rng.random() < 0.4 else f"{self.seed}{i}"
            event = OrderShipped.model_validate(
                {"eventId": event_id, "phone": phone, "orderId": order, "consentAt": consent}
            )
            self.events[event_id] = event
            copies = 2 if rng.random() < 0.3 else 1
            for _ in range(copies):
                partition = self.partitions[f"main-{rng.randint(0, 1)}"]
                partition.records.append(Record(event_id, event))
        self.db.suppressions[phone_hash(HASH_KEY, STOPPED_NUMBER)] = "stop"

    async def produce_alerts(self) -> None:
        """Bursts of alerts while the chaos runs, each record on a random main partition."""
        for burst, at in enumerate(BURSTS):
            await asyncio.sleep(max(at - self.now(), 0.0))
            for alert in alert_burst(self.rng, self.seed, burst, EPOCH, self.now(), NUMBERS):
                self.events[alert.eventId] = alert
                partition = self.partitions[f"main-{self.rng.randint(0, 1)}"]
                partition.records.append(Record(alert.eventId, alert))

    # -- Kafka's side of the consumers

    def publish(self, result: Result, record: Record) -> None:
        if result.outcome is Outcome.RETRY_SCHEDULED and result.retry_tier is not None:
            position, delay = result.retry_tier
            due = self.now() + delay  # the due time travels with the record
            again = replace(record, attempts=result.attempts, tier=position - 1, not_before=due)
            self.partitions[f"retry-{position}"].records.append(again)
        if result.outcome is Outcome.DEAD_LETTERED:
            self.dlq.append(replace(record, attempts=result.attempts, tier=-1, not_before=0.0))
        if result.report is not None:
            self.statuses.append((record.event_id, result.report.value))

    def crash(self, node: Node) -> None:
        node.alive = False
        self.crashes += 1
        self.log(f"{node.name} crashed")
        for task in node.tasks:
            task.cancel()

    def join(self) -> Node:
        node = Node(self, f"node-{len(self.nodes)}")
        self.nodes.append(node)
        node.start()
        orphans = [p for p in self.partitions.values() if p.owner is None]
        for partition in orphans:
            partition.assign(node)
        return node

    async def coordinate(self) -> None:
        """Heartbeats, evictions after the session timeout, replacements for the dead."""
        while True:
            await asyncio.sleep(1.0)
            now = self.now()
            for node in self.nodes:
                if node.alive and now >= node.frozen_until:
                    node.last_seen = now
            # A killed or frozen member keeps its partitions until its session times out.
            members = [n for n in self.nodes if now - n.last_seen <= SESSION_TIMEOUT]
            for partition in self.partitions.values():
                owner = partition.owner
                if owner is not None and owner not in members:
                    partition.assign(None)
                    owner.positions.pop(partition.name, None)
                    owner.held = {k: v for k, v in owner.held.items() if k[0] != partition.name}
            live = [n for n in self.nodes if n.alive]
            if len(live) < 2:
                self.join()
            members = [n for n in self.nodes if n.alive and now - n.last_seen <= SESSION_TIMEOUT]
            for partition in self.partitions.values():
                if partition.owner is None and members:
                    owner = min(members, key=lambda n: len(n.owned()))
                    partition.assign(owner)
                    owner.positions.pop(partition.name, None)

    def drained(self) -> bool:
        if any(p.committed < len(p.records) for p in self.partitions.values()):
            return False
        owned = {p.name: p.owner for p in self.partitions.values()}
        return not any(owned[name] is n for n in self.nodes for name, _ in n.held)

    def finished(self) -> bool:
        """Drained, or failed already (a broken invariant needs no drain to be reported)."""
        waiting = self.scheduling is not None and not self.scheduling.settled()
        return (self.drained() and not waiting) or bool(self.broken)

    def replay_dlq(self) -> None:
        """`sms-relay dlq replay`: reopen the dead-lettered rows, back onto the first tier."""
        for record in self.dlq:
            row = self.db.rows.get(record.event_id)
            if row is not None and row.state is S.DEAD_LETTERED:
                row.state, row.lease_until = S.RETRY_SCHEDULED, self.clock.now()
                again = replace(record, tier=0, not_before=self.now())
                self.partitions["retry-1"].records.append(again)
        self.dlq = []

    # -- the run

    async def run(self) -> None:
        self.produce_events()
        coordinator = asyncio.ensure_future(self.coordinate())
        alerts = asyncio.ensure_future(self.produce_alerts())
        if self.scheduling is not None:
            self.scheduling.start()
        self.join()
        self.join()
        await asyncio.sleep(CHAOS_SECONDS)
        await alerts
        self.chaos = False
        self.twilio.faulty = False
        for replay in (False, True):
            if replay:
                self.replay_dlq()
            deadline = self.now() + DRAIN_LIMIT_SECONDS
            while not self.finished() and self.now() < deadline:  # noqa: ASYNC110 - polls a model
                await asyncio.sleep(5.0)
        coordinator.cancel()
        for node in self.nodes:
            for task in node.tasks:
                task.cancel()
        pending = [t for n in self.nodes for t in n.tasks] + [coordinator]
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self.twilio._pending, return_exceptions=True)
        if self.scheduling is not None:
            await self.scheduling.stop()

    def check(self) -> list[str]:
        """The invariants, as a list of what broke (empty when all hold).

        Two events with one number and one body are the same SMS to Twilio, so messages
        are counted per (number, body): each message created is held by exactly one
        event of its group (none sent twice, none lost track of), and each event holds
        one, or ends failed, suppressed or, under SMS_IN_DOUBT_RESEND=never, dead-lettered
        in doubt (counted and alerted).
        """
        problems = list(self.broken)
        if not self.drained():
            problems.append("the world did not drain: records left uncommitted or held")
        groups: dict[tuple[str, str], list[str]] = {}
        for event_id, event in self.events.items():
            key = (event.phone, body_hash(self.kind_of(event_id).render(event)))
            groups.setdefault(key, []).append(event_id)
        created: dict[tuple[str, str], set[str]] = {}
        for message in self.messages():
            created.setdefault((message.to, message.body_hash), set()).add(message.sid)
        for key, members in groups.items():
            sids = created.pop(key, set())
            held = [self.db.rows[e].message_sid for e in members if e in self.db.rows]
            held_sids = [sid for sid in held if sid is not None]
            if len(held_sids) != len(set(held_sids)):
                problems.append(f"{members}: two events hold one SID")
            if set(held_sids) - sids:
                problems.append(f"{members}: a SID that is no message of theirs")
            if sids - set(held_sids):
                extra = len(sids - set(held_sids))
                problems.append(f"{members}: {extra} message(s) created that no event holds")
        if created:
            problems.append(f"messages of no event: {sorted(created)}")
        for event_id, event in self.events.items():
            problems.extend(self._check_end(event_id, event))
        creates: dict[str, list[float]] = {}
        for message in self.messages():
            creates.setdefault(message.event_id, []).append(message.created_at)
        # The expiry is checked before each create; a pause of the guarantee's stated size
        # may fall between that check and the request reaching Twilio.
        slack = MAX_FREEZE + CALL_DEADLINE + NETWORK
        problems.extend(check_alerts(self.events, self.db, creates, EPOCH, slack))
        problems.extend(self._check_segments())
        if self.scheduling is not None:
            problems.extend(self.scheduling.check())
        resends = sum(_count(n.metrics, "sms_relay_in_doubt_resends_total") for n in self.nodes)
        if self.resend is InDoubtResend.NEVER and resends:
            problems.append(f"{resends:g} in-doubt resends although SMS_IN_DOUBT_RESEND=never")
        return problems

    def _check_segments(self) -> list[str]:
        """Every row that sent records its body's segments and encoding, one suppressed
        before it rendered records none; the metric, summed over every consumer (the dead
        too), counts at least the segments of every message held. A crash between the
        count and the settle may count one twice, never none: the count comes first."""
        problems = []
        held: dict[tuple[str, str], int] = {}  # (kind, encoding) -> segments of messages held
        for event_id, event in self.events.items():
            row = self.db.rows.get(event_id)
            if row is None:
                continue
            kind = self.kind_of(event_id)
            expected = count_segments(kind.render(event))
            if row.state in (S.ACCEPTED, S.FAILED) and row.segments != expected:
                problems.append(f"{event_id}: {row.state} records {row.segments}, not {expected}")
            if row.sent_body_hashes == [] and row.segments is not None:
                problems.append(f"{event_id}: segments recorded although nothing was sent")
            if row.message_sid is not None:
                labels = (kind.name, expected.encoding)
                held[labels] = held.get(labels, 0) + expected.segments
        for (kind_name, encoding), segments in sorted(held.items()):
            counted = sum(
                _count(n.metrics, "sms_relay_segments_total", kind=kind_name, encoding=encoding)
                for n in self.nodes
            )
            if counted < segments:
                problems.append(
                    f"{kind_name} {encoding} segments counted {counted:g}, fewer than the "
                    f"{segments} sent"
                )
        return problems

    def kind_of(self, event_id: str) -> EventKind:
        return self.kinds.get(event_id) or kind_of_event(self.events[event_id])

    def _check_end(self, event_id: str, event: SmsRequested) -> list[str]:
        row = self.db.rows.get(event_id)
        if row is None:
            return [f"{event_id}: never claimed"]
        problems = []
        state = row.state
        unresolved = row.last_error == "in_doubt_unresolved"
        if unresolved and (self.resend is not InDoubtResend.NEVER or row.doubt_since is None):
            problems.append(f"{event_id}: dead-lettered in doubt without the policy")
        if isinstance(event, IncidentAlert):
            expected = expected_ends(event, STOPPED_NUMBER, FAIL_NUMBER)
        elif event.phone == STOPPED_NUMBER:
            expected = {S.SUPPRESSED}
        elif event.phone == FAIL_NUMBER:
            expected = {S.FAILED}
        else:
            expected = {S.ACCEPTED}
        if self.scheduling is not None and event_id in self.kinds:
            expected = self.scheduling.expected_ends(event_id)
        if unresolved and state is S.DEAD_LETTERED:
            expected.add(S.DEAD_LETTERED)
        if state not in expected:
            problems.append(f"{event_id}: ended {state}, expected {sorted(expected)}")
        if (state is S.ACCEPTED) != (row.message_sid is not None):
            problems.append(f"{event_id}: {state} with SID {row.message_sid}")
        # A doubt kept by a cancel or an expiry was reconciled to the horizon: none found.
        if row.doubt_since is not None and state not in (S.DEAD_LETTERED, S.SUPPRESSED, *WITHHELD):
            problems.append(f"{event_id}: a doubt left unresolved and unseen in {state}")
        if row.settled_state is not None and not row.reported:
            problems.append(f"{event_id}: its {row.settled_state} step was never published")
        return problems

    def messages(self) -> list[FakeMessage]:
        return self.twilio.messages


def _count(metrics: ConsumerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def run_world(seed: int) -> World:
    """Run one seed's world to its end on a fresh virtual-time loop."""
    logger = logging.getLogger("sms_relay")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # the chaos is meant; other tests' logs are not ours
    loop = VirtualTimeLoop()
    # Killed consumers leave tasks with unretrieved exceptions behind: that is the point.
    loop.set_exception_handler(lambda _loop, _context: None)
    world = World(seed)
    try:
        loop.run_until_complete(world.run())
        world.virtual_seconds = loop.time()
    finally:
        loop.close()
        logger.setLevel(level)
    return world


def simulate(seed: int) -> Outcomes:
    """Run one seed to the end and check it."""
    world = run_world(seed)
    return Outcomes(
        world.check(),
        len(world.events),
        len(world.messages()),
        world.crashes,
        world.freezes,
        world.virtual_seconds,
    )


def fingerprint(seed: int) -> str:
    """A digest of everything a run did, to prove runs repeat exactly."""
    world = run_world(seed)
    parts = [f"{m.sid}:{m.event_id}:{m.created_at:.6f}" for m in world.messages()]
    parts += [
        f"{r.event_id}:{r.state}:{r.message_sid}:{r.attempts}" for r in world.db.rows.values()
    ]
    parts += world.trace
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
