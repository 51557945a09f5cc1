"""How one service account performed in one energy event (PROGRAMS.md, CONTRACTS.md): pure.

:func:`evaluate` reads an ended event, the program's baseline rules, the account's usage
(:class:`AccountUsage`) and every dispatched event, and says one of:

- SETTLEABLE: baseline, actual and reduction (never negative), from complete usage;
- INELIGIBLE: the account was not in effect at the event start, its service was turned on or
  ended, or Net Energy Metering was activated, inside the look-back;
- INSUFFICIENT_DATA: fewer eligible candidate days than the method needs in the search range,
  or, once the data deadline has passed, usage still missing (which days, how many intervals);
- or nothing yet (``status`` None): usage is missing and the deadline has not passed.

Which accounts an event concerns: those with a thermostat of a targeted provider enrolled in the
event's program on the event's (first local) day, the fan-out's rule; one whose enrollment ended
that very day is INELIGIBLE. An account was "dispatched" on the days of every event, of any
program, that concerned it this way, whether or not it overrode; those days are not candidates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Iterable

import orjson

from gridflex.calendar import LOCAL_ZONE, local_date
from gridflex.enrollments import devices_in_effect
from gridflex.programs import Baseline
from services.baseline.domain.methods import adjust, candidate_days, method, rounded
from services.baseline.domain.usage import AccountUsage, Window

SETTLEABLE, INSUFFICIENT_DATA, INELIGIBLE = "SETTLEABLE", "INSUFFICIENT_DATA", "INELIGIBLE"
HOUR = timedelta(hours=1)
ZERO = Decimal(0)


@dataclass(frozen=True)
class DispatchedEvent:
    """An accepted event as the lifecycle last told it; ``end`` is when it stopped if cancelled
    while in progress."""

    event_id: str
    program_id: str
    start: datetime
    end: datetime
    targets: frozenset[str]
    ended: bool = False

    @property
    def day(self) -> date:
        return local_date(self.start)

    def days(self) -> tuple[date, ...]:
        """The local days the event touches."""
        first, last = self.day, local_date(self.end - timedelta(milliseconds=1))
        return tuple(first + timedelta(days=n) for n in range((last - first).days + 1))

    def clock_window(self, day: date) -> tuple[datetime, datetime]:
        """The event's clock hours on another day (same local times, same span of days)."""
        start, end = self.start.astimezone(LOCAL_ZONE), self.end.astimezone(LOCAL_ZONE)
        following = day + (end.date() - start.date())
        return (datetime.combine(day, start.time(), LOCAL_ZONE), datetime.combine(following, end.time(), LOCAL_ZONE))

    def deadline(self, rules: Baseline) -> datetime:
        return self.end + timedelta(days=rules.data_deadline_days)

    def window_closes(self, rules: Baseline) -> datetime:
        return self.end + timedelta(days=rules.settlement_window_days)


@dataclass(frozen=True)
class Performance:
    status: str | None  # None: waiting for usage
    candidate_days: tuple[date, ...] = ()
    baseline_kwh: Decimal | None = None
    actual_kwh: Decimal | None = None
    reduction_kwh: Decimal | None = None
    reason: str | None = None
    missing: tuple[str, ...] = field(default=(), compare=False)  # what is awaited, for logs and reasons

    def record(self, event: DispatchedEvent, account_id: str, method_name: str, revision: int) -> dict:
        """The ``EventPerformance`` record."""
        return {
            "event_id": event.event_id, "program_id": event.program_id, "service_account_id": account_id,
            "method": method_name, "baseline_kwh": self.baseline_kwh, "actual_kwh": self.actual_kwh,
            "reduction_kwh": self.reduction_kwh, "candidate_days": sorted(self.candidate_days),
            "status": self.status, "reason": self.reason, "revision": revision,
        }

    def digest(self) -> str:
        """What makes two results the same result: a changed one is revised, an equal one is not."""
        content = [self.status, [day.isoformat() for day in self.candidate_days], str(self.baseline_kwh),
                   str(self.actual_kwh), str(self.reduction_kwh), self.reason]
        return hashlib.blake2b(orjson.dumps(content), digest_size=8).hexdigest()


def participation(usage: AccountUsage, event: DispatchedEvent) -> str | None:
    """"IN_EFFECT" when the event reached the account, "ENDED" when its enrollment ended on the
    event's day, else None (the event does not concern the account)."""
    periods = usage.programs.get(event.program_id)
    if not periods:
        return None
    day = event.day.isoformat()
    if devices_in_effect(periods, day, event.targets):
        return "IN_EFFECT"
    if any(to == day for provider, _, since, to in periods if since <= day and (not event.targets or provider in event.targets)):
        return "ENDED"
    return None


def dispatched_days(usage: AccountUsage, events: Iterable[DispatchedEvent], since: date, before: date) -> frozenset[date]:
    """The days in [since, before) on which an event reached the account."""
    days = set()
    for other in events:
        if since <= other.day < before or since <= local_date(other.end) < before:
            periods = usage.programs.get(other.program_id)
            if periods and devices_in_effect(periods, other.day.isoformat(), other.targets):
                days.update(day for day in other.days() if since <= day < before)
    return frozenset(days)


