"""Enrollment periods as the services that act on enrollments keep them (dispatch, baseline).

``gridflex.enrollment.state.v1`` carries each account's ``EnrollmentPeriod`` records; a
thermostat is in effect on a day when ``effective_from <= day < effective_to`` (PROGRAMS.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from gridflex.calendar import local_date

# One enrolled thermostat of an account in one program: [provider_id, serial, effective_from, effective_to]
# (dates as ISO strings; effective_to None while enrolled). Lists, because they live in JSON state.
DevicePeriod = list


def periods_by_program(enrollments: Iterable[dict]) -> dict[str, list[DevicePeriod]]:
    """An account's EnrollmentPeriod records, grouped by program."""
    grouped: dict[str, list[DevicePeriod]] = {}
    for period in enrollments:
        effective_to = period["effective_to"]
        grouped.setdefault(period["program_id"], []).append([
            period["provider_id"], period["thermostat_serial"], _day(period["effective_from"]),
            _day(effective_to) if effective_to is not None else None,
        ])
    return grouped


def devices_in_effect(periods: list[DevicePeriod], day: str, targets: frozenset[str]) -> list[tuple[str, str]]:
    """(provider, serial) of each thermostat in effect on ``day`` (ISO) of a targeted provider."""
    reached = {}
    for provider, serial, effective_from, effective_to in periods:
        if effective_from <= day and (effective_to is None or day < effective_to) and (not targets or provider in targets):
            reached[serial] = provider
    return [(provider, serial) for serial, provider in reached.items()]


def event_day(start: datetime) -> str:
    return local_date(start).isoformat()


def _day(value) -> str:
    return value if isinstance(value, str) else value.isoformat()
