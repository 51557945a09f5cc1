"""Baseline methods: named, pure functions of the candidate days' usage (PROGRAMS.md).

A method receives the usage over the event's clock hours on each candidate day (most recent
first) and the program's baseline rules, and says which days it averages. Both registered
methods average the N highest of the candidate days: the CSRL the three highest of five, the
10-of-10 all ten. A program names its method in its file (``baseline.method``); a new method
is a function registered here.

Candidate days: the most recent weekdays before the event day that are neither holidays nor days
the account was dispatched for an event (of any program, even when it overrode), looked for in
the ``search_days`` calendar days before the event day.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Callable, NamedTuple, Sequence

from gridflex.calendar import is_business_day
from gridflex.programs import AdjustmentKind, Baseline, DayOfAdjustment

KWH = Decimal("0.000000001")  # results carry nine decimal places (EventPerformance: scale 9)


class MethodResult(NamedTuple):
    kwh: Decimal  # the baseline before any day-of adjustment (not rounded)
    days_used: tuple[int, ...]  # indexes of the candidate days averaged


Method = Callable[[Sequence[Decimal], Baseline], MethodResult]


def highest_days_average(day_kwh: Sequence[Decimal], rules: Baseline) -> MethodResult:
    """The average of the ``highest_days`` highest days; of equal days, the more recent counts."""
    ranked = sorted(range(len(day_kwh)), key=lambda index: (-day_kwh[index], index))
    used = tuple(sorted(ranked[:rules.highest_days]))
    return MethodResult(sum(day_kwh[index] for index in used) / len(used), used)


METHODS: dict[str, Method] = {
    "csrl-3-of-5": highest_days_average,  # the three highest of the five candidate days
    "average-10-of-10": highest_days_average,  # all ten candidate days
}


def method(rules: Baseline) -> Method:
    try:
        return METHODS[rules.method]
    except KeyError:
        raise ValueError(f"baseline method {rules.method!r} is not one of {sorted(METHODS)}") from None


@lru_cache(maxsize=65536)
def candidate_days(event_day: date, count: int, search_days: int, excluded: frozenset[date]) -> tuple[date, ...]:
    """Up to ``count`` eligible weekdays before ``event_day``, most recent first, among the
    ``search_days`` calendar days before it; ``excluded`` are the account's dispatched days."""
    found = []
    for back in range(1, search_days + 1):
        day = event_day - timedelta(days=back)
        if is_business_day(day) and day not in excluded:
            found.append(day)
            if len(found) == count:
                break
    return tuple(found)


def adjust(baseline: Decimal, day_of_kwh: Decimal, baseline_window_kwh: Decimal, event_hours: Decimal,
           adjustment: DayOfAdjustment) -> Decimal:
    """The baseline moved toward the event day's usage in the hours before the event, by at
    most ``max_change`` of itself either way.

    RATIO scales it by day-of / baseline usage over the adjustment hours (no change when the
    baseline days used nothing then); ADDITIVE adds the hourly difference for each event hour."""
    if adjustment.kind is AdjustmentKind.RATIO:
        if baseline_window_kwh == 0:
            return baseline
        ratio = min(max(day_of_kwh / baseline_window_kwh, 1 - adjustment.max_change), 1 + adjustment.max_change)
        return baseline * ratio
    change = (day_of_kwh - baseline_window_kwh) / adjustment.hours_before * event_hours
    bound = baseline * adjustment.max_change
    return max(baseline + min(max(change, -bound), bound), Decimal(0))


def rounded(kwh: Decimal) -> Decimal:
    return kwh.quantize(KWH, rounding=ROUND_HALF_UP)
