"""Flood control for alerts: one SMS per (number, alert key) per window, a cap per hour.

Both ledgers decide with `collapse` inside the claim (PostgreSQL under a lock per number,
so consumers on other partitions and processes see each other's windows). The event that
opens a window keeps it: its redelivery after a crash still sends, any other event of the
same key inside the window is collapsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# The `reason` of a collapsed event on delivery-status.
REPEAT = "repeat_within_window"
HOURLY_CAP = "max_per_hour"
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class CollapseRule:
    key: str  # the alert key; the core hashes it (keyed, like the number) before the ledger
    window_seconds: float
    max_per_hour: int


@dataclass(frozen=True)
class AlertWindow:
    """A window opened by an event: it holds it for its number and key."""

    event_id: str
    phone_hash: str
    key_hash: str
    opened_at: datetime


@dataclass(frozen=True)
class CollapseAsk:
    event_id: str
    phone_hash: str
    rule: CollapseRule


def collapse(
    asks: Sequence[CollapseAsk], windows: Sequence[AlertWindow], now: datetime
) -> tuple[dict[str, str | None], list[AlertWindow]]:
    """Each ask's reason to collapse (None: it may send), in order, and the windows the
    sendable ones open. `windows`: every window of the asks' numbers opened within the
    last hour or the longest collapse window, and any the asks' events hold."""
    known = list(windows)
    reasons: dict[str, str | None] = {}
    opened: list[AlertWindow] = []
    for ask in asks:
        if any(w.event_id == ask.event_id for w in known):
            reasons[ask.event_id] = None  # its own window: a redelivery still sends
            continue
        mine = [w for w in known if w.phone_hash == ask.phone_hash]
        window = timedelta(seconds=ask.rule.window_seconds)
        if any(w.key_hash == ask.rule.key and w.opened_at > now - window for w in mine):
            reasons[ask.event_id] = REPEAT
        elif sum(w.opened_at > now - HOUR for w in mine) >= ask.rule.max_per_hour:
            reasons[ask.event_id] = HOURLY_CAP
        else:
            reasons[ask.event_id] = None
            new = AlertWindow(ask.event_id, ask.phone_hash, ask.rule.key, now)
            known.append(new)
            opened.append(new)
    return reasons, opened


def lookback(asks: Sequence[CollapseAsk]) -> timedelta:
    """How far back the windows that may matter to `asks` were opened."""
    longest = max((a.rule.window_seconds for a in asks), default=0.0)
    return max(HOUR, timedelta(seconds=longest))
