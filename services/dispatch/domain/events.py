"""Energy events judged against their program's limits (PROGRAMS.md), and the time each program
has used.

An event request (SCHEDULE, UPDATE, CANCEL) is accepted or rejected with every rule it breaks;
:func:`decide` is pure: it reads the event as it stands and the program's hour ledger (time used
per local day and per calendar year, from every accepted event) and says what the event becomes
and how much time it counts. An UPDATE counts its new window instead of the old one; a CANCEL
gives back what the event had not used yet. Time is counted in milliseconds, per local day, so
an event across midnight or a DST change counts exactly its length on each day.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple, Protocol

import orjson

from gridflex.calendar import LOCAL_ZONE, is_business_day, local_date, local_day_bounds
from gridflex.programs import DayKind, Program, ProgramCatalogue

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
ONE_MS = timedelta(milliseconds=1)

# Lifecycle statuses (gridflex.dispatch.EventLifecycle)
SCHEDULED, UPDATED, CANCELLED, REJECTED, STARTED, ENDED = (
    "SCHEDULED", "UPDATED", "CANCELLED", "REJECTED", "STARTED", "ENDED")


class Failure(NamedTuple):
    code: str
    message: str


class HourLedger(Protocol):
    """Time already counted against a program by its accepted events."""

    def day_ms(self, program_id: str, day: date) -> int: ...

    def year_ms(self, program_id: str, year: int) -> int: ...


@dataclass
class Event:
    """An accepted event as it stands (after its latest UPDATE or CANCEL)."""

    event_id: str
    program_id: str
    reason: str
    start: datetime
    end: datetime
    setpoint_offset_f: int
    precool: bool
    targets: list[str]
    issued_at: datetime
    revision: int = 1  # 1 when scheduled, +1 per accepted UPDATE or CANCEL
    cancelled: bool = False
    started: bool = False
    ended: bool = False
    counted: dict[str, int] = field(default_factory=dict)  # local day (ISO) → ms counted against the program

    def to_state(self) -> dict:
        return {**self.__dict__, "start": _iso(self.start), "end": _iso(self.end), "issued_at": _iso(self.issued_at)}

    @classmethod
    def from_state(cls, state: dict) -> "Event":
        return cls(**{**state, "start": datetime.fromisoformat(state["start"]),
                      "end": datetime.fromisoformat(state["end"]),
                      "issued_at": datetime.fromisoformat(state["issued_at"])})


@dataclass
class Decision:
    """What one request does: the lifecycle status, the rules it broke, the event after it and
    how the time counted against the program changes (ms per local day, before → after)."""

    status: str
    failures: list[Failure]
    event: Event | None
    counted_before: dict[str, int] = field(default_factory=dict)
    counted_after: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status != REJECTED

    def ledger_changes(self) -> dict[str, int]:
        """ms to add per local day (negative: time given back)."""
        days = set(self.counted_before) | set(self.counted_after)
        changes = {day: self.counted_after.get(day, 0) - self.counted_before.get(day, 0) for day in days}
        return {day: delta for day, delta in sorted(changes.items()) if delta}


def fingerprint(request: dict) -> str:
    """Identity of a request's content: a re-delivered request has the same one."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def ms_by_local_day(start: datetime, end: datetime) -> dict[str, int]:
    """The milliseconds of [start, end) on each local day (ISO date → ms)."""
    counted: dict[str, int] = {}
    cursor = start
    while cursor < end:
        day = local_date(cursor)
        stop = min(end, local_day_bounds(day)[1])
        counted[day.isoformat()] = counted.get(day.isoformat(), 0) + (stop - cursor) // ONE_MS
        cursor = stop
    return counted


