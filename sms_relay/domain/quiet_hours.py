"""Quiet hours, pure: a nightly window like 21:00-08:00 and the earliest instant a message
may go out when it must be outside that window in every one of the recipient's zones.

The window is read off the local wall clock: an instant is quiet in a zone when the time
its clocks show lies in [start, end), wrapping midnight when start > end. On the night the
clocks spring forward, a window end inside the skipped hour ends the quiet hours at the
jump (02:30 on a night that skips 02:00-03:00 ends at 03:00); on the night they fall
back, the first time the clocks show the end counts. The instant comes from the caller
(an injected clock), never from `datetime.now()`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

_WINDOW = re.compile(r"\A([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])\Z")
# Longer than a day and a DST hour: if the zones share no send time by then, they never do.
_HORIZON = timedelta(hours=49)


class NoSendTimeError(ValueError):
    """Raised by `earliest_send_time` when the zones share no instant outside the window
    (a window too long for zones that far apart)."""


@dataclass(frozen=True)
class QuietWindow:
    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("quiet hours must start and end at different times")

    @property
    def wraps_midnight(self) -> bool:
        return self.start > self.end

    def holds_at(self, wall: time) -> bool:
        """Whether a wall-clock time is inside the quiet hours."""
        if self.wraps_midnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_quiet_window(text: str) -> QuietWindow | None:
    """`HH:MM-HH:MM` (24-hour clock, may wrap midnight) as a window; `none` or empty: None.

    Raises ValueError with the expected format for anything else.
    """
    cleaned = text.strip()
    if cleaned.lower() in {"", "none"}:
        return None
    match = _WINDOW.match(cleaned)
    if match is None:
        raise ValueError(
            f"quiet hours {text!r}: expected HH:MM-HH:MM on a 24-hour clock "
            "(e.g. 21:00-08:00), or none"
        )
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    return QuietWindow(time(start_h, start_m), time(end_h, end_m))


def is_quiet(at: datetime, window: QuietWindow | None, zones: Sequence[tzinfo]) -> bool:
    """Whether the aware instant `at` falls inside the quiet hours in any of the zones."""
    if window is None:
        return False
    return any(window.holds_at(_wall(at, zone).time()) for zone in zones)


def earliest_send_time(
    at: datetime, window: QuietWindow | None, zones: Sequence[tzinfo]
) -> datetime:
    """`at` (aware) itself when it is outside the quiet hours in every zone, else the
    earliest later instant that is, in UTC.

    Raises ValueError for a naive `at` or no zones, NoSendTimeError when the zones share
    no instant outside the window.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("earliest_send_time needs an aware datetime")
    if not zones:
        raise ValueError("earliest_send_time needs at least one zone")
    candidate = at.astimezone(UTC)
    if window is None:
        return candidate
    give_up = candidate + _HORIZON
    while candidate <= give_up:
        quiet_in = [zone for zone in zones if window.holds_at(_wall(candidate, zone).time())]
        if not quiet_in:
            return candidate
        # No zone can be left before its own quiet hours end: jump to the latest of those ends.
        candidate = max(_quiet_ends(candidate, window, zone) for zone in quiet_in)
    raise NoSendTimeError(f"no instant outside quiet hours {window} in all {len(zones)} zones")


def _wall(at: datetime, zone: tzinfo) -> datetime:
    """The naive wall-clock reading of `at` in `zone`."""
    return at.astimezone(zone).replace(tzinfo=None)


def _quiet_ends(at: datetime, window: QuietWindow, zone: tzinfo) -> datetime:
    """The first instant after `at` (quiet in `zone`) at which the zone's clocks leave the
    window: the wall time `window.end` on the day this quiet spell ends."""
    wall = _wall(at, zone)
    day = wall.date()
    if window.wraps_midnight and wall.time() >= window.start:
        day += timedelta(days=1)
    return _first_instant_showing(datetime.combine(day, window.end), zone, at)


def _first_instant_showing(wall: datetime, zone: tzinfo, not_before: datetime) -> datetime:
    """The earliest instant from `not_before` on at which `zone`'s clocks show `wall` or
    later: the first of its readings in a repeated hour, the jump if it was skipped."""
    readings = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if _wall(instant, zone) == wall:
            readings.append(instant)
    if not readings:
        return _jump_over(wall, zone)
    later = [instant for instant in readings if instant >= not_before]
    return min(later) if later else max(readings)


def _jump_over(wall: datetime, zone: tzinfo) -> datetime:
    """The instant the clocks jumped over the skipped `wall`: the first whole second whose
    reading is past it (between its two readings under the offsets before and after)."""
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return high
