"""Programs, VENs and resources as OpenADR objects, from the program catalogue, the registered
VEN clients (one per provider) and the enrollment state (one resource per enrolled thermostat)."""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime, time, timedelta, timezone

from gridflex.calendar import LOCAL_ZONE
from gridflex.programs import Program
from services.vtn.domain import events, reports
from services.vtn.domain.timing import format_duration, format_instant

OBJECT_ID = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=LOCAL_ZONE).astimezone(timezone.utc)


def program_object(program: Program) -> dict:
    """A catalogue program: addressed to its providers (targets), its terms as attributes."""
    start = _local_midnight(program.effective_from)
    period = {"start": format_instant(start)}
    if program.effective_to is not None:
        period["duration"] = format_duration(_local_midnight(program.effective_to + timedelta(days=1)) - start)
    limits = program.events
    attributes = [
        {"type": "X_GRIDFLEX_PROGRAM_NAME", "values": [program.name]},
        {"type": "X_GRIDFLEX_MAX_SETPOINT_OFFSET_F", "values": [limits.max_setpoint_offset_f]},
        {"type": "X_GRIDFLEX_EVENT_MINUTES", "values": [limits.min_duration_minutes, limits.max_duration_minutes]},
        {"type": "X_GRIDFLEX_MAX_MINUTES_PER_DAY", "values": [limits.max_minutes_per_day]},
        {"type": "X_GRIDFLEX_MIN_NOTICE_MINUTES", "values": [limits.min_notice_minutes]},
    ]
    if limits.max_hours_per_year is not None:
        attributes.append({"type": "X_GRIDFLEX_MAX_HOURS_PER_YEAR", "values": [limits.max_hours_per_year]})
    if limits.precool is not None:
        attributes.append({"type": "X_GRIDFLEX_PRECOOL", "values": [limits.precool.max_minutes,
                                                                   -limits.precool.offset_f]})
    created = format_instant(start)
    return {
        "id": program.id,
        "createdDateTime": created,
        "modificationDateTime": created,
        "objectType": "PROGRAM",
        "programName": program.id,
        "intervalPeriod": period,
        "programDescriptions": None,
        "payloadDescriptors": [*events.PAYLOAD_DESCRIPTORS, *reports.PAYLOAD_DESCRIPTORS],
        "attributes": attributes,
        "targets": sorted(program.providers),
    }


def ven_object(provider_id: str, created_at: datetime, modified_at: datetime) -> dict:
    """The VEN of a provider: its client id, name and only target are the provider id."""
    return {
        "id": provider_id,
        "createdDateTime": format_instant(created_at),
        "modificationDateTime": format_instant(modified_at),
        "objectType": "VEN",
        "clientID": provider_id,
        "venName": provider_id,
        "targets": [provider_id],
        "attributes": None,
    }


def resource_id(thermostat_serial: str) -> str:
    """The serial when it is a URL-safe object id, else a stable digest of it."""
    if OBJECT_ID.fullmatch(thermostat_serial):
        return thermostat_serial
    return "t-" + hashlib.sha256(thermostat_serial.encode()).hexdigest()[:32]


def provider_thermostats(provider_id: str, accounts: list[tuple[str, list[dict]]], today: date) -> list[dict]:
    """The provider's thermostats enrolled today (a period in effect: effective_from ≤ today <
    effective_to), one entry per thermostat with its account and programs, sorted by serial.
    ``accounts``: (service_account_id, enrollments) of AccountEnrollments records."""
    found: dict[str, dict] = {}
    for account_id, periods in accounts:
        for period in periods:
            if period["provider_id"] != provider_id:
                continue
            starts = date.fromisoformat(period["effective_from"])
            ends = date.fromisoformat(period["effective_to"]) if period.get("effective_to") else None
            if not (starts <= today and (ends is None or today < ends)):
                continue
            entry = found.setdefault(period["thermostat_serial"], {
                "thermostat_serial": period["thermostat_serial"], "service_account_id": account_id,
                "programs": set(), "since": starts,
            })
            entry["programs"].add(period["program_id"])
            entry["since"] = min(entry["since"], starts)
    return [found[serial] for serial in sorted(found)]


def resource_object(provider_id: str, thermostat: dict) -> dict:
    since = format_instant(_local_midnight(thermostat["since"]))
    return {
        "id": resource_id(thermostat["thermostat_serial"]),
        "createdDateTime": since,
        "modificationDateTime": since,
        "objectType": "RESOURCE",
        "clientID": provider_id,
        "resourceName": thermostat["thermostat_serial"],
        "venID": provider_id,
        "targets": [provider_id],
        "attributes": [
            {"type": "X_GRIDFLEX_SERVICE_ACCOUNT_ID", "values": [thermostat["service_account_id"]]},
            {"type": "X_GRIDFLEX_PROGRAMS", "values": sorted(thermostat["programs"])},
        ],
    }
