"""Cron expressions in a time zone: validation and fire instants.

Owns what a schedule's ``cron`` and ``timezone`` mean. Pure functions: no database and no clock
(callers pass ``after``), so the scheduler, the API and the tests agree on every instant.

Fields are matched against local wall-clock time in the schedule's zone, then mapped to UTC:
a wall time that occurs twice (DST fall-back) fires at its first occurrence only, and one that
does not exist (DST spring-forward gap) fires at the end of the gap. Results never repeat an
instant, so several skipped wall times in one gap fire once.
"""

from __future__ import annotations

import functools
import itertools
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from orchestrator.errors import InvalidRequest

MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MAX_EXPRESSION_LENGTH = 255  # characters
MAX_ZONE_NAME_LENGTH = 64  # characters; the longest IANA name is about 30
# How far ahead next_fire and upcoming look (days). The Gregorian calendar repeats every 400
# years, so an expression that can fire at all fires within that; the longest real wait is a
# few years ("0 0 29 2 *" waits 8 around 2100). Expressions that can never fire are found
# without searching (see ``_Schedule.can_fire``).
HORIZON_DAYS = 400 * 366
# The last day of each month in a leap year.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Names available_timezones() may list that are the host's settings or placeholders, not zones.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})

_ITEM = re.compile(
    r"(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>[0-9]+))?", re.ASCII | re.IGNORECASE
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    # 7 is Sunday too, as in every cron.
    _Field("day-of-week", 0, 7, _WEEKDAYS),
)


@dataclass(frozen=True)
class _Schedule:
    minutes: tuple[int, ...]  # sorted
    hours: tuple[int, ...]  # sorted
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # Python's numbering: Monday is 0
    # Vixie cron: when both day fields are restricted a day matches either; otherwise both.
    day_or: bool

    @property
    def can_fire(self) -> bool:
        """Whether any day ever matches (``0 0 30 2 *`` never does).

        Either day field matching is enough when both are restricted, and every weekday has
        days in every month. Otherwise a day of the month must exist in one of the months; over
        400 years each date, 29 February included, falls on every weekday.
        """
        return self.day_or or any(
            day <= _MONTH_DAYS[month - 1] for month in self.months for day in self.days
        )

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        if self.day_or:
            return day.day in self.days or day.weekday() in self.weekdays
        return day.day in self.days and day.weekday() in self.weekdays


@dataclass(frozen=True)
class Span:
    """What a schedule fires in ``[start, end]``."""

    count: int  # fire instants in [start, end] (both inclusive), counting stops at the cap
    complete: bool  # False when counting stopped at the cap (count is then a lower bound)
    first: datetime | None  # earliest fire instant in [start, end], UTC
    last: datetime | None  # latest fire instant in [start, end], UTC, exact even when capped


def _invalid(reason: str) -> InvalidRequest:
    return InvalidRequest(f"cron: {reason}", field="cron")


def _value(field: _Field, text: str) -> int:
    if text.isdigit():
        number = int(text)
    elif text.lower() in field.names:
        number = field.low + field.names.index(text.lower())
    elif field.names:
        raise _invalid(
            f"{field.name} field: {text!r} is not a number or a name ({', '.join(field.names)})"
        )
    else:
        raise _invalid(f"{field.name} field: {text!r} is not a number")
    if not field.low <= number <= field.high:
        raise _invalid(f"{field.name} field: {number} is out of range {field.low}-{field.high}")
    return number


def _parse_field(field: _Field, text: str) -> set[int]:
    """The values one field allows; ``*`` and ``*/n`` parse like ``low-high`` and ``low-high/n``."""
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise _invalid(
                f"{field.name} field: cannot read {item!r} "
                "(use numbers, names, ranges a-b, steps */n or a-b/n, and lists a,b)"
            )
        part, step_text = match["range"], match["step"]
        if part == "*":
            low, high = field.low, field.high
        elif "-" in part:
            low, high = (_value(field, side) for side in part.split("-"))
            if low > high:
                raise _invalid(f"{field.name} field: range {part} goes backwards")
        else:
            # "5/15" means from 5 to the end in steps of 15, as in croniter and Quartz.
            low = _value(field, part)
            high = field.high if step_text is not None else low
        step = int(step_text) if step_text is not None else 1
        if step < 1:
            raise _invalid(f"{field.name} field: step {step} must be at least 1")
        values.update(range(low, high + 1, step))
    return values


