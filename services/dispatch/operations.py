"""What operators ask of dispatch (the ``gridflex events`` command): publish, update or cancel an
event and hear the decision; program hours, an event's steps and deliveries, the thermostats
that did not acknowledge. Reads the Postgres projection.

An operator's request takes the utility's road: an ``EnergyEventRequest`` on
``utility.energy-events.v1``, decided by the dispatch service against every program limit like
any other. The command then waits for the decision (the step the request produced, matched by
its offset) in the projection.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from decimal import Decimal

from gridflex.calendar import iso_instant
from gridflex.kafka_io import RecordProducer
from gridflex.programs import ProgramCatalogue
from gridflex.settings import ServiceSettings
from gridflex.topics import ENERGY_EVENTS
from services.dispatch.domain.events import MS_PER_HOUR
from services.dispatch.projection import Database

POLL_S = 0.2


class UnknownEvent(LookupError):
    """An update or cancellation names an event the dispatch service has not scheduled."""


async def current_event(settings: ServiceSettings, event_id: str) -> dict:
    """The event as it stands (the latest accepted step), for an update or a cancellation."""
    database = Database(settings.database_url)
    try:
        pool = await database.pool()
        row = await pool.fetchrow(
            "SELECT event_id, program_id, status, start_at, end_at, setpoint_offset_f, precool, targets"
            " FROM dispatch_events WHERE event_id = $1", event_id)
    finally:
        await database.close()
    if row is None:
        raise UnknownEvent(f"no event {event_id!r} is scheduled (see `gridflex events show {event_id}`)")
    return dict(row)


def event_request(*, event_id: str, program_id: str, action: str, reason: str, start: datetime, end: datetime,
                  setpoint_offset_f: int, precool: bool, targets: list[str], issued_at: datetime) -> dict:
    """An ``EnergyEventRequest`` as the utility's dispatch system sends it."""
    return {"event_id": event_id, "program_id": program_id, "action": action, "reason": reason, "start": start,
            "end": end, "issued_at": issued_at, "setpoint_offset_f": setpoint_offset_f, "precool": precool,
            "targets": targets}


async def submit_event_request(settings: ServiceSettings, request: dict, wait_s: float) -> dict | None:
    """Publish ``request`` and wait up to ``wait_s`` for the step that decides it (SCHEDULED,
    UPDATED, CANCELLED or REJECTED, with its failures); None when no decision came in time."""
    async with RecordProducer(settings) as producer:
        sent = await (await producer.send(ENERGY_EVENTS, request["event_id"], request))
    database = Database(settings.database_url)
    try:
        pool = await database.pool()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            # The key (event_id) fixes the partition, so (event, request offset) is the request.
            row = await pool.fetchrow(
                "SELECT status, revision, failures, start_at, end_at, counted_ms, year_used_ms, year_limit_ms"
                " FROM dispatch_event_steps WHERE event_id = $1 AND request_offset = $2"
                " ORDER BY lifecycle_offset LIMIT 1", request["event_id"], sent.offset)
            if row is not None:
                return dict(row)
            await asyncio.sleep(POLL_S)
        return None
    finally:
        await database.close()


def hours(used_ms: int) -> Decimal:
    """Milliseconds as hours, exact to the second (events are whole minutes in practice)."""
    return (Decimal(used_ms) / MS_PER_HOUR).quantize(Decimal("0.01"))


async def program_hours_table(settings: ServiceSettings, year: int) -> list[str]:
    """One line per program of the catalogue: hours used, the yearly limit, what is left."""
    programs = ProgramCatalogue.load(settings.programs_dir)
    database = Database(settings.database_url)
    try:
        used = await database.program_hours(year)
    finally:
        await database.close()
    lines = [f"{'program':<24} {'year':>4} {'used h':>9} {'limit h':>8} {'left h':>9}"]
    for program in programs:
        used_ms, _ = used.get(program.id, (0, None))
        limit = program.events.max_hours_per_year
        left = f"{limit - hours(used_ms):>9}" if limit is not None else f"{'-':>9}"
        lines.append(f"{program.id:<24} {year:>4} {hours(used_ms):>9} {limit if limit is not None else '-':>8} {left}")
    return lines


async def event_report(settings: ServiceSettings, event_id: str) -> list[str] | None:
    """An event's steps (with every broken rule of a rejection) and, per provider, the
    thermostats reached and their answers; None when no step of it is known."""
    database = Database(settings.database_url)
    try:
        steps = await database.event_steps(event_id)
        deliveries = await database.event_deliveries(event_id)
    finally:
        await database.close()
    if not steps:
        return None
    lines = [f"event {event_id} ({steps[0]['program_id']})"]
    for step in steps:
        lines.append(f"  {iso_instant(step['decided_at'])}  {step['status']:<9} rev {step['revision']}  "
                     f"{iso_instant(step['start_at'])} → {iso_instant(step['end_at'])}  "
                     f"+{step['setpoint_offset_f']} °F  counted {hours(step['counted_ms'])} h")
        lines += [f"      {failure['code']}: {failure['message']}" for failure in step["failures"]]
    for row in deliveries:
        coverage = f"{row['acknowledged'] / row['reached']:.1%}" if row["reached"] else "-"
        lines.append(f"  {row['provider_id']}: {row['reached']} thermostats reached, {row['cancelled']} cancelled, "
                     f"{row['acknowledged']} acknowledged ({row['accepted']} accepted), coverage {coverage}")
    return lines


async def unacknowledged_lines(settings: ServiceSettings, event_id: str, provider_id: str | None) -> list[str]:
    database = Database(settings.database_url)
    try:
        rows = await database.unacknowledged(event_id, provider_id)
    finally:
        await database.close()
    return [f"{row['provider_id']}\t{row['thermostat_serial']}\t{row['service_account_id']}\t"
            f"{row['ack_status'] or 'no answer'}\t{iso_instant(row['ack_at']) if row['ack_at'] else '-'}"
            for row in rows]
