"""The time zones a recipient may be in: the event's `timeZone`, else those of the number.

`phonenumbers.timezone` answers every zone a number's prefix may be in (a US toll-free
number: all 42 zones of the North American plan), and for a valid number of a country it
falls back to all that country's zones; it answers `Etc/Unknown` only for numbers of no
country (international freephone +800, Inmarsat +870, satellite +881, international
networks +882/+883, ...) and for invalid ones. There we take the strictest reading that
still leaves a send time every day: the quiet window must hold everywhere from UTC-5 to
UTC+5 (from the Americas' east coast to Pakistan, DST-free), which leaves three hours a
day for the default 21:00-08:00.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones

UNKNOWN_ZONE = "Etc/Unknown"
# POSIX signs: Etc/GMT+5 is UTC-5. Both ends of the band hold the window, so all between do.
STRICTEST_ZONES = ("Etc/GMT+5", "Etc/GMT-5")


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone `name` (e.g. Europe/Berlin); raises ValueError when there is none."""
    if not name or name == UNKNOWN_ZONE:
        raise ValueError(f"time zone {name!r} is not an IANA zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
        raise ValueError(
            f"time zone {name!r} is not an IANA zone name (e.g. Europe/Berlin)"
        ) from None


def zones_of_number(phone: str) -> tuple[ZoneInfo, ...]:
    """The zones an E.164 number may be in, the strictest reading where none is known."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        names: tuple[str, ...] = (UNKNOWN_ZONE,)
    else:
        names = tuple(number_zones.time_zones_for_number(parsed))
    known = [name for name in names if name != UNKNOWN_ZONE]
    return tuple(ZoneInfo(name) for name in (known or STRICTEST_ZONES))


def recipient_zones(phone: str, time_zone: str | None) -> tuple[ZoneInfo, ...]:
    """The event's zone when it names one, else the zones of the number.

    Raises ValueError for a `time_zone` that is not an IANA name.
    """
    if time_zone:
        return (zone_named(time_zone),)
    return zones_of_number(phone)
