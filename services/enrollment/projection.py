"""The enrollment projection in Postgres, and everything the enrollment API reads and writes there.

Decisions (``partner.<provider>.enrollment-decisions.v1``) and account states
(``gridflex.enrollment.state.v1``) arrive in batches; a batch is written in one transaction of
multi-row statements. Delivery is at-least-once, so every write is idempotent: a decision is
keyed by (provider, request) and the first one stays; an account state replaces the stored one
only if it comes later in its partition (one key, one partition).

The pool connects, and the migrations run, on first use: the service builds this object at
import time, before any event loop runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from gridflex.batch import Batch, InputRecord
from gridflex.codec import Undecodable
from gridflex import db
from gridflex.db import columns, json_text
from gridflex.topics import provider_of

log = structlog.get_logger(__name__)

DECISION_COLUMNS = (
    "provider_id, request_id, program_id, action, service_account_id, thermostat_serial, outcome, "
    "effective_date, failures, lockout_until, requested_at, decided_at"
)

# jsonb travels as text: asyncpg would read a JSON array inside a jsonb[] as another dimension.
INSERT_DECISIONS = f"""
INSERT INTO enrollment_decisions ({DECISION_COLUMNS}, source_topic, source_partition, source_offset)
SELECT provider_id, request_id, program_id, action, service_account_id, thermostat_serial, outcome,
       effective_date, failures::jsonb, lockout_until, requested_at, decided_at,
       source_topic, source_partition, source_offset
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::date[], $9::text[],
    $10::date[], $11::timestamptz[], $12::timestamptz[], $13::text[], $14::integer[], $15::bigint[]
) AS batch ({DECISION_COLUMNS}, source_topic, source_partition, source_offset)
ON CONFLICT DO NOTHING
"""

UPSERT_ACCOUNTS = """
INSERT INTO enrollment_accounts AS stored (service_account_id, state, updated_at, source_partition, source_offset)
SELECT service_account_id, state::jsonb, updated_at, source_partition, source_offset
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::integer[], $5::bigint[])
    AS batch (service_account_id, state, updated_at, source_partition, source_offset)
ON CONFLICT (service_account_id) DO UPDATE
SET state = excluded.state, updated_at = excluded.updated_at,
    source_partition = excluded.source_partition, source_offset = excluded.source_offset
