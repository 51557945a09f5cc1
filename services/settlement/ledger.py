"""The billing ledger in Postgres: settlement's only store.

Each batch of input is applied in one transaction that
1. locks the positions of the batch's partitions and drops records already applied (a replay,
   or a worker that lost its partitions mid-batch, cannot apply a record twice);
2. locks the accounts the batch posts capped lines to, in one order (postings of one account
   are serialized across workers, so caps see every line before them), and the results of the
   causes settled before; loads what settling needs: bill cycle days and enrollments, cap
   usage, and how each cause last settled;
3. has the pure domain (:mod:`services.settlement.domain`) decide the lines;
4. writes the lines and their balanced entries with COPY, the results, and the positions.

The schema is migrations/003_settlement.sql and 004; database constraints enforce balance,
append-only lines and one line per idempotency key, whatever the code does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import asyncpg
import orjson
import structlog
from aiokafka import TopicPartition

from prometheus_client import Histogram

from gridflex import db
from gridflex.batch import InputRecord
from gridflex.calendar import bill_period, local_date, local_day_bounds
from gridflex.db import JsonText, columns
from services.settlement.domain.credits import Earned
from services.settlement.domain.postings import CapUsage, LineDraft, PostedLine, Prior, Settled

log = structlog.get_logger(__name__)

WRITE_SECONDS = Histogram(
    "gridflex_settlement_ledger_write_seconds", "One ledger transaction: a batch's lines and positions, or a close "
    "(retries after a database outage included)", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

LINE_COLUMNS = [
    "line_id", "idempotency_key", "service_account_id", "program_id", "provider_id", "credit_type", "event_id",
    "bill_period_start", "bill_period_end", "cap_year", "cap_period_start", "amount_cents", "reverses_line_id",
    "cause", "posted_at",
]
ENTRY_COLUMNS = ["line_id", "ledger_account", "ledger_account_id", "amount_cents"]

RESULT_COLUMNS = [
    "cause_key", "revision", "service_account_id", "program_id", "credit_type", "event_id", "status", "reason",
    "baseline_kwh", "actual_kwh", "reduction_kwh", "earned_cents", "paid_cents", "line_id", "detail", "updated_at",
]
# A cause settled before (a revision, a performance that waited): its row is replaced.
UPDATE_RESULTS = """
INSERT INTO settlement_results AS stored (cause_key, revision, service_account_id, program_id, credit_type, event_id,
    status, reason, baseline_kwh, actual_kwh, reduction_kwh, earned_cents, paid_cents, line_id, detail, updated_at)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::numeric[], $10::numeric[], $11::numeric[], $12::bigint[], $13::bigint[], $14::bigint[], $15::text[]::jsonb[],
    $16::timestamptz[])
ON CONFLICT (cause_key) DO UPDATE SET revision = excluded.revision, credit_type = excluded.credit_type,
    status = excluded.status, reason = excluded.reason, baseline_kwh = excluded.baseline_kwh,
    actual_kwh = excluded.actual_kwh, reduction_kwh = excluded.reduction_kwh, earned_cents = excluded.earned_cents,
    paid_cents = excluded.paid_cents, line_id = excluded.line_id, detail = excluded.detail,
    updated_at = excluded.updated_at
