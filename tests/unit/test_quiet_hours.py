"""Quiet hours on an injected instant: windows that wrap midnight and ones that do not, the
DST nights in Europe/Berlin, multi-zone numbers and the strictest reading of an unknown zone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_relay.domain.quiet_hours import (
    NoSendTimeError,
    QuietWindow,
    earliest_send_time,
    is_quiet,
    parse_quiet_window,
)
from sms_relay.domain.recipient_zones import (
    STRICTEST_ZONES,
    recipient_zones,
    zone_named,
    zones_of_number,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
NIGHT = QuietWindow(time(21), time(8))
TOLL_FREE = "+18005550123"  # North American toll-free: phonenumbers gives all 42 NANP zones


def _utc(*parts: int) -> datetime:
    return datetime(*parts).replace(tzinfo=UTC)  # type: ignore[arg-type]


def _berlin(*parts: int, fold: int = 0) -> datetime:
    return datetime(*parts).replace(tzinfo=BERLIN, fold=fold)  # type: ignore[arg-type]


def _by_minutes(at: datetime, window: QuietWindow, zones: Sequence[tzinfo]) -> datetime:
    """The reference: step a minute at a time until no zone is quiet."""
    moment = at.astimezone(UTC)  # in UTC, so a minute is a minute (not wall-clock arithmetic)
    while is_quiet(moment, window, zones):
        moment += timedelta(minutes=1)
    return moment


# ---- Parsing.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("21:00-08:00", QuietWindow(time(21), time(8))),
        (" 22:30-07:15 ", QuietWindow(time(22, 30), time(7, 15))),
        ("12:00-14:00", QuietWindow(time(12), time(14))),
        ("00:00-06:00", QuietWindow(time(0), time(6))),
        ("none", None),
        ("NONE", None),
        ("", None),
    ],
)
def test_quiet_windows_parse(text: str, expected: QuietWindow | None) -> None:
    assert parse_quiet_window(text) == expected


@pytest.mark.parametrize(
    "text", ["21:00", "9:00-08:00", "24:00-08:00", "21:60-08:00", "21:00 - 08:00", "21-8", "off"]
)
def test_a_bad_window_names_the_format(text: str) -> None:
    with pytest.raises(ValueError, match=r"HH:MM-HH:MM"):
        parse_quiet_window(text)


def test_a_window_that_starts_where_it_ends_is_refused() -> None:
    with pytest.raises(ValueError, match="different times"):
        parse_quiet_window("21:00-21:00")


def test_a_window_prints_as_it_parses() -> None:
    assert str(parse_quiet_window("21:05-08:00")) == "21:05-08:00"


# ---- One zone.


@pytest.mark.parametrize(
    ("local", "expected_local"),
    [
        ((2026, 6, 10, 22, 0), (2026, 6, 11, 8, 0)),  # evening: the next morning
        ((2026, 6, 10, 7, 59), (2026, 6, 10, 8, 0)),  # early morning: the same morning
        ((2026, 6, 10, 0, 0), (2026, 6, 10, 8, 0)),
        ((2026, 6, 10, 21, 0), (2026, 6, 11, 8, 0)),  # the start is inside
        ((2026, 6, 10, 8, 0), (2026, 6, 10, 8, 0)),  # the end is outside
        ((2026, 6, 10, 20, 59), (2026, 6, 10, 20, 59)),
    ],
)
def test_a_window_that_wraps_midnight(
    local: tuple[int, ...], expected_local: tuple[int, ...]
) -> None:
    at = _berlin(*local)
    assert earliest_send_time(at, NIGHT, [BERLIN]) == _berlin(*expected_local).astimezone(UTC)


@pytest.mark.parametrize(
    ("local", "expected_local"),
    [
        ((2026, 6, 10, 13, 0), (2026, 6, 10, 14, 0)),
        ((2026, 6, 10, 12, 0), (2026, 6, 10, 14, 0)),
        ((2026, 6, 10, 14, 0), (2026, 6, 10, 14, 0)),
        ((2026, 6, 10, 11, 59), (2026, 6, 10, 11, 59)),
        ((2026, 6, 10, 23, 0), (2026, 6, 10, 23, 0)),
    ],
)
def test_a_window_within_one_day(local: tuple[int, ...], expected_local: tuple[int, ...]) -> None:
    lunch = QuietWindow(time(12), time(14))
    at = _berlin(*local)
    assert earliest_send_time(at, lunch, [BERLIN]) == _berlin(*expected_local).astimezone(UTC)


def test_no_window_sends_at_once_and_the_answer_is_in_utc() -> None:
    at = _berlin(2026, 6, 10, 23, 0)
    assert earliest_send_time(at, None, [BERLIN]) == at
    assert earliest_send_time(at, None, [BERLIN]).tzinfo is UTC


def test_a_naive_instant_or_no_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        earliest_send_time(datetime(2026, 6, 10, 23, 0), NIGHT, [BERLIN])
    with pytest.raises(ValueError, match="zone"):
        earliest_send_time(_utc(2026, 6, 10, 23, 0), NIGHT, [])


# ---- Europe/Berlin's DST nights: 2026-03-29 skips 02:00-03:00, 2026-10-25 repeats 02:00-03:00.


def test_spring_forward_an_end_in_the_skipped_hour_ends_at_the_jump() -> None:
    window = QuietWindow(time(21), time(2, 30))
    at = _berlin(2026, 3, 28, 23, 0)
    sent = earliest_send_time(at, window, [BERLIN])
    # 02:30 never shows: the clocks go from 01:59:59 CET to 03:00 CEST, which is 01:00 UTC.
    assert sent == _utc(2026, 3, 29, 1, 0)
    assert sent.astimezone(BERLIN).hour == 3
    assert sent == _by_minutes(at, window, [BERLIN])


def test_spring_forward_night_is_an_hour_shorter() -> None:
    at = _berlin(2026, 3, 28, 22, 0)  # 21:00 UTC
    sent = earliest_send_time(at, NIGHT, [BERLIN])
    assert sent == _utc(2026, 3, 29, 6, 0)  # 08:00 CEST
    assert sent - at == timedelta(hours=9)


def test_fall_back_the_first_time_the_clocks_show_the_end_counts() -> None:
    window = QuietWindow(time(21), time(2, 30))
    at = _berlin(2026, 10, 24, 23, 0)
    sent = earliest_send_time(at, window, [BERLIN])
    assert sent == _utc(2026, 10, 25, 0, 30)  # 02:30 CEST, the first reading
    assert sent == _by_minutes(at, window, [BERLIN])


def test_fall_back_the_repeated_hour_is_quiet_again_by_the_wall_clock() -> None:
    window = QuietWindow(time(21), time(2, 30))
    second_pass = _berlin(2026, 10, 25, 2, 10, fold=1)  # 02:10 CET, 01:10 UTC
    assert is_quiet(second_pass, window, [BERLIN])
    sent = earliest_send_time(second_pass, window, [BERLIN])
    assert sent == _utc(2026, 10, 25, 1, 30)  # 02:30 CET, the second reading
    assert sent == _by_minutes(second_pass, window, [BERLIN])


def test_fall_back_night_is_an_hour_longer() -> None:
    at = _berlin(2026, 10, 24, 22, 0)  # 20:00 UTC
    sent = earliest_send_time(at, NIGHT, [BERLIN])
    assert sent == _utc(2026, 10, 25, 7, 0)  # 08:00 CET
    assert sent - at == timedelta(hours=11)


def test_a_window_starting_in_the_skipped_hour_starts_at_the_jump() -> None:
    window = QuietWindow(time(2, 30), time(6))
    assert not is_quiet(_utc(2026, 3, 29, 0, 59), window, [BERLIN])  # 01:59 CET
    assert is_quiet(_utc(2026, 3, 29, 1, 0), window, [BERLIN])  # 03:00 CEST


# ---- Several zones: the window must hold in all of them.


def test_two_zones_wait_for_the_later_morning() -> None:
    at = _utc(2026, 6, 1, 2, 0)  # 22:00 in New York, 19:00 in Los Angeles
    sent = earliest_send_time(at, NIGHT, [NEW_YORK, LOS_ANGELES])
    assert sent == _utc(2026, 6, 1, 15, 0)  # 08:00 in Los Angeles, 11:00 in New York


def test_a_toll_free_number_maps_to_every_north_american_zone() -> None:
    zones = zones_of_number(TOLL_FREE)
    names = {zone.key for zone in zones}
    assert len(zones) > 20
    assert {"America/New_York", "Pacific/Honolulu", "Pacific/Guam", "America/St_Johns"} <= names


@pytest.mark.parametrize(
    "at",
    [
        _utc(2026, 1, 15, 12, 0),
        _utc(2026, 7, 15, 12, 0),
        _utc(2026, 3, 8, 6, 30),  # US spring forward
        _utc(2026, 11, 1, 5, 45),  # US fall back
        _utc(2026, 3, 29, 0, 0),
    ],
)
def test_a_multi_zone_number_sends_only_when_no_zone_is_quiet(at: datetime) -> None:
    zones = zones_of_number(TOLL_FREE)
    sent = earliest_send_time(at, NIGHT, zones)
    assert not is_quiet(sent, NIGHT, zones)
    assert sent == _by_minutes(at, NIGHT, zones)
    local_hours = {sent.astimezone(zone).hour for zone in zones}
    assert min(local_hours) >= 8
    assert max(local_hours) < 21


def test_zones_that_share_no_send_time_are_an_error_not_a_hang() -> None:
    long_night = QuietWindow(time(18), time(10))  # 8 h to send in; 42 zones span 21 h
    with pytest.raises(NoSendTimeError):
        earliest_send_time(_utc(2026, 1, 15, 12, 0), long_night, zones_of_number(TOLL_FREE))


# ---- Where the zones come from.


def test_the_events_time_zone_wins_over_the_numbers() -> None:
    assert recipient_zones(TOLL_FREE, "Europe/Berlin") == (BERLIN,)
    assert recipient_zones("+12125550123", None) == (NEW_YORK,)


@pytest.mark.parametrize("name", ["Mars/Base", "America", "../etc/passwd", "Etc/Unknown", ""])
def test_a_time_zone_that_is_no_iana_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="IANA"):
        zone_named(name)


@pytest.mark.parametrize("phone", ["+80012345678", "+870301234567", "+8823421234", "+1800"])
def test_a_number_of_no_country_gets_the_strictest_reading(phone: str) -> None:
    zones = zones_of_number(phone)
    assert tuple(zone.key for zone in zones) == STRICTEST_ZONES
    # UTC-5 allows 13:00-02:00 UTC, UTC+5 allows 03:00-16:00: three hours a day in common.
    assert earliest_send_time(_utc(2026, 6, 1, 10, 0), NIGHT, zones) == _utc(2026, 6, 1, 13, 0)
    assert earliest_send_time(_utc(2026, 6, 1, 16, 0), NIGHT, zones) == _utc(2026, 6, 2, 13, 0)
    assert earliest_send_time(_utc(2026, 6, 1, 15, 59), NIGHT, zones) == _utc(2026, 6, 1, 15, 59)


# ---- Properties.

_ZONE_NAMES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Asia/Kathmandu",  # UTC+05:45
    "Pacific/Chatham",
    "America/Santiago",
    "UTC",
]
_instants = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2030, 12, 31),
    timezones=st.just(UTC),
)


@st.composite
def _window(draw: st.DrawFn) -> QuietWindow:
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(0, 24 * 60 - 1).filter(lambda minute: minute != start))
    return QuietWindow(time(start // 60, start % 60), time(end // 60, end % 60))


@settings(max_examples=300, deadline=None)
@given(_instants, _window(), st.sampled_from(_ZONE_NAMES))
def test_one_zone_never_sends_inside_the_window_nor_early_nor_after_a_day(
    at: datetime, window: QuietWindow, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    sent = earliest_send_time(at, window, [zone])
    assert sent >= at
    assert not is_quiet(sent, window, [zone])
    assert sent - at <= timedelta(hours=25)
    if sent > at:  # the earliest: a second before, it was still quiet
        assert is_quiet(sent - timedelta(seconds=1), window, [zone])


@settings(max_examples=200, deadline=None)
@given(_instants, _window(), st.lists(st.sampled_from(_ZONE_NAMES), min_size=2, max_size=4))
def test_several_zones_never_send_inside_the_window_in_any(
    at: datetime, window: QuietWindow, zone_names: list[str]
) -> None:
    zones = [ZoneInfo(name) for name in zone_names]
    try:
        sent = earliest_send_time(at, window, zones)
    except NoSendTimeError:
        return
    assert sent >= at
    assert not is_quiet(sent, window, zones)
    if sent > at:
        assert is_quiet(sent - timedelta(seconds=1), window, zones)
