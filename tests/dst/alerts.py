"""Incident alerts in the deterministic simulation: their events, and their invariants.

Alerts are produced in bursts (at the start, and twice while the chaos runs, so some
windows close and the keys send again); some are stale when produced, some grow stale
in the retry tiers. Checked after the run: every alert that was sent holds the window
that allowed it, and no holder of a window was collapsed (its alert lost); the windows
of sent alerts are at least the collapse window apart per (number, key) and within the
hourly cap per number; no alert was created after its expiry (plus the pause the
guarantee allows between the last check and the create).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from schemas.events import IncidentAlert, SmsRequested
from sms_relay.adapters.memory.memory_ledger import MemoryDatabase
from sms_relay.delivery.delivery_ports import Job
from sms_relay.domain.collapse import HOUR, AlertWindow
from sms_relay.domain.states import DeliveryState
from sms_relay.kinds.event_kind import EventKind
from sms_relay.kinds.incident_alert import INCIDENT_ALERT, IncidentAlertPolicy
from sms_relay.kinds.order_shipped import ORDER_SHIPPED

S = DeliveryState
POLICY = IncidentAlertPolicy(
    collapse_seconds=40.0, max_per_hour=4, max_age_seconds=200.0, validity_seconds=200
)
ALERTS = INCIDENT_ALERT.configured(policy=POLICY)
KEYS = ("disk", "cpu", "mem")
# When bursts of alerts are produced (virtual seconds): the later ones find windows closed.
BURSTS = (0.0, 50.0, 100.0)


def kind_of(event: SmsRequested) -> EventKind:
    return ALERTS if isinstance(event, IncidentAlert) else ORDER_SHIPPED


def job_for(event: SmsRequested, attempts: int, tier: int, kind: EventKind = ORDER_SHIPPED) -> Job:
    """The consumer's job for a record (consumer/batch.py sets the same): an alert's kind is
    known by its type, any other by the record (order-shipped unless it says otherwise)."""
    kind = kind_of(event) if kind is ORDER_SHIPPED else kind
    return Job.of(kind, event, attempts, tier)


def alert_burst(
    rng: random.Random, seed: int, burst: int, epoch: datetime, now: float, numbers: tuple[str, ...]
) -> list[IncidentAlert]:
    consent = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    alerts = []
    for i in range(rng.randint(2, 6)):
        # Mostly fresh; some already older than the maximum age when produced.
        age = rng.choice([0.0, 0.0, 0.0, 30.0, POLICY.max_age_seconds + 5])
        alerts.append(
            IncidentAlert.model_validate(
                {
                    "eventId": f"alert-{seed}-{burst}-{i:02d}",
                    # Mostly two numbers, so keys repeat and the hourly cap is reached.
                    "phone": rng.choice((*numbers[:2], *numbers[:2], *numbers)),
                    "consentAt": consent,
                    "consentPurpose": "alerts",
                    "alertKey": rng.choice(KEYS),
                    "severity": "critical",
                    "summary": "disk full",  # one body for all: repeats are one SMS to Twilio
                    "occurredAt": (epoch + timedelta(seconds=now - age)).isoformat(),
                }
            )
        )
    return alerts


def expected_ends(event: IncidentAlert, stopped: str, failing: str) -> set[DeliveryState]:
    if event.phone == stopped:
        return {S.SUPPRESSED}
    return {S.FAILED if event.phone == failing else S.ACCEPTED, S.COLLAPSED, S.EXPIRED}


def check_alerts(
    events: Mapping[str, SmsRequested],
    db: MemoryDatabase,
    created: Mapping[str, list[float]],
    epoch: datetime,
    slack: float,
) -> list[str]:
    """`created`: the virtual times of the messages Twilio created, by event id."""
    problems = []
    windows = {w.event_id: w for w in db.alert_windows}
    sent = []
    for event_id, event in events.items():
        if not isinstance(event, IncidentAlert):
            continue
        row = db.rows.get(event_id)
        expires = POLICY.expires_at(event)
        assert expires is not None
        for at in created.get(event_id, []):
            if epoch + timedelta(seconds=at) > expires + timedelta(seconds=slack):
                problems.append(f"{event_id}: created at {at:.1f}, after its expiry")
        if row is not None and row.state is S.COLLAPSED and event_id in windows:
            problems.append(f"{event_id}: collapsed although it holds a window (lost)")
        if row is not None and row.state is S.ACCEPTED:
            if event_id not in windows:
                problems.append(f"{event_id}: sent without holding a window")
            else:
                sent.append(windows[event_id])
    return problems + _spacing(sent)


def _spacing(sent: list[AlertWindow]) -> list[str]:
    """The windows of sent alerts: a collapse window apart per (number, key), within the
    hourly cap per number."""
    problems = []
    by_key: dict[tuple[str, str], list[datetime]] = {}
    by_number: dict[str, list[datetime]] = {}
    for window in sent:
        by_key.setdefault((window.phone_hash, window.key_hash), []).append(window.opened_at)
        by_number.setdefault(window.phone_hash, []).append(window.opened_at)
    gap = timedelta(seconds=POLICY.collapse_seconds)
    for key, opened in by_key.items():
        opened.sort()
        if any(later - earlier < gap for earlier, later in itertools.pairwise(opened)):
            problems.append(f"two alerts of one (number, key) sent within a window: {key}")
    for number, opened in by_number.items():
        opened.sort()
        cap = POLICY.max_per_hour
        if any(opened[i + cap] - opened[i] < HOUR for i in range(len(opened) - cap)):
            problems.append(f"more than {cap} alerts within an hour to {number}")
    return problems
