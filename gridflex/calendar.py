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