"""


@dataclass
class Account:
    service_account_id: str
    bill_cycle_day: int | None
    enrollments: list[dict]

    def periods(self, program_id: str) -> list[dict]:
        return [period for period in self.enrollments if period["program_id"] == program_id]


@dataclass
class PostingContext:
    """What settling a batch reads, loaded under the batch's locks."""

    accounts: dict[str, Account]
    usage: CapUsage
    priors: dict[str, Prior]
    last_closed: date | None
    now: datetime
    line_ids: Iterable[int] = iter(())
    settled: list[Settled] = field(default_factory=list)
    results: dict[str, tuple] = field(default_factory=dict)  # by cause: the last result settled in the batch
    stored: set[str] = field(default_factory=set)  # causes with a row in settlement_results (the priors read)
    posting_periods: dict[int, tuple[date, date]] = field(default_factory=dict)  # by bill cycle day

    def posting_day(self) -> date:
        """Today, or the first day not closed yet: a closed period's lines are disbursed already."""
        today = local_date(self.now)
        return today if self.last_closed is None or today > self.last_closed else self.last_closed + timedelta(days=1)

    def posting_period(self, account: Account) -> tuple[date, date]:
        """The bill period of the posting day for the account's cycle day (the same for every
        account of that cycle day in this batch: worked out once)."""
        period = self.posting_periods.get(account.bill_cycle_day)
        if period is None:
            period = self.posting_periods[account.bill_cycle_day] = bill_period(self.posting_day(),
                                                                                account.bill_cycle_day)
        return period

    def record(self, settled: Settled | None, earned: Earned, extra: dict | None = None) -> None:
        """Keep what a cause settled to (lines to post, the result row), and make it the prior
        of a later record of the same cause in this batch (whose result replaces this one).
        A result with a line leaves its inputs to the line's cause (migrations/004)."""
        if settled is None:
            return
        for line in settled.lines:
            line.line_id = next(self.line_ids)
        self.settled.append(settled)
        credit = settled.credit
        self.priors[earned.cause_key] = Prior(earned.revision, None if credit is None else PostedLine(
            credit.line_id, credit.amount_cents, credit.cap_year, credit.cap_period_start, credit.provider_id,
            credit.credit_type,
        ))
        extra = extra or {}
        inputs = None if credit is not None else JsonText(
            orjson.dumps({**earned.detail, "caps_applied": settled.caps_applied}).decode())
        self.results[earned.cause_key] = (
            earned.cause_key, earned.revision, earned.service_account_id, earned.program_id, earned.credit_type,
            earned.event_id, earned.status, earned.reason, extra.get("baseline_kwh"), extra.get("actual_kwh"),
            extra.get("reduction_kwh"), int(earned.amount * 100), settled.paid_cents,
            None if credit is None else credit.line_id, inputs, self.now,
        )


