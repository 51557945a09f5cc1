"""One service account's interval usage, as the baseline service keeps it (pure: no Kafka).

Usage is kept per meter and local day, dense: slot ``i`` of a day holds the interval that starts
``i × interval_seconds`` after the day's local midnight (a 23-hour DST day has 23 hourly slots,
a 25-hour day 25), so "the same clock hours" on another day is a slice of that day's slots.
A value is an integer count of 10^-scale kWh (``scale`` is the day's finest decimal place, at
most 9): exact, and small in JSON state. Each slot keeps the highest revision applied; a lower
or equal revision of an interval changes nothing (telemetry re-delivers at least once).

Which intervals a window needs: every slot that lies inside it (PROGRAMS.md: "usage over a
window is the sum of the meter intervals that lie inside it"), for every meter expected on that
day. A meter is expected on the days from its first to its last reported day, so an account
with two meters adds both, and a meter swapped for another is not waited for after its last
day; a day no meter is expected on has no usage at all (the whole window is missing).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

from gridflex.calendar import local_date, local_day_bounds

# A meter's day in the state: [interval_seconds, scale, values, revisions]; values[i] is None while
# the interval is missing; revisions maps str(i) → revision, for revisions above 0 only.
MeterDay = list
ONE_SECOND = timedelta(seconds=1)
DEFAULT_SECONDS = 3600  # how missing intervals are counted on a day no meter reported


class IntervalRefused(NamedTuple):
    reason_code: str
    reason: str


class Window(NamedTuple):
    """Usage over one window: ``kwh`` is None when any expected interval is missing."""

    kwh: Decimal | None
    missing: int  # intervals missing
    expected: int  # intervals the window needs


@lru_cache(maxsize=4096)
def _day_start(day: date) -> datetime:
    return local_day_bounds(day)[0]


@lru_cache(maxsize=4096)
def _day_slots(day: date, seconds: int) -> int:
    start, end = local_day_bounds(day)
    return int((end - start).total_seconds()) // seconds


@lru_cache(maxsize=65536)
def segments(start: datetime, end: datetime, seconds: int) -> dict[str, tuple[int, int]]:
    """The slots of ``seconds``-long intervals that lie inside [start, end): ISO day → (first,
    stop) for each local day the window touches (a day with none inside maps to an empty range).
    Cached: do not modify the answer."""
    parts = {}
    day = local_date(start)
    last_day = local_date(end - ONE_SECOND)
    while day <= last_day:
        day_start, day_end = local_day_bounds(day)
        low = max(start, day_start) - day_start
        high = min(end, day_end) - day_start
        first = -(-int(low.total_seconds()) // seconds)  # the first interval starting at or after the window start
        stop = int(high.total_seconds()) // seconds  # intervals ending at or before the window end
        parts[day.isoformat()] = (first, max(stop, first))
        day += timedelta(days=1)
    return parts


def _scale_of(kwh: Decimal) -> int:
    return max(0, -kwh.normalize().as_tuple().exponent)


class AccountUsage:
    """An account's facts, enrollments and usage: one state record, read and written whole."""

    __slots__ = ("facts", "programs", "meters", "_spans")

    def __init__(self, facts: dict | None = None, programs: dict | None = None, meters: dict | None = None):
        self.facts = facts  # {"service_start", "service_end", "net_metering_since"} (ISO dates) or None if unknown
        self.programs = programs or {}  # program_id → [DevicePeriod] (gridflex.enrollments)
        self.meters: dict[str, dict[str, MeterDay]] = meters or {}  # meter_id → ISO day → MeterDay
        self._spans: dict[str, tuple[str, str]] | None = None

    @classmethod
    def from_state(cls, state: dict | None) -> "AccountUsage":
        if state is None:
            return cls()
        return cls(state.get("facts"), state.get("programs"), state.get("meters"))

    def to_state(self) -> dict:
        return {"facts": self.facts, "programs": self.programs, "meters": self.meters}

    # -- updates --------------------------------------------------------------------------------

    def set_facts(self, account: dict) -> bool:
        """From a CustomerAccount record; True when something the baseline reads changed."""
        facts = {name: _iso(account[name]) for name in ("service_start", "service_end", "net_metering_since")}
        if facts == self.facts:
            return False
        self.facts = facts
        return True

    def record_interval(self, interval: dict) -> str | None | IntervalRefused:
        """Apply a MeterInterval; returns its local day (ISO) when it changed the usage, None when
        it is already known (same or lower revision), or why it is refused."""
        seconds = interval["interval_seconds"]
        day: date = interval["local_date"]
        offset = (interval["interval_start"] - _day_start(day)).total_seconds()
        slot, remainder = divmod(int(offset), seconds)
        slots = _day_slots(day, seconds)
        if remainder or not 0 <= slot < slots:
            return IntervalRefused("MISALIGNED_INTERVAL", f"interval_start {interval['interval_start'].isoformat()} "
                                   f"is not a {seconds} s interval of local day {day.isoformat()}")
        days = self.meters.setdefault(interval["meter_id"], {})
        key = day.isoformat()
        meter_day = days.get(key)
        if meter_day is None:
            meter_day = days[key] = [seconds, 0, [None] * slots, {}]
            self._spans = None
        elif meter_day[0] != seconds:
            return IntervalRefused("INTERVAL_LENGTH_CHANGED", f"meter {interval['meter_id']} reported "
                                   f"{meter_day[0]} s intervals on {key}; this one is {seconds} s")
        revision, revisions, values = interval["revision"], meter_day[3], meter_day[2]
        if values[slot] is not None and revision <= revisions.get(str(slot), 0):
            return None
        kwh: Decimal = interval["kwh"]
        scale = _scale_of(kwh)
        if scale > meter_day[1]:
            factor = 10 ** (scale - meter_day[1])
            meter_day[2] = values = [v * factor if v is not None else None for v in values]
            meter_day[1] = scale
        values[slot] = int(kwh.scaleb(meter_day[1]))
        if revision:
            revisions[str(slot)] = revision
        else:
            revisions.pop(str(slot), None)
        return key

    def expire(self, keep_from: date, pinned: set[str]) -> int:
        """Forget the days before ``keep_from`` that are not ``pinned``; returns meter days dropped."""
        bound, dropped = keep_from.isoformat(), 0
        for meter_id in list(self.meters):
            days = self.meters[meter_id]
            for key in [key for key in days if key < bound and key not in pinned]:
                del days[key]
                dropped += 1
            if not days:
                del self.meters[meter_id]
        if dropped:
            self._spans = None
        return dropped

    # -- reading --------------------------------------------------------------------------------

    def _meter_spans(self) -> dict[str, tuple[str, str]]:
        if self._spans is None:
            self._spans = {meter_id: (min(days), max(days)) for meter_id, days in self.meters.items() if days}
        return self._spans

    def window(self, start: datetime, end: datetime) -> Window:
        """Usage over [start, end), summed over the meters expected on each day it touches."""
        total, missing, expected = Decimal(0), 0, 0
        spans = self._meter_spans()
        for day in segments(start, end, DEFAULT_SECONDS):
            reporting = [meter_id for meter_id, (low, high) in spans.items() if low <= day <= high]
            if not reporting:
                first, stop = segments(start, end, DEFAULT_SECONDS)[day]
                missing += stop - first
                expected += stop - first
                continue
            for meter_id in reporting:
                days = self.meters[meter_id]
                meter_day = days.get(day)
                seconds = meter_day[0] if meter_day is not None else days[max(days)][0]
                first, stop = segments(start, end, seconds)[day]
                expected += stop - first
                if meter_day is None:
                    missing += stop - first
                    continue
                values = meter_day[2][first:stop]
                if None in values:
                    missing += values.count(None)
                elif not missing:
                    total += Decimal(sum(values)).scaleb(-meter_day[1])
        return Window(None if missing else total, missing, expected)


def _iso(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else value.isoformat()
