"""OpenADR events ↔ gridflex energy events.

The thermostat signal convention (docs/openadr.md):

- the event interval carries ``CONTROL_SETPOINT`` = the setpoint offset in °F (positive: the
  cooling setpoint goes up by that much; the payload descriptor says ``units: FAHRENHEIT``), the
  relative-setpoint use of CONTROL_SETPOINT in the User Guide (8.9.3); and ``SIMPLE`` = the shed
  level of the event's reason (1 HIGH_PRICE or TEST, 2 GRID_STRESS, 3 EMERGENCY) for VENs that
  only follow SIMPLE; and the private ``X_GRIDFLEX_EVENT_REASON`` = the reason itself;
- a precool interval, when the event asks for one, comes first and ends at the event's start:
  ``CONTROL_SETPOINT`` = minus the program's precool offset, for the program's precool minutes
  (the gridflex contract carries only whether to precool; the program fixes how).

An event without targets reaches every provider (OpenADR: an untargeted object is for every VEN);
targets are provider ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gridflex.programs import Program, ProgramCatalogue
from gridflex.topics import PROVIDER_ID
from services.vtn.domain import Invalid
from services.vtn.domain.timing import TimingError, format_duration, format_instant, parse_duration, parse_instant

SETPOINT = "CONTROL_SETPOINT"
SIMPLE = "SIMPLE"
REASON = "X_GRIDFLEX_EVENT_REASON"
REASONS = ("EMERGENCY", "GRID_STRESS", "HIGH_PRICE", "TEST")
LEVEL_OF_REASON = {"HIGH_PRICE": 1, "TEST": 1, "GRID_STRESS": 2, "EMERGENCY": 3}
REASON_OF_LEVEL = {1: "HIGH_PRICE", 2: "GRID_STRESS", 3: "EMERGENCY"}
DEFAULT_REASON = "GRID_STRESS"
UNITS = "FAHRENHEIT"
PRECOOL_INTERVAL_ID = 0
EVENT_INTERVAL_ID = 1
DETAIL_FIELDS = ("eventName", "priority", "reportDescriptors")

PAYLOAD_DESCRIPTORS = [
    {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": SETPOINT, "units": UNITS, "currency": None},
    {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": SIMPLE, "units": None, "currency": None},
    {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": REASON, "units": None, "currency": None},
]


@dataclass(frozen=True)
class EventIntent:
    """What an OpenADR eventRequest asks for, in the terms of an EnergyEventRequest."""

    program_id: str
    start: datetime
    end: datetime
    setpoint_offset_f: int
    precool: bool
    reason: str
    targets: tuple[str, ...]  # sorted provider ids; empty: every provider
    details: dict = field(default_factory=dict)  # eventName, priority, reportDescriptors: kept, not dispatched

    def same_dispatch(self, event: "StoredEvent") -> bool:
        """Whether dispatching this would change nothing the providers see."""
        return (self.program_id, self.start, self.end, self.setpoint_offset_f, self.precool, self.reason,
                self.targets) == (event.program_id, event.start, event.end, event.setpoint_offset_f, event.precool,
                                  event.reason, tuple(sorted(event.targets)))


@dataclass(frozen=True)
class StoredEvent:
    """An event as dispatch last accepted it (the VTN's projection of the lifecycle)."""

    event_id: str
    program_id: str
    revision: int
    reason: str
    start: datetime
    end: datetime
    setpoint_offset_f: int
    precool: bool
    targets: tuple[str, ...]
    details: dict
    progress: str
    created_at: datetime
    modified_at: datetime


def energy_event_request(event_id: str, intent: EventIntent, action: str, issued_at: datetime) -> dict:
    """The EnergyEventRequest (utility.energy-events.v1) an OpenADR write becomes."""
    return {
        "event_id": event_id, "program_id": intent.program_id, "action": action, "reason": intent.reason,
        "start": intent.start, "end": intent.end, "issued_at": issued_at,
        "setpoint_offset_f": intent.setpoint_offset_f, "precool": intent.precool, "targets": list(intent.targets),
    }


def cancel_request(event: StoredEvent, issued_at: datetime) -> dict:
    """The CANCEL of an event as it stands (dispatch checks program and targets are unchanged)."""
    intent = EventIntent(event.program_id, event.start, event.end, event.setpoint_offset_f, event.precool,
                         event.reason, tuple(sorted(event.targets)))
    return energy_event_request(event.event_id, intent, "CANCEL", issued_at)


# -- reading an eventRequest ------------------------------------------------------------------


def parse_event_request(body: dict, programs: ProgramCatalogue) -> EventIntent:
    """An eventRequest (already valid against the OpenAPI schema) as an EventIntent; raises
    :class:`Invalid` with every problem found."""
    problems: list[str] = []
    program_id = body.get("programID")
    program = programs.programs.get(program_id) if isinstance(program_id, str) else None
    if program is None:
        problems.append(f"programID {program_id!r} is not a program of this VTN (GET /programs lists them)")
    if body.get("duration") not in (None, "PT0S"):
        problems.append("duration (repeating the intervals) is not supported: give the event's intervals once")
    targets = body.get("targets") or []
    bad_targets = [t for t in targets if not isinstance(t, str) or not PROVIDER_ID.fullmatch(t)]
    if bad_targets:
        problems.append(f"targets {bad_targets!r} are not provider ids (lower-case letters, digits and '-')")
    problems += _descriptor_problems(body.get("payloadDescriptors"))
    windows = _intervals(body, problems)
    if problems:
        raise Invalid(problems)
    precool, event = windows
    reason = event.reason
    if precool is not None and program.events.precool is not None:
        problems += _precool_problems(precool, event, program)
    if problems:
        raise Invalid(problems)
    details = {name: body.get(name) for name in DETAIL_FIELDS if body.get(name) is not None}
    return EventIntent(program.id, event.start, event.end, event.offset, precool is not None, reason,
                       tuple(sorted(set(targets))), details)


@dataclass
class _Window:
    interval_id: int
    start: datetime
    end: datetime
    offset: int
    reason: str | None = None


def _descriptor_problems(descriptors: list | None) -> list[str]:
    problems = []
    for descriptor in descriptors or []:
        payload_type = descriptor.get("payloadType")
        if payload_type not in (SETPOINT, SIMPLE, REASON):
            problems.append(f"payloadDescriptors: {payload_type!r} is not a payload type of gridflex events "
                            f"({SETPOINT} in °F, {SIMPLE}, {REASON})")
        elif payload_type == SETPOINT and descriptor.get("units") not in (None, UNITS):
            problems.append(f"payloadDescriptors: {SETPOINT} is an offset in {UNITS}, not {descriptor.get('units')!r}")
    return problems


def _intervals(body: dict, problems: list[str]) -> tuple[_Window | None, _Window] | None:
    """(the precool window or None, the event window), problems appended as found."""
    intervals = body.get("intervals") or []
    if not intervals:
        problems.append(f"intervals: give the event interval, with a {SETPOINT} payload (the setpoint offset in °F)")
        return None
    default = body.get("intervalPeriod") or {}
    windows: list[_Window] = []
    previous_end: datetime | None = None
    for index, interval in enumerate(intervals):
        where = f"intervals[{index}]"
        period = interval.get("intervalPeriod") or {}
        try:
            if period.get("randomizeStart") not in (None, "PT0S") or default.get("randomizeStart") not in (None, "PT0S"):
                raise TimingError(f"{where}: randomizeStart is not supported (dispatch fixes each thermostat's start)")
            # A later interval without its own start follows the one before (User Guide, intervals).
            start_text = period.get("start") or (default.get("start") if previous_end is None else None)
            duration_text = period.get("duration") or default.get("duration")
            if start_text is not None:
                start = parse_instant(start_text, f"{where}.intervalPeriod.start")
            elif previous_end is not None:
                start = previous_end
            else:
                raise TimingError(f"{where}: no start (give intervalPeriod.start on the event or the interval)")
            if duration_text is None:
                raise TimingError(f"{where}: no duration (give intervalPeriod.duration on the event or the interval)")
            end = start + parse_duration(duration_text, f"{where}.intervalPeriod.duration")
        except TimingError as exc:
            problems.append(str(exc))
            continue
        previous_end = end
        window = _window(interval, start, end, where, problems)
        if window is not None:
            windows.append(window)
    if len(windows) != len(intervals):
        return None
    events = [w for w in windows if w.offset > 0]
    precools = [w for w in windows if w.offset < 0]
    if len(events) != 1:
        problems.append(f"intervals: exactly one interval must raise the setpoint ({SETPOINT} > 0); "
                        f"{len(events)} do")
    if len(precools) > 1:
        problems.append(f"intervals: at most one precool interval ({SETPOINT} < 0); {len(precools)} given")
    if problems:
        return None
    return (precools[0] if precools else None), events[0]


def _window(interval: dict, start: datetime, end: datetime, where: str, problems: list[str]) -> _Window | None:
    payloads = {}
    found = len(problems)
    for payload in interval.get("payloads") or []:
        kind = payload.get("type")
        if kind not in (SETPOINT, SIMPLE, REASON):
            problems.append(f"{where}: payload type {kind!r} is not one gridflex thermostats follow "
                            f"({SETPOINT}, {SIMPLE}, {REASON})")
        elif kind in payloads:
            problems.append(f"{where}: payload {kind} is given twice")
        elif len(payload.get("values") or []) != 1:
            problems.append(f"{where}: payload {kind} takes exactly one value")
        else:
            payloads[kind] = payload["values"][0]
    if len(problems) > found:
        return None
    offset = payloads.get(SETPOINT)
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or offset != int(offset) or offset == 0:
        problems.append(f"{where}: needs a {SETPOINT} payload with a whole, non-zero number of °F "
                        "(positive: raise the cooling setpoint during the event; negative: precool)")
        return None
    offset = int(offset)
    window = _Window(interval.get("id", 0), start, end, offset)
    level = payloads.get(SIMPLE)
    reason = payloads.get(REASON)
    if offset < 0:
        if level is not None or reason is not None:
            problems.append(f"{where}: {SIMPLE} and {REASON} belong on the event interval, not the precool interval")
        return window
    if reason is not None and reason not in REASONS:
        problems.append(f"{where}: {REASON} {reason!r} is not one of {', '.join(REASONS)}")
        return None
    if level is not None and (isinstance(level, bool) or level not in REASON_OF_LEVEL):
        problems.append(f"{where}: {SIMPLE} level {level!r} must be 1, 2 or 3 during an event (0 is normal operation)")
        return None
    if level is not None and reason is not None and LEVEL_OF_REASON[reason] != level:
        problems.append(f"{where}: {SIMPLE} level {level} contradicts {REASON} {reason} "
                        f"(level {LEVEL_OF_REASON[reason]})")
        return None
    window.reason = reason or (REASON_OF_LEVEL[level] if level is not None else DEFAULT_REASON)
    return window


def _precool_problems(precool: _Window, event: _Window, program: Program) -> list[str]:
    rules = program.events.precool
    problems = []
    if precool.end != event.start:
        problems.append(f"the precool interval must end when the event starts ({format_instant(event.start)}), "
                        f"not at {format_instant(precool.end)}")
    if precool.end - precool.start != timedelta(minutes=rules.max_minutes):
        problems.append(f"{program.id} precools for {format_duration(timedelta(minutes=rules.max_minutes))}, "
                        f"not {format_duration(precool.end - precool.start)}")
    if precool.offset != -rules.offset_f:
        problems.append(f"{program.id} precools at {-rules.offset_f} °F, not {precool.offset} °F")
    return problems


# -- writing an event -------------------------------------------------------------------------


def event_object(event: StoredEvent, program: Program | None, shown_targets: tuple[str, ...] | None = None) -> dict:
    """The OpenADR event. ``shown_targets``: the targets the caller may see (a VEN sees only its
    own: target hiding); None shows them all."""
    targets = list(event.targets) if shown_targets is None else [t for t in event.targets if t in shown_targets]
    intervals = []
    precool = program.events.precool if program is not None else None
    if event.precool and precool is not None:
        intervals.append({
            "id": PRECOOL_INTERVAL_ID,
            "intervalPeriod": {"start": format_instant(event.start - timedelta(minutes=precool.max_minutes)),
                               "duration": format_duration(timedelta(minutes=precool.max_minutes))},
            "payloads": [{"type": SETPOINT, "values": [-precool.offset_f]}],
        })
    window = {"start": format_instant(event.start), "duration": format_duration(event.end - event.start)}
    intervals.append({
        "id": EVENT_INTERVAL_ID,
        "intervalPeriod": dict(window),
        "payloads": [
            {"type": SETPOINT, "values": [event.setpoint_offset_f]},
            {"type": SIMPLE, "values": [LEVEL_OF_REASON[event.reason]]},
            {"type": REASON, "values": [event.reason]},
        ],
    })
    return {
        "id": event.event_id,
        "createdDateTime": format_instant(event.created_at),
        "modificationDateTime": format_instant(event.modified_at),
        "objectType": "EVENT",
        "programID": event.program_id,
        "eventName": event.details.get("eventName"),
        "priority": event.details.get("priority"),
        "targets": targets or None,
        "reportDescriptors": event.details.get("reportDescriptors"),
        "payloadDescriptors": PAYLOAD_DESCRIPTORS,
        "intervalPeriod": window,
        "intervals": intervals,
    }


def lifecycle_operation(status: str) -> str | None:
    """The OpenADR operation a lifecycle step is, for notifications (STARTED, ENDED, REJECTED: none)."""
    return {"SCHEDULED": "CREATE", "UPDATED": "UPDATE", "CANCELLED": "DELETE"}.get(status)
