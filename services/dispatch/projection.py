"""The dispatch projection in Postgres: every event step, each event as it stands, and each
thermostat's instructions and acknowledgment; what the ``gridflex events`` command reads.

Delivery is at-least-once, so every write is idempotent: a step is keyed by (event, revision,
status) (a rejection by its request), an event row only moves forward in the lifecycle topic,
and a thermostat's row keeps its latest instruction and its provider's latest answer.

Acknowledgment coverage (per event and provider) is recomputed from the table every few
seconds for the events that moved, so every worker reports the same, whole figure. When an event
starts, the thermostats with no acknowledgment by then are counted and logged; the command
lists them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import asyncpg
import structlog
from prometheus_client import Gauge

from gridflex import db
from gridflex.batch import Batch, InputRecord
from gridflex.codec import Undecodable
from gridflex.topics import provider_of
from gridflex.db import columns, json_text

log = structlog.get_logger(__name__)

INSTRUCTED = Gauge("gridflex_dispatch_devices_instructed", "Thermostats an event's SCHEDULE reached",
                   ["event_id", "provider"])
ACKNOWLEDGED = Gauge("gridflex_dispatch_devices_acknowledged", "Thermostats whose provider answered, by answer",
                     ["event_id", "provider", "status"])
COVERAGE = Gauge("gridflex_dispatch_ack_coverage_ratio",
                 "Share of the thermostats an event reached whose provider acknowledged them", ["event_id", "provider"])
UNACKNOWLEDGED_AT_START = Gauge("gridflex_dispatch_unacknowledged_at_start",
                                "Thermostats with no acknowledgment when their event started", ["event_id", "provider"])
ACK_STATUSES = ("ACCEPTED", "REJECTED", "OPTED_OUT", "FAILED")

STEP_COLUMNS = (
    "step_key, event_id, program_id, status, revision, request_action, reason, start_at, end_at, setpoint_offset_f, "
    "precool, targets, issued_at, decided_at, failures, counted_ms, program_year, year_used_ms, year_limit_ms, "
    "request_offset, lifecycle_offset"
)
INSERT_STEPS = f"""
INSERT INTO dispatch_event_steps ({STEP_COLUMNS})
SELECT step_key, event_id, program_id, status, revision, request_action, reason, start_at, end_at,
       setpoint_offset_f, precool, string_to_array(targets, ','), issued_at, decided_at, failures::jsonb,
       counted_ms, program_year, year_used_ms, year_limit_ms, request_offset, lifecycle_offset
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::text[], $7::text[],
            $8::timestamptz[], $9::timestamptz[], $10::integer[], $11::boolean[], $12::text[], $13::timestamptz[],
            $14::timestamptz[], $15::text[], $16::bigint[], $17::integer[], $18::bigint[], $19::bigint[],
            $20::bigint[], $21::bigint[])
    AS batch ({STEP_COLUMNS})
ON CONFLICT DO NOTHING
"""
EVENT_COLUMNS = ("event_id, program_id, status, revision, start_at, end_at, setpoint_offset_f, precool, targets, "
                 "counted_ms, lifecycle_offset")
UPSERT_EVENTS = f"""
INSERT INTO dispatch_events AS stored ({EVENT_COLUMNS})
SELECT event_id, program_id, status, revision, start_at, end_at, setpoint_offset_f, precool,
       string_to_array(targets, ','), counted_ms, lifecycle_offset
FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::timestamptz[], $6::timestamptz[],
            $7::integer[], $8::boolean[], $9::text[], $10::bigint[], $11::bigint[])
    AS batch ({EVENT_COLUMNS})
ON CONFLICT (event_id) DO UPDATE
SET status = excluded.status, revision = excluded.revision, start_at = excluded.start_at, end_at = excluded.end_at,
    setpoint_offset_f = excluded.setpoint_offset_f, precool = excluded.precool, targets = excluded.targets,
    counted_ms = excluded.counted_ms, lifecycle_offset = excluded.lifecycle_offset
WHERE stored.lifecycle_offset < excluded.lifecycle_offset
"""
UPSERT_INSTRUCTIONS = """
INSERT INTO dispatch_devices AS stored (event_id, provider_id, thermostat_serial, service_account_id, program_id,
    action, precool_start, first_instructed_at, last_instructed_at)
SELECT event_id, provider_id, thermostat_serial, service_account_id, program_id, action, precool_start,
       scheduled_at, issued_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
            $8::timestamptz[], $9::timestamptz[])
    AS batch (event_id, provider_id, thermostat_serial, service_account_id, program_id, action, precool_start,
              scheduled_at, issued_at)
ON CONFLICT (event_id, provider_id, thermostat_serial) DO UPDATE
SET service_account_id = excluded.service_account_id, program_id = excluded.program_id,
    first_instructed_at = coalesce(stored.first_instructed_at, excluded.first_instructed_at),
    action = CASE WHEN stored.last_instructed_at IS NULL OR excluded.last_instructed_at >= stored.last_instructed_at
                  THEN excluded.action ELSE stored.action END,
    precool_start = CASE WHEN stored.last_instructed_at IS NULL OR excluded.last_instructed_at >= stored.last_instructed_at
                         THEN excluded.precool_start ELSE stored.precool_start END,
    last_instructed_at = greatest(stored.last_instructed_at, excluded.last_instructed_at)