class Ledger(db.Database):
    """Settlement's tables: batch application, closes, and the reads of the HTTP API."""

    async def write(self, write):
        """One ledger transaction (see :meth:`gridflex.db.Database.write`), timed."""
        with WRITE_SECONDS.time():
            return await super().write(write)

    # -- statements (the API and `gridflex accounts`) ------------------------------------------

    async def bill_periods(self, service_account_id: str, provider_id: str | None = None) -> list[asyncpg.Record]:
        """The account's bill periods with lines (only ``provider_id``'s, when given): count, total, closed_at."""
        pool = await self.pool()
        return await pool.fetch(
            "SELECT l.bill_period_start, l.bill_period_end, count(*) AS line_count, sum(l.amount_cents)::bigint AS total_cents,"
            " s.closed_at FROM ledger_lines l LEFT JOIN bill_statements s ON s.service_account_id = l.service_account_id"
            " AND s.bill_period_start = l.bill_period_start"
            " WHERE l.service_account_id = $1 AND ($2::text IS NULL OR l.provider_id = $2)"
            " GROUP BY l.bill_period_start, l.bill_period_end, s.closed_at ORDER BY l.bill_period_start",
            service_account_id, provider_id)

    async def statement(self, service_account_id: str, bill_period_start: date,
                        provider_id: str | None = None) -> tuple[list[asyncpg.Record], asyncpg.Record | None]:
        """One bill period's lines (only ``provider_id``'s, when given), each with its cause, and
        the closed statement (None while the period is open)."""
        pool = await self.pool()
        lines = await pool.fetch(
            "SELECT l.line_id, e.entry_id, l.program_id, l.credit_type, l.event_id, l.bill_period_end, l.amount_cents,"
            " l.reverses_line_id, l.cause::text, l.posted_at, l.provider_id FROM ledger_lines l"
            " JOIN ledger_entries e ON e.line_id = l.line_id AND e.ledger_account = 'CUSTOMER_CREDIT'"
            " WHERE l.service_account_id = $1 AND l.bill_period_start = $2 AND ($3::text IS NULL OR l.provider_id = $3)"
            " ORDER BY l.line_id", service_account_id, bill_period_start, provider_id)
        closed = await pool.fetchrow("SELECT closed_at, total_cents FROM bill_statements"
                                     " WHERE service_account_id = $1 AND bill_period_start = $2",
                                     service_account_id, bill_period_start)
        return lines, closed

    # -- positions -----------------------------------------------------------------------------

    async def stored_positions(self, consumer: str, assigned: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where to start each assigned partition: the stored position, or its beginning."""
        pool = await self.pool()
        rows = await pool.fetch(
            "SELECT topic, partition, next_offset FROM settlement_positions WHERE consumer = $1", consumer)
        stored = {(row["topic"], row["partition"]): row["next_offset"] for row in rows}
        return {tp: stored.get((tp.topic, tp.partition), 0) for tp in assigned}

    async def unapplied(self, connection: asyncpg.Connection, consumer: str, records: list[InputRecord],
                        ) -> list[InputRecord]:
        """Lock the positions of the batch's partitions; the records not applied yet."""
        partitions = sorted({(record.topic, record.partition) for record in records})
        if not partitions:
            return []
        topics, numbers = zip(*partitions)
        await connection.execute(
            "INSERT INTO settlement_positions (consumer, topic, partition, next_offset)"
            " SELECT $1, * FROM unnest($2::text[], $3::int[]), (VALUES (0::bigint)) v ON CONFLICT DO NOTHING",
            consumer, list(topics), list(numbers))
        rows = await connection.fetch(
            "SELECT topic, partition, next_offset FROM settlement_positions"
            " WHERE consumer = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))"
            " ORDER BY topic, partition FOR UPDATE", consumer, list(topics), list(numbers))
        applied_up_to = {(row["topic"], row["partition"]): row["next_offset"] for row in rows}
        fresh = [record for record in records if record.offset >= applied_up_to[record.topic, record.partition]]
        if len(fresh) < len(records):
            log.info("records already applied are skipped", count=len(records) - len(fresh))
        return fresh

    async def store_positions(self, connection: asyncpg.Connection, consumer: str,
                              positions: dict[tuple[str, int], int]) -> None:
        if not positions:
            return
        (topics, numbers), offsets = zip(*positions.keys()), list(positions.values())
        await connection.execute(
            "UPDATE settlement_positions p SET next_offset = greatest(p.next_offset, v.next_offset)"
            " FROM unnest($2::text[], $3::int[], $4::bigint[]) AS v (topic, partition, next_offset)"
            " WHERE p.consumer = $1 AND p.topic = v.topic AND p.partition = v.partition",
            consumer, list(topics), list(numbers), offsets)

    # -- loading under locks --------------------------------------------------------------------

    async def context(self, connection: asyncpg.Connection, accounts: Iterable[str], cause_keys: Iterable[str],
                      now: datetime, max_lines: int, uncapped: Iterable[str] = ()) -> PostingContext:
        """Lock the accounts (in one order), then the causes' results, and load what settling
        them needs.

        ``uncapped``: accounts to read without locking them, because the batch posts to them
        only energy lines that no cap limits (:func:`settling.energy_capped`; closes and account
        records lock every account they touch, their caps being per account). Locking an account
        serializes the postings that share its cap scopes, so that each cap sees every line
        before it; a line that no cap limits needs no such order. What it does need, that two
        transactions never settle the same cause from one prior, the lock on the cause gives:
        a cause settled before has its result row locked here, and a cause settled for the
        first time comes only from the partition of its record key (energy/<event>/<account>),
        whose position the batch holds locked (:meth:`unapplied`)."""
        uncapped = sorted(set(uncapped) - set(accounts))
        accounts = sorted(set(accounts))
        closed = await connection.fetchval("SELECT last_closed_day FROM settlement_closes FOR SHARE")
        rows = await connection.fetch(
            "SELECT service_account_id, bill_cycle_day, enrollments::text FROM settlement_accounts"
            " WHERE service_account_id = ANY($1::text[]) ORDER BY service_account_id FOR UPDATE", accounts)
        if uncapped:
            rows += await connection.fetch(
                "SELECT service_account_id, bill_cycle_day, enrollments::text FROM settlement_accounts"
                " WHERE service_account_id = ANY($1::text[])", uncapped)
        found = {row["service_account_id"]: Account(row["service_account_id"], row["bill_cycle_day"],
                                                     enrollment_periods(row["enrollments"])) for row in rows}
        usage = await self._usage(connection, accounts)
        priors = await self._priors(connection, cause_keys)
        ids = await self._line_ids(connection, max_lines)
        return PostingContext(found, usage, priors, closed, now, iter(ids), stored=set(priors))

    async def _usage(self, connection: asyncpg.Connection, accounts: list[str]) -> CapUsage:
        """What the lines of the (locked) accounts add up to per cap scope."""
        if not accounts:
            return CapUsage()
        rows = await connection.fetch(
            "SELECT service_account_id, program_id, credit_type, cap_year, cap_period_start, sum(amount_cents) AS cents"
            " FROM ledger_lines WHERE service_account_id = ANY($1::text[])"
            " GROUP BY service_account_id, program_id, credit_type, cap_year, cap_period_start", accounts)
        used: dict[tuple, int] = {}
        for row in rows:
            key = (row["service_account_id"], row["program_id"], row["credit_type"])
            cents = int(row["cents"])  # sum(bigint) is numeric
            for scope in ((*key, "year", row["cap_year"]), (*key, "period", row["cap_period_start"])):
                if scope[-1] is not None:
                    used[scope] = used.get(scope, 0) + cents
        return CapUsage(used)

    async def _priors(self, connection: asyncpg.Connection, cause_keys: Iterable[str]) -> dict[str, Prior]:
        """Lock the results of the causes settled before (in one order), then read them with
        their lines in effect: in a statement of its own, whose snapshot sees what a
        transaction that held the lock before committed (its new line included)."""
        stored = await connection.fetch(
            "SELECT cause_key FROM settlement_results WHERE cause_key = ANY($1::text[]) ORDER BY cause_key FOR UPDATE",
            list(set(cause_keys)))
        if not stored:
            return {}
        rows = await connection.fetch(
            "SELECT r.cause_key, r.revision, l.line_id, l.amount_cents, l.cap_year, l.cap_period_start, l.provider_id,"
            " l.credit_type FROM settlement_results r LEFT JOIN ledger_lines l ON l.line_id = r.line_id"
            " WHERE r.cause_key = ANY($1::text[])", [row["cause_key"] for row in stored])
        return {row["cause_key"]: Prior(row["revision"], None if row["line_id"] is None else PostedLine(
            row["line_id"], row["amount_cents"], row["cap_year"], row["cap_period_start"], row["provider_id"],
            row["credit_type"])) for row in rows}

    async def _line_ids(self, connection: asyncpg.Connection, count: int) -> list[int]:
        if count <= 0:
            return []
        rows = await connection.fetch("SELECT nextval('ledger_line_ids') AS id FROM generate_series(1, $1)", count)
        return [row["id"] for row in rows]

    # -- writing --------------------------------------------------------------------------------

    async def post(self, connection: asyncpg.Connection, context: PostingContext) -> list[LineDraft]:
        """Post the batch's lines with their entries, and remember each cause's result: COPY for
        causes settled for the first time (nearly all), an upsert for the others."""
        lines = [line for settled in context.settled for line in settled.lines]
        if lines:
            await post_lines(connection, lines, context.now)
        first, again = [], []
        for cause_key, result in context.results.items():
            (again if cause_key in context.stored else first).append(result)
        if first:
            await connection.copy_records_to_table("settlement_results", columns=RESULT_COLUMNS, records=first)
        if again:
            await connection.execute(UPDATE_RESULTS, *columns(again))
        return lines


async def post_lines(connection: asyncpg.Connection, lines: list[LineDraft], posted_at: datetime) -> None:
    """COPY lines, then their entries (customer credit, program incentive expense), in one
    statement each: the balance trigger checks every line's entries together."""
    await connection.copy_records_to_table("ledger_lines", columns=LINE_COLUMNS, records=[
        (line.line_id, line.idempotency_key, line.service_account_id, line.program_id, line.provider_id,
         line.credit_type, line.event_id, line.bill_period[0], line.bill_period[1], line.cap_year,
         line.cap_period_start, line.amount_cents, line.reverses_line_id, JsonText(orjson.dumps(line.cause).decode()),
         posted_at)
        for line in lines
    ])
    await connection.copy_records_to_table("ledger_entries", columns=ENTRY_COLUMNS, records=[
        entry for line in lines for entry in (
            (line.line_id, "CUSTOMER_CREDIT", line.service_account_id, -line.amount_cents),
            (line.line_id, "PROGRAM_INCENTIVE_EXPENSE", line.program_id, line.amount_cents),
        )
    ])


def enrollment_periods(text: str) -> list[dict]:
    """Enrollment periods as stored (JSON), with their dates as dates."""
    periods = orjson.loads(text)
    for period in periods:
        period["effective_from"] = date.fromisoformat(period["effective_from"])
        if period["effective_to"] is not None:
            period["effective_to"] = date.fromisoformat(period["effective_to"])
    return periods


def day_closes_at(day: date) -> datetime:
    """A bill period closes at the end of its last local day."""
    return local_day_bounds(day)[1]
