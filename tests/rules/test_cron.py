"""Cron expressions in a time zone: validation, macros and fire instants across DST changes."""

from __future__ import annotations

import itertools
import random
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from orchestrator.errors import InvalidRequest
from orchestrator.rules.cron import (
    MACROS,
    Span,
    fires_between,
    next_fire,
    parse_cron,
    parse_timezone,
    upcoming,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LONDON = ZoneInfo("Europe/London")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
SANTIAGO = ZoneInfo("America/Santiago")
UTC_ZONE = ZoneInfo("UTC")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def hhmm(instants: list[datetime]) -> list[str]:
    return [instant.strftime("%H:%M") for instant in instants]


# Validation


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "expression is empty"),
        ("   ", "expression is empty"),
        ("* * * *", "expected 5 fields (minute hour day month weekday), got 4"),
        ("0 * * * * *", "expected 5 fields (minute hour day month weekday), got 6"),
        ("0 0 12 * * * 2026", "got 7"),
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("0 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month field: 32 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("0 0 * foo *", "month field: 'foo' is not a number or a name"),
        ("0 0 * * funday", "day-of-week field: 'funday' is not a number or a name"),
        ("x * * * *", "minute field: 'x' is not a number"),
        ("mon * * * *", "minute field: 'mon' is not a number"),
        ("*/0 * * * *", "minute field: step 0 must be at least 1"),
        ("0 22-2 * * *", "hour field: range 22-2 goes backwards"),
        ("0 0 * * fri-mon", "day-of-week field: range fri-mon goes backwards"),
        ("0 0 L * *", "day-of-month field: 'L' is not a number"),
        ("0 0 ? * *", "day-of-month field: cannot read '?'"),
        ("0 0 * * 1#2", "day-of-week field: cannot read '1#2'"),
        ("1,,2 * * * *", "minute field: cannot read ''"),
        ("-1 * * * *", "minute field: cannot read '-1'"),
        ("1-2-3 * * * *", "minute field: cannot read '1-2-3'"),
        ("\u0661 * * * *", "minute field: cannot read '\u0661'"),  # an Arabic-Indic digit
        ("@reboot", "@reboot is not supported"),
        ("@every 5m", "unknown macro '@every 5m'"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("0 " * 200, "expression is too long (at most 255 characters)"),
    ],
)
def test_invalid_expressions_name_the_field_and_reason(expression: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_cron(expression)
    assert caught.value.field == "cron"
    assert caught.value.code == "invalid_request"
    assert caught.value.message.startswith("cron: ")
    assert reason in caught.value.message


def test_a_non_string_expression_is_invalid() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_cron(None)  # type: ignore[arg-type]
    assert caught.value.field == "cron"


@pytest.mark.parametrize(
    ("expression", "normalised"),
    [
        ("0 9 * * 1-5", "0 9 * * 1-5"),
        ("  0\t9  *\n*   mon-fri ", "0 9 * * mon-fri"),
        ("*/15 0-6,22,23 1,15 jan-mar,DEC 0,7", "*/15 0-6,22,23 1,15 jan-mar,DEC 0,7"),
        ("5/15 * * * *", "5/15 * * * *"),
        ("@Daily", "@daily"),
        (" @HOURLY ", "@hourly"),
    ],
)
def test_valid_expressions_are_normalised(expression: str, normalised: str) -> None:
    assert parse_cron(expression) == normalised


def test_a_never_firing_expression_is_still_valid() -> None:
    assert parse_cron("0 0 30 2 *") == "0 0 30 2 *"


def test_macros_fire_like_their_expansions() -> None:
    assert set(MACROS) == {
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    }
    after = utc(2026, 5, 17, 10, 20)
    for macro, expansion in MACROS.items():
        assert parse_cron(macro) == macro
        assert upcoming(macro, BERLIN, after, 3) == upcoming(expansion, BERLIN, after, 3)
    assert next_fire("@hourly", UTC_ZONE, after) == utc(2026, 5, 17, 11, 0)
    assert next_fire("@daily", UTC_ZONE, after) == utc(2026, 5, 18, 0, 0)
    assert next_fire("@weekly", UTC_ZONE, after) == utc(2026, 5, 24, 0, 0)  # a Sunday
    assert next_fire("@monthly", UTC_ZONE, after) == utc(2026, 6, 1, 0, 0)
    assert next_fire("@annually", UTC_ZONE, after) == utc(2027, 1, 1, 0, 0)


@pytest.mark.parametrize(
    "name", ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
)
def test_known_time_zones(name: str) -> None:
    assert parse_timezone(name) == ZoneInfo(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "a time zone name is required"),
        ("   ", "a time zone name is required"),
        ("Local", "unknown time zone 'Local'"),
        ("localtime", "unknown time zone 'localtime'"),
        ("../etc", "unknown time zone '../etc'"),
        ("/etc/passwd", "unknown time zone '/etc/passwd'"),
        ("Europe", "unknown time zone 'Europe'"),
        ("Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        ("Europe/Berlin\x00", "unknown time zone"),
        ("europe/berlin", "did you mean 'Europe/Berlin'?"),
        (" UTC", "did you mean 'UTC'?"),
        ("A" * 10_000, "name is too long"),
    ],
)
def test_unknown_time_zones_are_invalid(name: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_timezone(name)
    assert caught.value.field == "timezone"
    assert reason in caught.value.message


def test_a_non_string_time_zone_is_invalid() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_timezone(5)  # type: ignore[arg-type]
    assert caught.value.field == "timezone"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire("* * * * *", UTC_ZONE, datetime(2026, 1, 1))


# Plain cases


def test_utc_next_fire_is_strictly_after() -> None:
    assert next_fire("30 9 * * *", UTC_ZONE, utc(2026, 1, 1, 9, 29, 59)) == utc(2026, 1, 1, 9, 30)
    assert next_fire("30 9 * * *", UTC_ZONE, utc(2026, 1, 1, 9, 30)) == utc(2026, 1, 2, 9, 30)
    after = datetime(2026, 1, 1, 9, 30, 0, 1, tzinfo=UTC)
    assert next_fire("30 9 * * *", UTC_ZONE, after) == utc(2026, 1, 2, 9, 30)
    assert next_fire("* * * * *", UTC_ZONE, utc(2026, 12, 31, 23, 59)) == utc(2027, 1, 1, 0, 0)


def test_results_are_utc_whatever_the_zone_of_after() -> None:
    after = datetime(2026, 1, 1, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 03:00Z
    fire = next_fire("0 * * * *", BERLIN, after)
    assert fire == utc(2026, 1, 1, 4, 0)
    assert fire is not None and fire.utcoffset() == timedelta(0)


def test_weekdays_months_lists_and_steps() -> None:
    # 2026-01-01 is a Thursday.
    assert hhmm(upcoming("0 8-17/4 * * *", UTC_ZONE, utc(2026, 1, 1), 4)) == [
        "08:00",
        "12:00",
        "16:00",
        "08:00",
    ]
    weekdays = upcoming("0 9 * * mon-fri", UTC_ZONE, utc(2026, 1, 1), 5)
    assert [fire.day for fire in weekdays] == [1, 2, 5, 6, 7]
    sundays = upcoming("0 0 * * 7", UTC_ZONE, utc(2026, 1, 1), 2)
    assert sundays == upcoming("0 0 * * sun", UTC_ZONE, utc(2026, 1, 1), 2)
    assert [fire.day for fire in sundays] == [4, 11]
    assert next_fire("0 0 1 jun *", UTC_ZONE, utc(2026, 1, 1)) == utc(2026, 6, 1)
    assert hhmm(upcoming("5/20 0 * * *", UTC_ZONE, utc(2026, 1, 1), 3)) == [
        "00:05",
        "00:25",
        "00:45",
    ]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # As in every cron: the 13th of the month, and also every Friday.
    fires = upcoming("0 0 13 * fri", UTC_ZONE, utc(2026, 1, 1), 4)
    assert [fire.day for fire in fires] == [2, 9, 13, 16]
    # When a day field starts with '*' both must match: the 1st, 14th or 27th on a Friday.
    assert next_fire("0 0 * * fri", UTC_ZONE, utc(2026, 1, 1)) == utc(2026, 1, 2)
    assert next_fire("0 0 */13 * fri", UTC_ZONE, utc(2026, 1, 1)) == utc(2026, 2, 27)


def test_never_firing_expression_gives_none() -> None:
    assert next_fire("0 0 30 2 *", UTC_ZONE, utc(2026, 1, 1)) is None
    assert next_fire("0 0 31 4,6,9,11 *", NEW_YORK, utc(2026, 1, 1)) is None
    assert upcoming("0 0 30 2 *", NEW_YORK, utc(2026, 1, 1), 10) == []
    span = fires_between("0 0 30 2 *", NEW_YORK, utc(2026, 1, 1), utc(2036, 1, 1))
    assert span == Span(count=0, complete=True, first=None, last=None)


def test_leap_day_waits_across_a_century_year() -> None:
    # 2100 is not a leap year: eight years between 29 Februaries.
    assert next_fire("0 0 29 2 *", UTC_ZONE, utc(2026, 1, 1)) == utc(2028, 2, 29)
    assert next_fire("0 0 29 2 *", UTC_ZONE, utc(2096, 3, 1)) == utc(2104, 2, 29)


def test_the_end_of_time_is_not_an_error() -> None:
    assert next_fire("0 0 1 1 *", NEW_YORK, utc(9999, 6, 1)) is None
    assert next_fire("0 0 * * *", UTC_ZONE, utc(9999, 12, 30, 12)) == utc(9999, 12, 31)


def test_upcoming_is_strictly_increasing_and_fast() -> None:
    after = utc(2026, 3, 8, 5, 0)
    for zone in (UTC_ZONE, NEW_YORK, LORD_HOWE):
        for expression in ("* * * * *", "*/15 * * * *", "0 9 * * mon-fri", "0 0 29 2 *"):
            started = time.perf_counter()
            fires = upcoming(expression, zone, after, 10)
            elapsed = time.perf_counter() - started
            assert len(fires) == 10
            assert all(a < b for a, b in itertools.pairwise(fires))
            assert all(fire > after and fire.tzinfo is UTC for fire in fires)
            # Generous for a loaded machine; typically well under a millisecond.
            assert elapsed < 0.5


def test_a_time_zone_moves_the_instant() -> None:
    # Berlin is UTC+1 in winter and UTC+2 in summer.
    assert next_fire("0 9 * * *", BERLIN, utc(2026, 1, 15)) == utc(2026, 1, 15, 8, 0)
    assert next_fire("0 9 * * *", BERLIN, utc(2026, 7, 15)) == utc(2026, 7, 15, 7, 0)


# America/New_York falls back on 2026-11-01: 02:00 EDT (06:00Z) becomes 01:00 EST, so the
# wall times 01:00-01:59 happen twice, first at 05:00-05:59Z and again at 06:00-06:59Z.


def test_fall_back_a_repeated_time_fires_once_at_its_first_occurrence() -> None:
    fires = upcoming("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), 3)
    assert fires == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]
    span = fires_between("30 1 * * *", NEW_YORK, utc(2026, 11, 1, 4), utc(2026, 11, 2, 4))
    assert span == Span(
        count=1, complete=True, first=utc(2026, 11, 1, 5, 30), last=utc(2026, 11, 1, 5, 30)
    )


def test_fall_back_quarter_hours_through_the_repeated_hour() -> None:
    fires = upcoming("*/15 * * * *", NEW_YORK, utc(2026, 11, 1, 4, 50), 10)
    assert hhmm(fires) == [
        "05:00",  # 01:00 EDT
        "05:15",
        "05:30",
        "05:45",  # 01:45 EDT
        "07:00",  # 02:00 EST: 01:00-01:45 EST are not fired again
        "07:15",
        "07:30",
        "07:45",
        "08:00",
        "08:15",
    ]
    assert next_fire("*/15 * * * *", NEW_YORK, utc(2026, 11, 1, 5, 45)) == utc(2026, 11, 1, 7)


def test_fall_back_hourly_has_no_duplicate_and_skips_only_the_repeat() -> None:
    fires = upcoming("0 * * * *", NEW_YORK, utc(2026, 11, 1, 3, 30), 6)
    # 00:00 EDT, 01:00 EDT, (01:00 EST repeats: not fired), 02:00 EST, 03:00 EST, ...
    assert hhmm(fires) == ["04:00", "05:00", "07:00", "08:00", "09:00", "10:00"]
    span = fires_between("0 * * * *", NEW_YORK, utc(2026, 11, 1, 4), utc(2026, 11, 1, 10))
    assert span.count == 6


def test_after_in_the_second_pass_of_the_repeated_hour() -> None:
    # 06:10Z is 01:10 EST, the second 01:10 of the day (fold=1).
    after = utc(2026, 11, 1, 6, 10)
    assert after.astimezone(NEW_YORK).fold == 1
    assert next_fire("*/15 * * * *", NEW_YORK, after) == utc(2026, 11, 1, 7, 0)
    assert next_fire("30 1 * * *", NEW_YORK, after) == utc(2026, 11, 2, 6, 30)
    # The same instant written in the zone itself, with fold=1.
    local = datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=NEW_YORK)
    assert next_fire("*/15 * * * *", NEW_YORK, local) == utc(2026, 11, 1, 7, 0)
    # And with fold=0 it is the first 01:10, an hour earlier.
    first_pass = datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK)
    assert next_fire("*/15 * * * *", NEW_YORK, first_pass) == utc(2026, 11, 1, 5, 15)