"""
UPSERT_ACKS = """
INSERT INTO dispatch_devices AS stored (event_id, provider_id, thermostat_serial, ack_status, ack_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
ON CONFLICT (event_id, provider_id, thermostat_serial) DO UPDATE
SET ack_status = excluded.ack_status, ack_at = excluded.ack_at
WHERE stored.ack_at IS NULL OR excluded.ack_at >= stored.ack_at
"""
# A thermostat counts as reached once its SCHEDULE is projected, as acknowledged by the event's
# start when its provider's answer is dated no later than the start.
COVERAGE_QUERY = """
SELECT event_id, provider_id, count(*) AS instructed, count(ack_status) AS acknowledged,
       count(*) FILTER (WHERE ack_status = 'ACCEPTED') AS accepted,
       count(*) FILTER (WHERE ack_status = 'REJECTED') AS rejected,
       count(*) FILTER (WHERE ack_status = 'OPTED_OUT') AS opted_out,
       count(*) FILTER (WHERE ack_status = 'FAILED') AS failed
FROM dispatch_devices
WHERE event_id = ANY($1::text[]) AND first_instructed_at IS NOT NULL
GROUP BY event_id, provider_id
"""
UNACKNOWLEDGED = """
SELECT d.provider_id, d.thermostat_serial, d.service_account_id, d.ack_status, d.ack_at
FROM dispatch_devices d JOIN dispatch_events e USING (event_id)
WHERE d.event_id = $1 AND d.first_instructed_at IS NOT NULL AND d.action <> 'CANCEL'
  AND (d.ack_at IS NULL OR d.ack_at > e.start_at) AND ($2::text IS NULL OR d.provider_id = $2)
ORDER BY d.provider_id, d.thermostat_serial
"""


@dataclass
class DeliveryRows:
    instructions: dict[tuple[str, str, str], tuple] = field(default_factory=dict)
    acks: dict[tuple[str, str, str], tuple] = field(default_factory=dict)
    rejected: list[tuple[InputRecord, str, str]] = field(default_factory=list)

    @property
    def events(self) -> set[str]:
        return {key[0] for key in self.instructions} | {key[0] for key in self.acks}


def delivery_rows(records: list[InputRecord]) -> DeliveryRows:
    """Each thermostat's latest instruction (with when its SCHEDULE was issued, when the batch
    holds it: a SCHEDULE and an UPDATE may come in one batch) and latest acknowledgment in a
    batch (one statement may touch a row once), and the records refused."""
    rows = DeliveryRows()
    for record in records:
        if isinstance(record.value, Undecodable):
            rows.rejected.append((record, record.value.reason_code, record.value.reason))
            continue
        value, provider = record.value, provider_of(record.topic)
        key = (value["event_id"], provider, value["thermostat_serial"])
        if record.topic.split(".")[2] == "dispatch-acks":
            if value["status"] not in ACK_STATUSES:  # an unknown symbol resolved by an older reader
                rows.rejected.append((record, "UNKNOWN_STATUS", f"acknowledgment status {value['status']!r}"))
            elif key not in rows.acks or rows.acks[key][4] <= value["at"]:
                rows.acks[key] = (*key, value["status"], value["at"])
        else:
            known = rows.instructions.get(key)
            scheduled_at = value["issued_at"] if value["action"] == "SCHEDULE" else None
            if known is not None and known[7] is not None:
                scheduled_at = min(known[7], scheduled_at or known[7])
            if known is None or known[8] <= value["issued_at"]:
                rows.instructions[key] = (*key, value["service_account_id"], value["program_id"], value["action"],
                                          value["precool_start"], scheduled_at, value["issued_at"])
            else:
                rows.instructions[key] = (*known[:7], scheduled_at, known[8])
    return rows


def step_row(record: dict, offset: int) -> tuple:
    if record["status"] == "REJECTED":
        step_key = f"{record['event_id']}/REJECTED/{record['source_offset']}"
    else:
        step_key = f"{record['event_id']}/{record['revision']}/{record['status']}"
    return (
        step_key, record["event_id"], record["program_id"], record["status"], record["revision"],
        record["request_action"], record["reason"], record["start"], record["end"], record["setpoint_offset_f"],
        record["precool"], ",".join(record["targets"]), record["issued_at"], record["decided_at"],
        json_text(record["failures"]), record["counted_ms"], record["program_year"], record["year_used_ms"],
        record["year_limit_ms"], record["source_offset"], offset,
    )


def event_row(record: dict, offset: int) -> tuple:
    return (
        record["event_id"], record["program_id"], record["status"], record["revision"], record["start"],
        record["end"], record["setpoint_offset_f"], record["precool"], ",".join(record["targets"]),
        record["counted_ms"], offset,
    )


class Database(db.Database):
    """The dispatch tables: projection writes and what the ``gridflex events`` command reads."""

    def __init__(self, database_url: str, coverage_every_s: float = 5.0):
        super().__init__(database_url)
        self._moved: set[str] = set()  # events whose deliveries changed since coverage was computed
        self._coverage_at = 0.0
        self.coverage_every_s = coverage_every_s

    # -- the projection -----------------------------------------------------------------------

    async def project_lifecycle(self, batch: Batch) -> None:
        steps, latest, started = [], {}, []
        for record in batch.records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
                continue
            value = record.value
            steps.append(step_row(value, record.offset))
            if value["status"] != "REJECTED":
                latest[value["event_id"]] = event_row(value, record.offset)
            if value["status"] == "STARTED":
                started.append(value["event_id"])
        if not steps:
            return

        async def write(connection: asyncpg.Connection) -> None:
            await connection.execute(INSERT_STEPS, *columns(steps))
            if latest:
                await connection.execute(UPSERT_EVENTS, *columns(list(latest.values())))

        await self.write(write)
        for event_id in started:
            await self._report_unacknowledged(event_id)

    async def project_deliveries(self, batch: Batch) -> None:
        rows = delivery_rows(batch.records)
        for record, reason_code, reason in rows.rejected:
            batch.dead_letter(record, reason_code, reason)
        if rows.instructions or rows.acks:
            async def write(connection: asyncpg.Connection) -> None:
                if rows.instructions:
                    await connection.execute(UPSERT_INSTRUCTIONS, *columns(list(rows.instructions.values())))
                if rows.acks:
                    await connection.execute(UPSERT_ACKS, *columns(list(rows.acks.values())))

            await self.write(write)
            self._moved |= rows.events
        if self._moved and time.monotonic() - self._coverage_at >= self.coverage_every_s:
            await self._report_coverage()

    async def _report_coverage(self) -> None:
        moved, self._moved = sorted(self._moved), set()
        self._coverage_at = time.monotonic()
        pool = await self.pool()
        for row in await pool.fetch(COVERAGE_QUERY, moved):
            event_id, provider = row["event_id"], row["provider_id"]
            INSTRUCTED.labels(event_id, provider).set(row["instructed"])
            for status in ACK_STATUSES:
                ACKNOWLEDGED.labels(event_id, provider, status).set(row[status.lower()])
            COVERAGE.labels(event_id, provider).set(row["acknowledged"] / row["instructed"])

    async def _report_unacknowledged(self, event_id: str) -> None:
        by_provider: dict[str, int] = {}
        for row in await self.unacknowledged(event_id):
            by_provider[row["provider_id"]] = by_provider.get(row["provider_id"], 0) + 1
        for provider, missing in by_provider.items():
            UNACKNOWLEDGED_AT_START.labels(event_id, provider).set(missing)
        if by_provider:
            log.warning("thermostats without acknowledgment at the event's start (`gridflex events "
                        "unacknowledged` lists them)", event_id=event_id, by_provider=by_provider)

    # -- what the command reads -----------------------------------------------------------------

    async def unacknowledged(self, event_id: str, provider_id: str | None = None) -> list[dict]:
        """The thermostats an event reached (and did not withdraw) with no acknowledgment dated
        by its start."""
        pool = await self.pool()
        return [dict(row) for row in await pool.fetch(UNACKNOWLEDGED, event_id, provider_id)]

    async def program_hours(self, year: int) -> dict[str, tuple[int, int | None]]:
        """program → (ms used, yearly limit in ms) in ``year``, as of each program's latest step."""
        pool = await self.pool()
        rows = await pool.fetch(
            "SELECT DISTINCT ON (program_id) program_id, year_used_ms, year_limit_ms FROM dispatch_event_steps"
            " WHERE program_year = $1 ORDER BY program_id, lifecycle_offset DESC", year,
        )
        return {row["program_id"]: (row["year_used_ms"], row["year_limit_ms"]) for row in rows}

    async def event_steps(self, event_id: str) -> list[dict]:
        pool = await self.pool()
        rows = await pool.fetch(
            f"SELECT {STEP_COLUMNS} FROM dispatch_event_steps WHERE event_id = $1 ORDER BY lifecycle_offset", event_id,
        )
        return [dict(row) for row in rows]

    async def event_deliveries(self, event_id: str) -> list[dict]:
        """Per provider: thermostats reached, their latest instruction, and their answers."""
        pool = await self.pool()
        rows = await pool.fetch(
            "SELECT provider_id, count(*) FILTER (WHERE first_instructed_at IS NOT NULL) AS reached,"
            " count(*) FILTER (WHERE action = 'CANCEL') AS cancelled, count(ack_status) AS acknowledged,"
            " count(*) FILTER (WHERE ack_status = 'ACCEPTED') AS accepted"
            " FROM dispatch_devices WHERE event_id = $1 GROUP BY provider_id ORDER BY provider_id", event_id,
        )
        return [dict(row) for row in rows]