WHERE stored.source_offset < excluded.source_offset
"""


class RequestIdReused(Exception):
    """A provider sent a request_id again with a different request."""


@dataclass(frozen=True)
class Submission:
    body: dict  # as parse_submission returned it when first submitted
    submitted_at: datetime
    repeated: bool  # the same request was submitted before


@dataclass
class ProjectionRows:
    decisions: list[tuple]
    accounts: list[tuple]
    rejected: list[tuple[InputRecord, str, str]]  # record, reason code, reason


def projection_rows(records: Iterable[InputRecord]) -> ProjectionRows:
    """The rows a batch writes: the first decision of each request, the latest state of each
    account, and the records that go to dead letters instead."""
    decisions: dict[tuple[str, str], tuple] = {}
    accounts: dict[str, tuple] = {}
    rejected = []
    for record in records:
        is_decision = record.topic.startswith("partner.")
        if not is_decision and record.raw is None and record.key is not None:
            # A tombstone: the account's state was deleted. Keep the position, drop the state.
            account = record.key.decode()
            accounts[account] = (account, None, None, record.partition, record.offset)
            continue
        if isinstance(record.value, Undecodable):
            rejected.append((record, record.value.reason_code, record.value.reason))
        elif is_decision:
            decision = record.value
            provider = provider_of(record.topic)
            if decision["provider_id"] != provider:
                rejected.append((record, "PROVIDER_MISMATCH",
                                 f"a decision for provider {decision['provider_id']!r} on {provider!r}'s topic"))
                continue
            decisions.setdefault((provider, decision["request_id"]), (
                provider, decision["request_id"], decision["program_id"], decision["action"],
                decision["service_account_id"], decision["thermostat_serial"], decision["outcome"],
                decision["effective_date"], json_text(decision["failures"]), decision["lockout_until"],
                decision["requested_at"], decision["decided_at"], record.topic, record.partition, record.offset,
            ))
        else:
            state = record.value
            account = state["service_account_id"]
            if account not in accounts or accounts[account][4] < record.offset:
                accounts[account] = (
                    account, json_text(state), state["updated_at"], record.partition, record.offset,
                )
    return ProjectionRows(list(decisions.values()), list(accounts.values()), rejected)


async def _write(connection: asyncpg.Connection, rows: ProjectionRows) -> None:
    if rows.decisions:
        await connection.execute(INSERT_DECISIONS, *columns(rows.decisions))
    if rows.accounts:
        await connection.execute(UPSERT_ACCOUNTS, *columns(rows.accounts))


class Database(db.Database):
    """The enrollment tables: projection writes, API reads and submissions (credentials: gridflex.db)."""

    async def project(self, batch: Batch) -> None:
        """Write a batch of decisions and account states; wait out a Postgres outage, never skip."""
        rows = projection_rows(batch.records)
        for record, reason_code, reason in rows.rejected:
            batch.dead_letter(record, reason_code, reason)
        if rows.decisions or rows.accounts:
            await self.write(lambda connection: _write(connection, rows))

    # -- what the API reads -------------------------------------------------------------------

    async def decision(self, provider_id: str, request_id: str) -> dict | None:
        pool = await self.pool()
        row = await pool.fetchrow(
            f"SELECT {DECISION_COLUMNS} FROM enrollment_decisions WHERE provider_id = $1 AND request_id = $2",
            provider_id, request_id,
        )
        return dict(row) if row else None

    async def account(self, provider_id: str, service_account_id: str) -> tuple[dict | None, list[dict]]:
        """The account's state (every provider's periods: filter before showing) and the
        provider's decisions on it, newest first."""
        pool = await self.pool()
        async with pool.acquire() as connection:
            state = await connection.fetchval(
                "SELECT state FROM enrollment_accounts WHERE service_account_id = $1", service_account_id,
            )
            decisions = await connection.fetch(
                f"SELECT {DECISION_COLUMNS} FROM enrollment_decisions"
                " WHERE provider_id = $1 AND service_account_id = $2 ORDER BY decided_at DESC, request_id",
                provider_id, service_account_id,
            )
        return state, [dict(row) for row in decisions]

    async def thermostat(self, provider_id: str, thermostat_serial: str) -> tuple[list[dict], list[dict]]:
        """The states of the accounts with a period of this provider's thermostat, and the
        provider's decisions on the thermostat, newest first."""
        pool = await self.pool()
        async with pool.acquire() as connection:
            states = await connection.fetch(
                "SELECT state FROM enrollment_accounts WHERE state -> 'enrollments' @> $1::jsonb"
                " ORDER BY service_account_id",
                [{"provider_id": provider_id, "thermostat_serial": thermostat_serial}],
            )
            decisions = await connection.fetch(
                f"SELECT {DECISION_COLUMNS} FROM enrollment_decisions"
                " WHERE provider_id = $1 AND thermostat_serial = $2 ORDER BY decided_at DESC, request_id",
                provider_id, thermostat_serial,
            )
        return [row["state"] for row in states], [dict(row) for row in decisions]

    # -- submissions over HTTP ----------------------------------------------------------------

    async def submit(self, provider_id: str, body: dict, submitted_at: datetime) -> Submission:
        """Record a submission, or find the same one submitted before; raises
        :class:`RequestIdReused` when the request_id came with another request."""
        pool = await self.pool()
        request_id = body["request_id"]
        async with pool.acquire() as connection:
            inserted = await connection.fetchval(
                "INSERT INTO enrollment_submissions (provider_id, request_id, body, submitted_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING submitted_at",
                provider_id, request_id, body, submitted_at,
            )
            if inserted is not None:
                return Submission(body, inserted, repeated=False)
            earlier = await connection.fetchrow(
                "SELECT body, submitted_at FROM enrollment_submissions WHERE provider_id = $1 AND request_id = $2",
                provider_id, request_id,
            )
        if earlier["body"] != body:
            raise RequestIdReused(f"request_id {request_id!r} was submitted before with a different request")
        return Submission(earlier["body"], earlier["submitted_at"], repeated=True)

    async def submitted(self, provider_id: str, request_id: str) -> bool:
        pool = await self.pool()
        return await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM enrollment_submissions WHERE provider_id = $1 AND request_id = $2)",
            provider_id, request_id,
        )