@functools.lru_cache(maxsize=1024)
def _parse(expression: str) -> tuple[str, _Schedule]:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise _invalid(f"expression is too long (at most {MAX_EXPRESSION_LENGTH} characters)")
    normalised = " ".join(expression.split())
    if not normalised:
        raise _invalid("expression is empty (expected 5 fields: minute hour day month weekday)")
    if normalised.startswith("@"):
        macro = normalised.lower()
        if macro == "@reboot":
            raise _invalid("@reboot is not supported (a schedule fires at times, not at start-up)")
        if macro not in MACROS:
            raise _invalid(f"unknown macro {normalised!r} (known: {', '.join(MACROS)})")
        return macro, _parse(MACROS[macro])[1]
    texts = normalised.split(" ")
    if len(texts) != len(_FIELDS):
        raise _invalid(
            f"expected 5 fields (minute hour day month weekday), got {len(texts)}"
            "; seconds and years fields are not supported"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(field, text) for field, text in zip(_FIELDS, texts, strict=True)
    )
    schedule = _Schedule(
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset((weekday - 1) % 7 for weekday in weekdays),
        day_or=not texts[2].startswith("*") and not texts[4].startswith("*"),
    )
    return normalised, schedule


def _checked(expression: str) -> tuple[str, _Schedule]:
    if not isinstance(expression, str):
        raise _invalid("expression must be a string such as '0 9 * * mon-fri'")
    return _parse(expression)


def parse_cron(expression: str) -> str:
    """Validate a 5-field cron expression or a macro; return it with whitespace collapsed.

    Macros come back lower-cased. Raises ``InvalidRequest(field="cron")`` naming the reason.
    """
    return _checked(expression)[0]


@functools.cache
def _zone_names() -> dict[str, str]:
    """Every IANA zone name this host knows, keyed by its case-folded form."""
    return {name.casefold(): name for name in available_timezones() - _NOT_ZONES}


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (``"Europe/Berlin"``, ``"UTC"``); ``InvalidRequest`` otherwise."""
    hint = "use an IANA name such as 'Europe/Berlin' or 'UTC'"
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest(f"timezone: a time zone name is required ({hint})", field="timezone")
    if len(name) > MAX_ZONE_NAME_LENGTH:
        raise InvalidRequest(f"timezone: name is too long ({hint})", field="timezone")
    known = _zone_names().get(name.strip().casefold())
    if known != name:
        suggestion = f"did you mean {known!r}?" if known else hint
        raise InvalidRequest(
            f"timezone: unknown time zone {name!r} ({suggestion})", field="timezone"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidRequest(f"timezone: cannot load {name!r}", field="timezone") from exc


def _walls_after(schedule: _Schedule, wall: datetime, last_day: date) -> Iterator[datetime]:
    """Matching naive wall times strictly after ``wall``, ascending, through ``last_day``."""
    day = wall.date()
    first_hour = bisect_left(schedule.hours, wall.hour)
    while day <= last_day:
        if schedule.matches_day(day):
            for hour in schedule.hours[first_hour:]:
                # Only the hour of ``wall`` itself starts part-way; fire times have no seconds.
                first_minute = (
                    bisect_right(schedule.minutes, wall.minute)
                    if day == wall.date() and hour == wall.hour
                    else 0
                )
                for minute in schedule.minutes[first_minute:]:
                    yield datetime.combine(day, time(hour, minute))
        if day == date.max:
            return
        day += timedelta(days=1)
        first_hour = 0


def _walls_at_or_before(schedule: _Schedule, wall: datetime, first_day: date) -> Iterator[datetime]:
    """Matching naive wall times at or before ``wall``, descending, back to ``first_day``."""
    day = wall.date()
    while day >= first_day:
        if schedule.matches_day(day):
            for hour in reversed(schedule.hours):
                for minute in reversed(schedule.minutes):
                    candidate = datetime.combine(day, time(hour, minute))
                    if candidate <= wall:
                        yield candidate
        if day == date.min:
            return
        day -= timedelta(days=1)


def wall_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a naive wall time fires at in ``zone``.

    A repeated wall time maps to its first occurrence (fold=0); a skipped one to the end of the
    gap, found by bisecting whole seconds, because gaps are not always an hour (Lord Howe: 30 min).
    """
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # In a gap fold=0 and fold=1 apply the offsets from either side of it, bracketing its end.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = int(min(instant, other).timestamp()), int(max(instant, other).timestamp())
    # Invariant: at ``low`` the wall clock reads before ``wall``, at ``high`` at or after it.
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("cron needs timezone-aware datetimes")
    # In UTC, comparisons and arithmetic never ignore ``fold`` (same-tzinfo datetimes would).
    return instant.astimezone(UTC)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock reading of a UTC ``instant`` in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _fires_after(
    schedule: _Schedule, zone: ZoneInfo, after: datetime, last_day: date
) -> Iterator[datetime]:
    """Fire instants strictly after the UTC ``after``, strictly increasing, through ``last_day``."""
    previous = after
    try:
        # Wall times up to ``after``'s own never map later than it, so start there; when
        # ``after`` is in a repeated hour's second pass the rest of that hour maps earlier and
        # is skipped below, as are the later of several gap times that share one instant.
        for wall in _walls_after(schedule, _wall(after, zone), last_day):
            instant = wall_to_utc(wall, zone)
            if instant > previous:
                yield instant
                previous = instant
    except OverflowError:
        # Past year 9999 in UTC: nothing more to fire.
        return