def test_fires_between_in_zone_datetimes_respects_fold() -> None:
    start = datetime(2026, 11, 1, 1, 50, fold=0, tzinfo=NEW_YORK)  # 05:50Z
    end = datetime(2026, 11, 1, 1, 20, fold=1, tzinfo=NEW_YORK)  # 06:20Z, later despite 01:20
    span = fires_between("* * * * *", NEW_YORK, start, end)
    assert (span.count, span.first, span.last) == (
        10,
        utc(2026, 11, 1, 5, 50),
        utc(2026, 11, 1, 5, 59),
    )


def test_capped_span_ending_in_the_second_pass_has_the_exact_last() -> None:
    span = fires_between(
        "*/15 * * * *", NEW_YORK, utc(2026, 11, 1, 4), utc(2026, 11, 1, 6, 30), cap=2
    )
    assert span == Span(
        count=2, complete=False, first=utc(2026, 11, 1, 4, 0), last=utc(2026, 11, 1, 5, 45)
    )


# America/New_York springs forward on 2026-03-08: 02:00 EST (07:00Z) becomes 03:00 EDT, so
# the wall times 02:00-02:59 do not exist and fire at 03:00 EDT.


def test_spring_forward_a_skipped_time_fires_at_the_end_of_the_gap() -> None:
    fires = upcoming("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), 3)
    assert fires == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]