def decide(request: dict, programs: ProgramCatalogue, event: Event | None, ledger: HourLedger,
           now: datetime) -> Decision:
    """Judge one request against its program's limits and the event as it stands."""
    action = request["action"]
    program = programs.programs.get(request["program_id"])
    if action == "SCHEDULE":
        if event is not None:
            return _rejected(event, Failure("DUPLICATE_EVENT_ID", f"event {request['event_id']!r} is already "
                                            "scheduled with other details; send an UPDATE to change it"))
        if program is None:
            return _rejected(None, _unknown_program(request))
        failures = _window_failures(request, program, None, ledger, now)
        if failures:
            return Decision(REJECTED, failures, None)
        accepted = _event_from(request, revision=1)
        accepted.counted = ms_by_local_day(accepted.start, accepted.end)
        return Decision(SCHEDULED, [], accepted, {}, accepted.counted)
    failures = _change_failures(request, event, now)
    if failures:
        return _rejected(event, *failures)
    if action == "CANCEL":
        cancelled = _copy(event, revision=event.revision + 1, cancelled=True)
        if now >= event.start:  # in progress: the time used so far stays counted, and it ends now
            cancelled.end = now
            cancelled.counted = ms_by_local_day(event.start, now)
        else:
            cancelled.counted = {}
        return Decision(CANCELLED, [], cancelled, event.counted, cancelled.counted)
    if program is None:
        return _rejected(event, _unknown_program(request))
    failures = _window_failures(request, program, event, ledger, now)
    if failures:
        return _rejected(event, *failures)
    updated = _event_from(request, revision=event.revision + 1)
    updated.started = event.started
    updated.counted = ms_by_local_day(updated.start, updated.end)
    return Decision(UPDATED, [], updated, event.counted, updated.counted)


def _rejected(event: Event | None, *failures: Failure) -> Decision:
    return Decision(REJECTED, list(failures), event)


def _unknown_program(request: dict) -> Failure:
    return Failure("UNKNOWN_PROGRAM", f"program {request['program_id']!r} is not in the program catalogue")


def _change_failures(request: dict, event: Event | None, now: datetime) -> list[Failure]:
    """What makes an UPDATE or CANCEL impossible whatever its window."""
    action, event_id = request["action"], request["event_id"]
    if event is None:
        return [Failure("UNKNOWN_EVENT", f"no event {event_id!r} was scheduled: nothing to {action.lower()}")]
    if event.cancelled:
        return [Failure("EVENT_CANCELLED", f"event {event_id!r} was cancelled; schedule a new event instead")]
    failures = []
    if now >= event.end:
        failures.append(Failure("EVENT_ENDED", f"event {event_id!r} ended at {_iso(event.end)}; "
                                f"it can no longer be {'updated' if action == 'UPDATE' else 'cancelled'}"))
    if request["program_id"] != event.program_id:
        failures.append(Failure("PROGRAM_CHANGED", f"event {event_id!r} belongs to {event.program_id!r}, "
                                f"not {request['program_id']!r}"))
    if action == "UPDATE":
        if set(request["targets"]) != set(event.targets):
            failures.append(Failure("TARGETS_CHANGED", "an UPDATE reaches the devices the SCHEDULE reached and "
                                    "cannot change the targeted providers; cancel and schedule a new event"))
        if now >= event.start and request["start"] != event.start:
            failures.append(Failure("EVENT_STARTED", f"event {event_id!r} started at {_iso(event.start)}; "
                                    "its start can no longer move"))
        if now >= event.start and request["end"] <= now:
            failures.append(Failure("END_IN_PAST", f"event {event_id!r} has run since {_iso(event.start)}; an UPDATE "
                                    f"cannot end it at {_iso(request['end'])}, before now ({_iso(now)}): cancel it "
                                    "to stop it now"))
    return failures


