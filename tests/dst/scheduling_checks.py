"""The scheduling world's invariants, judged after the run from what it recorded as it ran:

- no create was made inside the quiet hours in any of the recipient's zones, nor at or
  after `startsAt`, nor before `sendAt` (at the moment the consumer made it, before any
  pause of the process: a pause after that is the guarantee's stated assumption);
- no create was made under a claim taken after the appointment's cancel, or the number's
  STOP, was stored (the checks run at every claim; a claim taken before may still send);
- exactly once: every reminder ends as the world allows and no other way (sent, unless
  it was cancelled or stopped before its first claim, must expire, or might have expired
  because its start came close), and the harness's own checks hold each message to
  exactly one event; no scheduled send is left behind.

Quiet hours and expiry are judged here without the product's code: the window is read off
each zone's wall clock by this module, the zones of a number from `phonenumbers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_zones

from schemas.events import AppointmentReminder
from sms_relay.domain.states import DeliveryState
from tests.dst.harness import EPOCH, STOPPED_NUMBER

S = DeliveryState
# Longer than the chaos can delay a due send (retry tiers, takeovers, replays).
SLACK = timedelta(hours=2)


@dataclass(frozen=True)
class Reminder:
    event: AppointmentReminder
    read_at: float  # when its record reaches the topic (virtual seconds)
    zones: tuple[tzinfo, ...]


@dataclass(frozen=True)
class Create:
    event_id: str
    at: float  # virtual seconds, when the consumer made it
    claim: int | None  # the moment of the claim it was made under


class SchedulingInvariants:
    """What the world saw (reminders, the order of claims, cancels and STOPs, every
    create) and what it must have come to."""

    def __init__(self) -> None:
        self.reminders: dict[str, Reminder] = {}
        self.window: tuple[time, time] | None = None
        self.claimed_by: dict[tuple[str, str], int] = {}  # (node, event id) -> moment
        self.first_claim: dict[str, int] = {}
        self.last_claim: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}  # appointment id -> moment stored
        self.stopped: dict[str, int] = {STOPPED_NUMBER: -1}  # number -> moment stored
        self.creates: list[Create] = []

    def judge(self, left_behind: Iterable[str]) -> list[str]:
        """What broke (empty when every invariant holds)."""
        problems = [f"{e}: a scheduled send left behind" for e in left_behind]
        for create in self.creates:
            problems.extend(self._check_create(create))
        return problems

    def _check_create(self, create: Create) -> list[str]:
        reminder = self.reminders[create.event_id]
        event, at = reminder.event, EPOCH + timedelta(seconds=create.at)
        name = f"{create.event_id}: created at {create.at:.3f}"
        problems = []
        if self._quiet(at, reminder.zones):
            problems.append(f"{name} inside the quiet hours")
        if at >= event.startsAt:
            problems.append(f"{name}, at or after its start (expired)")
        if event.sendAt is not None and at < event.sendAt:
            problems.append(f"{name}, before its sendAt")
        if create.claim is None:
            problems.append(f"{name} without a claim")
            return problems
        cancelled = self.cancelled.get(event.appointmentId)
        if cancelled is not None and cancelled < create.claim:
            problems.append(f"{name} under a claim taken after its cancel was stored")
        stopped = self.stopped.get(event.phone)
        if stopped is not None and stopped < create.claim:
            problems.append(f"{name} under a claim taken after the number's STOP")
        return problems

    def expected_ends(self, event_id: str) -> set[DeliveryState]:
        """How the reminder may end, from what the world did (not from the product's code)."""
        reminder = self.reminders[event_id]
        event = reminder.event
        first, last = self.first_claim.get(event_id), self.last_claim.get(event_id)
        stopped = self.stopped.get(event.phone)
        cancelled = self.cancelled.get(event.appointmentId)
        if first is None or last is None:
            return {S.ACCEPTED}  # never claimed: _check_end says so
        if stopped is not None and stopped < first:
            return {S.SUPPRESSED}  # checked first, at every claim
        if cancelled is not None and cancelled < first:
            # Checked before the timing; a STOP stored before a later claim is checked first.
            return {S.CANCELED} | (
                {S.SUPPRESSED} if stopped is not None and stopped < last else set()
            )
        allowed = set()
        if stopped is not None and stopped < last:
            allowed.add(S.SUPPRESSED)
        if cancelled is not None and cancelled < last:
            allowed.add(S.CANCELED)
        must_expire, may_expire = self._expiry(reminder)
        if must_expire:
            allowed.add(S.EXPIRED)
        else:
            allowed.add(S.ACCEPTED)
            if may_expire:
                allowed.add(S.EXPIRED)
        return allowed

    def _expiry(self, reminder: Reminder) -> tuple[bool, bool]:
        """(must expire: no send time before its start even at once; may expire: none
        within the chaos's delays)."""
        event = reminder.event
        read = EPOCH + timedelta(seconds=reminder.read_at)
        earliest = self.send_time(max(read, event.sendAt or read), reminder.zones)
        if earliest is None or earliest >= event.startsAt:
            return True, True
        latest = self.send_time(earliest + SLACK, reminder.zones)
        return False, latest is None or latest >= event.startsAt

    def _quiet(self, at: datetime, zones: Iterable[tzinfo]) -> bool:
        if self.window is None:
            return False
        start, end = self.window
        for zone in zones:
            wall = at.astimezone(zone).time()
            inside = (wall >= start or wall < end) if start > end else start <= wall < end
            if inside:
                return True
        return False

    def send_time(self, at: datetime, zones: Sequence[tzinfo]) -> datetime | None:
        """The first instant from `at` outside the quiet hours in every zone, minute by
        minute (every zone here is a whole number of minutes from UTC)."""
        if not self._quiet(at, zones):
            return at
        minute = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(3 * 24 * 60):
            if not self._quiet(minute, zones):
                return minute
            minute += timedelta(minutes=1)
        return None


def zones_of(phone: str, zone: str | None) -> tuple[tzinfo, ...]:
    if zone is not None:
        return (ZoneInfo(zone),)
    names = number_zones.time_zones_for_number(phonenumbers.parse(phone))
    return tuple(ZoneInfo(name) for name in names)