def test_spring_forward_quarter_hours_around_the_gap_fire_once() -> None:
    fires = upcoming("*/15 * * * *", NEW_YORK, utc(2026, 3, 8, 6, 20), 6)
    # 01:30 EST, 01:45 EST, then 02:00-02:45 (missing) and 03:00 EDT all at 07:00Z, once.
    assert hhmm(fires) == ["06:30", "06:45", "07:00", "07:15", "07:30", "07:45"]
    assert next_fire("*/15 * * * *", NEW_YORK, utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 8, 7, 15)
    # 06:00Z to 08:00Z: 01:00-01:45 EST, 07:00Z (the gap and 03:00 EDT), 03:15-04:00 EDT.
    span = fires_between("*/15 * * * *", NEW_YORK, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8))
    assert span == Span(count=9, complete=True, first=utc(2026, 3, 8, 6), last=utc(2026, 3, 8, 8))


def test_spring_forward_hourly_and_daily_midnight() -> None:
    fires = upcoming("0 * * * *", NEW_YORK, utc(2026, 3, 8, 5, 30), 3)
    assert fires == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]
    # In Santiago the clocks skip from 00:00 to 01:00 on 2026-09-06: midnight fires at 01:00.
    assert upcoming("0 0 * * *", SANTIAGO, utc(2026, 9, 5, 12), 2) == [
        utc(2026, 9, 6, 4, 0),
        utc(2026, 9, 7, 3, 0),
    ]


