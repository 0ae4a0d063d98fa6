"""The scheduling world of the deterministic simulation: its scenarios occur among the
default suite's seeds, and each of its invariants fails when the rule it guards breaks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from sms_relay.adapters.memory.memory_ledger import InMemoryLedger
from sms_relay.delivery.delivery_ports import (
    Claim,
    ClaimRequest,
    Job,
    ScheduledSend,
    Settlement,
)
from sms_relay.delivery.send_checks import SendChecks
from sms_relay.domain.outcomes import ClaimOutcome
from sms_relay.domain.states import DeliveryState
from sms_relay.kinds.appointment_reminder import AppointmentReminderPolicy
from sms_relay.kinds.event_kind import SendTiming
from tests.dst.harness import EPOCH, run_world, simulate
from tests.dst.scheduling import scheduling_seed

S = DeliveryState


def test_the_default_seeds_cover_every_scheduled_scenario() -> None:
    """Among the first scheduling worlds: reminders sent, expired (also while waiting),
    cancelled (also before they were read), stopped; quiet hours that defer one."""
    ends: Counter[DeliveryState] = Counter()
    scenarios: Counter[str] = Counter()
    for seed in (s for s in range(40) if scheduling_seed(s)):
        world = run_world(seed)
        scheduling = world.scheduling
        assert scheduling is not None
        for event_id, reminder in scheduling.reminders.items():
            row = world.db.rows[event_id]
            ends[row.state] += 1
            first = scheduling.first_claim.get(event_id)
            cancelled = scheduling.cancelled.get(reminder.event.appointmentId)
            if cancelled is not None and first is not None and cancelled < first:
                scenarios["cancelled before it was read"] += 1
            if row.state is S.EXPIRED and (event_id, "scheduled") in world.statuses:
                scenarios["expired while it waited"] += 1
            if row.state is S.ACCEPTED and (event_id, "scheduled") in world.statuses:
                scenarios["scheduled, then sent"] += 1
            read = EPOCH + timedelta(seconds=reminder.read_at)
            wanted = max(read, reminder.event.sendAt or read)
            if row.state is S.ACCEPTED and scheduling.send_time(wanted, reminder.zones) != wanted:
                scenarios["deferred by the quiet hours"] += 1
        scenarios["crashes"] += world.crashes
    assert {S.ACCEPTED, S.EXPIRED, S.CANCELED, S.SUPPRESSED} <= set(ends), ends
    assert set(ends) <= {S.ACCEPTED, S.EXPIRED, S.CANCELED, S.SUPPRESSED, S.DEAD_LETTERED}
    for scenario in ("cancelled before it was read", "expired while it waited", "crashes"):
        assert scenarios[scenario], scenarios
    assert scenarios["scheduled, then sent"], scenarios
    assert scenarios["deferred by the quiet hours"], scenarios


def _without_quiet_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    timing = AppointmentReminderPolicy.timing

    def ignoring(self: AppointmentReminderPolicy, event: Any, now: datetime) -> SendTiming:
        return timing(self.model_copy(update={"quiet_hours": "none"}), event, now)

    monkeypatch.setattr(AppointmentReminderPolicy, "timing", ignoring)


def _without_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    timing = AppointmentReminderPolicy.timing

    def ignoring(self: AppointmentReminderPolicy, event: Any, now: datetime) -> SendTiming:
        return SendTiming(timing(self, event, now).due_at)

    monkeypatch.setattr(AppointmentReminderPolicy, "timing", ignoring)


def _claims_changed(monkeypatch: pytest.MonkeyPatch, change: Callable[[Claim], Claim]) -> None:
    before_send = SendChecks.before_send

    def blind(self: SendChecks, job: Job, claim: Claim) -> Settlement | None:
        if job.kind.name == "appointment-reminder":
            claim = change(claim)
        return before_send(self, job, claim)

    monkeypatch.setattr(SendChecks, "before_send", blind)


def _without_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    _claims_changed(monkeypatch, lambda claim: replace(claim, canceled=False))


def _without_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    _claims_changed(monkeypatch, lambda claim: replace(claim, suppressed=False))


def _forgetting_what_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settled `scheduled` without its scheduled send: nothing sends it when due."""

    def nothing(self: SendChecks, job: Job, due_at: datetime) -> ScheduledSend | None:
        return None

    monkeypatch.setattr(SendChecks, "_stored", nothing)


def _forgetting_doubts_of_reminders(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reminder's claim no longer says a message may exist: it is sent again blindly."""
    claim = InMemoryLedger.claim

    async def forgetful(self: InMemoryLedger, requests: Sequence[ClaimRequest]) -> dict[str, Claim]:
        claims = await claim(self, requests)
        reminders = {r.event_id for r in requests if r.event_type == "appointment-reminder"}
        return {
            event_id: replace(c, doubt_since=None, outcome=ClaimOutcome.RESUMED)
            if event_id in reminders and c.doubt_since is not None
            else c
            for event_id, c in claims.items()
        }

    monkeypatch.setattr(InMemoryLedger, "claim", forgetful)


# Seeds that catch each break (found by running the breaks over the first 100 or 200 seeds).
BREAKS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], tuple[int, ...], str]] = {
    "quiet hours ignored": (_without_quiet_hours, (13, 14, 17), "inside the quiet hours"),
    "expiry ignored": (_without_expiry, (1, 2, 5), "at or after its start"),
    "cancels ignored": (_without_cancels, (10, 14, 18), "after its cancel was stored"),
    "STOPs ignored": (_without_stops, (1, 2, 5), "STOP"),
    "a scheduled send forgotten": (_forgetting_what_waits, (1, 2, 5), "ended scheduled"),
    "a reminder sent twice": (_forgetting_doubts_of_reminders, (18, 78, 85), "no event holds"),
}


@pytest.mark.parametrize("broken", list(BREAKS))
def test_each_scheduling_invariant_fails_when_its_rule_breaks(
    broken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    breaking, seeds, finding = BREAKS[broken]
    breaking(monkeypatch)
    caught = next((s for s in seeds if any(finding in v for v in simulate(s).violations)), None)
    assert caught is not None, f"seeds {seeds}: no violation names {finding!r}"