def _window_failures(request: dict, program: Program, event: Event | None, ledger: HourLedger,
                     now: datetime) -> list[Failure]:
    """Every limit of the program a SCHEDULE or UPDATE breaks (an UPDATE's own earlier time is
    not counted against it)."""
    limits = program.events
    start, end, offset = request["start"], request["end"], request["setpoint_offset_f"]
    failures = []
    if not 0 < offset <= limits.max_setpoint_offset_f:
        failures.append(Failure("SETPOINT_OFFSET", f"setpoint offset {offset} °F is not between 1 and "
                                f"{limits.max_setpoint_offset_f} °F"))
    if request["precool"] and limits.precool is None:
        failures.append(Failure("PRECOOL_NOT_ALLOWED", f"{program.id} does not allow precooling"))
    unknown = sorted(set(request["targets"]) - program.providers)
    if unknown:
        failures.append(Failure("UNKNOWN_TARGET", f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not "
                                f"among {program.id}'s providers ({', '.join(sorted(program.providers))})"))
    if end <= start:
        failures.append(Failure("START_NOT_BEFORE_END", f"the event ends ({_iso(end)}) at or before its start "
                                f"({_iso(start)})"))
        return failures
    first_day, last_day = local_date(start), local_date(end - ONE_MS)
    if not (program.open_on(first_day) and program.open_on(last_day)):
        failures.append(Failure("PROGRAM_NOT_IN_EFFECT", f"{program.id} runs from {program.effective_from} to "
                                f"{program.effective_to or 'no end date'}; the event is on {first_day}"))
    minutes = (end - start) // ONE_MS / MS_PER_MINUTE
    if not limits.min_duration_minutes <= minutes <= limits.max_duration_minutes:
        failures.append(Failure("DURATION", f"the event lasts {_minutes(minutes)}; {program.id} events last "
                                f"{_minutes(limits.min_duration_minutes)} to {_minutes(limits.max_duration_minutes)}"))
    failures += _calendar_failures(program, start, end)
    failures += _ledger_failures(program, start, end, event, ledger)
    if event is None or request["start"] != event.start:
        failures += _notice_failures(program, request, now)
    return failures


def _calendar_failures(program: Program, start: datetime, end: datetime) -> list[Failure]:
    limits, failures = program.events, []
    local_start, local_end = start.astimezone(LOCAL_ZONE), end.astimezone(LOCAL_ZONE)
    if limits.days is DayKind.BUSINESS_DAY:
        days = sorted({local_date(start), local_date(end - ONE_MS)})
        closed = [day for day in days if not is_business_day(day)]
        if closed:
            failures.append(Failure("DAY_NOT_ALLOWED", f"{program.id} events run on business days only; "
                                    f"{', '.join(f'{d} ({d:%A})' for d in closed)} is not one"))
    window = limits.window
    if window is not None:
        same_day = local_date(end - ONE_MS) == local_start.date()
        ends_by = local_end.time() <= window.end and local_end.date() == local_start.date()
        if local_start.time() < window.start or not same_day or not ends_by:
            failures.append(Failure("OUTSIDE_WINDOW", f"{program.id} events lie between {window.start:%H:%M} and "
                                    f"{window.end:%H:%M} local time; this one runs {local_start:%Y-%m-%d %H:%M} to "
                                    f"{local_end:%Y-%m-%d %H:%M}"))
    return failures


def _ledger_failures(program: Program, start: datetime, end: datetime, event: Event | None,
                     ledger: HourLedger) -> list[Failure]:
    limits, failures = program.events, []
    own = event.counted if event is not None else {}
    counted = ms_by_local_day(start, end)
    day_limit = limits.max_minutes_per_day * MS_PER_MINUTE
    for day, ms in counted.items():
        others = ledger.day_ms(program.id, date.fromisoformat(day)) - own.get(day, 0)
        if others + ms > day_limit:
            failures.append(Failure("DAY_LIMIT", f"{program.id} allows {_minutes(limits.max_minutes_per_day)} of "
                                    f"events per day; {day} already has {_minutes(others / MS_PER_MINUTE)}, and "
                                    f"this event adds {_minutes(ms / MS_PER_MINUTE)}"))
    if limits.max_hours_per_year is not None:
        year_limit = limits.max_hours_per_year * MS_PER_HOUR
        for year in sorted({int(day[:4]) for day in counted}):
            others = ledger.year_ms(program.id, year) - sum(ms for day, ms in own.items() if int(day[:4]) == year)
            adds = sum(ms for day, ms in counted.items() if int(day[:4]) == year)
            if others + adds > year_limit:
                failures.append(Failure("YEAR_LIMIT", f"{program.id} allows {limits.max_hours_per_year} h of events "
                                        f"per calendar year; {year} has {_minutes(others / MS_PER_MINUTE)} used, "
                                        f"{_minutes((year_limit - others) / MS_PER_MINUTE)} left, and this event "
                                        f"needs {_minutes(adds / MS_PER_MINUTE)}"))
    return failures