def evaluate(event: DispatchedEvent, rules: Baseline, usage: AccountUsage, events: Iterable[DispatchedEvent],
             now: datetime) -> Performance | None:
    """The account's performance in ``event``, None when the event does not concern it."""
    taking_part = participation(usage, event)
    if taking_part is None:
        return None
    day = event.day
    search_from = day - timedelta(days=rules.search_days)
    candidates = look_back(event, rules, usage, events)
    if taking_part == "ENDED":
        return Performance(INELIGIBLE, candidates, reason=f"NOT_ENROLLED_AT_START: the enrollment in "
                                                           f"{event.program_id} ended on {day.isoformat()}")
    past_deadline = now >= event.deadline(rules)
    if usage.facts is None:
        if not past_deadline:
            return Performance(None, candidates, missing=("the customer account record",))
        return Performance(INSUFFICIENT_DATA, candidates,
                           reason="NO_CUSTOMER_ACCOUNT: the utility has not published the service account")
    look_back_from = min(candidates) if len(candidates) == rules.candidate_days else search_from
    ineligible = _ineligible(usage.facts, look_back_from, day)
    if ineligible is not None:
        return Performance(INELIGIBLE, candidates, reason=ineligible)
    if len(candidates) < rules.candidate_days:
        return Performance(INSUFFICIENT_DATA, candidates, reason=(
            f"FEWER_CANDIDATE_DAYS: {len(candidates)} eligible weekdays in the {rules.search_days} days before "
            f"{day.isoformat()}; the method needs {rules.candidate_days}"))
    return _measure(event, rules, usage, candidates, past_deadline)


def _ineligible(facts: dict, look_back_from: date, day: date) -> str | None:
    since, until = look_back_from.isoformat(), day.isoformat()
    if facts["service_start"] is not None and facts["service_start"] >= since:
        return f"SERVICE_TURNED_ON: service started {facts['service_start']}, inside the look-back {since} to {until}"
    if facts["service_end"] is not None and facts["service_end"] <= until:
        return f"SERVICE_ENDED: service ended {facts['service_end']}, on or before the event day {until}"
    nem = facts["net_metering_since"]
    if nem is not None and since <= nem <= until:
        return f"NET_METERING_ACTIVATED: Net Energy Metering from {nem}, inside the look-back {since} to {until}"
    return None


def _measure(event: DispatchedEvent, rules: Baseline, usage: AccountUsage, candidates: tuple[date, ...],
             past_deadline: bool) -> Performance:
    missing: list[str] = []

    def read(label: str, start: datetime, end: datetime) -> Decimal | None:
        window: Window = usage.window(start, end)
        if window.kwh is None:
            missing.append(f"{label} {_span(start, end)}: {window.missing} of {window.expected} intervals")
        return window.kwh

    day_kwh = [read(day.isoformat(), *event.clock_window(day)) for day in candidates]
    actual = read(f"event day {event.day.isoformat()}", event.start, event.end)
    adjustment = rules.day_of_adjustment
    if adjustment is not None:
        shift_end, shift_start = timedelta(hours=adjustment.gap_hours), timedelta(
            hours=adjustment.gap_hours + adjustment.hours_before)
        windows = [(day, *event.clock_window(day)) for day in (event.day, *candidates)]
        before = [read(f"{day.isoformat()} (day-of adjustment)", start - shift_start, start - shift_end)
                  for day, start, _ in windows]
    if missing:
        if not past_deadline:
            return Performance(None, candidates, actual_kwh=_kwh(actual), missing=tuple(missing))
        return Performance(INSUFFICIENT_DATA, candidates, actual_kwh=_kwh(actual),
                           reason="MISSING_USAGE: " + "; ".join(missing), missing=tuple(missing))
    result = method(rules)(day_kwh, rules)
    baseline = result.kwh
    if adjustment is not None:
        used_before = sum((before[1 + index] for index in result.days_used), ZERO) / len(result.days_used)
        hours = Decimal((event.end - event.start).total_seconds()) / 3600
        baseline = adjust(baseline, before[0], used_before, hours, adjustment)
    baseline = rounded(baseline)
    actual = rounded(actual)
    return Performance(SETTLEABLE, candidates, baseline, actual, max(baseline - actual, rounded(ZERO)))


def hour_around(event: DispatchedEvent, usage: AccountUsage, window: timedelta = HOUR
                ) -> tuple[Decimal | None, Decimal | None]:
    """Usage in the ``window`` (an hour) before the start and after the end: the minimum-usage
    removal rule's measure."""
    before = usage.window(event.start - window, event.start).kwh
    after = usage.window(event.end, event.end + window).kwh
    return _kwh(before), _kwh(after)


def _kwh(value: Decimal | None) -> Decimal | None:
    return rounded(value) if value is not None else None


def _span(start: datetime, end: datetime) -> str:
    start, end = start.astimezone(LOCAL_ZONE), end.astimezone(LOCAL_ZONE)
    return f"{start:%H:%M}–{end:%H:%M}"


def look_back(event: DispatchedEvent, rules: Baseline, usage: AccountUsage,
              events: Iterable[DispatchedEvent]) -> tuple[date, ...]:
    """The account's candidate days for the event, most recent first."""
    day = event.day
    excluded = dispatched_days(usage, events, day - timedelta(days=rules.search_days), day)
    return candidate_days(day, rules.candidate_days, rules.search_days, excluded)


def needed_days(event: DispatchedEvent, candidates: Iterable[date]) -> set[str]:
    """The local days a result reads (with a day's margin either side, for windows across
    midnight): kept while its settlement window is open, so that a late revision of any of them
    still revises the result."""
    span = event.days()
    days = set()
    for day in (*candidates, *span):
        for offset in range(-1, len(span) + 1):
            days.add((day + timedelta(days=offset)).isoformat())
    return days