def _horizon(after: datetime, zone: ZoneInfo) -> date:
    today = _wall(after, zone).date()
    return today + timedelta(days=min(HORIZON_DAYS, (date.max - today).days))


def next_fire(expression: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire instant strictly after the aware ``after``, in UTC.

    None when the expression can never fire (e.g. ``"0 0 30 2 *"``) or not before year 9999.
    """
    schedule = _checked(expression)[1]
    after = _utc(after)
    if not schedule.can_fire:
        return None
    return next(_fires_after(schedule, zone, after, _horizon(after, zone)), None)


def upcoming(expression: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants after the aware ``after`` (UTC, strictly increasing).

    Fewer (maybe none) when the expression can never fire or reaches year 9999.
    """
    schedule = _checked(expression)[1]
    after = _utc(after)
    if not schedule.can_fire:
        return []
    fires = _fires_after(schedule, zone, after, _horizon(after, zone))
    return list(itertools.islice(fires, count))


def _last_fire(
    schedule: _Schedule, zone: ZoneInfo, start: datetime, end: datetime
) -> datetime | None:
    """The latest fire instant in the UTC ``[start, end]``, searching backwards from ``end``."""
    # When ``end`` is in a repeated hour's second pass, the wall times up to the end of that
    # hour fire at their first pass, before ``end``: start the search that much later.
    shift = end - end.astimezone(zone).replace(fold=0).astimezone(UTC)
    try:
        walls = _walls_at_or_before(
            schedule, _wall(end, zone) + shift, _wall(start, zone).date() - timedelta(days=1)
        )
        for wall in walls:
            instant = wall_to_utc(wall, zone)
            if instant < start:
                return None
            if instant <= end:
                return instant
    except OverflowError:
        return None
    return None


def fires_between(
    expression: str, zone: ZoneInfo, start: datetime, end: datetime, cap: int = 10_000
) -> Span:
    """Count the fire instants in ``[start, end]`` (both aware), stopping at ``cap``.

    ``first`` and ``last`` are exact even when the count stopped at the cap.
    """
    if cap < 1:
        raise ValueError("cap must be at least 1")
    schedule = _checked(expression)[1]
    start, end = _utc(start), _utc(end)
    count = 0
    first: datetime | None = None
    last: datetime | None = None
    if end < start or not schedule.can_fire:
        return Span(count=count, complete=True, first=first, last=last)
    # A day past the end's wall date covers wall times that map back before ``end``.
    last_day = _wall(end, zone).date()
    last_day += timedelta(days=min(1, (date.max - last_day).days))
    for instant in _fires_after(schedule, zone, start - timedelta(microseconds=1), last_day):
        if instant > end:
            break
        if count == cap:
            last = _last_fire(schedule, zone, start, end)
            return Span(count=count, complete=False, first=first, last=last)
        if first is None:
            first = instant
        count += 1
        last = instant
    return Span(count=count, complete=True, first=first, last=last)
