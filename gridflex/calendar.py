"""The utility tariff calendar: local days, holidays, business days (PROGRAMS.md).

The ``holidays`` package does not implement this calendar (it moves Saturday holidays to Friday
and adds state holidays), so it is the project's own: eight holidays, a Sunday holiday observed
the Monday after, a Saturday holiday not moved.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

LOCAL_ZONE = ZoneInfo("America/Los_Angeles")
MONDAY, THURSDAY, SATURDAY, SUNDAY = 0, 3, 5, 6


def iso_instant(instant: datetime) -> str:
    """UTC, to the millisecond (what timestamp-millis keeps), with a Z."""
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_date(instant: datetime) -> date:
    """The America/Los_Angeles calendar day an instant falls on."""
    return instant.astimezone(LOCAL_ZONE).date()


def local_day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC instants where a local day starts and ends (23 or 25 hours apart on DST days)."""
    start = datetime(day.year, day.month, day.day, tzinfo=LOCAL_ZONE)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=LOCAL_ZONE)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    following_month = date(year + month // 12, month % 12 + 1, 1)
    last = following_month - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


@lru_cache(maxsize=256)
def holidays(year: int) -> frozenset[date]:
    """The observed tariff holidays of a year."""
    named = [
        date(year, 1, 1),  # New Year's Day
        _nth_weekday(year, 2, MONDAY, 3),  # Presidents' Day
        _last_weekday(year, 5, MONDAY),  # Memorial Day
        date(year, 7, 4),  # Independence Day
        _nth_weekday(year, 9, MONDAY, 1),  # Labor Day
        date(year, 11, 11),  # Veterans Day
        _nth_weekday(year, 11, THURSDAY, 4),  # Thanksgiving Day
        date(year, 12, 25),  # Christmas Day
    ]
    return frozenset(day + timedelta(days=1) if day.weekday() == SUNDAY else day for day in named)


def is_holiday(day: date) -> bool:
    return day in holidays(day.year)


def is_weekday(day: date) -> bool:
    return day.weekday() < SATURDAY


def is_business_day(day: date) -> bool:
    return is_weekday(day) and not is_holiday(day)


@lru_cache(maxsize=4096)  # a pure function of the day: requests of one day share their answer
def add_business_days(day: date, count: int) -> date:
    """The ``count``-th business day after ``day`` (``day`` itself never counts)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    current = day
    while count:
        current += timedelta(days=1)
        if is_business_day(current):
            count -= 1
    return current


def _cycle_day_in(year: int, month: int, cycle_day: int) -> date:
    """The bill cycle day in a month; a month without that day uses its last day."""
    following = date(year + month // 12, month % 12 + 1, 1)
    return date(year, month, min(cycle_day, (following - timedelta(days=1)).day))


@lru_cache(maxsize=4096)
def bill_period(day: date, cycle_day: int) -> tuple[date, date]:
    """The bill period (first day, last day) containing ``day`` (PROGRAMS.md): from the cycle day
    of one month to the day before the cycle day of the next; cycle day 1 gives calendar months."""
    if not 1 <= cycle_day <= 31:
        raise ValueError(f"bill cycle day {cycle_day} is not 1-31")
    start = _cycle_day_in(day.year, day.month, cycle_day)
    if start > day:
        previous = date(day.year, day.month, 1) - timedelta(days=1)
        start = _cycle_day_in(previous.year, previous.month, cycle_day)
    after = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start, _cycle_day_in(after.year, after.month, cycle_day) - timedelta(days=1)


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later; a month without that day uses its last day."""
    index = day.year * 12 + day.month - 1 + months
    return _cycle_day_in(index // 12, index % 12 + 1, day.day)
