"""What operators ask of dispatch (the ``gridflex events`` command): program hours, an event's
steps and deliveries, the thermostats that did not acknowledge. Reads the Postgres projection."""

from __future__ import annotations

from decimal import Decimal

from gridflex.calendar import iso_instant
from gridflex.programs import ProgramCatalogue
from gridflex.settings import ServiceSettings
from services.dispatch.domain.events import MS_PER_HOUR
from services.dispatch.projection import Database


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
        lines.append(f"  {row['provider_id']}: {row['reached']} thermostats reached, {row['cancelled']} cancelled, "
                     f"{row['acknowledged']} acknowledged ({row['accepted']} accepted)")
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
