"""Which thermostats an event reaches, and what each one is told (PROGRAMS.md, CONTRACTS.md).

An event reaches every thermostat whose enrollment is in effect on the event's day (its first
local day), in the event's program, of a targeted provider (no targets: every provider). The
set is fixed when the SCHEDULE is fanned out: an UPDATE or CANCEL reaches exactly those
thermostats, a thermostat enrolled later is not added, and one whose enrollment ends before the
event starts is sent a CANCEL of its own.

Precool (programs that allow it, events that ask for it): the hour before the start, setpoint
lowered by the program's offset; never for an account on a TOU rate when that hour overlaps the
on-peak window (16:00–21:00 on business days).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from gridflex.calendar import LOCAL_ZONE, is_business_day, local_date
from gridflex.programs import Precool, Program


class PrecoolPlan(NamedTuple):
    start: datetime | None
    offset_f: int  # added to the setpoint while precooling: negative lowers it; 0 without precool


NO_PRECOOL = PrecoolPlan(None, 0)


def precool_plans(program: Program, start: datetime, precool_requested: bool) -> tuple[PrecoolPlan, PrecoolPlan]:
    """The precool of (an account on another rate, an account on a TOU rate) for an event."""
    precool = program.events.precool
    if not precool_requested or precool is None:
        return NO_PRECOOL, NO_PRECOOL
    plan = PrecoolPlan(start - timedelta(minutes=precool.max_minutes), -precool.offset_f)
    return plan, NO_PRECOOL if overlaps_on_peak(plan.start, start, precool) else plan


def overlaps_on_peak(precool_start: datetime, start: datetime, precool: Precool) -> bool:
    """Whether [precool_start, start) touches the TOU on-peak window of any of its local days."""
    window = precool.tou_on_peak
    if window is None:
        return False
    for day in sorted({local_date(precool_start), local_date(start - timedelta(milliseconds=1))}):
        if precool.tou_on_peak_business_days_only and not is_business_day(day):
            continue
        peak_start = datetime.combine(day, window.start, LOCAL_ZONE)
        peak_end = datetime.combine(day, window.end, LOCAL_ZONE)
        if precool_start < peak_end and start > peak_start:
            return True
    return False


def is_tou_rate(rate_schedule: str | None, program: Program) -> bool:
    precool = program.events.precool
    return bool(rate_schedule) and precool is not None and rate_schedule.startswith(precool.tou_rate_prefix)


def instruction(lifecycle: dict, action: str, serial: str, account_id: str, plan: PrecoolPlan) -> dict:
    """The DispatchInstruction for one thermostat; issued when the lifecycle record was decided,
    so a re-sent instruction is the same record."""
    return {
        "event_id": lifecycle["event_id"], "program_id": lifecycle["program_id"], "action": action,
        "thermostat_serial": serial, "service_account_id": account_id,
        "precool_start": plan.start if action != "CANCEL" else None,
        "precool_offset_f": plan.offset_f if action != "CANCEL" else 0,
        "start": lifecycle["start"], "end": lifecycle["end"], "setpoint_offset_f": lifecycle["setpoint_offset_f"],
        "issued_at": lifecycle["decided_at"],
    }