def _notice_failures(program: Program, request: dict, now: datetime) -> list[Failure]:
    """Providers learn of the event when it is issued, or when it reaches us if that is later."""
    limits, start, failures = program.events, request["start"], []
    notified = max(request["issued_at"], now)
    notice_ms = (start - notified) // ONE_MS
    if notice_ms < limits.min_notice_minutes * MS_PER_MINUTE:
        failures.append(Failure("NOTICE", f"{program.id} notifies providers at least "
                                f"{_minutes(limits.min_notice_minutes)} before the start; this event starts "
                                f"{_minutes(notice_ms / MS_PER_MINUTE)} after it was issued or received "
                                f"({_iso(notified)})"))
    if limits.announced_day_before and local_date(notified) >= local_date(start):
        failures.append(Failure("NOT_DAY_AHEAD", f"{program.id} events are announced the day before; this one was "
                                f"issued or received on {local_date(notified)} for {local_date(start)}"))
    return failures


def _event_from(request: dict, revision: int) -> Event:
    return Event(
        event_id=request["event_id"], program_id=request["program_id"], reason=request["reason"],
        start=request["start"], end=request["end"], setpoint_offset_f=request["setpoint_offset_f"],
        precool=request["precool"], targets=sorted(request["targets"]), issued_at=request["issued_at"],
        revision=revision,
    )


def _copy(event: Event, **changes) -> Event:
    return Event(**{**event.__dict__, "targets": list(event.targets), "counted": dict(event.counted), **changes})


def _iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def _minutes(minutes: float) -> str:
    """A length of time as people write it: 6 h, 1 h 30 min, 20 min, 0 min."""
    whole = int(round(minutes))
    hours, rest = divmod(whole, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


def due_timers(event: Event) -> list[tuple[datetime, str]]:
    """The lifecycle transitions an accepted event still owes: STARTED at its start, ENDED at its end."""
    if event.cancelled:
        return []
    timers = []
    if not event.started:
        timers.append((event.start, STARTED))
    if not event.ended:
        timers.append((event.end, ENDED))
    return timers


def lifecycle_record(status: str, event: Event | None, request: dict | None, decided_at: datetime, *,
                     failures: list[Failure] = (), source_offset: int | None = None,
                     year_used_ms: int = 0, year_limit_ms: int | None = None) -> dict:
    """One gridflex.dispatch.EventLifecycle record: the event as it stands after ``status``; for a
    rejection, the request as sent, with the revision of the event it left unchanged (0: none)."""
    rejected = status == REJECTED
    shown = _event_from(request, revision=event.revision if event else 0) if rejected else event
    return {
        "event_id": shown.event_id, "program_id": shown.program_id, "status": status,
        "revision": shown.revision, "request_action": request["action"] if request else None,
        "reason": shown.reason, "start": shown.start, "end": shown.end,
        "setpoint_offset_f": shown.setpoint_offset_f, "precool": shown.precool, "targets": list(shown.targets),
        "issued_at": request["issued_at"] if request else shown.issued_at, "decided_at": decided_at,
        "failures": [{"code": f.code, "message": f.message} for f in failures],
        "counted_ms": sum(shown.counted.values()),
        "program_year": shown.start.astimezone(LOCAL_ZONE).year,
        "year_used_ms": year_used_ms, "year_limit_ms": year_limit_ms, "source_offset": source_offset,
    }