def test_europe_london_transitions() -> None:
    # 2026-03-29 01:00 GMT becomes 02:00 BST; 2026-10-25 02:00 BST becomes 01:00 GMT.
    assert upcoming("30 1 * * *", LONDON, utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
    ]
    assert upcoming("30 1 * * *", LONDON, utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    assert hhmm(upcoming("*/20 * * * *", LONDON, utc(2026, 10, 24, 23, 50), 5)) == [
        "00:00",  # 01:00 BST
        "00:20",
        "00:40",  # 01:40 BST; 01:00-01:40 GMT are not fired again
        "02:00",  # 02:00 GMT
        "02:20",
    ]


def test_lord_howe_shifts_by_half_an_hour() -> None:
    # 2026-10-04 02:00 (+10:30, 15:30Z) becomes 02:30 (+11): 02:00-02:29 fire at 15:30Z.
    assert hhmm(upcoming("*/10 * * * *", LORD_HOWE, utc(2026, 10, 3, 15, 10), 5)) == [
        "15:20",  # 01:50 +10:30
        "15:30",  # 02:00, 02:10, 02:20 (missing) and 02:30 +11, once
        "15:40",
        "15:50",
        "16:00",
    ]
    assert next_fire("15 2 * * *", LORD_HOWE, utc(2026, 10, 3, 12)) == utc(2026, 10, 3, 15, 30)
    # 2026-04-05 02:00 (+11, 15:00Z) becomes 01:30 (+10:30): 01:30-01:59 repeat, fire once.
    assert hhmm(upcoming("*/10 * * * *", LORD_HOWE, utc(2026, 4, 4, 14, 20), 5)) == [
        "14:30",  # 01:30 +11
        "14:40",
        "14:50",  # 01:50 +11; the second 01:30-01:50 are not fired
        "15:30",  # 02:00 +10:30
        "15:40",
    ]
    # 01:45 fires at its first pass (14:45Z), not its second (15:15Z); then the next day.
    assert next_fire("45 1 * * *", LORD_HOWE, utc(2026, 4, 4, 14, 40)) == utc(2026, 4, 4, 14, 45)
    assert next_fire("45 1 * * *", LORD_HOWE, utc(2026, 4, 4, 14, 50)) == utc(2026, 4, 5, 15, 15)


def _oracle(expression: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Fire instants in [start, end), by walking every UTC minute and reading the wall clock.

    Independent of the module under test: croniter lists the matching wall times. A minute
    fires when its wall time matches and is not a repeat, or when the clock jumped forward
    onto it past a matching wall time.
    """
    walls = croniter(expression, start.replace(tzinfo=None) - timedelta(days=2), ret_type=datetime)
    matching = [walls.get_next()]
    while matching[-1] < end.replace(tzinfo=None) + timedelta(days=2):
        matching.append(walls.get_next())
    matches = set(matching)
    fires = []
    instant = start
    while instant < end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        before = (instant - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None, fold=0)
        skipped = set()
        candidate = before + timedelta(minutes=1)
        while candidate < wall:
            skipped.add(candidate)
            candidate += timedelta(minutes=1)
        if (local.fold == 0 and wall in matches) or skipped & matches:
            fires.append(instant)
        instant += timedelta(minutes=1)
    return fires


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        (NEW_YORK, utc(2026, 3, 8, 3)),
        (NEW_YORK, utc(2026, 11, 1, 3)),
        (LONDON, utc(2026, 3, 28, 22)),
        (LONDON, utc(2026, 10, 24, 22)),
        (LORD_HOWE, utc(2026, 10, 3, 13)),
        (LORD_HOWE, utc(2026, 4, 4, 12)),
        (SANTIAGO, utc(2026, 9, 5, 23)),
        (SANTIAGO, utc(2026, 4, 4, 23)),
    ],
)
def test_every_transition_agrees_with_a_minute_by_minute_oracle(
    zone: ZoneInfo, start: datetime
) -> None:
    end = start + timedelta(hours=8)
    for expression in (
        "* * * * *",
        "*/7 * * * *",
        "*/15 * * * *",
        "0 * * * *",
        "30 * * * *",
        "15,45 0-3 * * *",
        "59 1 * * *",
        "0 0 * * *",
        "20 2 * * *",
    ):
        expected = _oracle(expression, zone, start, end)
        after = start - timedelta(microseconds=1)
        got = [fire for fire in upcoming(expression, zone, after, len(expected) + 1) if fire < end]
        assert got == expected, expression
        span = fires_between(expression, zone, start, end - timedelta(seconds=1))
        assert span.count == len(expected), expression
        # Every instant in the window, as `after`, gives the next expected fire.
        for minute in range(0, 8 * 60, 5):
            after = start + timedelta(minutes=minute, seconds=30)
            following = [fire for fire in expected if fire > after]
            if following:
                assert next_fire(expression, zone, after) == following[0], (expression, after)


def test_utc_agrees_with_croniter_on_random_expressions() -> None:
    rng = random.Random(20260501)

    def field(low: int, high: int) -> str:
        a, b = sorted(rng.sample(range(low, high + 1), 2))
        return rng.choice(
            [
                "*",
                str(a),
                f"{a}-{b}",
                f"*/{rng.randint(1, high)}",
                f"{a}-{b}/{rng.randint(1, 5)}",
                f"{a},{b}",
            ]
        )

    after = datetime(2026, 2, 3, 4, 5, 6)
    for _ in range(200):
        days = [field(1, 31), field(0, 6)]
        # croniter only treats a literal '*' as unrestricted; Vixie cron any field led by '*'.
        days = [d if not d.startswith("*/") else "*" for d in days]
        expression = " ".join([field(0, 59), field(0, 23), days[0], field(1, 12), days[1]])
        iterator = croniter(expression, after, ret_type=datetime)
        expected = [iterator.get_next().replace(tzinfo=UTC) for _ in range(5)]
        assert upcoming(expression, UTC_ZONE, after.replace(tzinfo=UTC), 5) == expected, expression


# Counting


def test_minutely_over_three_hours_counts_both_ends() -> None:
    span = fires_between("* * * * *", UTC_ZONE, utc(2026, 1, 1, 0), utc(2026, 1, 1, 3))
    assert span == Span(count=181, complete=True, first=utc(2026, 1, 1, 0), last=utc(2026, 1, 1, 3))
    off_tick = fires_between(
        "* * * * *", UTC_ZONE, utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 2, 59, 59)
    )
    assert (off_tick.count, off_tick.first, off_tick.last) == (
        179,
        utc(2026, 1, 1, 0, 1),
        utc(2026, 1, 1, 2, 59),
    )


def test_cap_reached_gives_a_lower_bound_and_the_exact_last() -> None:
    started = time.perf_counter()
    span = fires_between("* * * * *", BERLIN, utc(2026, 1, 1), utc(2026, 12, 31, 23, 30))
    assert time.perf_counter() - started < 5  # generous; typically about 50 ms
    assert span == Span(
        count=10_000, complete=False, first=utc(2026, 1, 1), last=utc(2026, 12, 31, 23, 30)
    )
    small = fires_between("0 * * * *", NEW_YORK, utc(2026, 3, 8), utc(2026, 3, 9, 12, 34), cap=3)
    assert small == Span(count=3, complete=False, first=utc(2026, 3, 8), last=utc(2026, 3, 9, 12))
    exactly = fires_between("0 * * * *", UTC_ZONE, utc(2026, 1, 1, 0), utc(2026, 1, 1, 2), cap=3)
    assert exactly == Span(
        count=3, complete=True, first=utc(2026, 1, 1, 0), last=utc(2026, 1, 1, 2)
    )


def test_empty_and_reversed_spans() -> None:
    empty = Span(count=0, complete=True, first=None, last=None)
    assert fires_between("0 9 * * *", UTC_ZONE, utc(2026, 1, 1, 10), utc(2026, 1, 2, 8)) == empty
    assert fires_between("0 9 * * *", UTC_ZONE, utc(2026, 1, 2), utc(2026, 1, 1)) == empty
    single = fires_between("0 9 * * *", UTC_ZONE, utc(2026, 1, 1, 9), utc(2026, 1, 1, 9))
    assert single == Span(count=1, complete=True, first=utc(2026, 1, 1, 9), last=utc(2026, 1, 1, 9))
    with pytest.raises(ValueError):
        fires_between("0 9 * * *", UTC_ZONE, utc(2026, 1, 1), utc(2026, 1, 2), cap=0)
