"""The scheduling world of the deterministic simulation: appointment reminders that wait.

Some seeds' worlds (`scheduling_seed`) also produce `appointment-reminder` events: with a
future `sendAt` or none, some due inside the world's quiet hours (in the event's zone, in
the number's zone, or in both zones of a number that has two), some whose `startsAt` has
passed, comes while they wait, or is far ahead; some read late (after the chaos began).
Cancels of their appointments are stored before a reminder is read, after it, before
and after its due time (through a consumer's ledger, retried when that consumer dies, as
the cancel reader does), and a STOP of one number comes while its reminders wait. Every
consumer runs the scheduler, so a crash or a freeze may strike at any of its awaits.

The invariants it keeps: tests/dst/scheduling_checks.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime, time, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from schemas.events import AppointmentReminder
from sms_relay.delivery.delivery_ports import Claim, Result
from sms_relay.delivery.scheduler import Scheduler
from sms_relay.kinds.appointment_reminder import APPOINTMENT_REMINDER, AppointmentReminderPolicy
from sms_relay.kinds.event_kind import EventKind
from sms_relay.masking import phone_hash
from tests.dst.harness import (
    CHAOS_SECONDS,
    EPOCH,
    HASH_KEY,
    STOPPED_NUMBER,
    Crashed,
    Node,
    Record,
    World,
)
from tests.dst.scheduling_checks import Create, Reminder, SchedulingInvariants, zones_of

SCHEDULER_INTERVAL = 1.0  # production's default; three times that once the chaos is over
STOPPED_LATER = "+12125550131"  # replies STOP while its reminders wait
TWO_ZONES = "+12085550123"  # Boise and Los Angeles: the quiet hours of both count
NUMBERS = ("+12125550123", "+13125550142", TWO_ZONES, STOPPED_LATER, STOPPED_NUMBER)
# The zones a world's short quiet window is anchored in (local time at the run's start:
# New York 19:00, Chicago 18:00, Boise 17:00, Los Angeles 16:00, Berlin 01:00, Kolkata 05:30).
ANCHORS = ("America/New_York", "America/Chicago", "America/Boise", "America/Los_Angeles")
EXPLICIT_ZONES = ("Europe/Berlin", "Asia/Kolkata", "America/New_York")
# The default 21:00-08:00 holds in Bangkok for the run's first hour (07:00 there).
DEFAULT_WINDOW_ZONES = ("Asia/Bangkok", "America/New_York")


def scheduling_seed(seed: int) -> bool:
    """Half the seeds; the pinned seeds of the other tests (2539, 2560, 2708, 2760) keep
    the worlds they were found in."""
    return seed % 4 in (1, 2)


class _Noted(dict[str, str]):
    """`appointment_cancellations` in memory, noting the moment each cancel is stored."""

    def __init__(self, on_new: Any) -> None:
        super().__init__()
        self._on_new = on_new

    def setdefault(self, key: str, default: str = "") -> str:
        if key not in self:
            self._on_new(key)
        return super().setdefault(key, default)


class SchedulingWorld(SchedulingInvariants):
    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.moments = itertools.count()  # one order for claims, cancels and STOPs
        self.kind: EventKind = APPOINTMENT_REMINDER
        self._actions: list[asyncio.Task[None]] = []
        world.db.cancellations = _Noted(self._cancel_stored)

    # -- the plan

    def start(self) -> None:
        """Draw this world's quiet hours, reminders, cancels and STOP; start acting them."""
        rng = self.world.rng
        quiet, zones = self._draw_window()
        self.kind = APPOINTMENT_REMINDER.configured(
            policy=AppointmentReminderPolicy(quiet_hours=quiet)
        )
        if quiet != "none":
            start, end = quiet.split("-")
            self.window = (time.fromisoformat(start), time.fromisoformat(end))
        appointments = [f"A{self.world.seed}-{n}" for n in range(rng.randint(2, 5))]
        # Cancelled before its reminders are read: those are read late.
        cancel_first = {a for a in appointments if rng.random() < 0.15}
        consent = (datetime.now(EPOCH.tzinfo) - timedelta(days=1)).isoformat()
        for n in range(rng.randint(3, 8)):
            appointment = rng.choice(appointments)
            late = appointment in cancel_first or rng.random() < 0.3
            read_at = rng.uniform(20, CHAOS_SECONDS - 10) if late else 0.0
            send_at = None if rng.random() < 0.3 else rng.uniform(-60, 900)
            phone = rng.choice(NUMBERS)
            zone = rng.choice([None, None, *zones])
            reminder_zones = zones_of(phone, zone)
            base = max(read_at, send_at or 0.0)
            due = self.send_time(EPOCH + timedelta(seconds=base), reminder_zones)
            just_after = (due - EPOCH).total_seconds() if due is not None else base
            starts = rng.choice(
                [
                    base + rng.uniform(3 * 3600, 2 * 86400),  # far ahead: must be sent
                    base + rng.uniform(-60, 1200),  # near: the quiet hours may reach it
                    just_after + rng.uniform(0, 4),  # may expire while it waits
                    read_at - rng.uniform(0, 600),  # started before it was read
                ]
            )
            fields = {
                "eventId": f"appt-{self.world.seed}-{n:03d}",
                "phone": phone,
                "appointmentId": appointment,
                "startsAt": (EPOCH + timedelta(seconds=starts)).isoformat(),
                "consentAt": consent,
                "consentPurpose": "appointments",
            }
            if send_at is not None:
                fields["sendAt"] = (EPOCH + timedelta(seconds=send_at)).isoformat()
            if zone is not None:
                fields["timeZone"] = zone
            event = AppointmentReminder.model_validate(fields)
            reminder = Reminder(event, read_at, reminder_zones)
            self.reminders[event.eventId] = reminder
            self.world.events[event.eventId] = event
            self.world.kinds[event.eventId] = self.kind
            copies = 2 if rng.random() < 0.2 else 1
            for _ in range(copies):
                partition = rng.randint(0, 1)
                self._at(read_at, partial(self._read, reminder, partition))
        for appointment in appointments:
            if appointment in cancel_first:
                self._at(rng.uniform(0, 15), partial(self._cancel, appointment))
            elif rng.random() < 0.35:
                self._at(rng.uniform(0, 1000), partial(self._cancel, appointment))
        if rng.random() < 0.6:
            self._at(rng.uniform(0, 900), partial(self._stop, STOPPED_LATER))

    def _draw_window(self) -> tuple[str, tuple[str, ...]]:
        """The world's quiet hours, and the zones its events may name."""
        rng = self.world.rng
        mode = rng.random()
        if mode < 0.2:
            return "none", EXPLICIT_ZONES
        if mode < 0.45:
            return "21:00-08:00", DEFAULT_WINDOW_ZONES
        # A short window that opens and closes while the reminders wait, in one zone,
        # which some events name (the numbers' own zones may hold it too).
        name = rng.choice([*ANCHORS, *EXPLICIT_ZONES])
        anchor = ZoneInfo(name)
        opens = EPOCH + timedelta(seconds=rng.uniform(-300, 700))
        closes = opens + timedelta(seconds=rng.uniform(120, 1200))
        quiet = f"{opens.astimezone(anchor):%H:%M}-{closes.astimezone(anchor):%H:%M}"
        if quiet[:5] == quiet[6:]:
            quiet = "none"
        return quiet, (name, name, *EXPLICIT_ZONES)

    def _at(self, at: float, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def later() -> None:
            await asyncio.sleep(max(at - self.world.now(), 0.0))
            await action()

        self._actions.append(asyncio.ensure_future(later()))

    async def _read(self, reminder: Reminder, partition: int) -> None:
        record = Record(reminder.event.eventId, reminder.event, kind=self.kind)
        self.world.partitions[f"main-{partition}"].records.append(record)

    async def _cancel(self, appointment: str) -> None:
        """As the cancel reader: stored through a consumer's ledger, again until it is."""
        cancel_id = f"cancel-{appointment}"
        while True:
            live = [n for n in self.world.nodes if n.alive]
            if live:
                try:
                    await live[0].ledger.cancel([(appointment, cancel_id)])
                    self.world.log(f"cancel of {appointment} stored")
                    return
                except Crashed:
                    pass
            await asyncio.sleep(1.0)

    async def _stop(self, phone: str) -> None:
        """An inbound STOP, as the callbacks service stores it."""
        self.stopped[phone] = next(self.moments)
        self.world.db.suppressions.setdefault(phone_hash(HASH_KEY, phone), "stop")
        self.world.log("STOP stored")

    def _cancel_stored(self, appointment: str) -> None:
        self.cancelled[appointment] = next(self.moments)

    # -- the consumers' side

    async def scheduler(self, node: Node) -> None:
        """The consumer's scheduler task (`every(interval, scheduler.run_once)`)."""
        world = self.world

        async def publish(results: Sequence[Result]) -> None:
            await node.checkpoint()
            for result in results:
                if result.report is not None:
                    world.statuses.append((result.job.event.eventId, result.report.value))

        scheduler = Scheduler(
            node.ledger,
            node.service,
            {self.kind.name: self.kind},
            publish,
            batch_size=4,
            clock=node.clock,
        )
        while True:
            await scheduler.run_once()
            await node.clock.sleep(SCHEDULER_INTERVAL if world.chaos else SCHEDULER_INTERVAL * 3)

    def note_claims(self, node: Node, claims: Mapping[str, Claim]) -> None:
        for event_id, claim in claims.items():
            if claim.lease_token is None or event_id not in self.reminders:
                continue
            moment = next(self.moments)
            self.claimed_by[(node.name, event_id)] = moment
            self.first_claim.setdefault(event_id, moment)
            self.last_claim[event_id] = moment

    def note_create(self, node: Node, event_id: str, at: float) -> None:
        if event_id in self.reminders:
            self.creates.append(Create(event_id, at, self.claimed_by.get((node.name, event_id))))

    def settled(self) -> bool:
        """Every action taken and every scheduled send gone (settled for good)."""
        return all(a.done() for a in self._actions) and not self.world.db.scheduled

    async def stop(self) -> None:
        for action in self._actions:
            action.cancel()
        await asyncio.gather(*self._actions, return_exceptions=True)

    def check(self) -> list[str]:
        return self.judge(self.world.db.scheduled)
